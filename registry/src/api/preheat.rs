//! `/api/v1/tenants/{tenant}/clusters/{cluster}/preheat`: push a tag's
//! blobs into the caches of a cluster's online agents before workloads pull.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use damselfly_core::{Digest, RepositoryName};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::access::{self, Attempt, Caller, TenantNeed};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::{Body, PathParams};
use crate::auth::token::Access;
use crate::metadata;
use crate::p2p::preheat::{NewJob, PreheatJob};
use crate::state::AppState;

/// The body of `POST …/preheat`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPreheat {
    /// The repository, e.g. `team-a/app`; its namespace must belong to the tenant and have P2P on.
    pub repository: String,
    /// The tag whose config and layers are fetched.
    pub tag: String,
    /// Share of the cluster's online agents to preheat, 1 to 100 (rounded up to whole nodes); 100 if absent.
    #[serde(default = "all")]
    pub percent: u8,
}

fn all() -> u8 {
    100
}

#[derive(Deserialize)]
struct Descriptor {
    digest: Digest,
}

/// The parts of a manifest preheat reads.
#[derive(Deserialize)]
struct Manifest {
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

async fn cluster(state: &AppState, tenant: &metadata::Tenant, name: &str) -> ApiResult<metadata::Cluster> {
    let clusters = state.db.clusters().of_tenant(tenant.id).await?;
    clusters.into_iter().find(|c| c.name == name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "cluster {name} does not exist in tenant {t}; list them with GET /api/v1/tenants/{t}/clusters",
            t = tenant.name
        ))
    })
}

/// Starts a preheat job: the chosen share of the cluster's online agents fetch the tag's
/// config and layers through the swarm into their caches (tenant admin or owner).
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
        (status = 400, description = "Invalid body, or the tag is an index", body = ErrorBody),
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
    let object = format!("cluster/{tenant}/{cluster_name}");
    let attempt = Attempt { action: "cluster.preheat", object: &object };
    let (tenant, _) = access::tenant(&state, &caller, &tenant, TenantNeed::Admin, Some(attempt)).await?;
    let cluster = cluster(&state, &tenant, &cluster_name).await?;
    if !(1..=100).contains(&body.percent) {
        return Err(ApiError::InvalidRequest(format!(
            "percent {} is out of range: give 1 to 100 (the share of online agents to preheat)",
            body.percent
        )));
    }
    let name: RepositoryName = body.repository.parse().map_err(|e| ApiError::InvalidRequest(format!("{e}")))?;
    let missing =
        || ApiError::NotFound(format!("{}:{} does not exist in tenant {}", name.as_str(), body.tag, tenant.name));
    // Only the tenant's own namespaces: a cluster never caches another tenant's blobs.
    let namespace = state.db.tenancy().namespace(name.namespace()).await?.filter(|n| n.tenant_id == tenant.id);
    let namespace = namespace.ok_or_else(missing)?;
    if !namespace.p2p_enabled {
        return Err(ApiError::Conflict(format!(
            "P2P acceleration is off for namespace {n}: switch it on first (PATCH /api/v1/namespaces/{n} \
             {{\"p2p_enabled\": true}})",
            n = namespace.name
        )));
    }
    let manifest = state.db.manifests().find_by_tag(name.as_str(), &body.tag).await?.ok_or_else(missing)?;
    let parsed: Manifest = serde_json::from_slice(&manifest.content).map_err(|_| {
        ApiError::InvalidRequest(format!(
            "{}:{} is not an image or artifact manifest (an index?): preheat the tag of one platform's manifest",
            name.as_str(),
            body.tag
        ))
    })?;
    let mut blobs: Vec<Digest> = parsed.config.into_iter().chain(parsed.layers).map(|d| d.digest).collect();
    blobs.dedup();
    let mut agents = state.scheduler.agents_of(cluster.id);
    if agents.is_empty() {
        return Err(ApiError::Conflict(format!(
            "cluster {} has no online agent to preheat; check its nodes with GET /api/v1/tenants/{}/clusters",
            cluster.name, tenant.name
        )));
    }
    agents.sort_by(|a, b| a.node.cmp(&b.node));
    let chosen = (agents.len() * usize::from(body.percent)).div_ceil(100).max(1);
    agents.truncate(chosen);
    let access =
        vec![Access { kind: "repository".into(), name: name.as_str().to_owned(), actions: vec!["pull".into()] }];
    let (token, _) = state.auth.issue(&caller.principal, access, "access").map_err(ApiError::Internal)?;
    let job = state.preheats.create(
        NewJob {
            cluster: cluster.id,
            repository: name.as_str().to_owned(),
            tag: body.tag.clone(),
            manifest: manifest.digest,
            blobs,
            token,
        },
        &agents,
    );
    let detail = json!({ "job": job.id, "repository": job.repository, "tag": job.tag, "nodes": job.nodes.len() });
    caller.record(&state, attempt, Some(tenant.id), Some(detail)).await;
    Ok((StatusCode::ACCEPTED, Json(job)))
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
    let (tenant, _) = access::tenant(&state, &caller, &tenant, TenantNeed::Admin, None).await?;
    let cluster = cluster(&state, &tenant, &cluster_name).await?;
    let online = |agent: &str| state.scheduler.agent(cluster.id, agent).is_some();
    let job = state.preheats.job(cluster.id, &id, online).ok_or_else(|| {
        ApiError::NotFound(format!("cluster {} has no preheat job {id} (jobs are kept for an hour)", cluster.name))
    })?;
    Ok(Json(job))
}
