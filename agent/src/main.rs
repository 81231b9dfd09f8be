//! `damselfly-agent`, the per-node daemon: a registry mirror for container
//! runtimes, a piece server for other agents, and a piece engine that pulls
//! blobs from peers and the registry's seed, verifying every piece.

mod cache;
mod config;
mod get;
mod image;
mod metrics;
mod mirror;
mod node_setup;
mod peer;
mod piece;
mod preheat;
mod rate;
mod registry;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Command, Config};

fn main() {
    let cli = Cli::parse();
    // Every HTTPS client of the process (the registry, the Kubernetes API)
    // uses rustls with ring; an error only means it is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match cli.command {
        Command::Run(args) => args,
        Command::NodeSetup(args) => {
            if let Err(e) = node_setup::run(args) {
                eprintln!("damselfly-agent node-setup: {e}");
                std::process::exit(1);
            }
            return;
        }
        Command::Webhook(args) => {
            init_logging();
            let result = tokio::runtime::Runtime::new()
                .map_err(|e| format!("cannot start the async runtime: {e}"))
                .and_then(|runtime| runtime.block_on(webhook::run(args)));
            if let Err(e) = result {
                tracing::error!("{e}");
                std::process::exit(1);
            }
            return;
        }
        Command::Get(args) => std::process::exit(get::main(args)),
        Command::Image(command) => {
            let result = tokio::runtime::Runtime::new()
                .map_err(|e| format!("cannot start the async runtime: {e}"))
                .and_then(|runtime| runtime.block_on(image::run(command)));
            if let Err(e) = result {
                eprintln!("damselfly-agent image: {e}");
                std::process::exit(1);
            }
            return;
        }
    };
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("damselfly-agent: {e}");
            std::process::exit(2);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("damselfly-agent: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(config)) {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated(term.as_mut()) => {}
    }
}

pub(crate) async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for the {what}: {e}; is another agent running?"))
}

/// An HTTP client for the registry. HTTPS trusts the system's CAs and the
/// one in `--registry-ca`. The relay does not follow redirects: the client
/// it relays for follows them itself.
pub(crate) fn registry_client(ca: Option<&std::path::Path>, follow_redirects: bool) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
    if !follow_redirects {
        builder = builder.redirect(reqwest::redirect::Policy::none());
    }
    if let Some(path) = ca {
        let what = |e: &dyn std::fmt::Display| {
            format!("cannot use the registry CA {}: {e}; pass a PEM file with --registry-ca", path.display())
        };
        let pem = std::fs::read(path).map_err(|e| what(&e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| what(&e))?;
        if certs.is_empty() {
            return Err(what(&"no certificate in it"));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// The agent's parts wired together, before they listen anywhere: the
/// daemon serves them on its configured ports, a one-shot `get` on ephemeral ones.
pub(crate) struct Node {
    /// The registry client; its `start` registers and keeps the heartbeat going.
    pub registry: Arc<registry::RegistryClient>,
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
pub(crate) fn assemble(config: &Config) -> Result<Node, String> {
    let metrics = metrics::Metrics::new();
    let cache = cache::Cache::open(&config.cache_dir, config.cache_max_bytes, config.cache_watermarks, metrics.clone())
        .map_err(|e| format!("cannot use the cache directory {}: {e}", config.cache_dir.display()))?;
    let http = registry_client(config.registry_ca.as_deref(), true)?;
    let relay = registry_client(config.registry_ca.as_deref(), false)?;
    let registry = registry::RegistryClient::new(config.clone(), http.clone(), metrics.clone());
    let engine = piece::Engine::new(cache, registry.clone(), metrics.clone(), http, config);
    let mirror = mirror::router(mirror::MirrorState {
        registry: registry.clone(),
        engine: engine.clone(),
        metrics: metrics.clone(),
        relay,
    });
    let peer = peer::router(peer::PeerState {
        engine: engine.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        slots: registry.upload_slots(),
        feeds: peer::FeedSlots::new(config.feed_slots, metrics.feeds.clone()),
        corrupt: config.corrupt_pieces,
        upload_limit: Arc::new(rate::RateLimit::new(config.upload_rate)),
    });
    Ok(Node { registry, mirror, peer, metrics, engine })
}

async fn run(config: Config) -> Result<(), String> {
    let Node { registry, mirror, peer, metrics, engine } = assemble(&config)?;
    let (work, tasks) = tokio::sync::mpsc::unbounded_channel();
    registry.take_preheat_work(work);
    tokio::spawn(preheat::work(engine, registry.clone(), tasks));
    let mirror_listener = bind(config.listen, "registry mirror").await?;
    let peer_listener = bind(config.peer_listen, "piece server").await?;
    let metrics_listener = bind(config.metrics_listen, "metrics").await?;
    let peer_port = peer_listener.local_addr().map_err(|e| e.to_string())?.port();
    let metrics_app = metrics::router(metrics, registry.clone());
    tracing::info!(
        mirror = %config.listen, peer = %config.peer_listen, metrics = %config.metrics_listen,
        registry = config.registry, "damselfly-agent {} starting", env!("CARGO_PKG_VERSION")
    );
    tokio::spawn(registry.clone().start(peer_port));
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("shutting down");
    };
    let served = tokio::select! {
        r = axum::serve(mirror_listener, mirror) => r.map_err(|e| e.to_string()),
        r = peer::serve(peer_listener, peer) => r.map_err(|e| e.to_string()),
        r = axum::serve(metrics_listener, metrics_app) => r.map_err(|e| e.to_string()),
        _ = shutdown => Ok(()),
    };
    registry.unregister().await;
    served
}

async fn terminated(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
