//! Bandwidth limits: one token bucket per direction, shared by every
//! transfer of the node, so that the agent never takes more of the node's
//! link than it was given (`--upload-rate`, `--download-rate`).
//!
//! Hand-written rather than taken from a rate-limiting crate: the whole of
//! it is a clock, a balance and a sleep, and it awaits on tokio's timer
//! like everything else here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A byte budget refilled at a fixed rate; unlimited when the rate is 0.
pub struct RateLimit {
    bytes_per_sec: u64,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    /// Bytes that may go now; negative is a debt the next taker waits out.
    balance: f64,
    refilled: Instant,
}

impl RateLimit {
    /// A limit of `bytes_per_sec`, or none for 0. A tenth of a second's worth
    /// may go at once, so short transfers are not held back needlessly.
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit { bytes_per_sec, bucket: Mutex::new(Bucket { balance: 0.0, refilled: Instant::now() }) }
    }

    /// Waits until `n` more bytes may go. Takers queue up through the debt:
    /// each waits for what those before it took.
    pub async fn take(&self, n: u64) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let wait = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            b.debit(Instant::now(), n, self.bytes_per_sec as f64)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl Bucket {
    /// Refills for the time since the last debit, takes `n` bytes, and says
    /// how long the taker must wait for the balance to be back at zero.
    fn debit(&mut self, now: Instant, n: u64, rate: f64) -> Duration {
        let burst = rate / 10.0;
        self.balance = (self.balance + now.duration_since(self.refilled).as_secs_f64() * rate).min(burst);
        self.refilled = now;
        self.balance -= n as f64;
        if self.balance >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.balance / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takers_queue_up_behind_the_rate() {
        let start = Instant::now();
        let mut b = Bucket { balance: 0.0, refilled: start };
        // Thirty takers of 100 kB at once, at 1 MB/s: the last waits 3 s.
        let waits: Vec<Duration> = (0..30).map(|_| b.debit(start, 100_000, 1e6)).collect();
        assert_eq!(waits[0], Duration::from_millis(100));
        assert_eq!(waits[29], Duration::from_secs(3));
        // After those 3 s and one more idle second, only a tenth of a second's worth is banked.
        let later = start + Duration::from_secs(4);
        assert_eq!(b.debit(later, 100_000, 1e6), Duration::ZERO);
        assert_eq!(b.debit(later, 100_000, 1e6), Duration::from_millis(100));
    }
}
