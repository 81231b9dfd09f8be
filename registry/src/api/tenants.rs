//! `/api/v1/tenants`: list, create and show tenants.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::namespaces::Namespace;
use super::{Body, PathParams};
use crate::metadata;
use crate::services::access::{self, Caller, Read};
use crate::services::names::Name;
use crate::services::{namespaces, tenants};
use crate::state::AppState;

/// A tenant.
#[derive(Serialize, ToSchema)]
pub struct Tenant {
    /// Unique name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<metadata::Tenant> for Tenant {
    fn from(t: metadata::Tenant) -> Self {
        Tenant { name: t.name, created_at: t.created_at }
    }
}

/// A tenant with the namespaces the caller may see.
#[derive(Serialize, ToSchema)]
pub struct TenantDetail {
    /// Unique name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Its namespaces, by name; members of single namespaces see only theirs.
    pub namespaces: Vec<Namespace>,
}

/// The body of `POST /api/v1/tenants`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// `[a-z0-9]+([._-][a-z0-9]+)*`, at most 64 characters.
    #[schema(pattern = r"^[a-z0-9]+([._-][a-z0-9]+)*$", min_length = 1, max_length = 64)]
    pub name: String,
}

/// Tenants the caller holds a role in (every tenant, for the system administrator).
#[utoipa::path(
    get,
    path = "/api/v1/tenants",
    operation_id = "listTenants",
    tag = "tenants",
    responses(
        (status = 200, description = "Tenants by name", body = Vec<Tenant>),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Tenant>>> {
    let tenants = tenants::visible(&state, &caller).await?;
    Ok(Json(tenants.into_iter().map(Tenant::from).collect()))
}

/// Creates a tenant (system administrator only).
#[utoipa::path(
    post,
    path = "/api/v1/tenants",
    operation_id = "createTenant",
    tag = "tenants",
    request_body = NewTenant,
    responses(
        (status = 201, description = "Created", body = Tenant),
        (status = 400, description = "Invalid name or body", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not the system administrator", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<NewTenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    let admin = access::system_admin(&state, &caller, Some(tenants::creating(&body.name))).await?;
    let name = Name::tenant(&body.name)?;
    let tenant = tenants::create(&state, &admin, &name).await?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

/// A tenant and its namespaces (any role in the tenant).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}",
    operation_id = "getTenant",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "The tenant", body = TenantDetail),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "No role in the tenant (also when it does not exist)", body = ErrorBody),
        (status = 404, description = "No such tenant (system administrator only)", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<TenantDetail>> {
    let access = access::tenant::<Read>(&state, &caller, &name, None).await?;
    let namespaces = namespaces::visible(&state, &access).await?;
    let tenant = access.tenant();
    Ok(Json(TenantDetail {
        name: tenant.name.clone(),
        created_at: tenant.created_at,
        namespaces: namespaces.into_iter().map(Namespace::from).collect(),
    }))
}
