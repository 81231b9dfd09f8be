//! `/api/v1/tenants/{tenant}/robots`: robot accounts for CI and machines.
//!
//! A robot logs in as `robot$<tenant>+<name>` with a random token that is
//! shown once, when it is made or rotated; only its SHA-256 is stored. Its
//! scopes are ordinary role bindings, limited to its own tenant.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::access::{self, Attempt, Caller, TenantNeed};
use super::error::{ApiError, ApiResult, ErrorBody, OnDuplicate};
use super::members::{namespace_of, Role};
use super::names::Name;
use super::{Body, PathParams};
use crate::auth::password;
use crate::metadata::{self, now, PrincipalRef};
use crate::state::AppState;

const MAX_DESCRIPTION: usize = 1024;

/// A role a robot holds, on its whole tenant or one namespace.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// A namespace of the robot's tenant; `null` or absent for the whole tenant.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Any role but `owner`.
    pub role: Role,
}

/// A robot account.
#[derive(Serialize, ToSchema)]
pub struct Robot {
    /// Name within its tenant.
    pub name: String,
    /// What it logs in as: `robot$<tenant>+<name>`.
    pub login: String,
    /// What it is for.
    pub description: String,
    /// Unix seconds after which it no longer logs in; `null` for never.
    pub expires_at: Option<i64>,
    /// Unix seconds it was revoked at; `null` while it is usable.
    pub revoked_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Its roles.
    pub scopes: Vec<Scope>,
}

/// A robot just made, with the token it logs in with. The token is not shown again.
#[derive(Serialize, ToSchema)]
pub struct CreatedRobot {
    /// The robot.
    #[serde(flatten)]
    pub robot: Robot,
    /// The secret to log in with as `login`; store it now.
    pub token: String,
}

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
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Seconds until it stops logging in; absent for never.
    pub expires_in_secs: Option<i64>,
    /// Its roles in this tenant.
    #[serde(default)]
    pub scopes: Vec<Scope>,
}

fn view(robot: metadata::Robot, members: &[metadata::Member]) -> Robot {
    let login = robot.login();
    let mut scopes: Vec<Scope> = members
        .iter()
        .filter(|m| m.kind == "robot" && m.name == login)
        .map(|m| Scope { namespace: m.namespace.clone(), role: m.role.into() })
        .collect();
    scopes.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    Robot {
        name: robot.name,
        login,
        description: robot.description,
        expires_at: robot.expires_at,
        revoked_at: robot.revoked_at,
        created_at: robot.created_at,
        scopes,
    }
}

async fn find(state: &AppState, tenant: &metadata::Tenant, name: &str) -> ApiResult<metadata::Robot> {
    state.db.accounts().robot_by_name(&tenant.name, name).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "robot {name} does not exist in tenant {t}; list them with GET /api/v1/tenants/{t}/robots",
            t = tenant.name
        ))
    })
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
    let (tenant, _) = access::tenant(&state, &caller, &tenant, TenantNeed::Admin, None).await?;
    let members = state.db.accounts().members_of(tenant.id).await?;
    let robots = state.db.accounts().robots_of(tenant.id).await?;
    Ok(Json(robots.into_iter().map(|r| view(r, &members)).collect()))
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
    let object = format!("robot/robot${tenant}+{}", body.name);
    let attempt = Attempt { action: "robot.create", object: &object };
    let (tenant, _) = access::tenant(&state, &caller, &tenant, TenantNeed::Admin, Some(attempt)).await?;
    let name = Name::robot(&body.name)?;
    if body.description.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::InvalidRequest(format!("description is longer than {MAX_DESCRIPTION} characters")));
    }
    let expires_at = match body.expires_in_secs {
        None => None,
        Some(secs) => match now().checked_add(secs) {
            Some(at) if secs > 0 => Some(at),
            _ => {
                return Err(ApiError::InvalidRequest(
                    "expires_in_secs must be a positive number of seconds; omit it for a robot that never expires"
                        .to_owned(),
                ))
            }
        },
    };
    // Every scope is checked before anything is written, so a bad one leaves no robot behind.
    let mut bindings = Vec::with_capacity(body.scopes.len());
    let mut seen = HashSet::new();
    for scope in &body.scopes {
        if scope.role == Role::Owner {
            return Err(ApiError::InvalidRequest("a robot cannot be an owner; give it admin at most".to_owned()));
        }
        if !seen.insert(scope.namespace.clone()) {
            return Err(ApiError::InvalidRequest(format!(
                "two scopes name {}; give each namespace (or the whole tenant) one role",
                scope.namespace.as_deref().unwrap_or("the whole tenant")
            )));
        }
        bindings.push((namespace_of(&state, &tenant, scope.namespace.as_deref()).await?, scope.role));
    }
    let token = password::random_secret();
    let id = state
        .db
        .accounts()
        .create_robot(tenant.id, name.as_str(), &body.description, &password::token_sha256(&token), expires_at)
        .await
        .on_duplicate(|| {
            format!(
                "tenant {} already has a robot named {name}; pick another name, or rotate its token with POST \
                 /api/v1/tenants/{}/robots/{name}/rotate",
                tenant.name, tenant.name
            )
        })?;
    for (namespace, role) in bindings {
        state.db.accounts().bind(PrincipalRef::Robot(id), tenant.id, namespace, role.into()).await?;
    }
    state.auth.invalidate();
    let robot = state.db.accounts().robot(id).await?;
    let robot = robot.ok_or_else(|| ApiError::Internal(format!("robot {name} vanished after creation")))?;
    let members = state.db.accounts().members_of(tenant.id).await?;
    let robot = view(robot, &members);
    let object = format!("robot/{}", robot.login);
    let detail = json!({ "scopes": robot.scopes, "expires_at": robot.expires_at });
    caller.record(&state, Attempt { action: "robot.create", object: &object }, Some(tenant.id), Some(detail)).await;
    Ok((StatusCode::CREATED, Json(CreatedRobot { robot, token })))
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
    let object = format!("robot/robot${tenant}+{name}");
    let attempt = Attempt { action: "robot.rotate", object: &object };
    let (tenant, _) = access::tenant(&state, &caller, &tenant, TenantNeed::Admin, Some(attempt)).await?;
    let robot = find(&state, &tenant, &name).await?;
    if robot.revoked_at.is_some() {
        return Err(ApiError::Conflict(format!(
            "robot {name} is revoked and stays so; create a new robot with POST /api/v1/tenants/{}/robots",
            tenant.name
        )));
    }
    let token = password::random_secret();
    state.db.accounts().rotate_robot(robot.id, &password::token_sha256(&token)).await?;
    state.auth.invalidate();
    caller.record(&state, attempt, Some(tenant.id), None).await;
    Ok(Json(RotatedToken { login: robot.login(), token }))
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
    let object = format!("robot/robot${tenant}+{name}");
    let attempt = Attempt { action: "robot.revoke", object: &object };
    let (tenant, _) = access::tenant(&state, &caller, &tenant, TenantNeed::Admin, Some(attempt)).await?;
    let robot = find(&state, &tenant, &name).await?;
    if robot.revoked_at.is_none() {
        state.db.accounts().revoke_robot(robot.id).await?;
        state.auth.invalidate();
        caller.record(&state, attempt, Some(tenant.id), None).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
