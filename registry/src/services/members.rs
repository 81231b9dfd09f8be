//! Who holds which role in a tenant or one of its namespaces.
//!
//! Tenant admins and owners manage members; only an owner may make or unmake
//! another owner, so admins cannot promote themselves past their grantor.

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::access::{Attempt, Manage, TenantAccess};
use super::{Error, Place, Result, Thing};
use crate::metadata::{NamespaceId, PrincipalRef, Role, Tenant};
use crate::state::AppState;

/// Whether a member is a person or a robot account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    /// A user.
    User,
    /// A robot account of this tenant.
    Robot,
}

impl MemberKind {
    /// `user` or `robot`, as the audit log names them.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::User => "user",
            MemberKind::Robot => "robot",
        }
    }
}

/// One role held in a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Member {
    /// `user` or `robot`.
    pub kind: MemberKind,
    /// A username, or a robot's login `robot$<tenant>+<name>`.
    pub name: String,
    /// The namespace the role is limited to; `null` for the whole tenant.
    pub namespace: Option<String>,
    /// The role.
    pub role: Role,
}

/// A member named in a request, found in the tenant.
struct Holder {
    who: PrincipalRef,
    /// As listed: a username or a robot's login.
    name: String,
}

impl Holder {
    fn attempt(&self, action: &'static str, kind: MemberKind) -> Attempt {
        Attempt::new(action, format!("{}/{}", kind.as_str(), self.name))
    }
}

async fn holder(state: &AppState, tenant: &Tenant, kind: MemberKind, name: &str) -> Result<Holder> {
    match kind {
        MemberKind::User => {
            let user = state.db.accounts().user_by_name(name).await?.ok_or_else(|| {
                Error::not_found(Thing::User, format!("user {name} does not exist"))
                    .then("the system administrator creates users", Place::NewUser)
            })?;
            Ok(Holder { who: PrincipalRef::User(user.id), name: user.username })
        }
        MemberKind::Robot => {
            let short = match name.strip_prefix("robot$").and_then(|rest| rest.split_once('+')) {
                Some((t, n)) if t == tenant.name => n,
                Some(_) => {
                    return Err(Error::invalid(
                        Thing::Robot,
                        format!("robot {name} belongs to another tenant; a robot holds roles only in its own tenant"),
                    ))
                }
                None => name,
            };
            let robot = state.db.accounts().robot_by_name(&tenant.name, short).await?.ok_or_else(|| {
                Error::not_found(Thing::Robot, format!("robot {short} does not exist in tenant {}", tenant.name))
                    .then("create it", Place::NewRobot { tenant: tenant.name.clone() })
            })?;
            Ok(Holder { who: PrincipalRef::Robot(robot.id), name: robot.login() })
        }
    }
}

/// The namespace a role is limited to, which must be one of the tenant's.
pub(super) async fn namespace_of(state: &AppState, tenant: &Tenant, name: Option<&str>) -> Result<Option<NamespaceId>> {
    let Some(name) = name else { return Ok(None) };
    match state.db.tenancy().namespace(name).await? {
        Some(ns) if ns.tenant_id == tenant.id => Ok(Some(ns.id)),
        _ => Err(Error::not_found(Thing::Namespace, format!("namespace {name} is not in tenant {}", tenant.name))
            .then("list its namespaces", Place::Namespaces { tenant: tenant.name.clone() })),
    }
}

/// Every role held in the tenant or its namespaces, by member name, each
/// member's tenant-wide role first.
pub async fn list(state: &AppState, access: &TenantAccess<Manage>) -> Result<Vec<Member>> {
    members(state, access.tenant()).await
}

async fn members(state: &AppState, tenant: &Tenant) -> Result<Vec<Member>> {
    let mut members: Vec<Member> = state
        .db
        .accounts()
        .members_of(tenant.id)
        .await?
        .into_iter()
        .map(|m| Member {
            kind: if m.kind == "robot" { MemberKind::Robot } else { MemberKind::User },
            name: m.name,
            namespace: m.namespace,
            role: m.role,
        })
        .collect();
    // The engines disagree on where NULL sorts: order here, each member's tenant-wide role first.
    members.sort_by(|a, b| (&a.name, &a.namespace).cmp(&(&b.name, &b.namespace)));
    Ok(members)
}

