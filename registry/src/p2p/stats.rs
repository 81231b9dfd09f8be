//! What the acceleration dashboard shows: bytes that agents got from peers
//! versus from the seed, per cluster and namespace; swarms with an agent
//! still downloading; and a time series of the traffic, one point per
//! sample period.
//!
//! Everything is keyed by the tenant that owns the cluster, so a tenant's
//! pages read only its own clusters' traffic. The numbers live in the
//! database, shared by every replica: a replica counts the bytes it hears
//! of (reports on the replica scheduling the cluster, seed pieces on
//! whichever replica serves them) and adds them there every
//! [`FLUSH_EVERY`]. A replica that dies loses at most what it counted since
//! its last flush. A swarm's bytes count against the namespace of the
//! repository it was joined through, written when the swarm is joined, so
//! that the replica serving its seed pieces can find it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use damselfly_core::Digest;

use crate::metadata::{now, ClusterId, Db, TenantId};

/// A swarm counts as active while one of its agents still lacks pieces and
/// was heard from this recently (seconds). An agent downloading joins or
/// reports every few seconds; one that went quiet longer has died or given up.
const ACTIVE_FOR: i64 = 30;
/// While a swarm stays active, or stays idle, this replica writes it again
/// at most this often; a change between the two is written at once. A swarm
/// whose agents all went quiet therefore stops counting as active between
/// [`ACTIVE_FOR`] and `ACTIVE_FOR` + this after it was last heard from.
const REWRITE_AFTER: Duration = Duration::from_secs(10);
/// How many samples each tenant's series keeps.
pub const SAMPLES: usize = 360;
/// How often a replica adds what it counted to the database.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Bytes whose swarm is not known yet are kept this long for a later flush.
const UNATTRIBUTED_FOR: Duration = Duration::from_secs(30);
/// Seconds between two prunings of samples past the series and swarms idle for a week.
const PRUNE_EVERY: i64 = 600;
/// Most swarms remembered in memory; the map is emptied when it grows past this.
const MAX_SWARMS: usize = 100_000;

/// Bytes moved into agents' caches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// From other agents.
    pub peers: u64,
    /// From the registry's seed.
    pub seed: u64,
}

impl Traffic {
    /// The share of the bytes that did not come from the registry, in percent.
    pub fn saved_percent(&self) -> f64 {
        let total = self.peers + self.seed;
        if total == 0 {
            0.0
        } else {
            self.peers as f64 * 100.0 / total as f64
        }
    }

    fn add(&mut self, other: Traffic) {
        self.peers += other.peers;
        self.seed += other.seed;
    }
}

/// One point of a tenant's series: bytes moved in the period starting then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Unix seconds.
    pub at: i64,
    /// Bytes in the interval.
    pub traffic: Traffic,
}

/// The dashboard's numbers for one tenant.
#[derive(Clone, Debug, Default)]
pub struct TenantTraffic {
    /// Per cluster, by cluster id.
    pub by_cluster: Vec<(ClusterId, Traffic)>,
    /// Per namespace, by name.
    pub by_namespace: Vec<(String, Traffic)>,
    /// Everything.
    pub total: Traffic,
    /// Swarms with an agent still downloading, per cluster.
    pub active_swarms: Vec<(ClusterId, usize)>,
    /// Oldest first.
    pub series: Vec<Sample>,
}

#[derive(Clone)]
struct Attribution {
    tenant: TenantId,
    namespace: String,
    /// When this replica last wrote the swarm to the database, if it did.
    written: Option<Instant>,
    /// Whether it was written as having an agent downloading.
    written_active: bool,
    /// Pieces of the blob; 0 where this replica only attributes seed bytes.
    pieces: usize,
    /// Agents still downloading it through this replica (the one scheduling
    /// its cluster), with the pieces each holds; an agent leaves once it
    /// holds them all. The pieces are a set, not a count: an agent says a
    /// piece again (a join after a restart announces what it holds, and its
    /// first report repeats it), which a count would take for progress.
    fetching: HashMap<String, HashSet<u32>>,
}

impl Attribution {
    fn new(tenant: TenantId, namespace: String, pieces: usize) -> Attribution {
        Attribution { tenant, namespace, written: None, written_active: false, pieces, fetching: HashMap::new() }
    }

    /// Whether the database must hear of this swarm now: never written, its
    /// activity changed, or written longer ago than [`REWRITE_AFTER`].
    fn due(&self) -> bool {
        let active = !self.fetching.is_empty();
        self.written.is_none_or(|at| active != self.written_active || at.elapsed() >= REWRITE_AFTER)
    }

