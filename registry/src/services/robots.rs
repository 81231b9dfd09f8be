//! Robot accounts for CI and machines.
//!
//! A robot logs in as `robot$<tenant>+<name>` with a random token that is
//! shown once, when it is made or rotated; only its SHA-256 is stored. Its
//! scopes are ordinary role bindings, limited to its own tenant.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::access::{Attempt, Manage, TenantAccess};
use super::members::namespace_of;
use super::names::Name;
use super::{Error, OnDuplicate, Place, Result, Thing};
use crate::auth::password;
use crate::metadata::{self, now, PrincipalRef, Role};
use crate::state::AppState;

const MAX_DESCRIPTION: usize = 1024;

/// The longest a robot may be made to last, in seconds: ten years (of 365
/// days). A robot that should never expire says so by having no expiry.
pub const MAX_LIFETIME_SECS: i64 = 10 * 365 * 86_400;

/// A role a robot holds, on its whole tenant or one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// A namespace of the robot's tenant; `null` or absent for the whole tenant.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Any role but `owner`.
    #[schema(schema_with = robot_role)]
    pub role: Role,
}

/// The roles a robot may hold, for the OpenAPI document.
fn robot_role() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["admin", "developer", "viewer"]))
        .description(Some("Any role but `owner`."))
        .build()
}

/// A robot account.
#[derive(Clone, Debug, Serialize, ToSchema)]
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
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CreatedRobot {
    /// The robot.
    #[serde(flatten)]
    pub robot: Robot,
    /// The secret to log in with as `login`; store it now.
    pub token: String,
}

/// What a new robot is, beyond its name.
#[derive(Clone, Debug, Default)]
pub struct NewRobot {
    /// What it is for, at most 1024 characters.
    pub description: String,
    /// Seconds until it stops logging in; `None` for never.
    pub expires_in_secs: Option<i64>,
    /// Its roles in the tenant.
    pub scopes: Vec<Scope>,
}

