//! `GET /p2p/v1/namespaces/{namespace}/acceleration`: whether a registry
//! namespace's P2P switch is on, for a cluster's image-rewrite webhook, which
//! moves only those images to the acceleration address. A cluster sees its
//! own tenant's namespaces and public ones; any other is as good as absent.
//! A cluster accelerates only its own tenant's namespaces (see the join), so
//! another tenant's public namespace is never switched on for it: its images
//! are pulled from the registry as they are.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use damselfly_core::ErrorCode;
use serde::Serialize;

use super::extract::P2pPath;
use super::routes::ClusterCaller;
use crate::error::{RegistryError, Result};
use crate::state::AppState;

/// The acceleration route.
pub fn router() -> Router<AppState> {
    Router::new().route("/p2p/v1/namespaces/{namespace}/acceleration", get(acceleration))
}

/// A registry namespace's P2P switch.
#[derive(Serialize)]
struct Acceleration {
    namespace: String,
    p2p_enabled: bool,
}

async fn acceleration(
    State(state): State<AppState>,
    ClusterCaller(cluster): ClusterCaller,
    P2pPath(name): P2pPath<String>,
) -> Result<Json<Acceleration>> {
    let namespace = state.auth.policy.namespace(&state.db, &name).await?;
    match namespace {
        Some(n) if n.tenant_id == cluster.tenant_id || n.public => {
            let p2p_enabled = n.p2p_enabled && n.tenant_id == cluster.tenant_id;
            Ok(Json(Acceleration { namespace: n.name, p2p_enabled }))
        }
        _ => Err(RegistryError::oci(
            ErrorCode::NameUnknown,
            format!("no namespace {name} that cluster {}/{} may see", cluster.tenant, cluster.name),
        )
        .with_status(StatusCode::NOT_FOUND)),
    }
}