    /// Agent `agent`, downloading, holds `pieces` (besides what it held
    /// before); it leaves the downloading agents once it holds every piece.
    fn holds(&mut self, agent: &str, pieces: &[u32]) {
        let total = self.pieces;
        let Some(held) = self.fetching.get_mut(agent) else { return };
        held.extend(pieces.iter().copied().filter(|&p| (p as usize) < total));
        if held.len() >= total {
            self.fetching.remove(agent);
        }
    }
}

/// An agent joining a swarm, as [`Stats::joined`] counts it.
#[derive(Clone, Copy, Debug)]
pub struct Joining<'a> {
    /// The agent's id.
    pub agent: &'a str,
    /// Pieces of the blob.
    pub pieces: usize,
    /// Pieces the agent holds already.
    pub held: &'a [u32],
}

#[derive(Default)]
struct Inner {
    swarms: HashMap<(ClusterId, Digest), Attribution>,
    /// Bytes counted here whose swarm is not known yet, with when they were first counted.
    pending: HashMap<(ClusterId, Digest), (Traffic, Instant)>,
    /// Bytes counted here, known to belong to (tenant, cluster, namespace), not yet in the database.
    unsaved: HashMap<(TenantId, ClusterId, String), Traffic>,
}

/// This replica's share of the P2P statistics.
pub struct Stats {
    inner: Mutex<Inner>,
    /// Seconds between the points of the series.
    sample_secs: i64,
}

