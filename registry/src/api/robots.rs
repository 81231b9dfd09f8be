//! `/api/v1/tenants/{tenant}/robots`: robot accounts for CI and machines.
//!
//! A robot logs in as `robot$<tenant>+<name>` with a random token that is
//! shown once, when it is made or rotated (the rules are `services::robots`').

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::{Body, PathParams};
use crate::services::access::{self, Caller, Manage};
use crate::services::names::Name;
use crate::services::number;
use crate::services::robots::{self, CreatedRobot, Robot, Scope};
use crate::state::AppState;

/// A robot's new token. The old one, and every token issued for it, no longer works.
#[derive(Serialize, ToSchema)]
pub struct RotatedToken {
    /// What it logs in as.
    pub login: String,
    /// The new secret; store it now.
    pub token: String,
}

/// The body of `POST /api/v1/tenants/{tenant}/robots`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRobot {
    /// `[a-z0-9]+([._-][a-z0-9]+)*`, at most 64 characters, unique in the tenant.
    #[schema(pattern = r"^[a-z0-9]+([._-][a-z0-9]+)*$", min_length = 1, max_length = 64)]
    pub name: String,
    /// What it is for, at most 1024 characters.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: String,
    /// Seconds until it stops logging in, at most ten years; absent for never.
    #[serde(default, deserialize_with = "number::whole_or_null")]
    #[schema(minimum = 1, maximum = 315_360_000_i64)]
    pub expires_in_secs: Option<i64>,
    /// Its roles in this tenant.
    #[serde(default)]
    pub scopes: Vec<Scope>,
}

/// A tenant's robots, revoked ones included (tenant admin or owner).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/robots",
    operation_id = "listRobots",
    tag = "robots",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "Robots by name", body = Vec<Robot>),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
        (status = 404, description = "No such tenant (system administrator only)", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
) -> ApiResult<Json<Vec<Robot>>> {
    let access = access::tenant::<Manage>(&state, &caller, &tenant, None).await?;
    Ok(Json(robots::list(&state, &access).await?))
}

/// Makes a robot with the given scopes and returns its token, once (tenant admin or owner).
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/robots",
    operation_id = "createRobot",
    tag = "robots",
    params(("tenant" = String, Path, description = "Tenant name")),
    request_body = NewRobot,
    responses(
        (status = 201, description = "Created; the token is shown only here", body = CreatedRobot),
        (status = 400, description = "Invalid name, scope or body", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
        (status = 404, description = "A scope's namespace is not in the tenant", body = ErrorBody),
        (status = 409, description = "The tenant has a robot of that name", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(tenant): PathParams<String>,
    Body(body): Body<NewRobot>,
) -> ApiResult<(StatusCode, Json<CreatedRobot>)> {
    let access =
        access::tenant::<Manage>(&state, &caller, &tenant, Some(robots::creating(&tenant, &body.name))).await?;
    let name = Name::robot(&body.name)?;
    let new =
        robots::NewRobot { description: body.description, expires_in_secs: body.expires_in_secs, scopes: body.scopes };
    Ok((StatusCode::CREATED, Json(robots::create(&state, &access, &name, new).await?)))
}

/// Replaces a robot's token; the old one and every token issued for it stop
/// working at once (tenant admin or owner).
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/robots/{robot}/rotate",
    operation_id = "rotateRobotToken",
    tag = "robots",
    params(
        ("tenant" = String, Path, description = "Tenant name"),
        ("robot" = String, Path, description = "Robot name within the tenant"),
    ),
    responses(
        (status = 200, description = "The new token, shown only here", body = RotatedToken),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
        (status = 404, description = "No such robot in the tenant", body = ErrorBody),
        (status = 409, description = "The robot is revoked", body = ErrorBody),
    )
)]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((tenant, name)): PathParams<(String, String)>,
) -> ApiResult<Json<RotatedToken>> {
    let access = access::tenant::<Manage>(&state, &caller, &tenant, Some(robots::rotating(&tenant, &name))).await?;
    let (login, token) = robots::rotate(&state, &access, &name).await?;
    Ok(Json(RotatedToken { login, token }))
}

/// Revokes a robot: its token and every token issued for it stop working at
/// once, for good (tenant admin or owner). Its name stays taken.
#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{tenant}/robots/{robot}",
    operation_id = "revokeRobot",
    tag = "robots",
    params(
        ("tenant" = String, Path, description = "Tenant name"),
        ("robot" = String, Path, description = "Robot name within the tenant"),
    ),
    responses(
        (status = 204, description = "Revoked (or it already was)"),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant", body = ErrorBody),
        (status = 404, description = "No such robot in the tenant", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((tenant, name)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let access = access::tenant::<Manage>(&state, &caller, &tenant, Some(robots::revoking(&tenant, &name))).await?;
    robots::revoke(&state, &access, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
