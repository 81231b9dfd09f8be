//! The registry's disk fills up. Its data directory (blobs, uploads and,
//! on SQLite, the database) is a 32 MiB tmpfs this test mounts; a filler
//! file takes all but 512 KiB of it. Then a monolithic push and a chunked
//! push of a 2 MiB blob each fail with `507 Insufficient Storage` and an
//! OCI error body saying the storage is full; no partial blob is readable,
//! the single-request upload's temporary file is gone, and the chunked
//! session is cut back to the bytes it had acknowledged (and stays usable).
//! Everything pushed before still pulls and hashes to its digest. Once the
//! filler is deleted, the same chunked session completes and new pushes
//! work, with no restart. On SQLite and on PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::Command;

use damselfly_tests::http::{Cred, Http};
use damselfly_tests::image::{self, Blob};
use damselfly_tests::{on_both_backends, pseudo_random, sha256_digest, Backend, Registry};
use reqwest::Method;

on_both_backends!(a_full_disk_fails_pushes_with_507_keeps_what_was_stored_and_pushes_resume_when_space_is_freed);

/// Free space left for the database and the session files while the disk is "full".
const HEADROOM: u64 = 512 * 1024;

/// A tmpfs of `size_mib` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u32) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix("damselfly-diskfull-").tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0755"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount tmpfs (run the test as root): {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        let out = Command::new("stat").args(["-f", "-c", "%a %S"]).arg(self.path()).output().expect("run stat");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut it = text.split_whitespace().map(|n| n.parse::<u64>().expect("a number from stat"));
        it.next().unwrap_or(0) * it.next().unwrap_or(0)
    }

    /// Fills the filesystem with `filler`, then gives back all but `HEADROOM`.
    fn fill(&self, filler: &Path) {
        use std::io::Write;
        let mut f = std::fs::File::create(filler).expect("create the filler");
        let block = vec![0x5au8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let len = f.metadata().expect("filler size").len();
        f.set_len(len.saturating_sub(HEADROOM)).expect("give back the headroom");
        assert!(self.free() <= 2 * HEADROOM, "the disk is not full: {} bytes free", self.free());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// The files under `dir` and their sizes.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), e.metadata().map(|m| m.len()).unwrap_or(0)));
        }
    }
    out
}

fn assert_storage_full(reply: &damselfly_tests::http::Reply, what: &str) {
    assert_eq!(reply.status_and_code(), (507, Some("UNKNOWN".into())), "{what}: {}", reply.text());
    let message = reply.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("storage is full"), "{what}: {message}");
}

async fn a_full_disk_fails_pushes_with_507_keeps_what_was_stored_and_pushes_resume_when_space_is_freed(
    backend: Backend,
) {
    let disk = Tmpfs::mount(32);
    let data = disk.path().join("data");
    let sqlite = format!("sqlite://{}/metadata.db", data.display());
    let data_env = data.display().to_string();
    let mut env = vec![("DAMSELFLY_DATA_DIR", data_env.as_str())];
    if backend == Backend::Sqlite {
        // The default layout: the database shares the full disk with the blobs.
        env.push(("DAMSELFLY_DATABASE_URL", sqlite.as_str()));
    }
    let reg = Registry::start_with(backend, &env);
    let http = Http::new(&reg);
    let admin = Cred::admin();

    // Stored before the disk fills: an image and a 4 MiB layer.
    let stored = image::push_image(&http, &admin, "disk/stored", "before the disk filled").await;
    let big = Blob::new(pseudo_random(4 << 20, 21));
    image::push_blob(&http, &admin, "disk/stored", &big).await;

    let filler = disk.path().join("filler");
    disk.fill(&filler);
    let blob = Blob::new(pseudo_random(2 << 20, 22));

    // Monolithic: 507, and nothing of it anywhere.
    let path = format!("/v2/disk/full/blobs/uploads/?digest={}", blob.digest);
    let reply = http.send(http.request(&admin, Method::POST, &path).body(blob.bytes.clone())).await;
    assert_storage_full(&reply, "monolithic push");
    let head = http.send(http.request(&admin, Method::HEAD, &format!("/v2/disk/full/blobs/{}", blob.digest))).await;
    assert_eq!(head.status, 404, "a blob whose push failed is visible");
    let hex = blob.digest.trim_start_matches("sha256:");
    let leftovers: Vec<_> = files(&data)
        .into_iter()
        .filter(|(p, len)| {
            p.ends_with(hex) || (p.starts_with(data.join("tmp")) && !p.ends_with(".ready-probe") && *len > 0)
        })
        .collect();
    assert!(leftovers.is_empty(), "a failed monolithic push left files: {leftovers:?}");

    // Chunked: a first chunk fits, the second does not.
    let reply = http.send(http.request(&admin, Method::POST, "/v2/disk/full/blobs/uploads/")).await.expect(202);
    let location = reply.header("location").expect("a Location").to_owned();
    let first = 128 * 1024;
    let patch = |from: usize, to: usize| {
        http.request(&admin, Method::PATCH, &location)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{from}-{}", to - 1))
            .body(blob.bytes[from..to].to_vec())
    };
    http.send(patch(0, first)).await.expect(202);
    let reply = http.send(patch(first, blob.bytes.len())).await;
    assert_storage_full(&reply, "chunk of a chunked push");
    let status = http.get(&admin, &location).await.expect(204);
    assert_eq!(status.header("range"), Some(format!("0-{}", first - 1).as_str()), "the session moved");
    let sessions: Vec<_> = files(&data.join("uploads"));
    assert_eq!(sessions.iter().map(|s| s.1).collect::<Vec<_>>(), vec![first as u64], "session files: {sessions:?}");
    let head = http.send(http.request(&admin, Method::HEAD, &format!("/v2/disk/full/blobs/{}", blob.digest))).await;
    assert_eq!(head.status, 404, "a blob whose push failed is visible");

    // Nothing stored before was touched, while the disk is still full.
    let check_stored = || async {
        let got = http.get(&admin, &stored.manifest_path("v1")).await.expect(200);
        assert_eq!(got.body, stored.manifest.as_bytes());
        for b in [&stored.config, &stored.layer, &big] {
            let got = http.get(&admin, &stored.blob_path(&b.digest)).await.expect(200);
            assert_eq!(sha256_digest(&got.body), b.digest, "a stored blob changed");
        }
    };
    check_stored().await;

    // Space comes back: the same session completes, and new pushes work.
    std::fs::remove_file(&filler).expect("delete the filler");
    http.send(patch(first, blob.bytes.len())).await.expect(202);
    let sep = if location.contains('?') { '&' } else { '?' };
    let finish = http.request(&admin, Method::PUT, &format!("{location}{sep}digest={}", blob.digest));
    http.send(finish).await.expect(201);
    let got = http.get(&admin, &format!("/v2/disk/full/blobs/{}", blob.digest)).await.expect(200);
    assert_eq!(sha256_digest(&got.body), blob.digest);
    let again = Blob::new(pseudo_random(2 << 20, 23));
    image::push_blob(&http, &admin, "disk/again", &again).await;
    image::push_image(&http, &admin, "disk/after", "after space was freed").await;
    check_stored().await;
    assert!(reg.log().contains("blob storage is full"), "the full disk is in the log");
    println!(
        "disk full ({backend:?}): monolithic and chunked pushes answered 507, stored content intact, pushes resumed"
    );
}
