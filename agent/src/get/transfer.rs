//! Moving the blob's bytes to a file (through `<file>.part`, resumable) or
//! to standard output, hashing as they go; a progress bar on a terminal.

use std::path::PathBuf;

use damselfly_core::{Digest, RepositoryName};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::resolve::{refused_pull, Blob};
use crate::error::{Error, Mismatch, Refusal, Result};

/// Where the bytes go.
pub enum Output {
    /// Standard output: no resume.
    Stdout,
    /// A file, written through `<file>.part`.
    File(PathBuf),
}

impl Output {
    /// `-o` as given, or the file's title, or the digest's hex.
    pub fn choose(flag: Option<&str>, blob: &Blob) -> Output {
        match flag {
            Some("-") => Output::Stdout,
            Some(path) => Output::File(path.into()),
            None => {
                // A title is a file name chosen by whoever pushed: never let it climb out of the current directory.
                let title = blob
                    .title
                    .as_deref()
                    .filter(|t| !t.is_empty() && !t.contains('/') && !t.contains('\\') && *t != "." && *t != "..");
                Output::File(title.map(str::to_owned).unwrap_or_else(|| blob.digest.hex()).into())
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
) -> Result<()> {
    let digest = blob.digest;
    let mut hasher = sha2::Sha256::new();
    let mut offset = match output {
        Output::Stdout => 0,
        Output::File(path) => {
            let part = part_path(path);
            match tokio::fs::File::open(&part).await {
                Ok(mut f) => hash_prefix(&mut f, &mut hasher).await.map_err(|source| Error::File {
                    action: "read".into(),
                    path: part.clone(),
                    source,
                })?,
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
        let refusal = Refusal::read(response).await;
        return Err(match refusal.code.as_str() {
            "BLOB_UNKNOWN" | "NAME_UNKNOWN" => Error::BlobUnknown { digest, repository: repository.clone(), refusal },
            _ if refused_pull(&refusal) => Error::NoPermission { repository: repository.clone(), refusal },
            _ => Error::BlobRefused { digest, refusal },
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
            Box::new(options.open(&part).await.map_err(|source| Error::File {
                action: "write".into(),
                path: part.clone(),
                source,
            })?)
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
            Err(source) => {
                let _ = sink.flush().await;
                bar.abandon();
                return Err(Error::BrokeOff { digest, received, source });
            }
        };
        hasher.update(&chunk);
        sink.write_all(&chunk).await.map_err(Error::Output)?;
        received += chunk.len() as u64;
        bar.set_position(received);
    }
    sink.flush().await.map_err(Error::Output)?;
    drop(sink);
    bar.finish_and_clear();
    finish(output, hasher, digest, received, size).await
}

/// Checks the digest and size; moves the part into place, or drops it.
async fn finish(output: &Output, hasher: sha2::Sha256, digest: Digest, received: u64, size: Option<u64>) -> Result<()> {
    let got = Digest::from_bytes(hasher.finalize().into());
    let wrong = if got != digest {
        Some(Mismatch::Digest { received, got, want: digest })
    } else {
        size.filter(|s| *s != received).map(|announced| Mismatch::Size { received, announced })
    };
    match output {
        Output::Stdout => match wrong {
            Some(w) => Err(Error::WrongOnStdout(w)),
            None => Ok(()),
        },
        Output::File(path) => {
            let part = part_path(path);
            if let Some(w) = wrong {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(Error::WrongFile(w));
            }
            tokio::fs::rename(&part, path).await.map_err(|source| Error::File {
                action: format!("move {} to", part.display()),
                path: path.clone(),
                source,
            })
        }
    }
}

async fn send(http: &reqwest::Client, url: &str, token: Option<&str>, offset: u64) -> Result<reqwest::Response> {
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if offset > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
    }
    req.send().await.map_err(|source| Error::CannotReach { what: "the blob", url: url.to_owned(), source })
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
