//! The download engine: fetches a blob's pieces in parallel from the
//! parents the scheduler names and from the seed, verifies each piece's
//! SHA-256 before it is written, served or announced, and lets readers
//! follow along in order while the rest are still arriving.

mod feed;
mod fetch;
mod slots;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use damselfly_agent::schedule;
use damselfly_core::p2p::{BlobLayout, JoinResponse};
use damselfly_core::Digest;
use sha2::Digest as _;
use tokio::sync::watch;

use crate::cache::{read_at, Cache};
use crate::config::Config;
use crate::error::{Error, Report, Result};
use crate::metrics::Metrics;
use crate::rate::RateLimit;
use crate::supernode::Supernode;

/// A source that sends no byte of a piece for this long has stalled. A slow
/// but moving transfer is left alone: cutting it would throw away what was
/// sent and fetch it again.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Running,
    Complete,
    Failed,
}

struct Book {
    have: Vec<bool>,
    outcome: Outcome,
}

/// One blob being fetched, shared by the clients and peers reading it.
pub struct Download {
    /// The blob.
    pub digest: Digest,
    /// Its layout.
    pub layout: BlobLayout,
    file: Arc<std::fs::File>,
    book: Mutex<Book>,
    /// Held while the piece bitmap is saved.
    saving: Mutex<()>,
    changed: watch::Sender<u64>,
}

impl Download {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn have_list(&self) -> Vec<u32> {
        self.book().have.iter().enumerate().filter(|(_, h)| **h).map(|(i, _)| i as u32).collect()
    }

    fn has(&self, i: u32) -> bool {
        self.book().have.get(i as usize) == Some(&true)
    }

    fn have_bits(&self) -> Vec<bool> {
        self.book().have.clone()
    }

    fn set_outcome(&self, outcome: Outcome) {
        self.book().outcome = outcome;
        self.changed.send_modify(|v| *v += 1);
    }

    /// Waits until piece `i` is written and verified.
    pub async fn wait_piece(&self, i: u32) -> Result<()> {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let book = self.book();
                if book.have.get(i as usize) == Some(&true) {
                    return Ok(());
                }
                if book.outcome == Outcome::Failed {
                    return Err(Error::DownloadFailed);
                }
            }
            if rx.changed().await.is_err() {
                return Err(Error::DownloadFailed);
            }
        }
    }

    /// Waits until the download ends; `Ok` once the whole blob is verified and in the cache.
    pub async fn wait_done(&self) -> Result<()> {
        let mut rx = self.changed.subscribe();
        loop {
            match self.book().outcome {
                Outcome::Complete => return Ok(()),
                Outcome::Failed => return Err(Error::DownloadFailed),
                Outcome::Running => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::DownloadFailed);
            }
        }
    }

    /// Reads verified bytes (the caller waited for their pieces).
    pub async fn read(&self, offset: u64, len: u64) -> std::io::Result<Bytes> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || read_at(&file, offset, len).map(Bytes::from))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Piece `i`, if it is held.
    pub async fn piece(&self, i: u32) -> Option<Bytes> {
        if !self.has(i) {
            return None;
        }
        let (start, len) = self.layout.span(i);
        self.read(start, len).await.ok()
    }
}

/// Every download in progress.
pub struct Engine {
    cache: Arc<Cache>,
    supernode: Arc<Supernode>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    downloads: Mutex<HashMap<Digest, Arc<Download>>>,
    /// Piece fetches in flight on this node, across all downloads: more
    /// would only split the node's link into transfers that each crawl.
    fetch_slots: Arc<slots::FetchSlots>,
    /// The node's budget for piece downloads.
    download_limit: Arc<RateLimit>,
}

