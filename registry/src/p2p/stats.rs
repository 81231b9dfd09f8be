//! What the acceleration dashboard and the clusters page show: bytes that
//! agents got from peers versus from the seed, per cluster and namespace;
//! swarms active lately; what each agent last said in its heartbeat; and a
//! time series of the traffic, sampled periodically into a ring buffer.
//!
//! Everything is keyed by the tenant that owns the cluster, so a tenant's
//! pages read only its own clusters' traffic. The numbers live in memory:
//! they describe this process since it started, like its Prometheus
//! counters.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use damselfly_core::Digest;

use crate::metadata::{now, ClusterId, TenantId};

/// A swarm counts as active while one of its agents still lacks pieces and
/// was heard from this recently. An agent downloading joins or reports every
/// few seconds; one that went quiet longer has died or given up.
const ACTIVE_FOR: Duration = Duration::from_secs(30);
/// How many samples each tenant's series keeps.
pub const SAMPLES: usize = 360;
/// Most swarms remembered; the oldest are forgotten first.
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

/// What an agent last said about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentReport {
    /// Unix seconds of its last heartbeat (or registration).
    pub last_heartbeat: i64,
    /// Bytes in its cache, if it said.
    pub cache_bytes: Option<u64>,
    /// Bytes it has served to peers since it started, if it said.
    pub served_bytes: Option<u64>,
}

/// One point of a tenant's series: bytes moved since the previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Unix seconds.
    pub at: i64,
    /// Bytes in the interval.
    pub traffic: Traffic,
}

#[derive(Clone)]
struct SwarmInfo {
    tenant: TenantId,
    namespace: String,
    last_active: Instant,
    /// Pieces of the blob.
    pieces: usize,
    /// Agents still downloading it, with the pieces each holds; an agent
    /// leaves once it holds them all. The pieces are a set, not a count:
    /// an agent says a piece again (a join after a restart announces what
    /// it holds, and its first report repeats it), which a count would take
    /// for progress.
    fetching: HashMap<String, HashSet<u32>>,
}

impl SwarmInfo {
    fn active(&self) -> bool {
        !self.fetching.is_empty() && self.last_active.elapsed() < ACTIVE_FOR
    }

    /// Agent `agent` holds `pieces` (besides what it held before); it
    /// leaves the downloading agents once it holds every piece.
    fn holds(&mut self, agent: &str, pieces: &[u32]) {
        let total = self.pieces;
        let Some(held) = self.fetching.get_mut(agent) else { return };
        held.extend(pieces.iter().copied().filter(|&p| (p as usize) < total));
        if held.len() >= total {
            self.fetching.remove(agent);
        }
    }
}

#[derive(Default)]
struct Inner {
    agents: HashMap<(ClusterId, String), AgentReport>,
    swarms: HashMap<(ClusterId, Digest), SwarmInfo>,
    /// Cumulative traffic per (tenant, cluster, namespace).
    totals: HashMap<(TenantId, ClusterId, String), Traffic>,
    series: HashMap<TenantId, VecDeque<Sample>>,
    /// Per-tenant totals at the last sample.
    sampled: HashMap<TenantId, Traffic>,
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

/// The registry's P2P statistics.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<Inner>,
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An agent registered or sent a heartbeat; `None` fields leave what it said before.
    pub fn heard_from(&self, cluster: ClusterId, agent: &str, cache_bytes: Option<u64>, served_bytes: Option<u64>) {
        let mut inner = self.lock();
        let report = inner.agents.entry((cluster, agent.to_owned())).or_default();
        report.last_heartbeat = now();
        if cache_bytes.is_some() {
            report.cache_bytes = cache_bytes;
        }
        if served_bytes.is_some() {
            report.served_bytes = served_bytes;
        }
    }

    /// What an agent last said, if it is known.
    pub fn agent(&self, cluster: ClusterId, agent: &str) -> Option<AgentReport> {
        self.lock().agents.get(&(cluster, agent.to_owned())).copied()
    }

