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

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
