//! The download engine: fetches a blob's pieces in parallel from the
//! parents the scheduler names and from the seed, verifies each piece's
//! SHA-256 before it is written, served or announced, and lets readers
//! follow along in order while the rest are still arriving.
//!
//! Every byte of a blob is hashed once on its way through: each piece
//! against its own digest as it arrives (from a peer, a stripe feed or the
//! seed), before it is written, served or announced. Peers are not trusted,
//! and a bad piece must be caught while it is known where it came from; the
//! registry's store is not trusted either (a blob gone bad there fails its
//! pieces' digests at the seed). This pass is the only one the client's
//! bytes wait for, piece by piece.
//!
//! No pass over the whole blob follows it. The piece digests come from the
//! registry, which computed them over bytes that matched the blob's own
//! digest in the same pass (as the upload was hashed, or when it cut the
//! stored blob again, see the registry's `p2p::layout`), and a blob's
//! pieces cover it end to end ([`BlobLayout`]): pieces that each match
//! their digest are that blob. A second pass, which the agent made until
//! then, cost a fifth of its CPU on a cold blob and caught nothing the first
//! does not. The cache serves a completed blob as it is (it only ever holds
//! one whose every piece was verified), and a restart re-checks only the
//! pieces of a partial blob it resumes.

mod feed;
mod fetch;
mod seed;
mod slots;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use damselfly_agent::schedule;
use damselfly_core::p2p::{BlobLayout, JoinResponse};
use damselfly_core::Digest;
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

/// Bytes of a download's newest stored pieces kept in memory (at least one
/// piece): the client following the download and a peer asking for a
/// piece just announced take them from here, rather than read them back
/// from the file they were just written to. A few pieces: they trail the
/// newest by about one. Each kept piece is memory the allocator cannot hand
/// to the next; at 16 MiB per download, 16 agents of one machine pulling 4
/// layers each faulted in about 40 % more fresh pages than they did without
/// (a 64 MiB image, `perf stat -e page-faults`).
const RECENT_BYTES: u64 = 4 << 20;

/// Least time between two saves of a download's piece bitmap. A save is a
/// file written and renamed, and a piece a millisecond on a fast link; a
/// restart only resumes fewer pieces if the last ones went unsaved, since
/// every save names pieces already written.
const BITMAP_EVERY: Duration = Duration::from_millis(100);

/// What a failed answer of a source means for the download: the
/// registry's seed says in its OCI error body's code whether it refused the
/// ticket (`DENIED`: expired, or issued to an agent id it no longer counts
/// in the swarm; `UNAUTHORIZED`: none), which a new ticket mends; any other
/// answer, a peer's plain-text refusal included, is broken.
async fn failed_answer(r: reqwest::Response) -> schedule::Failure {
    use damselfly_core::{ErrorBody, ErrorCode};
    let status = r.status();
    if !matches!(status, reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN) {
        return schedule::Failure::Broken(format!("answered {status}"));
    }
    let body = tokio::time::timeout(STALL_TIMEOUT, r.json::<ErrorBody>()).await.ok().and_then(|b| b.ok());
    let body = body.unwrap_or_default();
    match body.code() {
        Some(ErrorCode::Denied | ErrorCode::Unauthorized) => {
            let why = body.errors.first().map(|e| e.message.as_str()).unwrap_or_default();
            schedule::Failure::TicketRefused(format!("answered {status}: {why}"))
        }
        _ => schedule::Failure::Broken(format!("answered {status}")),
    }
}

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

impl Book {
    /// Every piece is stored, each verified against its digest: the blob is whole.
    fn whole(&self) -> bool {
        self.have.iter().all(|h| *h)
    }
}

/// One blob being fetched, shared by the clients and peers reading it.
pub struct Download {
    /// The blob.
    pub digest: Digest,
    /// Its layout.
    pub layout: BlobLayout,
    file: Arc<std::fs::File>,
    book: Mutex<Book>,
    /// The newest stored pieces, oldest first (see [`RECENT_BYTES`]).
    recent: Mutex<VecDeque<(u32, Bytes)>>,
    /// Held while the piece bitmap is saved, with when it last was.
    saving: Mutex<Option<Instant>>,
    changed: watch::Sender<u64>,
}