impl Stats {
    /// Statistics with one point per `sample` in the series.
    pub fn new(sample: Duration) -> Stats {
        Stats { inner: Mutex::new(Inner::default()), sample_secs: sample.as_secs().max(1) as i64 }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Agent `joining.agent` of `tenant`'s cluster joined the swarm of a blob
    /// of `namespace`. Written to the database at the swarm's first join here,
    /// when it starts or stops having an agent downloading, and otherwise at
    /// most every [`REWRITE_AFTER`], before the join is answered: the seed
    /// pieces it leads to may be served by another replica.
    pub async fn joined(
        &self,
        db: &Db,
        tenant: TenantId,
        cluster: ClusterId,
        namespace: &str,
        digest: Digest,
        joining: Joining<'_>,
    ) -> Result<(), sqlx::Error> {
        let due = {
            let mut inner = self.lock();
            if inner.swarms.len() >= MAX_SWARMS && !inner.swarms.contains_key(&(cluster, digest)) {
                inner.swarms.clear();
            }
            let swarm = inner
                .swarms
                .entry((cluster, digest))
                .or_insert_with(|| Attribution::new(tenant, namespace.to_owned(), joining.pieces));
            swarm.pieces = joining.pieces;
            // Joining (or joining again) makes the agent one that downloads,
            // until what it holds covers the blob.
            swarm.fetching.entry(joining.agent.to_owned()).or_default();
            swarm.holds(joining.agent, joining.held);
            swarm.due()
        };
        if due {
            self.write_swarm(db, cluster, digest).await?;
        }
        Ok(())
    }

    /// Agent `agent` of `cluster` reported that it holds the pieces `have` of a blob.
    pub async fn progressed(
        &self,
        db: &Db,
        cluster: ClusterId,
        digest: Digest,
        agent: &str,
        have: &[u32],
    ) -> Result<(), sqlx::Error> {
        let due = {
            let mut inner = self.lock();
            let Some(swarm) = inner.swarms.get_mut(&(cluster, digest)) else { return Ok(()) };
            swarm.holds(agent, have);
            swarm.due()
        };
        if due {
            self.write_swarm(db, cluster, digest).await?;
        }
        Ok(())
    }

    /// Writes a swarm as this replica sees it now: heard from now, with an agent downloading or not.
    async fn write_swarm(&self, db: &Db, cluster: ClusterId, digest: Digest) -> Result<(), sqlx::Error> {
        let Some((tenant, namespace, active)) =
            self.lock().swarms.get(&(cluster, digest)).map(|a| (a.tenant, a.namespace.clone(), !a.fetching.is_empty()))
        else {
            return Ok(());
        };
        db.traffic().swarm_active(cluster, &digest.to_string(), tenant, &namespace, now(), active).await?;
        if let Some(a) = self.lock().swarms.get_mut(&(cluster, digest)) {
            a.written = Some(Instant::now());
            a.written_active = active;
        }
        Ok(())
    }

    /// Bytes of a blob an agent of `cluster` received, from peers or from the seed.
    pub fn received(&self, cluster: ClusterId, digest: Digest, traffic: Traffic) {
        if traffic == Traffic::default() {
            return;
        }
        let mut inner = self.lock();
        inner.pending.entry((cluster, digest)).or_insert_with(|| (Traffic::default(), Instant::now())).0.add(traffic);
    }

    /// Adds what this replica counted to the database. Bytes of a swarm
    /// nobody joined are kept for [`UNATTRIBUTED_FOR`], then dropped; on a
    /// database failure everything is kept for the next flush.
    pub async fn flush(&self, db: &Db) -> Result<(), sqlx::Error> {
        let pending = std::mem::take(&mut self.lock().pending);
        let mut failed = None;
        for ((cluster, digest), (traffic, since)) in pending {
            let known = self.lock().swarms.get(&(cluster, digest)).map(|a| (a.tenant, a.namespace.clone()));
            let found = match known {
                Some(found) => Some(found),
                None if failed.is_some() => None,
                None => match db.traffic().swarm(cluster, &digest.to_string()).await {
                    Ok(Some((tenant, namespace))) => {
                        let attribution = Attribution::new(tenant, namespace.clone(), 0);
                        self.lock().swarms.entry((cluster, digest)).or_insert(attribution);
                        Some((tenant, namespace))
                    }
                    Ok(None) => None,
                    Err(e) => {
                        failed = Some(e);
                        None
                    }
                },
            };
            let mut inner = self.lock();
            match found {
                Some((tenant, namespace)) => {
                    inner.unsaved.entry((tenant, cluster, namespace)).or_default().add(traffic)
                }
                None if since.elapsed() < UNATTRIBUTED_FOR || failed.is_some() => {
                    let slot = inner.pending.entry((cluster, digest)).or_insert((Traffic::default(), since));
                    slot.0.add(traffic);
                    slot.1 = slot.1.min(since);
                }
                None => {
                    tracing::debug!(cluster = cluster.0, %digest, "bytes for a swarm nobody joined are not counted")
                }
            }
        }
        let at = now();
        let bucket = at - at.rem_euclid(self.sample_secs);
        let unsaved = std::mem::take(&mut self.lock().unsaved);
        for ((tenant, cluster, namespace), traffic) in unsaved {
            if failed.is_none() {
                match db.traffic().add(tenant, cluster, &namespace, (traffic.peers, traffic.seed), bucket).await {
                    Ok(()) => continue,
                    Err(e) => failed = Some(e),
                }
            }
            self.lock().unsaved.entry((tenant, cluster, namespace)).or_default().add(traffic);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if at.rem_euclid(PRUNE_EVERY) < FLUSH_EVERY.as_secs() as i64 {
            db.traffic().prune(at - SAMPLES as i64 * self.sample_secs, at - 7 * 86_400).await?;
        }
        Ok(())
    }

    /// Everything the dashboard shows for one tenant.
    pub async fn of_tenant(&self, db: &Db, tenant: TenantId) -> Result<TenantTraffic, sqlx::Error> {
        let mut out = TenantTraffic::default();
        let mut by_cluster: HashMap<ClusterId, Traffic> = HashMap::new();
        let mut by_namespace: HashMap<String, Traffic> = HashMap::new();
        for row in db.traffic().totals(tenant).await? {
            let traffic = Traffic { peers: row.peers, seed: row.seed };
            by_cluster.entry(row.cluster).or_default().add(traffic);
            by_namespace.entry(row.namespace).or_default().add(traffic);
            out.total.add(traffic);
        }
        out.by_cluster = by_cluster.into_iter().collect();
        out.by_cluster.sort_by_key(|(c, _)| *c);
        out.by_namespace = by_namespace.into_iter().collect();
        out.by_namespace.sort_by(|a, b| a.0.cmp(&b.0));
        let at = now();
        out.active_swarms = db.traffic().active_swarms(tenant, at - ACTIVE_FOR).await?;
        let current = at - at.rem_euclid(self.sample_secs);
        let stored = db.traffic().samples(tenant, current - (SAMPLES as i64 - 1) * self.sample_secs).await?;
        // A point for every period from the first with traffic to now, the quiet ones at zero.
        if let Some(&(first, _, _)) = stored.first() {
            let mut stored = stored.into_iter().peekable();
            let mut bucket = first;
            while bucket <= current {
                let traffic = match stored.peek() {
                    Some(&(t, peers, seed)) if t == bucket => {
                        stored.next();
                        Traffic { peers, seed }
                    }
                    _ => Traffic::default(),
                };
                out.series.push(Sample { at: bucket, traffic });
                bucket += self.sample_secs;
            }
        }
        Ok(out)
    }
}

/// Adds what this replica counted to the database every [`FLUSH_EVERY`] until the task is aborted.
pub async fn flush_periodically(stats: std::sync::Arc<Stats>, db: Db) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = stats.flush(&db).await {
            tracing::warn!(error = %e, "could not add P2P traffic to the database; kept for the next try");
        }
    }
}
