//! What the acceleration dashboard and the clusters page show: bytes that
//! agents got from peers versus from the seed, per cluster and namespace;
//! swarms active lately; what each agent last said in its heartbeat; and a
//! time series of the traffic, sampled periodically into a ring buffer.
//!
//! Everything is keyed by the tenant that owns the cluster, so a tenant's
//! pages read only its own clusters' traffic. The numbers live in memory:
//! they describe this process since it started, like its Prometheus
//! counters.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use damselfly_core::Digest;

use crate::metadata::{now, ClusterId, TenantId};

/// A swarm counts as active this long after its last join or report.
const ACTIVE_FOR: Duration = Duration::from_secs(120);
/// How many samples each tenant's series keeps.
const SAMPLES: usize = 360;
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

/// The dashboard's numbers for one tenant.
#[derive(Clone, Debug, Default)]
pub struct TenantTraffic {
    /// Per cluster, by cluster id.
    pub by_cluster: Vec<(ClusterId, Traffic)>,
    /// Per namespace, by name.
    pub by_namespace: Vec<(String, Traffic)>,
    /// Everything.
    pub total: Traffic,
    /// Swarms joined or reported on lately, per cluster.
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

    /// An agent of `tenant`'s cluster joined the swarm of a blob of `namespace`.
    pub fn joined(&self, tenant: TenantId, cluster: ClusterId, namespace: &str, digest: Digest) {
        let mut inner = self.lock();
        if inner.swarms.len() >= MAX_SWARMS && !inner.swarms.contains_key(&(cluster, digest)) {
            let oldest = inner.swarms.iter().min_by_key(|(_, s)| s.last_active).map(|(k, _)| *k);
            if let Some(k) = oldest {
                inner.swarms.remove(&k);
            }
        }
        inner.swarms.insert(
            (cluster, digest),
            SwarmInfo { tenant, namespace: namespace.to_owned(), last_active: Instant::now() },
        );
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
            if swarm.tenant == tenant && swarm.last_active.elapsed() < ACTIVE_FOR {
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
        stats.joined(acme, ClusterId(10), "web", digest(1));
        stats.joined(globex, ClusterId(20), "gx", digest(1));
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
}
