//! Moving the blob's bytes to a file (through `<file>.part`, resumable) or
//! to standard output, hashing as they go; a progress bar on a terminal.

use std::path::PathBuf;

use damselfly_core::{Digest, RepositoryName};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::resolve::{no_permission, registry_error, Blob};

/// Where the bytes go.
pub enum Output {
    /// Standard output: no resume.
    Stdout,
    /// A file, written through `<file>.part`.
    File(PathBuf),
}

impl Output {
    /// `-o` as given, or the file's title, or the digest's hex.
    pub fn choose(flag: Option<&str>, blob: &Blob) -> Result<Output, String> {
        match flag {
            Some("-") => Ok(Output::Stdout),
            Some(path) => Ok(Output::File(path.into())),
            None => {
                // A title is a file name chosen by whoever pushed: never let it climb out of the current directory.
                let title = blob
                    .title
                    .as_deref()
                    .filter(|t| !t.is_empty() && !t.contains('/') && !t.contains('\\') && *t != "." && *t != "..");
                Ok(Output::File(title.map(str::to_owned).unwrap_or_else(|| blob.digest.hex()).into()))
            }
        }
    }
}

fn part_path(path: &std::path::Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".part");
    p.into()
}

/// Fetches `blob` from `base` (an agent's mirror or the registry) into `output`.
pub async fn fetch(
    http: &reqwest::Client,
    base: &str,
    repository: &RepositoryName,
    blob: &Blob,
    token: Option<&str>,
    output: &Output,
) -> Result<(), String> {
    let digest = blob.digest;
    let mut hasher = sha2::Sha256::new();
    let mut offset = match output {
        Output::Stdout => 0,
        Output::File(path) => {
            let part = part_path(path);
            match tokio::fs::File::open(&part).await {
                Ok(mut f) => hash_prefix(&mut f, &mut hasher).await.map_err(|e| format!("{}: {e}", part.display()))?,
                Err(_) => 0,
            }
        }
    };
    if blob.size.is_some_and(|size| offset > size) {
        (offset, hasher) = (0, sha2::Sha256::new());
    }
    if offset > 0 && blob.size == Some(offset) {
        // An earlier run got every byte but stopped before the rename.
        return finish(output, hasher, digest, offset, blob.size).await;
    }
    let url = format!("{base}/v2/{}/blobs/{digest}", repository.as_str());
    let mut response = send(http, &url, token, offset).await?;
    if offset > 0 && response.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
        (offset, hasher) = (0, sha2::Sha256::new());
        response = send(http, &url, token, 0).await?;
    }
    let status = response.status();
    if !status.is_success() {
        let (status, code, message) = registry_error(response).await;
        return Err(match code.as_str() {
            "BLOB_UNKNOWN" | "NAME_UNKNOWN" => {
                format!("blob {digest} is not in {} ({code}); check the digest and the repository", repository.as_str())
            }
            "UNAUTHORIZED" | "DENIED" => no_permission(repository, status, &code, &message),
            _ => format!("fetching blob {digest} answered {code} (HTTP {status}): {message}"),
        });
    }
    if offset > 0 && status != reqwest::StatusCode::PARTIAL_CONTENT {
        // The source ignored the Range: take the whole blob again.
        (offset, hasher) = (0, sha2::Sha256::new());
    }
    // Opened only now, so that a refused request leaves no file behind.
    let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match output {
        Output::Stdout => Box::new(tokio::io::stdout()),
        Output::File(path) => {
            let part = part_path(path);
            let mut options = tokio::fs::OpenOptions::new();
            options.create(true);
            if offset > 0 {
                options.append(true);
            } else {
                options.write(true).truncate(true);
            }
            Box::new(options.open(&part).await.map_err(|e| format!("cannot write {}: {e}", part.display()))?)
        }
    };
    let size = blob.size.or_else(|| response.content_length().map(|l| l + offset));
    if offset > 0 {
        eprintln!("damselfly-agent get: resuming at byte {offset}");
    }
    let bar = progress(size, offset);
    let mut received = offset;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = sink.flush().await;
                bar.abandon();
                return Err(format!(
                    "the transfer of {digest} broke off after {received} bytes ({e}); run the same command again to \
                     resume"
                ));
            }
        };
        hasher.update(&chunk);
        sink.write_all(&chunk).await.map_err(|e| format!("cannot write the output: {e}"))?;
        received += chunk.len() as u64;
        bar.set_position(received);
    }
    sink.flush().await.map_err(|e| format!("cannot write the output: {e}"))?;
    drop(sink);
    bar.finish_and_clear();
    finish(output, hasher, digest, received, size).await
}

/// Checks the digest and size; moves the part into place, or drops it.
async fn finish(
    output: &Output,
    hasher: sha2::Sha256,
    digest: Digest,
    received: u64,
    size: Option<u64>,
) -> Result<(), String> {
    let got = Digest::from_bytes(hasher.finalize().into());
    let wrong = if got != digest {
        Some(format!("the {received} bytes received hash to {got}, not {digest}"))
    } else {
        size.filter(|s| *s != received).map(|s| format!("received {received} bytes, not the {s} announced"))
    };
    match output {
        Output::Stdout => match wrong {
            Some(w) => Err(format!("{w}: the bytes written to standard output are not the file; discard them")),
            None => Ok(()),
        },
        Output::File(path) => {
            let part = part_path(path);
            if let Some(w) = wrong {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(format!("{w}; the partial file was removed, run the command again"));
            }
            tokio::fs::rename(&part, path)
                .await
                .map_err(|e| format!("cannot move {} to {}: {e}", part.display(), path.display()))?;
            Ok(())
        }
    }
}

async fn send(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    offset: u64,
) -> Result<reqwest::Response, String> {
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if offset > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
    }
    req.send().await.map_err(|e| format!("cannot reach {url}: {e}"))
}

/// Feeds what an earlier run wrote into the hasher; returns its length.
async fn hash_prefix(file: &mut tokio::fs::File, hasher: &mut sha2::Sha256) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let read = file.read(&mut buf).await?;
        if read == 0 {
            return Ok(n);
        }
        hasher.update(&buf[..read]);
        n += read as u64;
    }
}

/// A bar with rate and ETA on standard error; indicatif draws nothing when
/// standard error is not a terminal, so pipes and logs stay clean.
fn progress(size: Option<u64>, position: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(size, ProgressDrawTarget::stderr());
    let template = if size.is_some() {
        "{wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}"
    } else {
        "{spinner} {binary_bytes} {binary_bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_position(position);
    bar
}
