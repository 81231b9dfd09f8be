//! Whether the metadata database can be reached, known ahead of the request
//! that needs it.
//!
//! Without this, a request while PostgreSQL is down waits the pool's whole
//! acquire timeout (10 s): sqlx retries a refused connection until then.
//! Shortening that timeout is not the answer, because the same timeout is
//! what a healthy but busy pool queues requests with, and a load peak would
//! turn into 503s. Instead one task watches the database on a connection of
//! its own, outside the pool: a `SELECT 1` every half second while it answers,
//! every quarter second while it does not. The verdict is a flag that
//! `crate::health::fail_fast` reads on every request: while the database is
//! down, requests are answered 503 at once, and those already waiting for a
//! connection are answered as soon as the flag goes down. A request that
//! meets a connection error tells the watcher to look at once, so an outage
//! is known within one probe (a refused connect is immediate; a database
//! that hangs is declared down after the probe's 2 s timeout). Nothing else
//! flips the flag: one broken connection is not an outage unless a fresh one
//! fails too. When a probe succeeds again the flag clears and the pool
//! reconnects by itself; the registry is never restarted.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, Connection, Executor};
use tokio::sync::{watch, Notify};

use super::{Db, Engine};

/// How long one probe (connect, then `SELECT 1`) may take before the database is declared down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time between probes while the database answers.
const UP_INTERVAL: Duration = Duration::from_millis(500);
/// Time between probes while it does not: recovery is noticed within this.
const DOWN_INTERVAL: Duration = Duration::from_millis(250);

/// The database's reachability as the watcher last saw it.
#[derive(Debug)]
pub struct Health {
    /// `true` while the database is down.
    down: watch::Sender<bool>,
    /// Wakes the watcher when a request met a connection error.
    suspect: Notify,
}

impl Default for Health {
    fn default() -> Self {
        Health { down: watch::Sender::new(false), suspect: Notify::new() }
    }
}

impl Health {
    /// True while the database is known to be unreachable.
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// A receiver that sees the flag change, for requests already running.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.down.subscribe()
    }

    /// Asks the watcher to probe now, because a request met a connection error.
    pub fn suspect(&self) {
        self.suspect.notify_one();
    }

    fn set_down(&self, down: bool) {
        let changed = self.down.send_if_modified(|d| std::mem::replace(d, down) != down);
        if changed && down {
            tracing::error!("metadata database unreachable: answering requests 503 until it is back");
        } else if changed {
            tracing::info!("metadata database reachable again: serving requests");
        }
    }
}

/// Watches the database until the task is aborted. SQLite is a file of this
/// process, never unreachable in this sense: nothing to watch.
pub async fn watch(db: Db) {
    if db.engine != Engine::Postgres {
        return;
    }
    let health: Arc<Health> = db.health.clone();
    let mut conn: Option<AnyConnection> = None;
    loop {
        let up = probe(&db, &mut conn).await;
        health.set_down(!up);
        let interval = if up { UP_INTERVAL } else { DOWN_INTERVAL };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = health.suspect.notified() => {}
        }
    }
}

/// One look: `SELECT 1` on the kept connection, and if that fails, on a fresh one.
async fn probe(db: &Db, conn: &mut Option<AnyConnection>) -> bool {
    if let Some(c) = conn.as_mut() {
        if matches!(tokio::time::timeout(PROBE_TIMEOUT, c.execute("SELECT 1")).await, Ok(Ok(_))) {
            return true;
        }
        // Closing a connection whose server is gone could wait; dropping it cannot.
        *conn = None;
    }
    let options = db.pool.connect_options();
    let fresh = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut c = AnyConnection::connect_with(&options).await?;
        c.execute("SELECT 1").await?;
        Ok::<_, sqlx::Error>(c)
    })
    .await;
    match fresh {
        Ok(Ok(c)) => {
            *conn = Some(c);
            true
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "metadata database probe failed");
            false
        }
        Err(_) => {
            tracing::debug!(timeout = ?PROBE_TIMEOUT, "metadata database probe timed out");
            false
        }
    }
}
