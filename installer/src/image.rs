//! The agent's container image, without Docker: one uncompressed tar layer
//! (the agent and the shared libraries it loads, nothing else), an OCI image
//! config that runs it, and the OCI manifest that ties them together.

use std::io::{self, Read, Write};

use serde_json::json;

/// Media type of the manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of the layer: an uncompressed tar, so its digest is its diff ID.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// Where the agent lives in the image.
pub const ENTRYPOINT: &str = "/damselfly-agent";

/// A file of the layer.
pub struct LayerFile<R> {
    /// Absolute path inside the image.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Its length in bytes.
    pub size: u64,
    /// Its content, `size` bytes.
    pub content: R,
}

/// Writes a tar of `files` (and the directories above them) to `out`:
/// owned by root, dated 1970, in the order given, so the same files make the
/// same layer, byte for byte.
pub fn write_layer<R: Read, W: Write>(files: Vec<LayerFile<R>>, mut out: W) -> io::Result<()> {
    let mut dirs: Vec<String> = Vec::new();
    for mut file in files {
        let relative = file.path.trim_start_matches('/').to_owned();
        let mut parent = String::new();
        for part in relative.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            parent.push_str(part);
            parent.push('/');
            if !dirs.contains(&parent) {
                out.write_all(&header(&parent, 0o755, 0, b'5')?)?;
                dirs.push(parent.clone());
            }
        }
        out.write_all(&header(&relative, file.mode, file.size, b'0')?)?;
        let copied = io::copy(&mut (&mut file.content).take(file.size), &mut out)?;
        if copied != file.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} gave {copied} bytes, not {}", file.path, file.size),
            ));
        }
        let padding = (512 - (file.size % 512) as usize) % 512;
        out.write_all(&vec![0; padding])?;
    }
    out.write_all(&[0; 1024])
}

/// A ustar header block.
fn header(name: &str, mode: u32, size: u64, kind: u8) -> io::Result<[u8; 512]> {
    let mut h = [0u8; 512];
    let (prefix, name) = if name.len() <= 100 {
        ("", name)
    } else {
        let cut = name[..name.len().min(155)].rfind('/').filter(|&i| name.len() - i - 1 <= 100).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{name} is too long a path for a tar header"))
        })?;
        (&name[..cut], &name[cut + 1..])
    };
    let put = |h: &mut [u8; 512], at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, b"00000000000\0");
    put(&mut h, 148, b"        ");
    h[156] = kind;
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    put(&mut h, 265, b"root");
    put(&mut h, 297, b"root");
    put(&mut h, 345, prefix.as_bytes());
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

/// The image config: runs the agent, as root (the DaemonSet writes the
/// node's runtime configuration), on linux/amd64.
pub fn config(layer_digest: &str, version: &str) -> String {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": [ENTRYPOINT],
            "Cmd": ["run"],
            "Labels": {
                "org.opencontainers.image.title": "damselfly-agent",
                "org.opencontainers.image.version": version,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "damselfly-agent image push", "comment": "the agent and the libraries it loads"}],
    })
    .to_string()
}

/// The OCI image manifest.
pub fn manifest(config_digest: &str, config_size: u64, layer_digest: &str, layer_size: u64) -> String {
    json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer_size}],
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_is_a_tar_that_the_system_tar_reads_back() {
        let mut tar = Vec::new();
        let files = vec![
            LayerFile { path: "/damselfly-agent".into(), mode: 0o755, size: 5, content: &b"agent"[..] },
            LayerFile { path: "/lib/x86_64-linux-gnu/libc.so.6".into(), mode: 0o644, size: 3, content: &b"lib"[..] },
            LayerFile { path: "/lib/x86_64-linux-gnu/libm.so.6".into(), mode: 0o644, size: 0, content: &b""[..] },
        ];
        write_layer(files, &mut tar).expect("tar");
        assert_eq!(tar.len(), 512 * (5 + 2 + 2), "5 headers (two of them directories), 2 data blocks, the end");
        let dir = std::env::temp_dir().join(format!("damselfly-layer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("layer.tar");
        std::fs::write(&path, &tar).expect("write");
        let listing = std::process::Command::new("tar").arg("-tvf").arg(&path).output().expect("tar -t");
        let _ = std::fs::remove_dir_all(&dir);
        let listing = String::from_utf8_lossy(&listing.stdout);
        let lines: Vec<String> = listing
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {} {} {}", f[0], f[1], f[2], f[5])
            })
            .collect();
        assert_eq!(
            lines,
            [
                "-rwxr-xr-x root/root 5 damselfly-agent",
                "drwxr-xr-x root/root 0 lib/",
                "drwxr-xr-x root/root 0 lib/x86_64-linux-gnu/",
                "-rw-r--r-- root/root 3 lib/x86_64-linux-gnu/libc.so.6",
                "-rw-r--r-- root/root 0 lib/x86_64-linux-gnu/libm.so.6",
            ]
        );
    }

    #[test]
    fn a_short_file_is_an_error_not_a_broken_layer() {
        let files = vec![LayerFile { path: "/x".into(), mode: 0o644, size: 10, content: &b"abc"[..] }];
        assert_eq!(write_layer(files, io::sink()).map_err(|e| e.kind()), Err(io::ErrorKind::UnexpectedEof));
    }
}