    /// Agent `agent` of `tenant`'s cluster joined the swarm of a blob of
    /// `namespace` that has `pieces` pieces, holding `held` of them.
    pub fn joined(&self, tenant: TenantId, cluster: ClusterId, namespace: &str, digest: Digest, joining: Joining) {
        let mut inner = self.lock();
        if inner.swarms.len() >= MAX_SWARMS && !inner.swarms.contains_key(&(cluster, digest)) {
            let oldest = inner.swarms.iter().min_by_key(|(_, s)| s.last_active).map(|(k, _)| *k);
            if let Some(k) = oldest {
                inner.swarms.remove(&k);
            }
        }
        let swarm = inner.swarms.entry((cluster, digest)).or_insert_with(|| SwarmInfo {
            tenant,
            namespace: namespace.to_owned(),
            last_active: Instant::now(),
            pieces: joining.pieces,
            fetching: HashMap::new(),
        });
        swarm.last_active = Instant::now();
        // Joining (or joining again) makes the agent one that downloads,
        // until what it holds covers the blob.
        swarm.fetching.entry(joining.agent.to_owned()).or_default();
        swarm.holds(joining.agent, joining.held);
    }

    /// Agent `agent` of `cluster` reported that it holds the pieces `have` of a blob.
    pub fn progressed(&self, cluster: ClusterId, digest: Digest, agent: &str, have: &[u32]) {
        let mut inner = self.lock();
        let Some(swarm) = inner.swarms.get_mut(&(cluster, digest)) else { return };
        swarm.last_active = Instant::now();
        swarm.holds(agent, have);
    }

    /// Bytes of a blob an agent of `cluster` received, from peers or from the seed.
    pub fn received(&self, cluster: ClusterId, digest: Digest, traffic: Traffic) {
        if traffic == Traffic::default() {
            return;
        }
        let mut inner = self.lock();
        let Some(swarm) = inner.swarms.get_mut(&(cluster, digest)) else { return };
        swarm.last_active = Instant::now();
        let key = (swarm.tenant, cluster, swarm.namespace.clone());
        inner.totals.entry(key).or_default().add(traffic);
    }

    /// Appends a point to every tenant's series: the traffic since the last one.
    pub fn sample(&self) {
        let at = now();
        let mut inner = self.lock();
        let mut per_tenant: HashMap<TenantId, Traffic> = HashMap::new();
        for ((tenant, _, _), t) in &inner.totals {
            per_tenant.entry(*tenant).or_default().add(*t);
        }
        for (tenant, total) in per_tenant {
            let before = inner.sampled.insert(tenant, total).unwrap_or_default();
            let delta = Traffic { peers: total.peers - before.peers, seed: total.seed - before.seed };
            let series = inner.series.entry(tenant).or_default();
            if series.len() == SAMPLES {
                series.pop_front();
            }
            series.push_back(Sample { at, traffic: delta });
        }
    }

    /// Everything the dashboard shows for one tenant.
    pub fn of_tenant(&self, tenant: TenantId) -> TenantTraffic {
        let inner = self.lock();
        let mut out = TenantTraffic::default();
        let mut by_cluster: HashMap<ClusterId, Traffic> = HashMap::new();
        let mut by_namespace: HashMap<String, Traffic> = HashMap::new();
        for ((t, cluster, namespace), traffic) in &inner.totals {
            if *t != tenant {
                continue;
            }
            by_cluster.entry(*cluster).or_default().add(*traffic);
            by_namespace.entry(namespace.clone()).or_default().add(*traffic);
            out.total.add(*traffic);
        }
        let mut active: HashMap<ClusterId, usize> = HashMap::new();
        for ((cluster, _), swarm) in &inner.swarms {
            if swarm.tenant == tenant && swarm.active() {
                *active.entry(*cluster).or_default() += 1;
            }
        }
        out.by_cluster = by_cluster.into_iter().collect();
        out.by_cluster.sort_by_key(|(c, _)| *c);
        out.by_namespace = by_namespace.into_iter().collect();
        out.by_namespace.sort_by(|a, b| a.0.cmp(&b.0));
        out.active_swarms = active.into_iter().collect();
        out.active_swarms.sort();
        out.series = inner.series.get(&tenant).map(|s| s.iter().copied().collect()).unwrap_or_default();
        out
    }
}

