//! `damselfly-registry`: an OCI Distribution v1.1 registry with SQL metadata
//! and a content-addressed blob store. Later it is also the P2P supernode.

pub mod api;
pub mod auth;
pub mod config;
pub mod console;
pub mod error;
pub mod health;
pub mod metadata;
pub mod observe;
pub mod oci;
pub mod p2p;
pub mod query;
pub mod services;
pub mod state;
pub mod storage;

use std::sync::Arc;

use axum::routing::{any, get};
use axum::Router;

use config::Config;
use metadata::Db;
use state::{AppState, UploadSessions};
use storage::BlobStore;

/// Why the registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The blob store could not be opened.
    #[error(transparent)]
    Storage(#[from] storage::OpenError),
    /// The database could not be opened.
    #[error(transparent)]
    Database(#[from] metadata::OpenError),
    /// The signing keys could not be loaded.
    #[error("cannot load the token signing keys: {0}")]
    Keys(#[from] auth::keys::KeyError),
    /// The first administrator could not be created.
    #[error("cannot create the first administrator: {0}")]
    Bootstrap(sqlx::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; is another process using it? Pick another with --listen")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Opens the data directory and the database and builds the shared state.
pub async fn build_state(config: Config) -> Result<AppState, StartError> {
    let url = config.database_url();
    if let Some(file) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        // The SQLite file's directory (the data directory by default), whatever holds the blobs.
        let file = std::path::Path::new(file.split('?').next().unwrap_or(file));
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| storage::OpenError::DataDir { path: dir.to_owned(), source })?;
        }
    }
    // Uploads record piece digests as they are hashed, before a blob's length is known; a blob
    // whose pieces the P2P network cuts otherwise is cut again as its push completes (p2p::layout).
    let upload_pieces = config.piece_size.unwrap_or(damselfly_core::PIECE_SIZE);
    let blobs = BlobStore::open(&config.storage, &config.data_dir, upload_pieces).await?;
    let db = Db::open(&config.database_url(), config.database_max_connections).await?;
    let auth = auth::Auth::open(&db, &config).await?;
    let stripes = config.p2p_stripes;
    let scheduler = Arc::new(p2p::Scheduler::new(std::time::Duration::from_secs(10)).with_stripes(stripes));
    let leases = Arc::new(p2p::Leases::new(db.clone(), config.internal_url(), scheduler.clone()));
    let sample = std::time::Duration::from_secs(config.traffic_sample_secs);
    Ok(AppState {
        config: Arc::new(config),
        db,
        blobs,
        metrics: Arc::new(observe::Metrics::new()),
        uploads: Arc::new(UploadSessions::default()),
        auth: Arc::new(auth),
        scheduler,
        p2p_stats: Arc::new(p2p::Stats::new(sample)),
        leases,
        forwarder: p2p::forward::client(),
        recuts: Arc::new(p2p::layout::Recuts::default()),
    })
}

/// Creates the default tenant and the admin user on first start.
pub async fn bootstrap(state: &AppState) -> Result<auth::bootstrap::Bootstrap, StartError> {
    auth::bootstrap::ensure_admin(&state.db, state.config.admin_password.as_deref())
        .await
        .map_err(StartError::Bootstrap)
}

/// Every HTTP route of the registry.
pub fn router(state: AppState) -> Router {
    Router::new()
        // A browser pointed at the registry lands in the console.
        .route("/", get(|| async { axum::response::Redirect::to("/console") }))
        .route("/v2", any(oci::dispatch))
        .route("/v2/", any(oci::dispatch))
        .route("/v2/{*path}", any(oci::dispatch))
        .route("/auth/token", get(auth::endpoint::get_token).post(auth::endpoint::post_token))
        .route("/auth/jwks.json", get(auth::endpoint::jwks))
        .route("/.well-known/jwks.json", get(auth::endpoint::jwks))
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(api::router())
        .merge(p2p::router(&state))
        .merge(console::router().layer(axum::middleware::from_fn_with_state(state.clone(), console::frame_errors)))
        .layer(axum::middleware::from_fn_with_state(state.clone(), health::fail_fast))
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), observe::track_requests))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let addr = state.config.listen;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let db = state.db.clone();
    let (leases, stats) = (state.leases.clone(), state.p2p_stats.clone());
    let tasks = [
        tokio::spawn(metadata::watch_health(db.clone())),
        tokio::spawn(services::uploads::run_janitor(state.clone())),
        tokio::spawn(auth::keys::refresh_periodically(state.auth.clone(), db.clone())),
        tokio::spawn(p2p::expire_periodically(state.clone())),
        tokio::spawn(p2p::lease::renew_periodically(leases.clone())),
        tokio::spawn(p2p::stats::flush_periodically(stats.clone(), db.clone())),
        tokio::spawn(services::gc::schedule::run_periodically(state.clone())),
    ];
    let header_timeout = std::time::Duration::from_secs(state.config.header_read_timeout_secs.max(1));
    let app = router(state);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, say: the connections being served
                // go on, and new ones are taken again in a moment.
                Err(e) => {
                    tracing::warn!(error = %e, "could not accept a connection; trying again in 1 s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: axum::http::Request<hyper::body::Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(axum::extract::ConnectInfo(remote));
            tower::ServiceExt::oneshot(app.clone(), request)
        });
        // hyper answers headers over ~400 KiB or of more than 100 fields
        // with 431, and bad request lines with 400, before any handler runs.
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %remote, "connection closed with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    for task in tasks {
        task.abort();
    }
    // Another replica takes this one's clusters at their next call, and the traffic counted here is kept.
    leases.release().await;
    if let Err(e) = stats.flush(&db).await {
        tracing::warn!(error = %e, "could not add the last P2P traffic counted here to the database");
    }
    db.close().await;
    Ok(())
}
