//! Prometheus metrics and the health endpoint, on `--metrics-listen`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Every metric the agent keeps.
pub struct Metrics {
    registry: Registry,
    bytes: Family<Labels, Counter>,
    served: Counter,
    pieces: Family<Labels, Counter>,
    /// Bytes of completed and partial blobs on disk.
    pub cache_bytes: Gauge,
    /// Blob downloads in progress.
    pub active_downloads: Gauge,
    /// Stripe feeds streaming to children.
    pub feeds: Gauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let bytes = Family::<Labels, Counter>::default();
        let served = Counter::default();
        let pieces = Family::<Labels, Counter>::default();
        let cache_bytes = Gauge::default();
        let active_downloads = Gauge::default();
        let feeds = Gauge::default();
        registry.register(
            "damselfly_agent_bytes_received",
            "Blob bytes received, by source: peer, seed, or passthrough (streamed from the registry)",
            bytes.clone(),
        );
        registry.register("damselfly_agent_bytes_served_to_peers", "Piece bytes sent to other agents", served.clone());
        registry.register(
            "damselfly_agent_pieces",
            "Pieces received, by outcome: verified or rejected (SHA-256 mismatch)",
            pieces.clone(),
        );
        registry.register("damselfly_agent_cache_bytes", "Bytes of blobs in the cache", cache_bytes.clone());
        registry.register("damselfly_agent_active_downloads", "Blob downloads in progress", active_downloads.clone());
        registry.register("damselfly_agent_feeds", "Stripe feeds streaming pieces to children", feeds.clone());
        Arc::new(Metrics { registry, bytes, served, pieces, cache_bytes, active_downloads, feeds })
    }

    /// Counts blob bytes received from `source`.
    pub fn received(&self, source: &str, n: u64) {
        self.bytes.get_or_create(&vec![("source".to_owned(), source.to_owned())]).inc_by(n);
    }

    /// Counts piece bytes served to a peer.
    pub fn served(&self, n: u64) {
        self.served.inc_by(n);
    }

    /// Piece bytes served to peers since the agent started, for the heartbeat.
    pub fn served_total(&self) -> u64 {
        self.served.get()
    }

    /// Counts a piece by outcome.
    pub fn piece(&self, outcome: &str) {
        self.pieces.get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())]).inc();
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// `/metrics`, and `/healthz`, which answers 200 once `ready` says so.
pub fn router(metrics: Arc<Metrics>, ready: impl Fn() -> bool + Send + Sync + 'static) -> Router {
    let ready: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(ready);
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.encode())
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let registered = ready();
                async move {
                    if registered {
                        (StatusCode::OK, "ok\n").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not registered with the registry yet\n").into_response()
                    }
                }
            }),
        )
        .with_state(metrics)
}
