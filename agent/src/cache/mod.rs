//! The on-disk cache.
//!
//! ```text
//! <cache-dir>/blobs/<hex>            a complete, verified blob
//! <cache-dir>/partial/<hex>          a blob being fetched, pieces at their offsets
//! <cache-dir>/partial/<hex>.bitmap   one byte per piece: 1 = written and verified
//! <cache-dir>/meta/<hex>.json        size, piece size and piece digests from the join
//! ```
//!
//! Completed blobs survive restarts and are announced again when a client
//! asks for them; partial ones resume from their bitmap, each piece
//! re-verified before it counts. Least recently used completed blobs that
//! nobody is reading are evicted beyond a size limit, and when the
//! filesystem passes its high watermark, down to the low one. A blob's
//! space is claimed whole before its download starts: if the disk is full,
//! the pull passes the bytes through instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use damselfly_core::p2p::BlobLayout;
use damselfly_core::Digest;

use crate::metrics::Metrics;

/// The cache directory.
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    /// Filesystem use (percent) that starts eviction, and where it stops.
    watermarks: (u8, u8),
    metrics: Arc<Metrics>,
    readers: Mutex<HashMap<Digest, usize>>,
}

/// Keeps a completed blob from eviction while it is read.
pub struct InUse {
    cache: Arc<Cache>,
    digest: Digest,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut r = self.cache.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = r.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                r.remove(&self.digest);
            }
        }
    }
}

impl Cache {
    /// Opens (creating) the cache directory and clears what an earlier run
    /// killed at any moment may have left: see [`Cache::sweep`].
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        watermarks: (u8, u8),
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<Cache>> {
        for sub in ["blobs", "partial", "meta"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let cache = Arc::new(Cache {
            dir: dir.to_owned(),
            max_bytes,
            watermarks,
            metrics,
            readers: Mutex::new(HashMap::new()),
        });
        let removed = cache.sweep();
        if removed > 0 {
            tracing::info!(files = removed, "removed what an interrupted run left in the cache");
        }
        cache.update_gauge();
        Ok(cache)
    }

    /// Deletes every file the cache cannot use, before anything reads it;
    /// returns how many. The agent may have been killed at any instant
    /// (`kill -9`, the node losing power is another matter): a completed
    /// blob only ever appears by a rename after its whole digest was
    /// checked, so `blobs/` holds verified bytes; a partial blob is kept,
    /// since each piece its bitmap names is re-read and re-checked before it
    /// counts ([`Cache::resume`]). What goes: half-written temporary files
    /// (`*.tmp`), names that are not digests, a partial blob or bitmap
    /// without its layout, a bitmap without its partial file, a partial blob
    /// whose completed copy is already there (killed between the two steps
    /// of [`Cache::promote`]), a completed blob without a layout or of the
    /// wrong size, and a layout with neither.
    fn sweep(&self) -> usize {
        let mut removed = 0;
        let mut remove = |path: &Path| {
            if std::fs::remove_file(path).is_ok() {
                tracing::debug!(path = %path.display(), "removed from the cache at start");
                removed += 1;
            }
        };
        let parse = |hex: &str| format!("sha256:{hex}").parse::<Digest>().ok();
        let names = |sub: &str| -> Vec<(PathBuf, String)> {
            std::fs::read_dir(self.dir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
                .collect()
        };
        for (path, name) in names("meta") {
            let digest = name.strip_suffix(".json").and_then(parse);
            if digest.is_none_or(|d| self.layout(&d).is_none()) {
                remove(&path);
            }
        }
        for (path, name) in names("blobs") {
            if parse(&name).is_none_or(|d| !self.is_complete(&d)) {
                remove(&path);
            }
        }
        // Bitmaps last: whether one is usable depends on its partial blob having stayed.
        let mut partial = names("partial");
        partial.sort_by_key(|(_, name)| name.ends_with(".bitmap"));
        for (path, name) in partial {
            let usable = match name.strip_suffix(".bitmap") {
                Some(hex) => parse(hex).is_some_and(|d| self.partial_path(&d).exists()),
                None => parse(&name).is_some_and(|d| self.layout(&d).is_some()),
            };
            let superseded = parse(name.trim_end_matches(".bitmap")).is_some_and(|d| self.is_complete(&d));
            if !usable || superseded {
                remove(&path);
            }
        }
        for (path, name) in names("meta") {
            let held = name
                .strip_suffix(".json")
                .and_then(parse)
                .is_some_and(|d| self.complete_path(&d).exists() || self.partial_path(&d).exists());
            if !held {
                remove(&path);
            }
        }
        removed
    }

    /// Path of a completed blob.
    pub fn complete_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs").join(d.hex())
    }

    /// Path of a partial blob.
    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("partial").join(d.hex())
    }

