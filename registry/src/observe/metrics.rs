use std::time::Duration;

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Which API a request hit, as a low-cardinality metric label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum RouteLabel {
    Base,
    Catalog,
    Tags,
    Manifest,
    Blob,
    Upload,
    Referrers,
    Other,
}

impl RouteLabel {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteLabel::Base => "base",
            RouteLabel::Catalog => "catalog",
            RouteLabel::Tags => "tags",
            RouteLabel::Manifest => "manifest",
            RouteLabel::Blob => "blob",
            RouteLabel::Upload => "upload",
            RouteLabel::Referrers => "referrers",
            RouteLabel::Other => "other",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    tenant: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

type IntGauge = Gauge<i64, std::sync::atomic::AtomicI64>;

/// Garbage collection: what this process's runs freed, and the last run's report.
struct GcMetrics {
    runs: Family<Outcome, Counter>,
    blobs_deleted: Counter,
    bytes_freed: Counter,
    manifests_deleted: Counter,
    tags_deleted: Counter,
    errors: Counter,
    last_finished: IntGauge,
    last_duration_ms: IntGauge,
    last_bytes_freed: IntGauge,
    last_blobs_deleted: IntGauge,
    last_errors: IntGauge,
}

/// Storage use and quotas per namespace and tenant.
struct StorageMetrics {
    namespace_bytes: Family<NamespaceLabels, IntGauge>,
    namespace_repositories: Family<NamespaceLabels, IntGauge>,
    namespace_quota_bytes: Family<NamespaceLabels, IntGauge>,
    namespace_quota_repositories: Family<NamespaceLabels, IntGauge>,
    tenant_bytes: Family<TenantLabels, IntGauge>,
    tenant_repositories: Family<TenantLabels, IntGauge>,
    tenant_quota_bytes: Family<TenantLabels, IntGauge>,
    tenant_quota_repositories: Family<TenantLabels, IntGauge>,
}

/// Every metric the registry exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteOnly, Histogram>,
    bytes_received: Family<Kind, Counter>,
    bytes_sent: Family<Kind, Counter>,
    blob_store_bytes: Gauge<i64, std::sync::atomic::AtomicI64>,
    blob_store_blobs: Gauge<i64, std::sync::atomic::AtomicI64>,
    p2p_agents: Gauge<i64, std::sync::atomic::AtomicI64>,
    p2p_swarms: Gauge<i64, std::sync::atomic::AtomicI64>,
    p2p_clusters: Gauge<i64, std::sync::atomic::AtomicI64>,
    p2p_forwarded: Counter,
    gc: GcMetrics,
    storage: StorageMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers all metrics.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("damselfly");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route, method and status", requests.clone());
        let latency = Family::<RouteOnly, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register("http_request_duration_seconds", "Time to produce response headers", latency.clone());
        let bytes_received = Family::<Kind, Counter>::default();
        registry.register("bytes_received", "Bytes of blobs and manifests received", bytes_received.clone());
        let bytes_sent = Family::<Kind, Counter>::default();
        registry.register(
            "bytes_sent",
            "Bytes sent: blobs, manifests, and pieces served by the seed",
            bytes_sent.clone(),
        );
        let blob_store_bytes = Gauge::default();
        registry.register("blob_store_bytes", "Total size of stored blobs", blob_store_bytes.clone());
        let blob_store_blobs = Gauge::default();
        registry.register("blob_store_blobs", "Number of stored blobs", blob_store_blobs.clone());
        let p2p_agents = Gauge::default();
        registry.register("p2p_agents", "Agents heard from recently", p2p_agents.clone());
        let p2p_swarms = Gauge::default();
        registry.register("p2p_swarms", "Blobs with an active swarm", p2p_swarms.clone());
        let p2p_clusters = Gauge::default();
        registry.register(
            "p2p_clusters_scheduled",
            "P2P clusters this replica schedules (holds the lease of)",
            p2p_clusters.clone(),
        );
        let p2p_forwarded = Counter::default();
        registry.register(
            "p2p_forwarded",
            "P2P calls passed on to the replica that schedules their cluster",
            p2p_forwarded.clone(),
        );
        let gc = GcMetrics::register(&mut registry);
        let storage = StorageMetrics::register(&mut registry);
        Metrics {
            registry,
            requests,
            latency,
            bytes_received,
            bytes_sent,
            blob_store_bytes,
            blob_store_blobs,
            p2p_agents,
            p2p_swarms,
            p2p_clusters,
            p2p_forwarded,
            gc,
            storage,
        }
    }

    /// Records one finished request.
    pub fn observe_request(&self, route: RouteLabel, method: &Method, status: u16, elapsed: Duration) {
        let method = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::PUT => "PUT",
            Method::POST => "POST",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            _ => "OTHER",
        };
        let route = route.as_str();
        self.requests.get_or_create(&RequestLabels { route, method, status }).inc();
        self.latency.get_or_create(&RouteOnly { route }).observe(elapsed.as_secs_f64());
    }

    /// Counts bytes received (`kind` is `blob` or `manifest`).
    pub fn received(&self, kind: &'static str, bytes: u64) {
        self.bytes_received.get_or_create(&Kind { kind }).inc_by(bytes);
    }

    /// Counts bytes sent (`kind` is `blob` or `manifest`).
    pub fn sent(&self, kind: &'static str, bytes: u64) {
        self.bytes_sent.get_or_create(&Kind { kind }).inc_by(bytes);
    }

    /// Updates the blob store gauges.
    pub fn set_blob_store(&self, blobs: i64, bytes: i64) {
        self.blob_store_blobs.set(blobs);
        self.blob_store_bytes.set(bytes);
    }

    /// Updates the P2P gauges: what this replica schedules.
    pub fn set_p2p(&self, agents: usize, swarms: usize, clusters: usize) {
        self.p2p_agents.set(agents as i64);
        self.p2p_swarms.set(swarms as i64);
        self.p2p_clusters.set(clusters as i64);
    }

    /// Counts a P2P call passed on to another replica.
    pub fn forwarded(&self) {
        self.p2p_forwarded.inc();
    }

    /// Counts a garbage collection run this process finished (`done` is false for a failed one).
    pub fn gc_finished(&self, done: bool, counts: &crate::metadata::GcCounts) {
        let outcome = if done { "done" } else { "failed" };
        self.gc.runs.get_or_create(&Outcome { outcome }).inc();
        self.gc.blobs_deleted.inc_by(counts.blobs_deleted);
        self.gc.bytes_freed.inc_by(counts.bytes_freed);
        self.gc.manifests_deleted.inc_by(counts.manifests_deleted);
        self.gc.tags_deleted.inc_by(counts.tags_deleted);
        self.gc.errors.inc_by(counts.errors);
    }

    /// Sets the last run's gauges from its record, whichever replica ran it.
    pub fn set_gc_last_run(&self, run: &crate::metadata::GcRun) {
        self.gc.last_finished.set(run.finished_at.unwrap_or(0));
        self.gc.last_duration_ms.set(run.duration_ms.unwrap_or(0));
        self.gc.last_bytes_freed.set(run.counts.bytes_freed as i64);
        self.gc.last_blobs_deleted.set(run.counts.blobs_deleted as i64);
        self.gc.last_errors.set(run.counts.errors as i64);
    }

    /// Sets the storage gauges from every namespace's and tenant's use; a limit is exported only when set.
    pub fn set_storage(&self, rows: &[crate::metadata::UsageRow]) {
        let s = &self.storage;
        for family in
            [&s.namespace_bytes, &s.namespace_repositories, &s.namespace_quota_bytes, &s.namespace_quota_repositories]
        {
            family.clear();
        }
        for family in [&s.tenant_bytes, &s.tenant_repositories, &s.tenant_quota_bytes, &s.tenant_quota_repositories] {
            family.clear();
        }
        for row in rows {
            let u = &row.usage;
            match &row.namespace {
                Some(ns) => {
                    let l = NamespaceLabels { tenant: row.tenant.clone(), namespace: ns.clone() };
                    s.namespace_bytes.get_or_create(&l).set(u.used_bytes);
                    s.namespace_repositories.get_or_create(&l).set(u.used_repositories);
                    if let Some(q) = u.quota_bytes {
                        s.namespace_quota_bytes.get_or_create(&l).set(q);
                    }
                    if let Some(q) = u.quota_repositories {
                        s.namespace_quota_repositories.get_or_create(&l).set(q);
                    }
                }
                None => {
                    let l = TenantLabels { tenant: row.tenant.clone() };
                    s.tenant_bytes.get_or_create(&l).set(u.used_bytes);
                    s.tenant_repositories.get_or_create(&l).set(u.used_repositories);
                    if let Some(q) = u.quota_bytes {
                        s.tenant_quota_bytes.get_or_create(&l).set(q);
                    }
                    if let Some(q) = u.quota_repositories {
                        s.tenant_quota_repositories.get_or_create(&l).set(q);
                    }
                }
            }
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl GcMetrics {
    fn register(registry: &mut Registry) -> GcMetrics {
        let m = GcMetrics {
            runs: Family::default(),
            blobs_deleted: Counter::default(),
            bytes_freed: Counter::default(),
            manifests_deleted: Counter::default(),
            tags_deleted: Counter::default(),
            errors: Counter::default(),
            last_finished: Gauge::default(),
            last_duration_ms: Gauge::default(),
            last_bytes_freed: Gauge::default(),
            last_blobs_deleted: Gauge::default(),
            last_errors: Gauge::default(),
        };
        registry.register("gc_runs", "Garbage collection runs this process finished, by outcome", m.runs.clone());
        registry.register(
            "gc_blobs_deleted",
            "Blobs this process's garbage collection runs deleted",
            m.blobs_deleted.clone(),
        );
        registry.register(
            "gc_bytes_freed",
            "Bytes this process's garbage collection runs freed",
            m.bytes_freed.clone(),
        );
        registry.register(
            "gc_manifests_deleted",
            "Manifests this process's garbage collection runs deleted by namespace policies",
            m.manifests_deleted.clone(),
        );
        registry.register(
            "gc_tags_deleted",
            "Tags this process's garbage collection runs deleted by retention",
            m.tags_deleted.clone(),
        );
        registry.register("gc_errors", "Failed steps of this process's garbage collection runs", m.errors.clone());
        registry.register(
            "gc_last_run_finished_timestamp_seconds",
            "When the last garbage collection run (any replica's) finished",
            m.last_finished.clone(),
        );
        registry.register(
            "gc_last_run_duration_milliseconds",
            "How long the last garbage collection run took",
            m.last_duration_ms.clone(),
        );
        registry.register(
            "gc_last_run_bytes_freed",
            "Bytes the last garbage collection run freed",
            m.last_bytes_freed.clone(),
        );
        registry.register(
            "gc_last_run_blobs_deleted",
            "Blobs the last garbage collection run deleted",
            m.last_blobs_deleted.clone(),
        );
        registry.register(
            "gc_last_run_errors",
            "Failed steps of the last garbage collection run",
            m.last_errors.clone(),
        );
        m
    }
}

impl StorageMetrics {
    fn register(registry: &mut Registry) -> StorageMetrics {
        let m = StorageMetrics {
            namespace_bytes: Family::default(),
            namespace_repositories: Family::default(),
            namespace_quota_bytes: Family::default(),
            namespace_quota_repositories: Family::default(),
            tenant_bytes: Family::default(),
            tenant_repositories: Family::default(),
            tenant_quota_bytes: Family::default(),
            tenant_quota_repositories: Family::default(),
        };
        registry.register(
            "namespace_storage_bytes",
            "Bytes a namespace stores (each blob once)",
            m.namespace_bytes.clone(),
        );
        registry.register(
            "namespace_repositories",
            "Repositories of a namespace that hold something",
            m.namespace_repositories.clone(),
        );
        registry.register("namespace_quota_bytes", "A namespace's storage quota", m.namespace_quota_bytes.clone());
        registry.register(
            "namespace_quota_repositories",
            "A namespace's repository quota",
            m.namespace_quota_repositories.clone(),
        );
        registry.register("tenant_storage_bytes", "Bytes a tenant's namespaces store", m.tenant_bytes.clone());
        registry.register(
            "tenant_repositories",
            "Repositories of a tenant that hold something",
            m.tenant_repositories.clone(),
        );
        registry.register("tenant_quota_bytes", "A tenant's storage quota", m.tenant_quota_bytes.clone());
        registry.register(
            "tenant_quota_repositories",
            "A tenant's repository quota",
            m.tenant_quota_repositories.clone(),
        );
        m
    }
}
