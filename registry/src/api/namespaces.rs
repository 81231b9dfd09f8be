//! Namespaces: list and create them in a tenant, read and change one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::access::{self, Attempt, Caller, NamespaceNeed, Standing, TenantNeed};
use super::error::{ApiError, ApiResult, ErrorBody, OnDuplicate};
use super::names::Name;
use super::{Body, PathParams};
use crate::metadata;
use crate::state::AppState;

/// A namespace: the first path component of its repositories' names.
#[derive(Serialize, ToSchema)]
pub struct Namespace {
    /// Unique name across all tenants.
    pub name: String,
    /// The tenant that owns it.
    pub tenant: String,
    /// Anyone may pull from it, even without logging in.
    pub public: bool,
    /// P2P acceleration is on for its blobs.
    pub p2p_enabled: bool,
    /// Clusters that every newly pushed tag is preheated into, while P2P is on.
    pub preheat_on_push: Vec<PreheatTarget>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A cluster that new tags are preheated into.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PreheatTarget {
    /// A cluster of the namespace's tenant.
    pub cluster: String,
    /// Share of its online agents, 1 to 100 (rounded up to whole nodes); 100 if absent.
    #[serde(default = "all_agents")]
    pub percent: u8,
}

fn all_agents() -> u8 {
    100
}

/// The API's view of a namespace row.
pub(super) async fn described(state: &AppState, n: metadata::Namespace) -> ApiResult<Namespace> {
    let targets = state.db.clusters().preheat_targets(n.id).await?;
    Ok(Namespace {
        name: n.name,
        tenant: n.tenant,
        public: n.public,
        p2p_enabled: n.p2p_enabled,
        preheat_on_push: targets.into_iter().map(|(c, percent)| PreheatTarget { cluster: c.name, percent }).collect(),
        created_at: n.created_at,
    })
}

/// The body of `POST /api/v1/tenants/{tenant}/namespaces`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNamespace {
    /// `[a-z0-9]+([._-][a-z0-9]+)*`, at most 64 characters, unique across tenants.
    pub name: String,
    /// Let anyone pull; private unless given.
    #[serde(default)]
    pub public: bool,
}

/// The body of `PATCH /api/v1/namespaces/{namespace}`; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceChange {
    /// Let anyone pull.
    pub public: Option<bool>,
    /// Turn P2P acceleration on or off.
    pub p2p_enabled: Option<bool>,
    /// Replace the clusters every newly pushed tag is preheated into (`[]` for none).
    pub preheat_on_push: Option<Vec<PreheatTarget>>,
}

/// The namespaces of `tenant` that a caller with `standing` may see: all of
/// them with a tenant-wide role, only their own with namespace roles.
pub(super) async fn visible(
    state: &AppState,
    tenant: &metadata::Tenant,
    standing: &Standing,
) -> ApiResult<Vec<Namespace>> {
    let mut namespaces = state.db.tenancy().namespaces_of(tenant.id).await?;
    if standing.tenant_role.is_none() {
        namespaces.retain(|n| standing.role_on(n.id).is_some());
    }
    let mut shown = Vec::with_capacity(namespaces.len());
    for n in namespaces {
        shown.push(described(state, n).await?);
    }
    Ok(shown)
}

/// A tenant's namespaces (any role in the tenant; members of single namespaces see only theirs).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/namespaces",
    operation_id = "listNamespaces",
    tag = "namespaces",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "Namespaces by name", body = Vec<Namespace>),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "No role in the tenant (also when it does not exist)", body = ErrorBody),
        (status = 404, description = "No such tenant (system administrator only)", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
) -> ApiResult<Json<Vec<Namespace>>> {
    let (tenant, standing) = access::tenant(&state, &caller, &tenant, TenantNeed::Member, None).await?;
    Ok(Json(visible(&state, &tenant, &standing).await?))
}

