//! `/api/v1/tenants/{tenant}/members`: who holds which role in a tenant
//! (the rules are `services::members`').

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiResult, ErrorBody};
use super::{Body, Params, PathParams};
use crate::metadata::Role;
use crate::services::access::{self, Caller, Manage};
use crate::services::members::{self, Member, MemberKind};
use crate::state::AppState;

/// The body of `PUT /api/v1/tenants/{tenant}/members`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// `user` or `robot`.
    pub kind: MemberKind,
    /// A username; for a robot its short name or its login `robot$<tenant>+<name>`.
    pub name: String,
    /// Limit the role to this namespace of the tenant; absent for the whole tenant.
    pub namespace: Option<String>,
    /// The role, replacing any the member held on the same tenant or namespace.
    pub role: Role,
}

/// The query of `DELETE /api/v1/tenants/{tenant}/members`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Revocation {
    /// `user` or `robot`.
    pub kind: MemberKind,
    /// A username; for a robot its short name or its login.
    pub name: String,
    /// The namespace the role is on; absent for the tenant-wide role.
    pub namespace: Option<String>,
}

/// Every role held in a tenant or its namespaces (tenant admin or owner).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/members",
    operation_id = "listMembers",
    tag = "members",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "Roles by member name, tenant-wide first", body = Vec<Member>),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
        (status = 404, description = "No such tenant (system administrator only)", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
) -> ApiResult<Json<Vec<Member>>> {
    let access = access::tenant::<Manage>(&state, &caller, &tenant, None).await?;
    Ok(Json(members::list(&state, &access).await?))
}

/// Grants a role on the tenant or one of its namespaces, replacing any role
/// the member held there (tenant admin or owner; owner to grant or remove `owner`).
#[utoipa::path(
    put,
    path = "/api/v1/tenants/{tenant}/members",
    operation_id = "grantRole",
    tag = "members",
    params(("tenant" = String, Path, description = "Tenant name")),
    request_body = Grant,
    responses(
        (status = 200, description = "The role now held", body = Member),
        (status = 400, description = "Invalid body, a robot of another tenant, or owner where it cannot be", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant, or owner needed", body = ErrorBody),
        (status = 404, description = "No such user, robot or namespace in the tenant", body = ErrorBody),
    )
)]
pub async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
    Body(grant): Body<Grant>,
) -> ApiResult<Json<Member>> {
    let attempt = members::granting(grant.kind, &grant.name);
    let access = access::tenant::<Manage>(&state, &caller, &tenant, Some(attempt)).await?;
    let grant = members::Grant { kind: grant.kind, name: grant.name, namespace: grant.namespace, role: grant.role };
    Ok(Json(members::grant(&state, &access, grant).await?))
}

/// Removes a role (tenant admin or owner; owner to remove `owner`).
#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{tenant}/members",
    operation_id = "revokeRole",
    tag = "members",
    params(("tenant" = String, Path, description = "Tenant name"), Revocation),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant, or owner needed", body = ErrorBody),
        (status = 404, description = "The member holds no such role", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
    Params(revocation): Params<Revocation>,
) -> ApiResult<StatusCode> {
    let Revocation { kind, name, namespace } = revocation;
    let access = access::tenant::<Manage>(&state, &caller, &tenant, Some(members::revoking(kind, &name))).await?;
    members::revoke(&state, &access, kind, &name, namespace.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}
