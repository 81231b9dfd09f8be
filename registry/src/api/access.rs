//! Who is calling the management API and what they may do.
//!
//! Authority comes from the caller's role bindings, read from the database
//! on every request rather than from a token's `access` claim: a token
//! grants repository actions, while these endpoints change who holds them,
//! so a role removed a moment ago must already count.
//!
//! A caller without a role in a tenant is told "denied" whether the tenant
//! exists or not, so names cannot be probed; only the system administrator,
//! who may see everything, is told that something does not exist.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::error::{ApiError, ApiResult};
use crate::auth::{AuthFailure, Principal};
use crate::metadata::{Binding, Namespace, NamespaceId, Role, Tenant, TenantId};
use crate::services::audit::{self, Event};
use crate::state::AppState;

/// An authenticated caller of the management API.
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// Client address, as recorded in the audit log.
    pub source: String,
}

const LOG_IN: &str = "log in: send Basic credentials (a username and password, or robot$<tenant>+<name> and its \
                      token) or a Bearer token from /auth/token";

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string())
            .unwrap_or_default();
        let principal =
            match state.auth.authenticate(&state.db, &parts.headers, &source).await {
                Ok(a) => a.principal,
                Err(AuthFailure::Malformed) => {
                    return Err(ApiError::Unauthorized(format!("the Authorization header is malformed; {LOG_IN}")))
                }
                Err(AuthFailure::BadCredentials) => return Err(ApiError::Unauthorized(
                    "invalid username or password (robot accounts log in as robot$<tenant>+<name> with their token)"
                        .to_owned(),
                )),
                Err(AuthFailure::Throttled(wait)) => return Err(ApiError::TooManyRequests(wait.as_secs().max(1))),
                Err(AuthFailure::Token(e)) => {
                    return Err(ApiError::Unauthorized(format!(
                        "the bearer token was refused ({e}); get a new one from /auth/token"
                    )))
                }
                Err(AuthFailure::Db(e)) => return Err(e.into()),
            };
        if principal == Principal::Anonymous {
            // An anonymous token from /auth/token names nobody who could hold a role.
            return Err(ApiError::Unauthorized(LOG_IN.to_owned()));
        }
        Ok(Caller { principal, source })
    }
}

/// A write the caller is trying to make, named as the audit log will name it.
#[derive(Clone, Copy)]
pub struct Attempt<'a> {
    /// The audit action, e.g. `role.grant`.
    pub action: &'static str,
    /// The audit object, e.g. `user/alice`.
    pub object: &'a str,
}

impl Caller {
    /// The name the audit log and messages use.
    pub fn actor(&self) -> &str {
        self.principal.actor()
    }

    /// Records a write that succeeded.
    pub async fn record(
        &self,
        state: &AppState,
        attempt: Attempt<'_>,
        tenant: Option<TenantId>,
        detail: Option<serde_json::Value>,
    ) {
        self.write_audit(state, attempt, tenant, "success", detail).await;
    }

    /// Records a refused write and hands back the refusal.
    pub async fn refused(
        &self,
        state: &AppState,
        attempt: Attempt<'_>,
        tenant: Option<TenantId>,
        error: ApiError,
    ) -> ApiError {
        self.write_audit(state, attempt, tenant, "denied", None).await;
        error
    }

    async fn write_audit(
        &self,
        state: &AppState,
        attempt: Attempt<'_>,
        tenant: Option<TenantId>,
        outcome: &str,
        detail: Option<serde_json::Value>,
    ) {
        let event = Event {
            actor: self.actor(),
            action: attempt.action,
            object: attempt.object,
            tenant,
            source: &self.source,
            outcome,
            detail,
        };
        audit::record(state, event).await;
    }

    /// Refuses anyone but the system administrator; a refused write is recorded.
    pub async fn require_system_admin(&self, state: &AppState, attempt: Option<Attempt<'_>>) -> ApiResult<()> {
        if self.principal.is_system_admin() {
            return Ok(());
        }
        let error = ApiError::Denied(format!(
            "only the system administrator may do this, and {} is not one; ask them to do it for you",
            self.actor()
        ));
        Err(match attempt {
            Some(a) => self.refused(state, a, None, error).await,
            None => error,
        })
    }

    /// Every role the caller holds, read fresh. A robot's roles are limited
    /// to its own tenant whatever the bindings say.
    pub async fn bindings(&self, state: &AppState) -> ApiResult<Vec<Binding>> {
        let Some(who) = self.principal.reference() else { return Ok(Vec::new()) };
        let mut bindings = state.db.accounts().bindings_of(who).await?;
        if let Principal::Robot { tenant_id, .. } = &self.principal {
            bindings.retain(|b| b.tenant_id == *tenant_id);
        }
        Ok(bindings)
    }

    /// The caller's roles in one tenant.
    pub async fn standing(&self, state: &AppState, tenant: TenantId) -> ApiResult<Standing> {
        if self.principal.is_system_admin() {
            return Ok(Standing { tenant_role: Some(Role::Owner), namespace_roles: Vec::new(), own_robot: false });
        }
        let bindings = self.bindings(state).await?;
        let in_tenant = bindings.iter().filter(|b| b.tenant_id == tenant);
        Ok(Standing {
            tenant_role: in_tenant.clone().filter(|b| b.namespace_id.is_none()).map(|b| b.role).max(),
            namespace_roles: in_tenant.filter_map(|b| b.namespace_id.map(|n| (n, b.role))).collect(),
            own_robot: matches!(self.principal, Principal::Robot { tenant_id, .. } if tenant_id == tenant),
        })
    }
}

