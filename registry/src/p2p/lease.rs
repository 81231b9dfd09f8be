//! Which replica schedules each cluster: the lease rows of `p2p_leases`,
//! seen from one replica. See the module documentation of [`crate::p2p`]
//! for the design.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Scheduler;
use crate::metadata::{ClusterId, Db};

/// How long a lease lasts unless renewed.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often a holder renews its leases: three times per lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// A holder stops scheduling a cluster this long before its lease could
/// lapse, so that it never schedules beside a replica that took it over.
const SAFETY_MARGIN: Duration = Duration::from_secs(1);

/// Where a cluster's P2P calls are served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This replica holds the lease.
    Here,
    /// Another replica holds it; it is reached at this URL.
    Holder(String),
}

#[derive(Clone, Copy)]
struct Held {
    term: i64,
    /// This replica schedules the cluster until then, unless it renews.
    until: Instant,
}

/// This replica's view of the leases.
pub struct Leases {
    db: Db,
    /// This process's replica id, new at every start.
    replica: String,
    /// Where other replicas reach this one.
    url: String,
    scheduler: Arc<Scheduler>,
    held: Mutex<HashMap<ClusterId, Held>>,
    /// Other replicas' leases, until when they are known to hold.
    elsewhere: Mutex<HashMap<ClusterId, (String, Instant)>>,
    /// One database round at a time decides a lease here, however many calls wait for it.
    deciding: tokio::sync::Mutex<()>,
}

impl Leases {
    /// A replica reached at `url` that schedules on `scheduler`.
    pub fn new(db: Db, url: String, scheduler: Arc<Scheduler>) -> Leases {
        Leases {
            db,
            replica: uuid::Uuid::new_v4().simple().to_string(),
            url,
            scheduler,
            held: Mutex::new(HashMap::new()),
            elsewhere: Mutex::new(HashMap::new()),
            deciding: tokio::sync::Mutex::new(()),
        }
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Where other replicas reach this one.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many clusters this replica schedules now.
    pub fn held(&self) -> usize {
        let now = Instant::now();
        self.held.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|h| h.until > now).count()
    }

    fn known(&self, cluster: ClusterId, now: Instant) -> Option<Route> {
        if self.held.lock().unwrap_or_else(|p| p.into_inner()).get(&cluster).is_some_and(|h| h.until > now) {
            return Some(Route::Here);
        }
        let elsewhere = self.elsewhere.lock().unwrap_or_else(|p| p.into_inner());
        elsewhere.get(&cluster).filter(|(_, until)| *until > now).map(|(url, _)| Route::Holder(url.clone()))
    }

    /// Where the cluster's calls go: here if this replica holds its lease or
    /// can take it (nobody holds it, or its holder let it lapse), else to
    /// the holder.
    pub async fn route_of(&self, cluster: ClusterId) -> Result<Route, sqlx::Error> {
        if let Some(route) = self.known(cluster, Instant::now()) {
            return Ok(route);
        }
        let _one_at_a_time = self.deciding.lock().await;
        if let Some(route) = self.known(cluster, Instant::now()) {
            return Ok(route);
        }
        // A lease that lapses between the two statements below is looked at again.
        for _ in 0..3 {
            let sent = Instant::now();
            let ttl_ms = LEASE_TTL.as_millis() as i64;
            if let Some(term) = self.db.leases().acquire(cluster, &self.replica, &self.url, ttl_ms).await? {
                let until = sent + LEASE_TTL - SAFETY_MARGIN;
                let before = self.held.lock().unwrap_or_else(|p| p.into_inner()).insert(cluster, Held { term, until });
                self.elsewhere.lock().unwrap_or_else(|p| p.into_inner()).remove(&cluster);
                if before.is_none_or(|b| b.term != term) {
                    // Whatever this process knew of the cluster is from an earlier term: start clean.
                    self.forget_cluster(cluster);
                    tracing::info!(
                        cluster = cluster.0,
                        term,
                        replica = self.replica,
                        "scheduling the cluster's swarms here"
                    );
                }
                return Ok(Route::Here);
            }
            if let Some(h) = self.db.leases().holder(cluster).await? {
                if h.holder != self.replica && h.remaining_ms > 0 {
                    let known_for = Duration::from_millis(h.remaining_ms as u64).min(LEASE_TTL);
                    self.elsewhere
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(cluster, (h.url.clone(), Instant::now() + known_for));
                    return Ok(Route::Holder(h.url));
                }
            }
        }
        Err(sqlx::Error::Protocol(format!("the P2P lease of cluster {} changed hands three times in a row", cluster.0)))
    }

    /// Forgets where another replica was said to hold the cluster's lease
    /// (it did not answer, or said it does not hold it), so the next call
    /// asks the database.
    pub fn forget_holder(&self, cluster: ClusterId) {
        self.elsewhere.lock().unwrap_or_else(|p| p.into_inner()).remove(&cluster);
    }

    /// Renews every lease this replica holds; a lease found taken over is
    /// dropped with what the scheduler knew of its cluster.
    pub async fn renew(&self) -> Result<(), sqlx::Error> {
        let sent = Instant::now();
        let renewed = self.db.leases().renew(&self.replica, LEASE_TTL.as_millis() as i64).await?;
        let lost: Vec<ClusterId> = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let lost = held.keys().filter(|c| !renewed.contains(c)).copied().collect::<Vec<_>>();
            for c in &lost {
                held.remove(c);
            }
            for c in &renewed {
                if let Some(h) = held.get_mut(c) {
                    h.until = sent + LEASE_TTL - SAFETY_MARGIN;
                }
            }
            lost
        };
        for cluster in lost {
            let taker = self.db.leases().holder(cluster).await.ok().flatten();
            if taker.as_ref().is_some_and(|t| t.url == self.url) {
                tracing::error!(
                    cluster = cluster.0,
                    url = self.url,
                    "another replica has this replica's internal URL and took the cluster's lease; give every \
                     replica its own address with --internal-url"
                );
            } else if taker.as_ref().is_none_or(|t| t.holder.is_empty()) {
                tracing::info!(
                    cluster = cluster.0,
                    replica = self.replica,
                    "the cluster's lease was revoked (its token changed or it was deleted); its agents are forgotten"
                );
            } else {
                tracing::warn!(
                    cluster = cluster.0,
                    replica = self.replica,
                    "another replica took over the cluster's lease"
                );
            }
            self.forget_cluster(cluster);
        }
        Ok(())
    }

    /// Lets every lease of this replica lapse at once (it is stopping).
    pub async fn release(&self) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
        match self.db.leases().release_all(&self.replica).await {
            Ok(n) if n > 0 => tracing::info!(leases = n, "released the P2P leases of this replica"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not release the P2P leases; they lapse within seconds"),
        }
    }

    /// The scheduler forgets every agent of the cluster (and so its swarms).
    fn forget_cluster(&self, cluster: ClusterId) {
        for agent in self.scheduler.agents_of(cluster) {
            self.scheduler.forget(cluster, &agent.id);
        }
    }
}

/// Renews this replica's leases every [`RENEW_EVERY`] until the process stops.
pub async fn renew_periodically(leases: Arc<Leases>) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = leases.renew().await {
            tracing::warn!(error = %e, "could not renew the P2P leases; they lapse unless the database answers again");
        }
    }
}
