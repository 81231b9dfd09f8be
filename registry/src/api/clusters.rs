//! `/api/v1/tenants/{tenant}/clusters`: register clusters for P2P
//! acceleration and see their agents.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::access::{self, Attempt, Caller, TenantNeed};
use super::error::{ApiResult, ErrorBody, OnDuplicate};
use super::names::Name;
use super::{Body, PathParams};
use crate::auth::password;
use crate::metadata;
use crate::state::AppState;

/// A registered cluster and its agents that are online.
#[derive(Serialize, ToSchema)]
pub struct Cluster {
    /// Name within the tenant.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Agents heard from within the last three heartbeats.
    pub agents: Vec<Agent>,
}

/// An agent of a cluster.
#[derive(Serialize, ToSchema)]
pub struct Agent {
    /// Agent id.
    pub id: String,
    /// Node name.
    pub node: String,
    /// Its piece server.
    pub url: String,
    /// Topology zone.
    pub zone: String,
    /// Agent version.
    pub version: String,
    /// The node's platform, e.g. `linux/amd64`.
    pub platform: String,
}

/// A cluster just registered, with its token (shown only here).
#[derive(Serialize, ToSchema)]
pub struct CreatedCluster {
    /// The cluster.
    #[serde(flatten)]
    pub cluster: Cluster,
    /// The token its agents authenticate with (`Authorization: Cluster <token>`).
    pub token: String,
}

/// The body of `POST /api/v1/tenants/{tenant}/clusters`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCluster {
    /// `[a-z0-9]+([._-][a-z0-9]+)*`, at most 64 characters.
    pub name: String,
}

fn view(state: &AppState, c: metadata::Cluster) -> Cluster {
    let agents = state
        .scheduler
        .agents_of(c.id)
        .into_iter()
        .map(|a| Agent { id: a.id, node: a.node, url: a.url, zone: a.zone, version: a.version, platform: a.platform })
        .collect();
    Cluster { name: c.name, created_at: c.created_at, agents }
}

/// The tenant's clusters and their online agents (tenant admin or owner).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/clusters",
    operation_id = "listClusters",
    tag = "clusters",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "Clusters by name", body = [Cluster]),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
) -> ApiResult<Json<Vec<Cluster>>> {
    let (tenant, _) = access::tenant(&state, &caller, &tenant, TenantNeed::Admin, None).await?;
    let clusters = state.db.clusters().of_tenant(tenant.id).await?;
    Ok(Json(clusters.into_iter().map(|c| view(&state, c)).collect()))
}

/// Registers a cluster and returns the token its agents use, once (tenant admin or owner).
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/clusters",
    operation_id = "createCluster",
    tag = "clusters",
    params(("tenant" = String, Path, description = "Tenant name")),
    request_body = NewCluster,
    responses(
        (status = 201, description = "Registered; the token is shown only here", body = CreatedCluster),
        (status = 400, description = "Invalid name or body", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
        (status = 409, description = "The tenant has a cluster of that name", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
    Body(body): Body<NewCluster>,
) -> ApiResult<(StatusCode, Json<CreatedCluster>)> {
    let object = format!("cluster/{tenant}/{}", body.name);
    let attempt = Attempt { action: "cluster.create", object: &object };
    let (tenant, _) = access::tenant(&state, &caller, &tenant, TenantNeed::Admin, Some(attempt)).await?;
    let name = Name::cluster(&body.name)?;
    // A prefix tells the token apart from passwords and robot tokens in a config file.
    let token = format!("dfc_{}", password::random_secret());
    let id = state
        .db
        .clusters()
        .create(tenant.id, name.as_str(), &password::token_sha256(&token))
        .await
        .on_duplicate(|| format!("tenant {} already has a cluster named {name}; pick another name", tenant.name))?;
    caller.record(&state, attempt, Some(tenant.id), Some(json!({ "cluster_id": id.0 }))).await;
    let cluster = Cluster { name: name.as_str().to_owned(), created_at: metadata::now(), agents: Vec::new() };
    Ok((StatusCode::CREATED, Json(CreatedCluster { cluster, token })))
}