/// The roles a caller holds in one tenant.
pub struct Standing {
    /// The role on the whole tenant; the system administrator holds `owner` everywhere.
    pub tenant_role: Option<Role>,
    namespace_roles: Vec<(NamespaceId, Role)>,
    /// A robot belongs to its tenant even before it is given a role.
    own_robot: bool,
}

impl Standing {
    /// Holds any role in the tenant, or is one of its robots.
    pub fn is_member(&self) -> bool {
        self.tenant_role.is_some() || !self.namespace_roles.is_empty() || self.own_robot
    }

    /// Holds `admin` or `owner` on the whole tenant: manages its namespaces, members and robots.
    pub fn administers(&self) -> bool {
        self.tenant_role >= Some(Role::Admin)
    }

    /// Holds `owner` on the whole tenant.
    pub fn owns(&self) -> bool {
        self.tenant_role == Some(Role::Owner)
    }

    /// The highest role on a namespace of this tenant, its own or the tenant's.
    pub fn role_on(&self, namespace: NamespaceId) -> Option<Role> {
        let own = self.namespace_roles.iter().filter(|(n, _)| *n == namespace).map(|(_, r)| *r).max();
        own.max(self.tenant_role)
    }
}

/// What a request needs in the tenant it names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TenantNeed {
    /// Any role in the tenant: read it.
    Member,
    /// `admin` or `owner` on the whole tenant: manage it.
    Admin,
}

/// Finds the tenant named in a request and checks the caller's standing in it.
/// A refused write (`attempt`) is recorded.
pub async fn tenant(
    state: &AppState,
    caller: &Caller,
    name: &str,
    need: TenantNeed,
    attempt: Option<Attempt<'_>>,
) -> ApiResult<(Tenant, Standing)> {
    let found = state.db.tenancy().tenant(name).await?;
    if caller.principal.is_system_admin() {
        let tenant = found.ok_or_else(|| {
            ApiError::NotFound(format!("tenant {name} does not exist; list tenants with GET /api/v1/tenants"))
        })?;
        let standing = caller.standing(state, tenant.id).await?;
        return Ok((tenant, standing));
    }
    if let Some(tenant) = found {
        let standing = caller.standing(state, tenant.id).await?;
        let enough = match need {
            TenantNeed::Member => standing.is_member(),
            TenantNeed::Admin => standing.administers(),
        };
        if enough {
            return Ok((tenant, standing));
        }
        return Err(tenant_denied(state, caller, name, need, attempt, Some(tenant.id)).await);
    }
    Err(tenant_denied(state, caller, name, need, attempt, None).await)
}

async fn tenant_denied(
    state: &AppState,
    caller: &Caller,
    name: &str,
    need: TenantNeed,
    attempt: Option<Attempt<'_>>,
    tenant: Option<TenantId>,
) -> ApiError {
    // The same words whether the tenant exists or not.
    let error = ApiError::Denied(match need {
        TenantNeed::Member => {
            format!("{} has no role in tenant {name}; ask one of its owners for one", caller.actor())
        }
        TenantNeed::Admin => format!(
            "managing tenant {name} takes the admin or owner role on the whole tenant, which {} does not hold; ask \
             one of its owners",
            caller.actor()
        ),
    });
    match attempt {
        Some(a) => caller.refused(state, a, tenant, error).await,
        None => error,
    }
}

/// What a request needs on the namespace it names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum NamespaceNeed {
    /// Any role on it or its tenant, or the namespace is public.
    Read,
    /// `admin` or `owner` on it or its tenant.
    Admin,
}

/// Finds the namespace named in a request and checks the caller may use it.
/// A refused write (`attempt`) is recorded.
pub async fn namespace(
    state: &AppState,
    caller: &Caller,
    name: &str,
    need: NamespaceNeed,
    attempt: Option<Attempt<'_>>,
) -> ApiResult<Namespace> {
    let found = state.db.tenancy().namespace(name).await?;
    if caller.principal.is_system_admin() {
        return found.ok_or_else(|| {
            ApiError::NotFound(format!(
                "namespace {name} does not exist; create it with POST /api/v1/tenants/{{tenant}}/namespaces"
            ))
        });
    }
    let mut tenant = None;
    if let Some(ns) = found {
        let role = caller.standing(state, ns.tenant_id).await?.role_on(ns.id);
        let enough = match need {
            NamespaceNeed::Read => role.is_some() || ns.public,
            NamespaceNeed::Admin => role >= Some(Role::Admin),
        };
        if enough {
            return Ok(ns);
        }
        tenant = Some(ns.tenant_id);
    }
    // The same words whether the namespace exists or not.
    let error = ApiError::Denied(match need {
        NamespaceNeed::Read => format!(
            "{} has no role on namespace {name} or its tenant; ask an admin of the namespace for one",
            caller.actor()
        ),
        NamespaceNeed::Admin => format!(
            "changing namespace {name} takes the admin or owner role on it or its tenant, which {} does not hold; \
             ask one of the tenant's owners",
            caller.actor()
        ),
    });
    Err(match attempt {
        Some(a) => caller.refused(state, a, tenant, error).await,
        None => error,
    })
}
