//! Quotas and lifecycle policies: `/api/v1/tenants/{tenant}/quota`,
//! `/api/v1/namespaces/{namespace}/quota`, `/api/v1/namespaces/{namespace}/lifecycle`
//! and its preview (what a run would delete now).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::{Body, PathParams};
use crate::metadata::Usage;
use crate::services::access::{self, Caller, Manage, Read};
use crate::services::lifecycle::{self, Outcome, Policy, RetentionRule};
use crate::services::quota::{self, Limits};
use crate::state::AppState;

/// A quota and what is used against it.
#[derive(Serialize, ToSchema)]
pub struct Quota {
    /// Most bytes allowed; null for no limit.
    pub limit_bytes: Option<i64>,
    /// Most repositories allowed; null for no limit.
    pub limit_repositories: Option<i64>,
    /// Bytes stored: each blob once per namespace, each manifest in each repository holding it.
    pub used_bytes: i64,
    /// Repositories that hold a blob or a manifest.
    pub used_repositories: i64,
}

impl From<Usage> for Quota {
    fn from(u: Usage) -> Self {
        Quota {
            limit_bytes: u.quota_bytes,
            limit_repositories: u.quota_repositories,
            used_bytes: u.used_bytes,
            used_repositories: u.used_repositories,
        }
    }
}

/// The body of a quota PUT: each limit, or null for none (an absent field is null).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaChange {
    /// Most bytes; null for no limit.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 0)]
    pub limit_bytes: Option<i64>,
    /// Most repositories; null for no limit.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 0)]
    pub limit_repositories: Option<i64>,
}

/// A JSON number with no fraction, as JSON Schema's `integer` counts one: `5` or `5.0`.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    n.as_i64()
        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64))
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number of at most 63 bits")))
}

/// A tenant's quota and use (any role in the tenant).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/quota",
    operation_id = "getTenantQuota",
    tag = "storage",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "Quota and use", body = Quota),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "No role in the tenant (also when it does not exist)", body = ErrorBody),
        (status = 404, description = "No such tenant (system administrator only)", body = ErrorBody),
    )
)]
pub async fn tenant_quota(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
) -> ApiResult<Json<Quota>> {
    let access = access::tenant::<Read>(&state, &caller, &tenant, None).await?;
    Ok(Json(quota::of_tenant(&state, &access).await?.into()))
}

/// Sets a tenant's quota (system administrator). It applies from the next push on.
#[utoipa::path(
    put,
    path = "/api/v1/tenants/{tenant}/quota",
    operation_id = "setTenantQuota",
    tag = "storage",
    params(("tenant" = String, Path, description = "Tenant name")),
    request_body = QuotaChange,
    responses(
        (status = 200, description = "Quota and use", body = Quota),
        (status = 400, description = "A negative limit, or an invalid body", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not the system administrator", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    )
)]
pub async fn set_tenant_quota(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
    Body(change): Body<QuotaChange>,
) -> ApiResult<Json<Quota>> {
    let admin = access::system_admin(&state, &caller, Some(quota::setting_tenant(&tenant))).await?;
    let limits = Limits { bytes: change.limit_bytes, repositories: change.limit_repositories };
    Ok(Json(quota::set_tenant(&state, &admin, &tenant, limits).await?.into()))
}