fn view(robot: metadata::Robot, members: &[metadata::Member]) -> Robot {
    let login = robot.login();
    let mut scopes: Vec<Scope> = members
        .iter()
        .filter(|m| m.kind == "robot" && m.name == login)
        .map(|m| Scope { namespace: m.namespace.clone(), role: m.role })
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

async fn find(state: &AppState, tenant: &metadata::Tenant, name: &str) -> Result<metadata::Robot> {
    state.db.accounts().robot_by_name(&tenant.name, name).await?.ok_or_else(|| {
        Error::not_found(Thing::Robot, format!("robot {name} does not exist in tenant {}", tenant.name))
            .then("list them", Place::Robots { tenant: tenant.name.clone() })
    })
}

/// The tenant's robots, revoked ones included, by name.
pub async fn list(state: &AppState, access: &TenantAccess<Manage>) -> Result<Vec<Robot>> {
    let tenant = access.tenant();
    let members = state.db.accounts().members_of(tenant.id).await?;
    let robots = state.db.accounts().robots_of(tenant.id).await?;
    Ok(robots.into_iter().map(|r| view(r, &members)).collect())
}

/// The audit attempt of creating robot `name` in `tenant`, as requested.
pub fn creating(tenant: &str, name: &str) -> Attempt {
    Attempt::new("robot.create", format!("robot/robot${tenant}+{name}"))
}

/// Makes a robot with its scopes and returns its token, once; the check was made for [`creating`].
pub async fn create(
    state: &AppState,
    access: &TenantAccess<Manage>,
    name: &Name,
    new: NewRobot,
) -> Result<CreatedRobot> {
    let tenant = access.tenant();
    if new.description.chars().count() > MAX_DESCRIPTION {
        return Err(Error::invalid(Thing::Field, format!("description is longer than {MAX_DESCRIPTION} characters")));
    }
    let expires_at = match new.expires_in_secs {
        None => None,
        Some(secs) if (1..=MAX_LIFETIME_SECS).contains(&secs) => Some(now() + secs),
        Some(_) => {
            return Err(Error::invalid(
                Thing::Field,
                format!(
                    "expires_in_secs must be 1 to {MAX_LIFETIME_SECS} seconds (ten years); omit it for a robot that \
                     never expires"
                ),
            ))
        }
    };
    // Every scope is checked before anything is written, so a bad one leaves no robot behind.
    let mut bindings = Vec::with_capacity(new.scopes.len());
    let mut seen = HashSet::new();
    for scope in &new.scopes {
        if scope.role == Role::Owner {
            return Err(Error::invalid(Thing::Role, "a robot cannot be an owner; give it admin at most"));
        }
        if !seen.insert(scope.namespace.clone()) {
            return Err(Error::invalid(
                Thing::Role,
                format!(
                    "two scopes name {}; give each namespace (or the whole tenant) one role",
                    scope.namespace.as_deref().unwrap_or("the whole tenant")
                ),
            ));
        }
        bindings.push((namespace_of(state, tenant, scope.namespace.as_deref()).await?, scope.role));
    }
    let token = password::random_secret();
    let id = state
        .db
        .accounts()
        .create_robot(tenant.id, name.as_str(), &new.description, &password::token_sha256(&token), expires_at)
        .await
        .on_duplicate(|| {
            Error::conflict(
                Thing::Robot,
                format!("tenant {} already has a robot named {name}; pick another name", tenant.name),
            )
            .then(", or rotate its token", Place::RotateRobot { tenant: tenant.name.clone(), robot: name.to_string() })
        })?;
    for (namespace, role) in bindings {
        state.db.accounts().bind(PrincipalRef::Robot(id), tenant.id, namespace, role).await?;
    }
    state.auth.invalidate();
    let robot = state.db.accounts().robot(id).await?;
    let robot = robot.ok_or_else(|| Error::Internal(format!("robot {name} vanished after creation")))?;
    let members = state.db.accounts().members_of(tenant.id).await?;
    let robot = view(robot, &members);
    let detail = json!({ "scopes": robot.scopes, "expires_at": robot.expires_at });
    let attempt = Attempt::new("robot.create", format!("robot/{}", robot.login));
    access.record_as(state, &attempt, Some(detail)).await;
    Ok(CreatedRobot { robot, token })
}

/// The audit attempt of rotating robot `name`'s token in `tenant`.
pub fn rotating(tenant: &str, name: &str) -> Attempt {
    Attempt::new("robot.rotate", format!("robot/robot${tenant}+{name}"))
}

/// Replaces a robot's token; the old one and every token issued for it stop
/// working at once. Returns its login and the new token, shown only now.
pub async fn rotate(state: &AppState, access: &TenantAccess<Manage>, name: &str) -> Result<(String, String)> {
    let tenant = access.tenant();
    let robot = find(state, tenant, name).await?;
    if robot.revoked_at.is_some() {
        return Err(Error::conflict(Thing::Robot, format!("robot {name} is revoked and stays so"))
            .then("create a new robot", Place::NewRobot { tenant: tenant.name.clone() }));
    }
    let token = password::random_secret();
    state.db.accounts().rotate_robot(robot.id, &password::token_sha256(&token)).await?;
    state.auth.invalidate();
    access.record(state, None).await;
    Ok((robot.login(), token))
}

/// The audit attempt of revoking robot `name` in `tenant`.
pub fn revoking(tenant: &str, name: &str) -> Attempt {
    Attempt::new("robot.revoke", format!("robot/robot${tenant}+{name}"))
}

/// Revokes a robot for good (its name stays taken); revoking it again does nothing.
pub async fn revoke(state: &AppState, access: &TenantAccess<Manage>, name: &str) -> Result<()> {
    let robot = find(state, access.tenant(), name).await?;
    if robot.revoked_at.is_none() {
        state.db.accounts().revoke_robot(robot.id).await?;
        state.auth.invalidate();
        access.record(state, None).await;
    }
    Ok(())
}