impl Download {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, VecDeque<(u32, Bytes)>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Waits until every piece of the blob is stored, each verified (see
    /// the module's comment: together they are the blob); `Err` if the
    /// download failed first.
    pub async fn wait_verified(&self) -> Result<()> {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let book = self.book();
                if book.whole() {
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

    /// Writes a verified piece, keeps it among the recent ones, marks it
    /// held and, at most every [`BITMAP_EVERY`], saves the bitmap that lets
    /// a restart resume. Blocking: a file write. Creating and renaming the
    /// bitmap can wait on the filesystem's journal for a second while a lot
    /// of data is being written back, and on the runtime's own threads that
    /// wait would stall every upload of the node.
    fn store_blocking(&self, cache: &Cache, i: u32, bytes: Bytes) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let (offset, _) = self.layout.span(i);
        self.file.write_all_at(&bytes, offset)?;
        {
            let mut recent = self.recent();
            recent.push_back((i, bytes));
            let mut held: u64 = recent.iter().map(|(_, b)| b.len() as u64).sum();
            while recent.len() > 1 && held > RECENT_BYTES {
                held -= recent.pop_front().map_or(0, |(_, b)| b.len() as u64);
            }
        }
        self.book().have[i as usize] = true;
        self.save_bitmap(cache, false);
        Ok(())
    }

    /// Saves the piece bitmap as it is now, unless it was saved less than
    /// [`BITMAP_EVERY`] ago and `now` is false. One save at a time, each of
    /// the bitmap as it is then, so that a slow save never puts back an
    /// older one. A restart checks every piece the bitmap names anyway.
    fn save_bitmap(&self, cache: &Cache, now: bool) {
        let mut saved = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        if !now && saved.is_some_and(|at| at.elapsed() < BITMAP_EVERY) {
            return;
        }
        let have = self.book().have.clone();
        let _ = cache.save_bitmap(&self.digest, &have);
        *saved = Some(Instant::now());
    }

    /// Piece `i` if it is among the recent ones.
    fn recent_piece(&self, i: u32) -> Option<Bytes> {
        self.recent().iter().rev().find(|(j, _)| *j == i).map(|(_, b)| b.clone())
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

    /// Reads verified bytes (the caller waited for their pieces): from
    /// memory if they lie in one of the recent pieces, else from the file.
    pub async fn read(&self, offset: u64, len: u64) -> std::io::Result<Bytes> {
        let i = self.layout.geometry().piece_at(offset);
        let (start, piece_len) = self.layout.span(i);
        if offset + len <= start + piece_len {
            if let Some(piece) = self.recent_piece(i) {
                let from = (offset - start) as usize;
                return Ok(piece.slice(from..from + len as usize));
            }
        }
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
    /// before the whole blob is moved into the cache.
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
        if self.cache.is_complete(&digest) {
            // Verified when it was kept. The registry may cut it into pieces
            // of another size now: the bytes are the same, only where the
            // pieces lie changes.
            if self.cache.layout(&digest).is_some_and(|kept| kept.size() == layout.size() && kept != layout) {
                self.cache.save_layout(&digest, &layout).map_err(cache_error)?;
            }
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
            recent: Mutex::new(VecDeque::new()),
            saving: Mutex::new(None),
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
                    // What was stored since the last save, for a later pull to resume from.
                    let (failed, cache) = (d.clone(), engine.cache.clone());
                    let _ = tokio::task::spawn_blocking(move || failed.save_bitmap(&cache, true)).await;
                    Outcome::Failed
                }
            };
            engine.downloads().remove(&d.digest);
            d.set_outcome(outcome);
            engine.metrics.active_downloads.dec();
        });
        Ok(Some(download))
    }

    /// Moves the blob, every piece of it stored and verified, to the completed ones.
    async fn finish(&self, d: &Arc<Download>) -> Outcome {
        let size = d.layout.size();
        match self.promote(d).await {
            Ok(()) => tracing::info!(digest = %d.digest, size, "blob complete"),
            Err(e) => tracing::warn!(digest = %d.digest, error = %e, "could not move the blob into the cache"),
        }
        Outcome::Complete
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

    /// Writes a verified piece and marks it held (see [`Download::store_blocking`]).
    async fn store(&self, d: &Arc<Download>, i: u32, bytes: Bytes) -> std::io::Result<()> {
        store(&self.cache, d, i, bytes).await
    }
}

/// Writes a verified piece and marks it held, off the runtime's threads,
/// and tells the download's readers.
async fn store(cache: &Arc<Cache>, d: &Arc<Download>, i: u32, bytes: Bytes) -> std::io::Result<()> {
    let (download, cache) = (d.clone(), cache.clone());
    tokio::task::spawn_blocking(move || download.store_blocking(&cache, i, bytes))
        .await
        .map_err(std::io::Error::other)??;
    d.changed.send_modify(|v| *v += 1);
    Ok(())
}