impl Engine {
    /// The engine over the cache.
    pub fn new(
        cache: Arc<Cache>,
        supernode: Arc<Supernode>,
        metrics: Arc<Metrics>,
        http: reqwest::Client,
        config: &Config,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            cache,
            supernode,
            metrics,
            http,
            downloads: Mutex::new(HashMap::new()),
            fetch_slots: slots::FetchSlots::new(config.fetch_slots as usize),
            download_limit: Arc::new(RateLimit::new(config.download_rate)),
        })
    }

    /// The HTTP client (follows redirects), for pass-through.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    fn downloads(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Download>>> {
        self.downloads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every download now running has ended: verified and
    /// moved into the cache, or given up. A one-shot peer waits for this
    /// before it exits, because its reader has the last byte a moment
    /// before the whole blob is checked and kept.
    pub async fn settle(&self) {
        let running: Vec<Arc<Download>> = self.downloads().values().cloned().collect();
        for d in running {
            let _ = d.wait_done().await;
        }
    }

    /// The pieces held of a blob, for a join.
    pub fn have(&self, digest: &Digest) -> Vec<u32> {
        if let Some(d) = self.downloads().get(digest) {
            return d.have_list();
        }
        match self.cache.layout(digest) {
            Some(layout) if self.cache.is_complete(digest) => (0..layout.pieces()).collect(),
            _ => Vec::new(),
        }
    }

    /// The running download of a blob, starting one from the join's plan;
    /// `None` if the blob is complete in the cache.
    pub fn start(
        self: &Arc<Self>,
        repository: &str,
        digest: Digest,
        client_token: Option<String>,
        plan: JoinResponse,
    ) -> Result<Option<Arc<Download>>> {
        let mut downloads = self.downloads();
        if let Some(d) = downloads.get(&digest) {
            return Ok(Some(d.clone()));
        }
        let layout = BlobLayout::from_join(&plan).map_err(|source| Error::Layout { digest, source })?;
        let cache_error = |source| Error::Cache { digest, source };
        if self.cache.layout(&digest).as_ref() == Some(&layout) && self.cache.is_complete(&digest) {
            return Ok(None);
        }
        let resumable = self.cache.layout(&digest).as_ref() == Some(&layout);
        let have = if resumable { self.cache.resume(&digest, &layout) } else { vec![false; layout.pieces() as usize] };
        if !resumable {
            self.cache.discard_partial(&digest);
            self.cache.save_layout(&digest, &layout).map_err(cache_error)?;
        }
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.cache.partial_path(&digest))
            .map_err(cache_error)?;
        file.set_len(layout.size()).map_err(cache_error)?;
        if let Err(e) = self.cache.reserve(&file, layout.size()) {
            drop(file);
            self.cache.discard_partial(&digest);
            return Err(cache_error(e));
        }
        let resumed = have.iter().filter(|h| **h).count();
        if resumed > 0 {
            tracing::info!(%digest, pieces = resumed, "resuming a partial blob");
        }
        let download = Arc::new(Download {
            digest,
            layout,
            file: Arc::new(file),
            book: Mutex::new(Book { have, outcome: Outcome::Running }),
            saving: Mutex::new(()),
            changed: watch::channel(0).0,
        });
        downloads.insert(digest, download.clone());
        drop(downloads);
        let engine = self.clone();
        let d = download.clone();
        let repository = repository.to_owned();
        tokio::spawn(async move {
            engine.metrics.active_downloads.inc();
            let outcome = match engine.fetch_all(&d, plan, &repository, client_token.as_deref()).await {
                Ok(()) => engine.finish(&d).await,
                Err(e) => {
                    tracing::warn!(digest = %d.digest, error = %Report(&e), "download failed");
                    Outcome::Failed
                }
            };
            engine.downloads().remove(&d.digest);
            d.set_outcome(outcome);
            engine.metrics.active_downloads.dec();
        });
        Ok(Some(download))
    }

    /// Checks the whole blob against its digest and moves it to the completed blobs.
    async fn finish(&self, d: &Arc<Download>) -> Outcome {
        let file = d.file.clone();
        let size = d.layout.size();
        let hash = tokio::task::spawn_blocking(move || {
            let mut hasher = sha2::Sha256::new();
            let mut offset = 0u64;
            while offset < size {
                let len = (size - offset).min(1 << 20);
                hasher.update(read_at(&file, offset, len)?);
                offset += len;
            }
            Ok::<_, std::io::Error>(hex::encode(hasher.finalize()))
        })
        .await;
        match hash {
            Ok(Ok(h)) if h == d.digest.hex() => match self.promote(d).await {
                Ok(()) => {
                    tracing::info!(digest = %d.digest, size, "blob complete");
                    Outcome::Complete
                }
                Err(e) => {
                    tracing::warn!(digest = %d.digest, error = %e, "could not move the blob into the cache");
                    Outcome::Complete
                }
            },
            _ => {
                tracing::error!(digest = %d.digest, "the assembled blob does not match its digest; discarding it");
                self.cache.discard_partial(&d.digest);
                Outcome::Failed
            }
        }
    }

    /// Moves the verified blob among the completed ones (a rename, then
    /// eviction), off the runtime's threads, after any bitmap save.
    async fn promote(&self, d: &Arc<Download>) -> std::io::Result<()> {
        let (download, cache) = (d.clone(), self.cache.clone());
        tokio::task::spawn_blocking(move || {
            let _saving = download.saving.lock().unwrap_or_else(|p| p.into_inner());
            cache.promote(&download.digest)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// How many pieces a blob has, if it is being fetched or complete in the cache.
    pub fn pieces_of(&self, digest: &Digest) -> Option<u32> {
        if let Some(d) = self.downloads().get(digest) {
            return Some(d.layout.pieces());
        }
        self.cache.layout(digest).filter(|_| self.cache.is_complete(digest)).map(|l| l.pieces())
    }

    /// The first of `wanted` that this agent holds, waiting until it holds
    /// one; `None` if the blob is neither being fetched nor complete, or its
    /// download failed.
    pub async fn first_held(&self, digest: &Digest, wanted: &[u32]) -> Option<u32> {
        loop {
            let running = self.downloads().get(digest).cloned();
            let Some(d) = running else {
                return wanted.first().copied().filter(|_| self.cache.is_complete(digest));
            };
            let mut changed = d.changed.subscribe();
            {
                let book = d.book();
                if let Some(i) = wanted.iter().copied().find(|&i| book.have.get(i as usize) == Some(&true)) {
                    return Some(i);
                }
                if book.outcome == Outcome::Failed {
                    return None;
                }
            }
            changed.changed().await.ok()?;
        }
    }

    /// A piece for a peer, from a download in progress or a completed blob.
    pub async fn piece_for_peer(&self, digest: &Digest, i: u32) -> Option<Bytes> {
        let running = self.downloads().get(digest).cloned();
        if let Some(d) = running {
            return d.piece(i).await;
        }
        let layout = self.cache.layout(digest)?;
        if i >= layout.pieces() || !self.cache.is_complete(digest) {
            return None;
        }
        let (start, len) = layout.span(i);
        let path = self.cache.complete_path(digest);
        tokio::task::spawn_blocking(move || read_at(&std::fs::File::open(path)?, start, len).map(Bytes::from))
            .await
            .ok()?
            .ok()
    }

    /// Writes a verified piece and marks it held. The bitmap that lets a
    /// restart resume is saved in the same blocking task: creating and
    /// renaming a file can wait on the filesystem's journal for a second
    /// while a lot of data is being written back, and on the runtime's own
    /// threads that wait would stall every upload of this node with it.
    async fn store(&self, d: &Arc<Download>, i: u32, bytes: Bytes) -> std::io::Result<()> {
        let (offset, _) = d.layout.span(i);
        let (download, cache) = (d.clone(), self.cache.clone());
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            download.file.write_all_at(&bytes, offset)?;
            download.book().have[i as usize] = true;
            // One save at a time, each of the bitmap as it is then, so that
            // a slow save never puts back an older one. A restart checks
            // every piece the bitmap names anyway.
            let _saving = download.saving.lock().unwrap_or_else(|p| p.into_inner());
            let have = download.book().have.clone();
            let _ = cache.save_bitmap(&download.digest, &have);
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(std::io::Error::other)??;
        d.changed.send_modify(|v| *v += 1);
        Ok(())
    }
}
