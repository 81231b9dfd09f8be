//! Brute-force protection for the token endpoint and the console's sign-in:
//! failed logins are counted per username and per client address in a
//! sliding window; past the limit every attempt is refused with `429` until
//! the window has passed.
//!
//! The failures live in the database (`login_failures`), so that the limit
//! holds for all replicas together: behind a round-robin load balancer a
//! guesser gets the limit, not the limit times the number of replicas.
//! Counting a login's failures takes a query, which a client sending Basic
//! credentials with every request would pay each time; so each replica
//! keeps the set of names and addresses with any failure in the window,
//! read again at most every [`WATCH_REFRESH`], and asks the database only
//! about those. A failure made through another replica counts here within
//! that bound; this replica's own failures count at once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::metadata::Db;

/// How stale a replica's view of failures made through the others may be.
pub const WATCH_REFRESH: Duration = Duration::from_millis(500);
/// Past this many names and addresses with failures (a spray of guesses),
/// every login asks the database.
const WATCH_MAX: usize = 10_000;

/// The limit, and where failures are counted.
pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    watched: Mutex<Watched>,
}

#[derive(Default)]
struct Watched {
    subjects: HashSet<String>,
    /// More subjects than [`WATCH_MAX`] had failures.
    overflow: bool,
    refreshed: Option<Instant>,
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
        LoginLimiter { max_failures, window, watched: Mutex::new(Watched::default()) }
    }

    /// Whether any of `keys` may have failures in the window.
    async fn watched(&self, db: &Db, keys: &[&str]) -> Result<bool, sqlx::Error> {
        let mut watched = self.watched.lock().await;
        if watched.refreshed.is_none_or(|at| at.elapsed() >= WATCH_REFRESH) {
            let since = now_ms() - self.window.as_millis() as i64;
            let subjects = db.login_failures().subjects_since(since, WATCH_MAX as i64 + 1).await?;
            watched.overflow = subjects.len() > WATCH_MAX;
            watched.subjects = subjects.into_iter().collect();
            watched.refreshed = Some(Instant::now());
        }
        Ok(watched.overflow || keys.iter().any(|k| watched.subjects.contains(*k)))
    }

    /// Where `keys` stand now.
    pub async fn standing(&self, db: &Db, keys: &[&str]) -> Result<Standing, sqlx::Error> {
        if !self.watched(db, keys).await? {
            return Ok(Standing::default());
        }
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
        db.login_failures().record(keys, now, now - self.window.as_millis() as i64).await?;
        let mut watched = self.watched.lock().await;
        watched.subjects.extend(keys.iter().map(|k| (*k).to_owned()));
        Ok(())
    }

    /// A success clears the username's counter (not the address's).
    pub async fn succeeded(&self, db: &Db, key: &str) -> Result<(), sqlx::Error> {
        db.login_failures().clear(key).await
    }
}
