//! Blobs that left this cluster's tenant, as the registry reports them in
//! heartbeat answers: deleted from its repositories, or collected. A peer
//! holding a ticket for such a blob issued before it left gets nothing from
//! this agent; the registry issues no new ones (the join is refused), and
//! the blob is dropped from the cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use damselfly_core::p2p::DeletedBlob;
use damselfly_core::Digest;

/// How long a departure is remembered: far longer than a ticket lives.
const REMEMBERED: Duration = Duration::from_secs(86_400);

/// The departures heard of, and where the registry's list was read up to.
#[derive(Default)]
pub struct Departed {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Digest → when it left (registry clock, as tickets' `iat`), and when this agent heard.
    left: HashMap<Digest, (i64, Instant)>,
    cursor: Option<i64>,
}

impl Departed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when a ticket for `digest` issued at `issued_at` opens nothing: the blob left after it was issued.
    pub fn refuses(&self, digest: &Digest, issued_at: i64) -> bool {
        self.lock().left.get(digest).is_some_and(|(at, _)| issued_at <= *at)
    }

    /// The last departure heard of, to send with the next heartbeat.
    pub fn cursor(&self) -> Option<i64> {
        self.lock().cursor
    }

    /// Records a heartbeat's departures; returns the digests to drop from the cache.
    pub fn record(&self, deleted: &[DeletedBlob], cursor: Option<i64>) -> Vec<Digest> {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.left.retain(|_, (_, heard)| now.duration_since(*heard) < REMEMBERED);
        for d in deleted {
            let entry = inner.left.entry(d.digest).or_insert((d.at, now));
            entry.0 = entry.0.max(d.at);
        }
        if cursor.is_some() {
            inner.cursor = cursor;
        }
        deleted.iter().map(|d| d.digest).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_issued_before_the_blob_left_opens_nothing_one_issued_after_does() {
        let departed = Departed::default();
        let blob = Digest::of(b"gone");
        assert!(!departed.refuses(&blob, 100));
        let drop = departed.record(&[DeletedBlob { digest: blob, at: 100 }], Some(7));
        assert_eq!(drop, [blob]);
        assert_eq!(departed.cursor(), Some(7));
        assert!(departed.refuses(&blob, 99) && departed.refuses(&blob, 100));
        assert!(!departed.refuses(&blob, 101), "pushed again later, a new ticket works");
        assert!(!departed.refuses(&Digest::of(b"other"), 1));
        departed.record(&[], None);
        assert_eq!(departed.cursor(), Some(7), "an answer without a cursor keeps the last one");
    }
}
