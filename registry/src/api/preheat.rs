//! `/api/v1/tenants/{tenant}/clusters/{cluster}/preheat`: push a tag's
//! blobs into the caches of a cluster's online agents before workloads pull.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use damselfly_core::RepositoryName;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::{Body, PathParams};
use crate::services::access::{self, Caller, Manage};
use crate::services::preheat::{self, Percent, PreheatJob, PreheatTrigger};
use crate::services::{clusters, number, Result};
use crate::state::AppState;

/// The body of `POST …/preheat`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPreheat {
    /// The repository, e.g. `team-a/app`; its namespace must belong to the tenant and have P2P on.
    #[schema(
        pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$",
        min_length = 1,
        max_length = 255
    )]
    pub repository: String,
    /// The tag whose config and layers are fetched.
    pub tag: String,
    /// Share of the cluster's online agents to preheat, 1 to 100 (rounded up to whole nodes); 100 if absent.
    #[serde(default = "all", deserialize_with = "number::whole")]
    #[schema(minimum = 1, maximum = 100)]
    pub percent: u8,
}

fn all() -> u8 {
    100
}

/// The cluster `name` of `tenant`, for a caller who manages the tenant.
async fn cluster(state: &AppState, caller: &Caller, tenant: &str, name: &str) -> Result<crate::metadata::Cluster> {
    let access = access::tenant::<Manage>(state, caller, tenant, None).await?;
    clusters::find(state, &access, name).await
}

/// Starts a preheat job: the chosen share of the cluster's online agents fetch the tag's
/// config and layers through the swarm into their caches (tenant admin or owner). For a
/// multi-platform tag, each node fetches the manifest of its own platform.
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/clusters/{cluster}/preheat",
    operation_id = "startPreheat",
    tag = "clusters",
    params(
        ("tenant" = String, Path, description = "Tenant name"),
        ("cluster" = String, Path, description = "Cluster name"),
    ),
    request_body = NewPreheat,
    responses(
        (status = 202, description = "Started; poll the job", body = PreheatJob),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
        (status = 404, description = "No such cluster, repository or tag in the tenant", body = ErrorBody),
        (status = 409, description = "P2P is off for the namespace, or the cluster has no online agent", body = ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((tenant, cluster_name)): PathParams<(String, String)>,
    Body(body): Body<NewPreheat>,
) -> ApiResult<(StatusCode, Json<PreheatJob>)> {
    let attempt = preheat::starting(&tenant, &cluster_name);
    let access = access::tenant::<Manage>(&state, &caller, &tenant, Some(attempt)).await?;
    let cluster = clusters::find(&state, &access, &cluster_name).await?;
    let percent = Percent::new(body.percent)?;
    let name: RepositoryName = body.repository.parse().map_err(|e| ApiError::InvalidRequest(format!("{e}")))?;
    let job = preheat::start(&state, &access, &cluster, &name, &body.tag, percent, PreheatTrigger::Api).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// A cluster's preheat jobs of the last hour, newest first (tenant admin or owner).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/clusters/{cluster}/preheat",
    operation_id = "listPreheats",
    tag = "clusters",
    params(
        ("tenant" = String, Path, description = "Tenant name"),
        ("cluster" = String, Path, description = "Cluster name"),
    ),
    responses(
        (status = 200, description = "The jobs", body = Vec<PreheatJob>),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
        (status = 404, description = "No such cluster", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((tenant, cluster_name)): PathParams<(String, String)>,
) -> ApiResult<Json<Vec<PreheatJob>>> {
    let cluster = cluster(&state, &caller, &tenant, &cluster_name).await?;
    Ok(Json(preheat::jobs(&state, cluster.id).await?))
}

/// A preheat job and where each of its nodes stands (tenant admin or owner).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/clusters/{cluster}/preheat/{job}",
    operation_id = "showPreheat",
    tag = "clusters",
    params(
        ("tenant" = String, Path, description = "Tenant name"),
        ("cluster" = String, Path, description = "Cluster name"),
        ("job" = String, Path, description = "Job id"),
    ),
    responses(
        (status = 200, description = "The job", body = PreheatJob),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
        (status = 404, description = "No such cluster or job (jobs are kept for an hour)", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((tenant, cluster_name, id)): PathParams<(String, String, String)>,
) -> ApiResult<Json<PreheatJob>> {
    let cluster = cluster(&state, &caller, &tenant, &cluster_name).await?;
    Ok(Json(preheat::job(&state, &cluster, &id).await?))
}