/// The role `holder` now holds on exactly this scope, if any.
async fn current_role(
    state: &AppState,
    tenant: &Tenant,
    holder: &Holder,
    kind: MemberKind,
    namespace: Option<&str>,
) -> Result<Option<Role>> {
    Ok(members(state, tenant)
        .await?
        .into_iter()
        .find(|m| m.kind == kind && m.name == holder.name && m.namespace.as_deref() == namespace)
        .map(|m| m.role))
}

async fn require_owner(state: &AppState, access: &TenantAccess<Manage>, attempt: &Attempt) -> Result<()> {
    if access.standing().owns() {
        return Ok(());
    }
    let error = Error::Denied(format!(
        "only an owner of tenant {} may grant or remove the owner role; ask one of its owners",
        access.tenant().name
    ));
    Err(access.refuse(state, attempt, error).await)
}

/// The audit attempt of granting a role to the member named as requested.
pub fn granting(kind: MemberKind, name: &str) -> Attempt {
    Attempt::new("role.grant", format!("{}/{name}", kind.as_str()))
}

/// The audit attempt of removing a role of the member named as requested.
pub fn revoking(kind: MemberKind, name: &str) -> Attempt {
    Attempt::new("role.revoke", format!("{}/{name}", kind.as_str()))
}

/// A role to grant.
#[derive(Clone, Debug)]
pub struct Grant {
    /// User or robot.
    pub kind: MemberKind,
    /// A username; for a robot its short name or its login `robot$<tenant>+<name>`.
    pub name: String,
    /// Limit the role to this namespace of the tenant; `None` for the whole tenant.
    pub namespace: Option<String>,
    /// The role, replacing any the member held on the same tenant or namespace.
    pub role: Role,
}

/// Grants a role (owner only to grant or replace `owner`); the check was made for [`granting`].
pub async fn grant(state: &AppState, access: &TenantAccess<Manage>, grant: Grant) -> Result<Member> {
    let tenant = access.tenant();
    if grant.role == Role::Owner && grant.namespace.is_some() {
        return Err(Error::invalid(
            Thing::Role,
            "owner is a tenant-wide role; grant admin on a namespace instead, or omit namespace",
        ));
    }
    if grant.role == Role::Owner && grant.kind == MemberKind::Robot {
        return Err(Error::invalid(Thing::Role, "a robot cannot be an owner; grant it admin at most"));
    }
    let holder = holder(state, tenant, grant.kind, &grant.name).await?;
    let namespace = namespace_of(state, tenant, grant.namespace.as_deref()).await?;
    let attempt = holder.attempt("role.grant", grant.kind);
    let previous = current_role(state, tenant, &holder, grant.kind, grant.namespace.as_deref()).await?;
    if grant.role == Role::Owner || previous == Some(Role::Owner) {
        require_owner(state, access, &attempt).await?;
    }
    state.db.accounts().bind(holder.who, tenant.id, namespace, grant.role).await?;
    state.auth.invalidate();
    let detail = json!({ "role": grant.role, "namespace": grant.namespace, "previous": previous });
    access.record_as(state, &attempt, Some(detail)).await;
    Ok(Member { kind: grant.kind, name: holder.name, namespace: grant.namespace, role: grant.role })
}

/// Removes a role (owner only to remove `owner`); the check was made for [`revoking`].
pub async fn revoke(
    state: &AppState,
    access: &TenantAccess<Manage>,
    kind: MemberKind,
    name: &str,
    namespace: Option<&str>,
) -> Result<()> {
    let tenant = access.tenant();
    let holder = holder(state, tenant, kind, name).await?;
    let namespace_id = namespace_of(state, tenant, namespace).await?;
    let attempt = holder.attempt("role.revoke", kind);
    let Some(previous) = current_role(state, tenant, &holder, kind, namespace).await? else {
        let scope = match namespace {
            Some(ns) => format!("namespace {ns}"),
            None => format!("tenant {}", tenant.name),
        };
        return Err(Error::not_found(Thing::Role, format!("{} holds no role on {scope}", holder.name))
            .then("list roles", Place::Members { tenant: tenant.name.clone() }));
    };
    if previous == Role::Owner {
        require_owner(state, access, &attempt).await?;
    }
    state.db.accounts().unbind(holder.who, tenant.id, namespace_id).await?;
    state.auth.invalidate();
    access.record_as(state, &attempt, Some(json!({ "role": previous, "namespace": namespace }))).await;
    Ok(())
}
