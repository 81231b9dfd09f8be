//! The daemon: the agent's parts wired together, and served on their ports
//! until the process is told to stop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::supernode::Supernode;
use crate::{cache, metrics, mirror, peer, piece, preheat, rate};

/// The agent's parts wired together, before they listen anywhere: the
/// daemon serves them on its configured ports, a one-shot `get` on ephemeral ones.
pub struct Node {
    /// The registry as supernode; its `start` registers and keeps the heartbeat going.
    pub supernode: Arc<Supernode>,
    /// The registry mirror.
    pub mirror: axum::Router,
    /// The piece server.
    pub peer: axum::Router,
    /// The counters.
    pub metrics: Arc<metrics::Metrics>,
    /// The download engine, for a daemon's preheat worker.
    pub engine: Arc<piece::Engine>,
}

/// Opens the cache and builds the engine, the mirror and the piece server for `config`.
pub fn assemble(config: &Config) -> Result<Node> {
    let metrics = metrics::Metrics::new();
    let cache =
        cache::Cache::open(&config.cache_dir, config.cache_max_bytes, config.cache_watermarks(), metrics.clone())
            .map_err(|source| Error::CacheDir { path: config.cache_dir.clone(), source })?;
    let http = registry_client(config.registry_ca.as_deref(), true)?;
    let relay = registry_client(config.registry_ca.as_deref(), false)?;
    let supernode = Supernode::new(config.clone(), http.clone(), metrics.clone());
    let engine = piece::Engine::new(cache, supernode.clone(), metrics.clone(), http, config);
    let mirror = mirror::router(mirror::MirrorState {
        supernode: supernode.clone(),
        engine: engine.clone(),
        metrics: metrics.clone(),
        relay,
        offline: Default::default(),
    });
    let peer = peer::router(peer::PeerState {
        engine: engine.clone(),
        supernode: supernode.clone(),
        metrics: metrics.clone(),
        slots: supernode.upload_slots(),
        feeds: peer::FeedSlots::new(config.feed_slots, metrics.feeds.clone()),
        corrupt: config.corrupt_pieces_for_testing,
        upload_limit: Arc::new(rate::RateLimit::new(config.upload_rate)),
    });
    Ok(Node { supernode, mirror, peer, metrics, engine })
}

/// Runs the daemon until SIGTERM or Ctrl-C, then leaves the registry's swarms.
pub async fn run(config: Config) -> Result<()> {
    let Node { supernode, mirror, peer, metrics, engine } = assemble(&config)?;
    let (work, tasks) = tokio::sync::mpsc::unbounded_channel();
    supernode.take_preheat_work(work);
    let (evict, evictions) = tokio::sync::mpsc::unbounded_channel();
    supernode.take_evictions(evict);
    tokio::spawn(forget_departed(engine.cache().clone(), evictions));
    tokio::spawn(preheat::work(engine, supernode.clone(), tasks));
    let mirror_listener = bind(config.listen, "registry mirror").await?;
    let peer_listener = bind(config.peer_listen, "piece server").await?;
    let metrics_listener = bind(config.metrics_listen, "metrics").await?;
    let peer_port = local_port(&peer_listener, config.peer_listen, "piece server")?;
    let ready = supernode.clone();
    let metrics_app = metrics::router(metrics, move || ready.ready());
    tracing::info!(
        mirror = %config.listen, peer = %config.peer_listen, metrics = %config.metrics_listen,
        registry = config.registry, "damselfly-agent {} starting", env!("CARGO_PKG_VERSION")
    );
    tokio::spawn(supernode.clone().start(peer_port));
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("shutting down");
    };
    let served = tokio::select! {
        r = axum::serve(mirror_listener, mirror) => r.map_err(|source| Error::Serve { what: "registry mirror", source }),
        r = peer::serve(peer_listener, peer) => r.map_err(|source| Error::Serve { what: "piece server", source }),
        r = axum::serve(metrics_listener, metrics_app) => r.map_err(|source| Error::Serve { what: "metrics server", source }),
        _ = shutdown => Ok(()),
    };
    supernode.unregister().await;
    served
}

/// Drops from the cache the blobs the registry says were deleted.
async fn forget_departed(
    cache: Arc<cache::Cache>,
    mut gone: tokio::sync::mpsc::UnboundedReceiver<damselfly_core::Digest>,
) {
    while let Some(digest) = gone.recv().await {
        let cache = cache.clone();
        let _ = tokio::task::spawn_blocking(move || cache.forget(&digest)).await;
    }
}

/// Listens on `addr` for the server `what`.
pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, what, source })
}

/// The port a listener bound to `addr` got (the one asked for, or one the system chose for port 0).
pub fn local_port(listener: &TcpListener, addr: SocketAddr, what: &'static str) -> Result<u16> {
    listener.local_addr().map(|a| a.port()).map_err(|source| Error::Bind { addr, what, source })
}

/// An HTTP client for the registry. HTTPS trusts the system's CAs and the
/// one in `--registry-ca`. The relay does not follow redirects: the client
/// it relays for follows them itself.
pub fn registry_client(ca: Option<&Path>, follow_redirects: bool) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
    if !follow_redirects {
        builder = builder.redirect(reqwest::redirect::Policy::none());
    }
    if let Some(path) = ca {
        let pem = std::fs::read(path).map_err(|source| Error::RegistryCaRead { path: path.to_owned(), source })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|source| Error::RegistryCaPem { path: path.to_owned(), source: Some(source) })?;
        if certs.is_empty() {
            return Err(Error::RegistryCaPem { path: path.to_owned(), source: None });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(Error::HttpClient)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated(term.as_mut()) => {}
    }
}

async fn terminated(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
