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
use crate::auth::principal::Principal;
use crate::auth::token::Access;
use crate::metadata;
use crate::p2p::preheat::{NewJob, NodePlan, PreheatJob, PreheatTrigger};
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
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Platform {
    /// Whether a node of `platform` (`<os>/<arch>[/<variant>]`) runs this.
    fn serves(&self, platform: &str) -> bool {
        let mut parts = platform.split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        os == Some(self.os.as_str())
            && arch == Some(self.architecture.as_str())
            && variant.is_none_or(|v| self.variant.as_deref() == Some(v))
    }
}

/// The parts of a manifest preheat reads: an image's (or artifact's) blobs,
/// or an index's manifests.
#[derive(Deserialize)]
struct Manifest {
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

impl Manifest {
    fn parse(content: &[u8]) -> Option<Manifest> {
        serde_json::from_slice(content).ok()
    }

    fn blobs(self) -> Vec<Digest> {
        let mut blobs: Vec<Digest> = self.config.into_iter().chain(self.layers).map(|d| d.digest).collect();
        blobs.dedup();
        blobs
    }
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
    let job = launch(
        &state,
        Launch { tenant: &tenant, cluster: &cluster, name: &name, tag: &body.tag, percent: body.percent },
        &caller.principal,
        PreheatTrigger::Api,
    )
    .await?;
    let detail = json!({ "job": job.id, "repository": job.repository, "tag": job.tag, "nodes": job.nodes.len() });
    caller.record(&state, attempt, Some(tenant.id), Some(detail)).await;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// What to preheat where.
pub(crate) struct Launch<'a> {
    /// The tenant of the cluster; the repository's namespace must be its own.
    pub tenant: &'a metadata::Tenant,
    /// The cluster.
    pub cluster: &'a metadata::Cluster,
    /// The repository.
    pub name: &'a RepositoryName,
    /// The tag.
    pub tag: &'a str,
    /// Share of the cluster's online agents, 1 to 100.
    pub percent: u8,
}

/// Plans and starts a preheat job: the chosen agents, and for each the
/// manifest of its platform with that manifest's blobs. The agents join
/// with a pull token of the repository issued to `principal`.
pub(crate) async fn launch(
    state: &AppState,
    what: Launch<'_>,
    principal: &Principal,
    trigger: PreheatTrigger,
) -> ApiResult<PreheatJob> {
    let Launch { tenant, cluster, name, tag, percent } = what;
    let missing = || ApiError::NotFound(format!("{}:{tag} does not exist in tenant {}", name.as_str(), tenant.name));
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
    let manifest = state.db.manifests().find_by_tag(name.as_str(), tag).await?.ok_or_else(missing)?;
    let parsed = Manifest::parse(&manifest.content).ok_or_else(|| {
        ApiError::InvalidRequest(format!("{}:{tag} is not a JSON manifest; it cannot be preheated", name.as_str()))
    })?;
    let mut agents = state.scheduler.agents_of(cluster.id);
    if agents.is_empty() {
        return Err(ApiError::Conflict(format!(
            "cluster {} has no online agent to preheat; check its nodes with GET /api/v1/tenants/{}/clusters",
            cluster.name, tenant.name
        )));
    }
    agents.sort_by(|a, b| a.node.cmp(&b.node));
    let chosen = (agents.len() * usize::from(percent)).div_ceil(100).max(1);
    agents.truncate(chosen);

    let mut nodes = Vec::with_capacity(agents.len());
    if parsed.manifests.is_empty() {
        let blobs = parsed.blobs();
        for a in agents {
            nodes.push(NodePlan {
                agent_id: a.id,
                node: a.node,
                platform: a.platform,
                fetch: Ok((manifest.digest, blobs.clone())),
            });
        }
    } else {
        // One lookup per platform the chosen nodes run, not per node.
        let mut per_platform: std::collections::HashMap<String, Result<(Digest, Vec<Digest>), String>> =
            std::collections::HashMap::new();
        for a in agents {
            if !per_platform.contains_key(&a.platform) {
                let fetch = platform_manifest(state, name, &parsed, &a.platform).await?;
                per_platform.insert(a.platform.clone(), fetch);
            }
            let fetch = per_platform[&a.platform].clone();
            nodes.push(NodePlan { agent_id: a.id, node: a.node, platform: a.platform, fetch });
        }
    }
    let access =
        vec![Access { kind: "repository".into(), name: name.as_str().to_owned(), actions: vec!["pull".into()] }];
    let (token, _) = state.auth.issue(principal, access, "access").map_err(ApiError::Internal)?;
    Ok(state.preheats.create(NewJob {
        cluster: cluster.id,
        repository: name.as_str().to_owned(),
        tag: tag.to_owned(),
        manifest: manifest.digest,
        token,
        trigger,
        nodes,
    }))
}

/// Preheats a tag just pushed into the clusters its namespace names for new
/// tags, while P2P is on there; as `principal`, the pusher. Returns each
/// cluster's job, or why it has none (e.g. no agent is online). Never fails
/// the push: the caller logs what went wrong.
pub(crate) async fn on_push(
    state: &AppState,
    name: &RepositoryName,
    tag: &str,
    principal: &Principal,
) -> Vec<(String, ApiResult<PreheatJob>)> {
    let found = async {
        // Through the policy cache, as every push already looks the namespace up there.
        let Some(ns) = state.auth.policy.namespace(&state.db, name.namespace()).await? else { return Ok(None) };
        if !ns.p2p_enabled {
            return Ok(None);
        }
        let targets = state.db.clusters().preheat_targets(ns.id).await?;
        if targets.is_empty() {
            return Ok(None);
        }
        let tenant = state.db.tenancy().tenant(&ns.tenant).await?;
        Ok::<_, sqlx::Error>(tenant.map(|t| (t, targets)))
    };
    let (tenant, targets) = match found.await {
        Ok(Some(found)) => found,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![(String::new(), Err(e.into()))],
    };
    let mut jobs = Vec::with_capacity(targets.len());
    for (cluster, percent) in targets {
        let what = Launch { tenant: &tenant, cluster: &cluster, name, tag, percent };
        let job = launch(state, what, principal, PreheatTrigger::Push).await;
        jobs.push((cluster.name.clone(), job));
    }
    jobs
}

/// The manifest of an index for nodes of `platform`, with its blobs; `Err`
/// (for the node, not the request) when the index has none.
async fn platform_manifest(
    state: &AppState,
    name: &RepositoryName,
    index: &Manifest,
    platform: &str,
) -> ApiResult<Result<(Digest, Vec<Digest>), String>> {
    let Some(entry) = index.manifests.iter().find(|m| m.platform.as_ref().is_some_and(|p| p.serves(platform))) else {
        return Ok(Err(format!("the tag is an index with no manifest for this node's platform {platform}")));
    };
    let Some(child) = state.db.manifests().find_by_digest(name.as_str(), &entry.digest).await? else {
        return Ok(Err(format!("the manifest {} of platform {platform} is not in the repository", entry.digest)));
    };
    match Manifest::parse(&child.content) {
        Some(m) if m.manifests.is_empty() => Ok(Ok((child.digest, m.blobs()))),
        _ => Ok(Err(format!("the manifest {} of platform {platform} is not an image manifest", entry.digest))),
    }
}

/// A cluster whose jobs the caller may follow: they administer its tenant.
async fn watched_cluster(state: &AppState, caller: &Caller, tenant: &str, name: &str) -> ApiResult<metadata::Cluster> {
    let (tenant, _) = access::tenant(state, caller, tenant, TenantNeed::Admin, None).await?;
    cluster(state, &tenant, name).await
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
    let cluster = watched_cluster(&state, &caller, &tenant, &cluster_name).await?;
    let online = |agent: &str| state.scheduler.agent(cluster.id, agent).is_some();
    Ok(Json(state.preheats.jobs_of(cluster.id, online)))
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
    let cluster = watched_cluster(&state, &caller, &tenant, &cluster_name).await?;
    let online = |agent: &str| state.scheduler.agent(cluster.id, agent).is_some();
    let job = state.preheats.job(cluster.id, &id, online).ok_or_else(|| {
        ApiError::NotFound(format!("cluster {} has no preheat job {id} (jobs are kept for an hour)", cluster.name))
    })?;
    Ok(Json(job))
}
