//! `/api/v1/tenants/{tenant}/members`: who holds which role in a tenant.
//!
//! Tenant admins and owners manage members; only an owner may make or unmake
//! another owner, so admins cannot promote themselves past their grantor.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::access::{self, Attempt, Caller, Standing, TenantNeed};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::{Body, Params, PathParams};
use crate::metadata::{self, NamespaceId, PrincipalRef};
use crate::state::AppState;

/// A role on a tenant or one of its namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything an admin may, and making other owners; tenant-wide only, never a robot.
    Owner,
    /// Pull, push, delete, create repositories and namespaces, manage members and robots.
    Admin,
    /// Pull and push to existing repositories.
    Developer,
    /// Pull.
    Viewer,
}

impl From<metadata::Role> for Role {
    fn from(r: metadata::Role) -> Self {
        match r {
            metadata::Role::Owner => Role::Owner,
            metadata::Role::Admin => Role::Admin,
            metadata::Role::Developer => Role::Developer,
            metadata::Role::Viewer => Role::Viewer,
        }
    }
}

impl From<Role> for metadata::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Owner => metadata::Role::Owner,
            Role::Admin => metadata::Role::Admin,
            Role::Developer => metadata::Role::Developer,
            Role::Viewer => metadata::Role::Viewer,
        }
    }
}

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
    fn as_str(self) -> &'static str {
        match self {
            MemberKind::User => "user",
            MemberKind::Robot => "robot",
        }
    }
}

/// One role held in a tenant.
#[derive(Serialize, ToSchema)]
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

/// A member named in a request, found in the tenant.
struct Holder {
    who: PrincipalRef,
    /// As listed: a username or a robot's login.
    name: String,
}

impl Holder {
    fn audit_object(&self, kind: MemberKind) -> String {
        format!("{}/{}", kind.as_str(), self.name)
    }
}

async fn holder(state: &AppState, tenant: &metadata::Tenant, kind: MemberKind, name: &str) -> ApiResult<Holder> {
    match kind {
        MemberKind::User => {
            let user = state.db.accounts().user_by_name(name).await?.ok_or_else(|| {
                ApiError::NotFound(format!(
                    "user {name} does not exist; the system administrator creates users with POST /api/v1/users"
                ))
            })?;
            Ok(Holder { who: PrincipalRef::User(user.id), name: user.username })
        }
        MemberKind::Robot => {
            let short = match name.strip_prefix("robot$").and_then(|rest| rest.split_once('+')) {
                Some((t, n)) if t == tenant.name => n,
                Some(_) => {
                    return Err(ApiError::InvalidRequest(format!(
                        "robot {name} belongs to another tenant; a robot holds roles only in its own tenant"
                    )))
                }
                None => name,
            };
            let robot = state.db.accounts().robot_by_name(&tenant.name, short).await?.ok_or_else(|| {
                ApiError::NotFound(format!(
                    "robot {short} does not exist in tenant {t}; create it with POST /api/v1/tenants/{t}/robots",
                    t = tenant.name
                ))
            })?;
            Ok(Holder { who: PrincipalRef::Robot(robot.id), name: robot.login() })
        }
    }
}

/// The namespace a role is limited to, which must be one of the tenant's.
pub(super) async fn namespace_of(
    state: &AppState,
    tenant: &metadata::Tenant,
    name: Option<&str>,
) -> ApiResult<Option<NamespaceId>> {
    let Some(name) = name else { return Ok(None) };
    match state.db.tenancy().namespace(name).await? {
        Some(ns) if ns.tenant_id == tenant.id => Ok(Some(ns.id)),
        _ => Err(ApiError::NotFound(format!(
            "namespace {name} is not in tenant {t}; list its namespaces with GET /api/v1/tenants/{t}/namespaces",
            t = tenant.name
        ))),
    }
}

async fn members(state: &AppState, tenant: &metadata::Tenant) -> ApiResult<Vec<Member>> {
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
            role: m.role.into(),
        })
        .collect();
    // The engines disagree on where NULL sorts: order here, each member's tenant-wide role first.
    members.sort_by(|a, b| (&a.name, &a.namespace).cmp(&(&b.name, &b.namespace)));
    Ok(members)
}

