//! The download engine: fetches a blob's pieces in parallel from the
//! parents the scheduler names and from the seed, verifies each piece's
//! SHA-256 before it is written, served or announced, and lets readers
//! follow along in order while the rest are still arriving.
//!
//! Every byte of a blob is hashed twice on its way through, and no more,
//! on two threads so that one pass never waits for the other:
//!
//! 1. each piece against its own digest as it arrives (from a peer, a
//!    stripe feed or the seed), before it is written, served or announced:
//!    peers are not trusted, and a bad piece must be caught while it is
//!    known where it came from. This pass is the only one the client's
//!    bytes wait for, piece by piece.
//! 2. the whole blob against its digest, over the pieces in order as they
//!    are stored, by a checker that runs beside the download
//!    ([`Download::check_soon`]), from the pieces still held in memory
//!    ([`RECENT_BYTES`]) and read back from the page cache otherwise: the
//!    piece digests come from the registry's records, and the blob's own
//!    digest, the name the client asked for, is what says that those
//!    records and the bytes put together are the blob. The client's stream
//!    withholds its last bytes, and the cache the blob, until this check
//!    passed; it trails the first pass by about one piece.
//!
//! Nothing else hashes a blob's bytes: the cache serves a completed blob as
//! it is (it only ever holds one that passed both), and a restart re-checks
//! only the pieces of a partial blob it resumes.

mod feed;
mod fetch;
mod seed;
mod slots;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Bytes of a download's newest stored pieces kept in memory (at least one
/// piece): the client following the download, the whole-blob check and a
/// peer asking for a piece just announced take them from here, rather than
/// read them back from the file they were just written to. A few pieces:
/// they trail the newest by about one. Each kept piece is memory the
/// allocator cannot hand to the next; at 16 MiB per download, 16 agents of
/// one machine pulling 4 layers each faulted in about 40 % more fresh pages
/// than they did without (a 64 MiB image, `perf stat -e page-faults`).
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
    /// Whether the whole blob matched its digest, once every piece is stored.
    verdict: Option<bool>,
}

/// The blob's digest, computed over the pieces in order as they are stored.
struct BlobCheck {
    /// The next piece to hash.
    next: u32,
    hasher: sha2::Sha256,
}

/// One blob being fetched, shared by the clients and peers reading it.
pub struct Download {
    /// The blob.
    pub digest: Digest,
    /// Its layout.
    pub layout: BlobLayout,
    file: Arc<std::fs::File>,
    book: Mutex<Book>,
    check: Mutex<BlobCheck>,
    /// A checker is running or about to ([`Download::check_soon`]).
    checking: AtomicBool,
    /// A piece was stored since the running checker last looked.
    unchecked: AtomicBool,
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

    /// Waits until the whole blob has matched its digest; `Err` if it did not, or the download failed.
    pub async fn wait_verified(&self) -> Result<()> {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let book = self.book();
                match book.verdict {
                    Some(true) => return Ok(()),
                    Some(false) => return Err(Error::DownloadFailed),
                    None if book.outcome == Outcome::Failed => return Err(Error::DownloadFailed),
                    None => {}
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

    /// Has the whole-blob check carry on over the pieces now stored, on a
    /// blocking thread of its own, so that neither the piece that was just
    /// stored nor the next one to arrive waits for it. At most one checker
    /// runs per download; a piece stored while it runs is picked up by it
    /// or by the next.
    fn check_soon(self: &Arc<Self>) {
        self.unchecked.store(true, Ordering::SeqCst);
        if self.checking.swap(true, Ordering::SeqCst) {
            return;
        }
        let d = self.clone();
        tokio::task::spawn_blocking(move || loop {
            d.unchecked.store(false, Ordering::SeqCst);
            if let Err(e) = d.check_in_order() {
                tracing::error!(digest = %d.digest, error = %e, "cannot read the blob back to check it");
                d.book().verdict = Some(false);
            }
            d.changed.send_modify(|v| *v += 1);
            d.checking.store(false, Ordering::SeqCst);
            // A piece stored after this checker last looked, whose own call found it still running.
            if !d.unchecked.load(Ordering::SeqCst) || d.checking.swap(true, Ordering::SeqCst) {
                break;
            }
        });
    }

    /// Hashes the pieces held from the check's next one on, each from
    /// memory if it is still among the recent ones, read back from the file
    /// otherwise, and gives the verdict once the last is hashed.
    fn check_in_order(&self) -> std::io::Result<()> {
        let mut check = self.check.lock().unwrap_or_else(|p| p.into_inner());
        let pieces = self.layout.pieces();
        if check.next >= pieces && pieces > 0 {
            return Ok(());
        }
        while check.next < pieces && self.has(check.next) {
            let i = check.next;
            match self.recent_piece(i) {
                Some(bytes) => check.hasher.update(&bytes),
                None => {
                    let (offset, len) = self.layout.span(i);
                    check.hasher.update(read_at(&self.file, offset, len)?);
                }
            }
            check.next += 1;
        }
        let mut book = self.book();
        if check.next == pieces && book.verdict.is_none() {
            let whole = hex::encode(std::mem::take(&mut check.hasher).finalize());
            book.verdict = Some(whole == self.digest.hex());
        }
        Ok(())
    }

    /// Piece `i` if it is among the recent ones.
    fn recent_piece(&self, i: u32) -> Option<Bytes> {
        self.recent().iter().rev().find(|(j, _)| *j == i).map(|(_, b)| b.clone())
    }

    /// Waits until the whole-blob check has given its verdict.
    async fn verdict(&self) -> bool {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(verdict) = self.book().verdict {
                return verdict;
            }
            if rx.changed().await.is_err() {
                return false;
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
            book: Mutex::new(Book { have, outcome: Outcome::Running, verdict: None }),
            check: Mutex::new(BlobCheck { next: 0, hasher: sha2::Sha256::new() }),
            checking: AtomicBool::new(false),
            unchecked: AtomicBool::new(false),
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
            // Pieces resumed from an earlier run, and an empty blob, are checked before any arrives.
            d.check_soon();
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

    /// Moves the blob to the completed ones once it matched its digest (the
    /// checker gives the verdict a moment after the last piece was stored;
    /// see the module's comment); discards it if it did not.
    async fn finish(&self, d: &Arc<Download>) -> Outcome {
        let size = d.layout.size();
        match d.verdict().await {
            true => {}
            false => {
                tracing::error!(digest = %d.digest, "the assembled blob does not match its digest; discarding it");
                self.cache.discard_partial(&d.digest);
                return Outcome::Failed;
            }
        }
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
/// tells the download's readers, and has the whole-blob check take it in.
async fn store(cache: &Arc<Cache>, d: &Arc<Download>, i: u32, bytes: Bytes) -> std::io::Result<()> {
    let (download, cache) = (d.clone(), cache.clone());
    tokio::task::spawn_blocking(move || download.store_blocking(&cache, i, bytes))
        .await
        .map_err(std::io::Error::other)??;
    d.changed.send_modify(|v| *v += 1);
    d.check_soon();
    Ok(())
}
