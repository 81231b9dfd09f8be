//! Namespaces: list and create them in a tenant, read and change one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::{Body, PathParams};
use crate::services::access::{self, Caller, Manage, Read};
use crate::services::names::Name;
use crate::services::namespaces::{self, PreheatTarget};
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

impl From<namespaces::Namespace> for Namespace {
    fn from(n: namespaces::Namespace) -> Self {
        Namespace {
            name: n.name.clone(),
            tenant: n.tenant.clone(),
            public: n.public,
            p2p_enabled: n.p2p_enabled,
            created_at: n.created_at,
            preheat_on_push: n.preheat_on_push,
        }
    }
}

/// The body of `POST /api/v1/tenants/{tenant}/namespaces`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNamespace {
    /// `[a-z0-9]+([._-][a-z0-9]+)*`, at most 64 characters, unique across tenants.
    #[schema(pattern = r"^[a-z0-9]+([._-][a-z0-9]+)*$", min_length = 1, max_length = 64)]
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
    let access = access::tenant::<Read>(&state, &caller, &tenant, None).await?;
    let namespaces = namespaces::visible(&state, &access).await?;
    Ok(Json(namespaces.into_iter().map(Namespace::from).collect()))
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
    let access = access::tenant::<Manage>(&state, &caller, &tenant, Some(namespaces::creating(&body.name))).await?;
    let name = Name::namespace(&body.name)?;
    let created = namespaces::create(&state, &access, &name, body.public).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
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
    let access = access::namespace::<Read>(&state, &caller, &name, None).await?;
    Ok(Json(namespaces::show(&state, &access).await?.into()))
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
    let access = access::namespace::<Manage>(&state, &caller, &name, Some(namespaces::updating(&name))).await?;
    let change = namespaces::Change {
        public: change.public,
        p2p_enabled: change.p2p_enabled,
        preheat_on_push: change.preheat_on_push,
    };
    Ok(Json(namespaces::update(&state, &access, change).await?.into()))
}