/// Creates a namespace in a tenant (tenant admin or owner).
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/namespaces",
    operation_id = "createNamespace",
    tag = "namespaces",
    params(("tenant" = String, Path, description = "Tenant name")),
    request_body = NewNamespace,
    responses(
        (status = 201, description = "Created", body = Namespace),
        (status = 400, description = "Invalid name or body", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
        (status = 404, description = "No such tenant (system administrator only)", body = ErrorBody),
        (status = 409, description = "The name is taken, in this or another tenant", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
    Body(body): Body<NewNamespace>,
) -> ApiResult<(StatusCode, Json<Namespace>)> {
    let object = format!("namespace/{}", body.name);
    let attempt = Attempt { action: "namespace.create", object: &object };
    let (tenant, _) = access::tenant(&state, &caller, &tenant, TenantNeed::Admin, Some(attempt)).await?;
    let name = Name::namespace(&body.name)?;
    state.db.tenancy().create_namespace(tenant.id, name.as_str(), body.public).await.on_duplicate(|| {
        format!("namespace {name} already exists (namespace names are unique across tenants); pick another name")
    })?;
    state.auth.invalidate();
    caller.record(&state, attempt, Some(tenant.id), Some(json!({ "public": body.public }))).await;
    let created = state.db.tenancy().namespace(name.as_str()).await?;
    let created = created.ok_or_else(|| ApiError::Internal(format!("namespace {name} vanished after creation")))?;
    Ok((StatusCode::CREATED, Json(described(&state, created).await?)))
}

/// A namespace (any role on it or its tenant; anyone logged in, if it is public).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}",
    operation_id = "getNamespace",
    tag = "namespaces",
    params(("namespace" = String, Path, description = "Namespace name")),
    responses(
        (status = 200, description = "The namespace", body = Namespace),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "No role on it or its tenant (also when it does not exist)", body = ErrorBody),
        (status = 404, description = "No such namespace (system administrator only)", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<Namespace>> {
    let ns = access::namespace(&state, &caller, &name, NamespaceNeed::Read, None).await?;
    Ok(Json(described(&state, ns).await?))
}

/// Changes whether a namespace is public, whether P2P acceleration is on, and
/// which clusters its new tags are preheated into (admin or owner of the
/// namespace or its tenant).
#[utoipa::path(
    patch,
    path = "/api/v1/namespaces/{namespace}",
    operation_id = "updateNamespace",
    tag = "namespaces",
    params(("namespace" = String, Path, description = "Namespace name")),
    request_body = NamespaceChange,
    responses(
        (status = 200, description = "The namespace as changed", body = Namespace),
        (status = 400, description = "Invalid body or percent", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of it or its tenant", body = ErrorBody),
        (status = 404, description = "No such namespace (system administrator only), or no such cluster in its tenant", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(name): PathParams<String>,
    Body(change): Body<NamespaceChange>,
) -> ApiResult<Json<Namespace>> {
    let object = format!("namespace/{name}");
    let attempt = Attempt { action: "namespace.update", object: &object };
    let ns = access::namespace(&state, &caller, &name, NamespaceNeed::Admin, Some(attempt)).await?;
    if change.public.is_none() && change.p2p_enabled.is_none() && change.preheat_on_push.is_none() {
        return Ok(Json(described(&state, ns).await?));
    }
    let mut detail = serde_json::Map::new();
    if let Some(targets) = &change.preheat_on_push {
        let rows = preheat_rows(&state, &ns, targets).await?;
        state.db.clusters().set_preheat_targets(ns.id, &rows).await?;
        detail.insert("preheat_on_push".into(), json!(targets));
    }
    state.db.tenancy().update_namespace(ns.id, change.public, change.p2p_enabled).await?;
    state.auth.invalidate();
    if let Some(p) = change.public {
        detail.insert("public".into(), p.into());
    }
    if let Some(p) = change.p2p_enabled {
        detail.insert("p2p_enabled".into(), p.into());
    }
    caller.record(&state, attempt, Some(ns.tenant_id), Some(detail.into())).await;
    let updated = state.db.tenancy().namespace(&name).await?;
    let updated = updated.ok_or_else(|| ApiError::NotFound(format!("namespace {name} was deleted meanwhile")))?;
    Ok(Json(described(&state, updated).await?))
}

/// Checks preheat targets against the namespace's tenant: each names one of
/// its clusters, once, with a percent from 1 to 100.
async fn preheat_rows(
    state: &AppState,
    ns: &metadata::Namespace,
    targets: &[PreheatTarget],
) -> ApiResult<Vec<(metadata::ClusterId, u8)>> {
    let clusters = state.db.clusters().of_tenant(ns.tenant_id).await?;
    let mut rows = Vec::with_capacity(targets.len());
    for t in targets {
        if !(1..=100).contains(&t.percent) {
            return Err(ApiError::InvalidRequest(format!(
                "preheat_on_push: percent {} for cluster {} is out of range: give 1 to 100 (the share of online \
                 agents to preheat)",
                t.percent, t.cluster
            )));
        }
        // Only the tenant's own clusters: another tenant's nodes never cache this namespace.
        let Some(c) = clusters.iter().find(|c| c.name == t.cluster) else {
            return Err(ApiError::NotFound(format!(
                "preheat_on_push: cluster {c} does not exist in tenant {t}; list them with GET \
                 /api/v1/tenants/{t}/clusters",
                c = t.cluster,
                t = ns.tenant
            )));
        };
        if rows.iter().any(|(id, _)| *id == c.id) {
            return Err(ApiError::InvalidRequest(format!(
                "preheat_on_push names cluster {} twice; give each cluster once",
                t.cluster
            )));
        }
        rows.push((c.id, t.percent));
    }
    Ok(rows)
}
