//! Brute-force protection for the token endpoint and the console's sign-in:
//! failed logins are counted per username and per client address in a
//! sliding window; past the limit every attempt is refused with `429` until
//! the window has passed.
//!
//! The failures live in the database (`login_failures`), so that the limit
//! holds for all replicas together: behind a round-robin load balancer a
//! guesser gets the limit, not the limit times the number of replicas.

use std::time::Duration;

use crate::metadata::Db;

/// The limit, and where failures are counted.
pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
}

/// Where the keys of one login attempt stand.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// `Some(wait)` if a key is over the limit: how long until it may try again.
    pub blocked: Option<Duration>,
    /// Some key has failures in the window (a success then clears the login name's).
    pub failures: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl LoginLimiter {
    /// At most `max_failures` failures per key within `window`.
    pub fn new(max_failures: usize, window: Duration) -> LoginLimiter {
        LoginLimiter { max_failures, window }
    }

    /// Where `keys` stand now.
    pub async fn standing(&self, db: &Db, keys: &[&str]) -> Result<Standing, sqlx::Error> {
        let now = now_ms();
        let window = self.window.as_millis() as i64;
        let recent = db.login_failures().recent(keys, now - window).await?;
        let mut standing = Standing { blocked: None, failures: !recent.is_empty() };
        for (_, count, oldest) in recent {
            if count >= self.max_failures {
                let until = Duration::from_millis((oldest + window - now).max(0) as u64);
                standing.blocked = Some(standing.blocked.map_or(until, |w: Duration| w.max(until)));
            }
        }
        Ok(standing)
    }

    /// Counts a failure against every key.
    pub async fn failed(&self, db: &Db, keys: &[&str]) -> Result<(), sqlx::Error> {
        let now = now_ms();
        db.login_failures().record(keys, now, now - self.window.as_millis() as i64).await
    }

    /// A success clears the username's counter (not the address's).
    pub async fn succeeded(&self, db: &Db, key: &str) -> Result<(), sqlx::Error> {
        db.login_failures().clear(key).await
    }
}
