//! `/api/v1/tenants/{tenant}/clusters`: register clusters for P2P
//! acceleration and see their agents.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::{Body, PathParams};
use crate::services::access::{self, Caller, Manage};
use crate::services::clusters::{self, Cluster};
use crate::services::names::Name;
use crate::state::AppState;

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
    #[schema(pattern = r"^[a-z0-9]+([._-][a-z0-9]+)*$", min_length = 1, max_length = 64)]
    pub name: String,
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
        (status = 404, description = "No such tenant (system administrator only)", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
) -> ApiResult<Json<Vec<Cluster>>> {
    let access = access::tenant::<Manage>(&state, &caller, &tenant, None).await?;
    Ok(Json(clusters::list(&state, &access).await?))
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
        (status = 404, description = "No such tenant (system administrator only)", body = ErrorBody),
        (status = 409, description = "The tenant has a cluster of that name", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
    Body(body): Body<NewCluster>,
) -> ApiResult<(StatusCode, Json<CreatedCluster>)> {
    let attempt = clusters::registering(&tenant, &body.name);
    let access = access::tenant::<Manage>(&state, &caller, &tenant, Some(attempt)).await?;
    let name = Name::cluster(&body.name)?;
    let (cluster, token) = clusters::register(&state, &access, &name).await?;
    Ok((StatusCode::CREATED, Json(CreatedCluster { cluster, token })))
}

/// Gives a cluster a new token and returns it, once (tenant admin or owner).
/// The old token stops working at once: the cluster's agents, and the setup
/// command shown with it, until the cluster is set up again with the new one.
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/clusters/{cluster}/token",
    operation_id = "reissueClusterToken",
    tag = "clusters",
    params(
        ("tenant" = String, Path, description = "Tenant name"),
        ("cluster" = String, Path, description = "Cluster name within the tenant"),
    ),
    responses(
        (status = 200, description = "The new token, shown only here", body = CreatedCluster),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
        (status = 404, description = "No such cluster in the tenant", body = ErrorBody),
    )
)]
pub async fn reissue_token(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((tenant, name)): PathParams<(String, String)>,
) -> ApiResult<Json<CreatedCluster>> {
    let attempt = clusters::reissuing(&tenant, &name);
    let access = access::tenant::<Manage>(&state, &caller, &tenant, Some(attempt)).await?;
    let (cluster, token) = clusters::reissue_token(&state, &access, &name).await?;
    Ok(Json(CreatedCluster { cluster, token }))
}

/// Deletes a cluster (tenant admin or owner): its token stops working, its
/// agents are forgotten, and namespaces stop preheating new tags into it.
/// What the setup script installed stays on the nodes until it is run with
/// `--uninstall`.
#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{tenant}/clusters/{cluster}",
    operation_id = "deleteCluster",
    tag = "clusters",
    params(
        ("tenant" = String, Path, description = "Tenant name"),
        ("cluster" = String, Path, description = "Cluster name within the tenant"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
        (status = 404, description = "No such cluster in the tenant", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((tenant, name)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let attempt = clusters::deleting(&tenant, &name);
    let access = access::tenant::<Manage>(&state, &caller, &tenant, Some(attempt)).await?;
    clusters::delete(&state, &access, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