/// Samples the series every `period` until the task is aborted.
pub async fn sample_periodically(stats: std::sync::Arc<Stats>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        stats.sample();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn traffic_is_counted_per_tenant_and_never_shown_to_another() {
        let stats = Stats::default();
        let (acme, globex) = (TenantId(1), TenantId(2));
        let fresh = Joining { agent: "a", pieces: 4, held: &[] };
        stats.joined(acme, ClusterId(10), "web", digest(1), fresh);
        stats.joined(globex, ClusterId(20), "gx", digest(1), fresh);
        stats.received(ClusterId(10), digest(1), Traffic { peers: 300, seed: 100 });
        stats.received(ClusterId(20), digest(1), Traffic { peers: 0, seed: 50 });
        // Bytes for a swarm nobody joined are not attributed to anyone.
        stats.received(ClusterId(30), digest(2), Traffic { peers: 7, seed: 7 });
        stats.sample();
        let a = stats.of_tenant(acme);
        assert_eq!(a.total, Traffic { peers: 300, seed: 100 });
        assert_eq!(a.total.saved_percent(), 75.0);
        assert_eq!(a.by_namespace, vec![("web".to_owned(), Traffic { peers: 300, seed: 100 })]);
        assert_eq!(a.by_cluster, vec![(ClusterId(10), Traffic { peers: 300, seed: 100 })]);
        assert_eq!(a.active_swarms, vec![(ClusterId(10), 1)]);
        assert_eq!(a.series.len(), 1);
        let g = stats.of_tenant(globex);
        assert_eq!(g.total, Traffic { peers: 0, seed: 50 });
        assert_eq!(g.by_namespace, vec![("gx".to_owned(), Traffic { peers: 0, seed: 50 })]);
        stats.received(ClusterId(10), digest(1), Traffic { peers: 10, seed: 0 });
        stats.sample();
        let series = stats.of_tenant(acme).series;
        assert_eq!(
            series.iter().map(|s| s.traffic).collect::<Vec<_>>(),
            vec![Traffic { peers: 300, seed: 100 }, Traffic { peers: 10, seed: 0 }]
        );
    }

    /// A swarm is active while one of its agents still downloads, not for
    /// minutes after every pull has ended.
    #[test]
    fn a_swarm_is_active_until_its_last_agent_holds_every_piece() {
        let stats = Stats::default();
        let acme = TenantId(1);
        let active = || stats.of_tenant(acme).active_swarms;
        stats.joined(acme, ClusterId(10), "web", digest(1), Joining { agent: "a", pieces: 4, held: &[] });
        stats.joined(acme, ClusterId(10), "web", digest(1), Joining { agent: "b", pieces: 4, held: &[0] });
        assert_eq!(active(), vec![(ClusterId(10), 1)]);
        stats.progressed(ClusterId(10), digest(1), "a", &[0, 1, 2, 3]);
        assert_eq!(active(), vec![(ClusterId(10), 1)], "b still downloads");
        stats.progressed(ClusterId(10), digest(1), "b", &[1, 2]);
        stats.progressed(ClusterId(10), digest(1), "b", &[3]);
        assert_eq!(active(), vec![], "both hold every piece");
        // An agent that joins holding the whole blob (from its cache) downloads nothing.
        stats.joined(acme, ClusterId(10), "web", digest(2), Joining { agent: "c", pieces: 2, held: &[0, 1] });
        assert_eq!(active(), vec![]);
        // A report from an agent the swarm never saw join changes nothing.
        stats.progressed(ClusterId(10), digest(2), "d", &[0]);
        assert_eq!(active(), vec![]);
        // An agent resumed after a restart announces what it holds, and its first report says it
        // again: it still downloads until it holds the pieces it lacked.
        stats.joined(acme, ClusterId(10), "web", digest(3), Joining { agent: "e", pieces: 4, held: &[0, 1] });
        stats.progressed(ClusterId(10), digest(3), "e", &[0, 1, 2]);
        assert_eq!(active(), vec![(ClusterId(10), 1)], "piece 3 is still missing");
        stats.progressed(ClusterId(10), digest(3), "e", &[3]);
        assert_eq!(active(), vec![]);
    }
}