/// A namespace's quota and use (any role on it or its tenant).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/quota",
    operation_id = "getNamespaceQuota",
    tag = "storage",
    params(("namespace" = String, Path, description = "Namespace name")),
    responses(
        (status = 200, description = "Quota and use", body = Quota),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "No role on it or its tenant (also when it does not exist)", body = ErrorBody),
        (status = 404, description = "No such namespace (system administrator only)", body = ErrorBody),
    )
)]
pub async fn namespace_quota(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<Quota>> {
    let access = access::namespace::<Read>(&state, &caller, &name, None).await?;
    Ok(Json(quota::of_namespace(&state, &access).await?.into()))
}

/// Sets a namespace's quota (admin or owner of its tenant). It applies from the next push on.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{namespace}/quota",
    operation_id = "setNamespaceQuota",
    tag = "storage",
    params(("namespace" = String, Path, description = "Namespace name")),
    request_body = QuotaChange,
    responses(
        (status = 200, description = "Quota and use", body = Quota),
        (status = 400, description = "A negative limit, or an invalid body", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of its tenant", body = ErrorBody),
        (status = 404, description = "No such namespace (system administrator only)", body = ErrorBody),
    )
)]
pub async fn set_namespace_quota(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(name): PathParams<String>,
    Body(change): Body<QuotaChange>,
) -> ApiResult<Json<Quota>> {
    let limits = Limits { bytes: change.limit_bytes, repositories: change.limit_repositories };
    Ok(Json(quota::set_namespace(&state, &caller, &name, limits).await?.into()))
}

/// A namespace's lifecycle policy.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// Delete untagged manifests this many days after they lost their last tag (1 to 10000); null: keep them.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    pub untagged_days: Option<u32>,
    /// Retention rules; a tag any rule picks is deleted by the next garbage collection run.
    #[serde(default)]
    pub retention: Vec<RetentionRule>,
    /// Immutable tag patterns (globs: `*`, `?`, `[a-z]`): such a tag is never moved or deleted.
    #[serde(default)]
    pub immutable_tags: Vec<String>,
}

impl From<Policy> for Lifecycle {
    fn from(p: Policy) -> Self {
        Lifecycle { untagged_days: p.untagged_days, retention: p.retention, immutable_tags: p.immutable_tags }
    }
}

/// A namespace's lifecycle policy (any role on it or its tenant; anyone, if it is public).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/lifecycle",
    operation_id = "getNamespaceLifecycle",
    tag = "storage",
    params(("namespace" = String, Path, description = "Namespace name")),
    responses(
        (status = 200, description = "The policy", body = Lifecycle),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "No role on it or its tenant (also when it does not exist)", body = ErrorBody),
        (status = 404, description = "No such namespace (system administrator only)", body = ErrorBody),
    )
)]
pub async fn lifecycle(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<Lifecycle>> {
    let access = access::namespace::<Read>(&state, &caller, &name, None).await?;
    Ok(Json(lifecycle::show(&state, &access).await?.into()))
}

/// Replaces a namespace's lifecycle policy (admin or owner of it or its tenant).
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{namespace}/lifecycle",
    operation_id = "setNamespaceLifecycle",
    tag = "storage",
    params(("namespace" = String, Path, description = "Namespace name")),
    request_body = Lifecycle,
    responses(
        (status = 200, description = "The policy as stored", body = Lifecycle),
        (status = 400, description = "A rule or pattern that does not parse, with what to fix", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of it or its tenant", body = ErrorBody),
        (status = 404, description = "No such namespace (system administrator only)", body = ErrorBody),
    )
)]
pub async fn set_lifecycle(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(name): PathParams<String>,
    Body(body): Body<Lifecycle>,
) -> ApiResult<Json<Lifecycle>> {
    let access = access::namespace::<Manage>(&state, &caller, &name, Some(lifecycle::updating(&name))).await?;
    let policy = Policy::parse(body.untagged_days, body.retention, body.immutable_tags)?;
    Ok(Json(lifecycle::update(&state, &access, policy).await?.into()))
}

/// What the namespace's policy would delete if a garbage collection run started now: the
/// retention dry run (any role on it or its tenant).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/lifecycle/preview",
    operation_id = "previewNamespaceLifecycle",
    tag = "storage",
    params(("namespace" = String, Path, description = "Namespace name")),
    responses(
        (status = 200, description = "Tags and manifests that would go", body = Outcome),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "No role on it or its tenant (also when it does not exist)", body = ErrorBody),
        (status = 404, description = "No such namespace (system administrator only)", body = ErrorBody),
    )
)]
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<Outcome>> {
    let access = access::namespace::<Read>(&state, &caller, &name, None).await?;
    Ok(Json(lifecycle::preview(&state, access.namespace()).await?))
}