/// The role `holder` now holds on exactly this scope, if any.
async fn current_role(
    state: &AppState,
    tenant: &metadata::Tenant,
    holder: &Holder,
    kind: MemberKind,
    namespace: Option<&str>,
) -> ApiResult<Option<Role>> {
    Ok(members(state, tenant)
        .await?
        .into_iter()
        .find(|m| m.kind == kind && m.name == holder.name && m.namespace.as_deref() == namespace)
        .map(|m| m.role))
}

async fn require_owner(
    state: &AppState,
    caller: &Caller,
    standing: &Standing,
    attempt: Attempt<'_>,
    tenant: &metadata::Tenant,
) -> ApiResult<()> {
    if standing.owns() {
        return Ok(());
    }
    let error = ApiError::Denied(format!(
        "only an owner of tenant {} may grant or remove the owner role; ask one of its owners",
        tenant.name
    ));
    Err(caller.refused(state, attempt, Some(tenant.id), error).await)
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
    let (tenant, _) = access::tenant(&state, &caller, &tenant, TenantNeed::Admin, None).await?;
    Ok(Json(members(&state, &tenant).await?))
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
    let requested = format!("{}/{}", grant.kind.as_str(), grant.name);
    let attempt = Attempt { action: "role.grant", object: &requested };
    let (tenant, standing) = access::tenant(&state, &caller, &tenant, TenantNeed::Admin, Some(attempt)).await?;
    if grant.role == Role::Owner && grant.namespace.is_some() {
        return Err(ApiError::InvalidRequest(
            "owner is a tenant-wide role; grant admin on a namespace instead, or omit namespace".to_owned(),
        ));
    }
    if grant.role == Role::Owner && grant.kind == MemberKind::Robot {
        return Err(ApiError::InvalidRequest("a robot cannot be an owner; grant it admin at most".to_owned()));
    }
    let holder = holder(&state, &tenant, grant.kind, &grant.name).await?;
    let namespace = namespace_of(&state, &tenant, grant.namespace.as_deref()).await?;
    let object = holder.audit_object(grant.kind);
    let attempt = Attempt { action: "role.grant", object: &object };
    let previous = current_role(&state, &tenant, &holder, grant.kind, grant.namespace.as_deref()).await?;
    if grant.role == Role::Owner || previous == Some(Role::Owner) {
        require_owner(&state, &caller, &standing, attempt, &tenant).await?;
    }
    state.db.accounts().bind(holder.who, tenant.id, namespace, grant.role.into()).await?;
    state.auth.invalidate();
    let detail = json!({ "role": grant.role, "namespace": grant.namespace, "previous": previous });
    caller.record(&state, attempt, Some(tenant.id), Some(detail)).await;
    Ok(Json(Member { kind: grant.kind, name: holder.name, namespace: grant.namespace, role: grant.role }))
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
    let requested = format!("{}/{}", revocation.kind.as_str(), revocation.name);
    let attempt = Attempt { action: "role.revoke", object: &requested };
    let (tenant, standing) = access::tenant(&state, &caller, &tenant, TenantNeed::Admin, Some(attempt)).await?;
    let holder = holder(&state, &tenant, revocation.kind, &revocation.name).await?;
    let namespace = namespace_of(&state, &tenant, revocation.namespace.as_deref()).await?;
    let object = holder.audit_object(revocation.kind);
    let attempt = Attempt { action: "role.revoke", object: &object };
    let previous = current_role(&state, &tenant, &holder, revocation.kind, revocation.namespace.as_deref()).await?;
    let Some(previous) = previous else {
        let scope = match &revocation.namespace {
            Some(ns) => format!("namespace {ns}"),
            None => format!("tenant {}", tenant.name),
        };
        return Err(ApiError::NotFound(format!(
            "{} holds no role on {scope}; list roles with GET /api/v1/tenants/{}/members",
            holder.name, tenant.name
        )));
    };
    if previous == Role::Owner {
        require_owner(&state, &caller, &standing, attempt, &tenant).await?;
    }
    state.db.accounts().unbind(holder.who, tenant.id, namespace).await?;
    state.auth.invalidate();
    let detail = json!({ "role": previous, "namespace": revocation.namespace });
    caller.record(&state, attempt, Some(tenant.id), Some(detail)).await;
    Ok(StatusCode::NO_CONTENT)
}
