//! Brute-force protection for the token endpoint: failed logins are counted
//! per username and per client address in a sliding window; past the limit
//! every attempt is refused with `429` until the window has passed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failure counters keyed by username or address.
pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginLimiter {
    /// At most `max_failures` failures per key within `window`.
    pub fn new(max_failures: usize, window: Duration) -> LoginLimiter {
        LoginLimiter { max_failures, window, failures: Mutex::new(HashMap::new()) }
    }

    /// `Some(wait)` if any key is over the limit: how long until it may try again.
    pub fn blocked(&self, keys: &[&str]) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = None;
        for key in keys {
            if let Some(times) = map.get_mut(*key) {
                times.retain(|t| now.duration_since(*t) < self.window);
                if times.len() >= self.max_failures {
                    let oldest = times[0];
                    let until = self.window.saturating_sub(now.duration_since(oldest));
                    wait = Some(wait.map_or(until, |w: Duration| w.max(until)));
                }
            }
        }
        wait
    }

    /// Counts a failure against every key.
    pub fn failed(&self, keys: &[&str]) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            // Bound memory under a spray of random names: forget expired entries.
            map.retain(|_, times| times.last().is_some_and(|t| now.duration_since(*t) < self.window));
        }
        for key in keys {
            map.entry((*key).to_owned()).or_default().push(now);
        }
    }

    /// A success clears the username's counter (not the address's).
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_within_the_window() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            l.failed(&["user:a", "ip:1"]);
        }
        assert!(l.blocked(&["user:a", "ip:1"]).is_none());
        l.failed(&["user:a", "ip:1"]);
        let wait = l.blocked(&["user:b", "ip:1"]).expect("address blocked");
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(50));
        l.succeeded("user:a");
        assert!(l.blocked(&["user:a"]).is_none());
    }
}