    fn bitmap_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("partial").join(format!("{}.bitmap", d.hex()))
    }

    fn meta_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("meta").join(format!("{}.json", d.hex()))
    }

    /// The layout recorded for a blob.
    pub fn layout(&self, d: &Digest) -> Option<BlobLayout> {
        serde_json::from_slice(&std::fs::read(self.meta_path(d)).ok()?).ok()
    }

    /// Records a blob's layout.
    pub fn save_layout(&self, d: &Digest, layout: &BlobLayout) -> std::io::Result<()> {
        // Whole or not at all, should the agent be killed while it writes.
        let tmp = self.dir.join("meta").join(format!("{}.json.tmp", d.hex()));
        std::fs::write(&tmp, serde_json::to_vec(layout).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, self.meta_path(d))
    }

    /// True if the blob is complete on disk.
    pub fn is_complete(&self, d: &Digest) -> bool {
        let Some(layout) = self.layout(d) else { return false };
        std::fs::metadata(self.complete_path(d)).is_ok_and(|m| m.len() == layout.size())
    }

    /// Marks a completed blob as read now (for LRU) and in use until the guard drops.
    pub fn use_blob(self: &Arc<Self>, d: &Digest) -> InUse {
        *self.readers.lock().unwrap_or_else(|p| p.into_inner()).entry(*d).or_default() += 1;
        if let Ok(f) = std::fs::File::options().append(true).open(self.complete_path(d)) {
            let _ = f.set_modified(SystemTime::now());
        }
        InUse { cache: self.clone(), digest: *d }
    }

    /// The verified pieces of a partial blob, per its bitmap, each re-read and re-checked.
    pub fn resume(&self, d: &Digest, layout: &BlobLayout) -> Vec<bool> {
        let mut have = vec![false; layout.pieces() as usize];
        let (Ok(bitmap), Ok(file)) = (std::fs::read(self.bitmap_path(d)), std::fs::File::open(self.partial_path(d)))
        else {
            return have;
        };
        for (i, slot) in have.iter_mut().enumerate() {
            if bitmap.get(i) == Some(&1) {
                let (start, len) = layout.span(i as u32);
                if let Ok(bytes) = read_at(&file, start, len) {
                    *slot = layout.verify(i as u32, &bytes);
                }
            }
        }
        have
    }

    /// Writes the piece bitmap of a partial blob.
    pub fn save_bitmap(&self, d: &Digest, have: &[bool]) -> std::io::Result<()> {
        let bytes: Vec<u8> = have.iter().map(|&h| u8::from(h)).collect();
        let tmp = self.dir.join("partial").join(format!("{}.bitmap.tmp", d.hex()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(tmp, self.bitmap_path(d))
    }

    /// Moves a verified partial blob to the completed blobs, then evicts if over the limit.
    pub fn promote(&self, d: &Digest) -> std::io::Result<()> {
        std::fs::rename(self.partial_path(d), self.complete_path(d))?;
        let _ = std::fs::remove_file(self.bitmap_path(d));
        self.evict();
        self.update_gauge();
        Ok(())
    }

    /// Throws a partial blob away.
    pub fn discard_partial(&self, d: &Digest) {
        let _ = std::fs::remove_file(self.partial_path(d));
        let _ = std::fs::remove_file(self.bitmap_path(d));
        self.update_gauge();
    }

    /// Drops a blob the registry deleted: its completed file, partial file,
    /// bitmap and layout. A reader streaming it keeps its open file.
    pub fn forget(&self, d: &Digest) {
        let mut dropped = false;
        for path in [self.complete_path(d), self.partial_path(d), self.bitmap_path(d), self.meta_path(d)] {
            dropped |= std::fs::remove_file(path).is_ok();
        }
        if dropped {
            tracing::info!(blob = %d, "dropped from the cache: deleted from the registry");
            self.update_gauge();
        }
    }

    /// Evicts least recently used completed blobs that nobody is reading:
    /// down to the byte limit, and, once the filesystem is fuller than the
    /// high watermark, until it is no fuller than the low one.
    pub fn evict(&self) {
        let (high, low) = self.watermarks;
        let disk_full = self.disk_use().is_some_and(|used| used >= f64::from(high));
        let mut blobs: Vec<(SystemTime, u64, PathBuf, String)> = std::fs::read_dir(self.dir.join("blobs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path(), e.file_name().to_string_lossy().into_owned()))
            })
            .collect();
        let mut total: u64 = blobs.iter().map(|b| b.1).sum();
        let over = |total: u64| {
            (self.max_bytes > 0 && total > self.max_bytes)
                || (disk_full && self.disk_use().is_some_and(|used| used > f64::from(low)))
        };
        if !over(total) {
            return;
        }
        blobs.sort();
        let readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        for (_, len, path, hex) in blobs {
            if !over(total) {
                break;
            }
            let busy = format!("sha256:{hex}").parse::<Digest>().is_ok_and(|d| readers.contains_key(&d));
            if !busy && std::fs::remove_file(&path).is_ok() {
                tracing::info!(blob = hex, bytes = len, "evicted from the cache");
                let _ = std::fs::remove_file(self.dir.join("meta").join(format!("{hex}.json")));
                total -= len;
            }
        }
    }

    /// How full the cache's filesystem is, in percent, as `df` counts it.
    fn disk_use(&self) -> Option<f64> {
        let s = rustix::fs::statvfs(&self.dir).ok()?;
        let used = s.f_blocks.saturating_sub(s.f_bfree);
        let usable = used + s.f_bavail;
        (usable > 0).then(|| used as f64 * 100.0 / usable as f64)
    }

    /// Claims the disk space of a whole blob for its partial file up front,
    /// so that a full disk shows at the start, when the pull can still pass
    /// the bytes through, rather than halfway.
    pub fn reserve(&self, file: &std::fs::File, size: u64) -> std::io::Result<()> {
        self.evict();
        if size == 0 {
            return Ok(());
        }
        rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size).map_err(std::io::Error::from)
    }

    pub fn update_gauge(&self) {
        let mut total = 0u64;
        for sub in ["blobs", "partial"] {
            for e in std::fs::read_dir(self.dir.join(sub)).into_iter().flatten().flatten() {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        self.metrics.cache_bytes.set(total as i64);
    }
}

/// Reads `len` bytes at `offset` of a file, straight into a buffer that is
/// not zeroed first: the file's bytes are the only pass over it.
pub fn read_at(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len as usize);
    while (buf.len() as u64) < len {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The buffer may have had room for more than was asked.
    buf.truncate(len as usize);
    Ok(buf)
}

/// Bytes read at once when a completed blob is streamed out: large enough
/// that a read and its hand-over between threads cost little beside the
/// bytes, small enough that the reads ahead hold little memory.
const STREAM_CHUNK: u64 = 2 << 20;

/// Bytes `[start, end)` of a file as a stream, each chunk read on a blocking
/// thread while the one before is being sent.
pub fn stream_range(
    file: std::fs::File,
    start: u64,
    end: u64,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    use futures_util::StreamExt;
    let file = Arc::new(file);
    futures_util::stream::iter((start..end).step_by(STREAM_CHUNK as usize))
        .map(move |at| {
            let (file, len) = (file.clone(), STREAM_CHUNK.min(end - at));
            async move {
                tokio::task::spawn_blocking(move || read_at(&file, at, len).map(bytes::Bytes::from))
                    .await
                    .map_err(std::io::Error::other)?
            }
        })
        .buffered(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `bytes` in the temporary directory, removed when the test's value drops.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, bytes: &[u8]) -> TempFile {
            let path = std::env::temp_dir().join(format!("damselfly-agent-cache-{name}-{}", std::process::id()));
            std::fs::write(&path, bytes).expect("write");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn read_at_reads_exactly_the_range_and_fails_past_the_end() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let tmp = TempFile::new("read-at", &bytes);
        let file = std::fs::File::open(&tmp.0).expect("open");
        assert_eq!(read_at(&file, 0, 0).expect("empty"), b"");
        assert_eq!(read_at(&file, 12_345, 50_000).expect("middle"), &bytes[12_345..62_345]);
        assert_eq!(read_at(&file, 99_000, 1_000).expect("end"), &bytes[99_000..]);
        assert_eq!(read_at(&file, 99_000, 1_001).map_err(|e| e.kind()), Err(std::io::ErrorKind::UnexpectedEof));
    }

    #[tokio::test]
    async fn a_range_streams_in_order_whatever_its_bounds() {
        use futures_util::TryStreamExt;
        let bytes: Vec<u8> = (0..(5 * STREAM_CHUNK + 7)).map(|i| (i % 253) as u8).collect();
        let tmp = TempFile::new("stream-range", &bytes);
        for (start, end) in [(0, bytes.len() as u64), (3, STREAM_CHUNK * 2 + 1), (STREAM_CHUNK, STREAM_CHUNK), (9, 10)]
        {
            let file = std::fs::File::open(&tmp.0).expect("open");
            let chunks: Vec<bytes::Bytes> = stream_range(file, start, end).try_collect().await.expect("stream");
            assert_eq!(chunks.concat(), &bytes[start as usize..end as usize], "{start}..{end}");
        }
    }
}
