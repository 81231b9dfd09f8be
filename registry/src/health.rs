//! The operator's endpoints: `/metrics` (Prometheus), `/healthz` (the
//! process is up) and `/readyz` (the database answers and the blob store is
//! writable, or for S3, answers).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{database_unreachable, DatabaseUnreachable};
use crate::metadata::Engine;
use crate::state::AppState;

/// Every request but `/healthz` and `/metrics`: while the metadata database
/// is known to be down (see `crate::metadata::Health`), answers `503` at
/// once instead of letting the request wait the pool's acquire timeout; a
/// request already running when the database is declared down is answered
/// the same way at that moment (dropping it is what a client hanging up
/// does: transactions roll back, partial uploads are cleaned up). A request
/// that met a connection error has the database looked at now.
pub async fn fail_fast(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // SQLite is a file of this process: nothing to watch, nothing to race.
    if matches!(request.uri().path(), "/healthz" | "/metrics") || state.db.engine() != Engine::Postgres {
        return next.run(request).await;
    }
    let health = state.db.health();
    // The management API answers in its own error body; everything else in the OCI one.
    let api = request.uri().path().starts_with("/api/");
    let mut down = health.subscribe();
    if *down.borrow_and_update() {
        return if api {
            crate::api::error::database_unreachable()
        } else {
            database_unreachable(
                "the registry's metadata database is unreachable; nothing was changed by this request, retry in a \
                 few seconds",
            )
        };
    }
    let response = tokio::select! {
        response = next.run(request) => response,
        Ok(_) = down.wait_for(|down| *down) => {
            return if api {
                crate::api::error::database_unreachable()
            } else {
                database_unreachable(
                    "the registry's metadata database is unreachable and this request was stopped; retry it in a \
                     few seconds",
                )
            };
        }
    };
    if response.extensions().get::<DatabaseUnreachable>().is_some() {
        health.suspect();
    }
    response
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    // While the database is down its figures stay as last read: reading now would wait the pool's timeout.
    if !state.db.health().is_down() {
        match state.db.blobs().totals().await {
            Ok((count, bytes)) => state.metrics.set_blob_store(count, bytes),
            Err(e) => tracing::warn!(error = %e, "could not read blob store totals for /metrics"),
        }
        // Labelled with tenants' names, which an anonymous scrape must not learn unless the operator says so.
        if state.config.metrics_tenant_labels {
            match state.db.storage().all().await {
                Ok(rows) => state.metrics.set_storage(&rows),
                Err(e) => tracing::warn!(error = %e, "could not read storage use for /metrics"),
            }
        }
        match state.db.gc_runs().last_finished().await {
            Ok(Some(run)) => state.metrics.set_gc_last_run(&run),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the last garbage collection run for /metrics"),
        }
    }
    let census = state.scheduler.census();
    state.metrics.set_p2p(census.agents, census.swarms, state.leases.held());
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the database answers and the blob store is writable (filesystem) or answers (S3).
pub async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(e) = state.db.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("metadata database unavailable: {e}\n")).into_response();
    }
    if let Err(e) = state.blobs.probe().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response();
    }
    "ready\n".into_response()
}
