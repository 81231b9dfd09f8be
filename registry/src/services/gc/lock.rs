//! One garbage collection run at a time, across every replica.
//!
//! On PostgreSQL: a session advisory lock, taken on a connection the run
//! keeps to itself. It belongs to that connection, so a replica that dies
//! (or is killed) frees it the moment its connection closes. On SQLite: an
//! exclusive `flock` on `<database file>.gc-lock`, which the kernel frees
//! when the process dies. Either way a crashed run never blocks the next.

use std::path::PathBuf;

use sqlx::pool::PoolConnection;
use sqlx::{Any, Row};

use crate::metadata::Engine;
use crate::state::AppState;

/// The advisory lock's key: "damselfly gc" in ASCII, as a number.
const ADVISORY_KEY: i64 = 0x6461_6d73_6c67_63;

/// The held lock; dropping it frees it.
pub struct GcLock {
    held: Held,
}

enum Held {
    /// The connection that holds the advisory lock; closing it frees the lock.
    Postgres(Option<PoolConnection<Any>>),
    /// The locked file; closing it frees the lock.
    File(#[allow(dead_code)] std::fs::File),
}

fn lock_file(state: &AppState) -> PathBuf {
    let url = state.config.database_url();
    let file = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(&url);
    let file = file.split('?').next().unwrap_or(file);
    PathBuf::from(format!("{file}.gc-lock"))
}

impl GcLock {
    /// Takes the lock if nobody holds it; `None` if a run is going on somewhere.
    pub async fn try_take(state: &AppState) -> Result<Option<GcLock>, String> {
        match state.db.engine() {
            Engine::Postgres => {
                let mut conn = state
                    .db
                    .pool()
                    .acquire()
                    .await
                    .map_err(|e| format!("cannot get a database connection for the GC lock: {e}"))?;
                let row = sqlx::query("SELECT pg_try_advisory_lock($1)")
                    .bind(ADVISORY_KEY)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| format!("cannot take the GC lock: {e}"))?;
                let taken: bool = row.try_get(0).map_err(|e| format!("cannot read the GC lock: {e}"))?;
                Ok(taken.then_some(GcLock { held: Held::Postgres(Some(conn)) }))
            }
            Engine::Sqlite => {
                let path = lock_file(state);
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| format!("cannot open the GC lock file {}: {e}", path.display()))?;
                match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                    Ok(()) => Ok(Some(GcLock { held: Held::File(file) })),
                    Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
                    Err(e) => Err(format!("cannot lock {}: {e}", path.display())),
                }
            }
        }
    }

    /// Frees the lock, handing its connection back to the pool.
    pub async fn release(mut self) {
        if let Held::Postgres(conn) = &mut self.held {
            if let Some(mut conn) = conn.take() {
                let unlocked =
                    sqlx::query("SELECT pg_advisory_unlock($1)").bind(ADVISORY_KEY).execute(&mut *conn).await;
                if unlocked.is_err() {
                    // Closing the connection frees the lock too.
                    drop(conn.detach());
                }
            }
        }
    }
}

impl Drop for GcLock {
    fn drop(&mut self) {
        if let Held::Postgres(conn) = &mut self.held {
            if let Some(conn) = conn.take() {
                // Not unlocked (the run's task was cut short): close the connection, which frees the lock.
                drop(conn.detach());
            }
        }
    }
}
