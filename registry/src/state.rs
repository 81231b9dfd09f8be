//! What every handler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::auth::Auth;
use crate::config::Config;
use crate::metadata::Db;
use crate::observe::Metrics;
use crate::p2p::Scheduler;
use crate::storage::{BlobStore, Upload};

/// Handed to every handler as axum `State`.
#[derive(Clone)]
pub struct AppState {
    /// Settings in force.
    pub config: Arc<Config>,
    /// Metadata database.
    pub db: Db,
    /// Blob bytes.
    pub blobs: BlobStore,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// In-progress upload sessions on this process.
    pub uploads: Arc<UploadSessions>,
    /// Keys, credentials and permissions.
    pub auth: Arc<Auth>,
    /// The P2P swarms and their agents.
    pub scheduler: Arc<Scheduler>,
    /// P2P traffic counted here, on its way to the database.
    pub p2p_stats: Arc<crate::p2p::Stats>,
    /// Which clusters this replica schedules, and who schedules the others.
    pub leases: Arc<crate::p2p::Leases>,
    /// The HTTP client that passes P2P calls on to the replica scheduling their cluster.
    pub forwarder: reqwest::Client,
    /// Blobs being cut into pieces for the P2P network, at push or on their first join.
    pub recuts: Arc<crate::p2p::layout::Recuts>,
}

/// The state of each upload session this process has touched, so a chunk
/// is hashed once as it arrives instead of re-reading the bytes at the end.
/// One lock per session serialises its chunks on this process; the database
/// says whether the state is still current (another replica may have moved
/// the session on), and when it is not the state is reloaded.
#[derive(Default)]
pub struct UploadSessions {
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Upload>>>>>,
}

impl UploadSessions {
    /// Locks a session's state; `None` inside means it must be reloaded.
    pub async fn lock(&self, id: &str) -> OwnedMutexGuard<Option<Upload>> {
        let slot = {
            let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id.to_owned()).or_default().clone()
        };
        slot.lock_owned().await
    }

    /// Forgets a finished or cancelled session.
    pub fn forget(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}
