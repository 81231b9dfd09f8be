//! Who may manage what: the checks every face makes before it reads or
//! changes a tenant, a namespace, or the registry as a whole.
//!
//! Authority comes from the caller's role bindings, read from the database
//! on every request rather than from a token's `access` claim: a token
//! grants repository actions, while these checks guard who holds them, so a
//! role removed a moment ago must already count.
//!
//! A caller without a role in a tenant is told "denied" whether the tenant
//! exists or not, so names cannot be probed; only the system administrator,
//! who may see everything, is told that something does not exist.
//!
//! A check that passes hands back a proof ([`SystemAdmin`],
//! [`TenantAccess`], [`NamespaceAccess`]) holding what it found. The services
//! that act on a tenant or namespace take the proof, so none of them can run
//! unchecked, and they record their success under the attempt it was made for.

use std::collections::BTreeSet;
use std::marker::PhantomData;

use super::audit::{self, Event, Readable};
use super::{Error, Place, Result, Thing};
use crate::auth::Principal;
use crate::metadata::{Binding, Namespace, NamespaceId, Role, Tenant, TenantId};
use crate::state::AppState;

/// Someone acting on the registry, however a face established who.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// Client address, as recorded in the audit log.
    pub source: String,
}

/// A write the caller is trying to make, named as the audit log names it.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The audit action, e.g. `role.grant`.
    pub action: &'static str,
    /// The audit object, e.g. `user/alice`.
    pub object: String,
}

impl Attempt {
    /// `action` on `object`.
    pub fn new(action: &'static str, object: impl Into<String>) -> Attempt {
        Attempt { action, object: object.into() }
    }
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
        attempt: &Attempt,
        tenant: Option<TenantId>,
        detail: Option<serde_json::Value>,
    ) {
        self.write_audit(state, attempt, tenant, "success", detail).await;
    }

    /// Records a refused write, if it was one, and hands back the refusal.
    pub async fn refused(
        &self,
        state: &AppState,
        attempt: Option<&Attempt>,
        tenant: Option<TenantId>,
        error: Error,
    ) -> Error {
        if let Some(attempt) = attempt {
            self.write_audit(state, attempt, tenant, "denied", None).await;
        }
        error
    }

    async fn write_audit(
        &self,
        state: &AppState,
        attempt: &Attempt,
        tenant: Option<TenantId>,
        outcome: &str,
        detail: Option<serde_json::Value>,
    ) {
        let event = Event {
            actor: self.actor(),
            action: attempt.action,
            object: &attempt.object,
            tenant,
            source: &self.source,
            outcome,
            detail,
        };
        audit::record(state, event).await;
    }

    /// Every role the caller holds, read fresh. A robot's roles are limited
    /// to its own tenant whatever the bindings say.
    pub async fn bindings(&self, state: &AppState) -> Result<Vec<Binding>> {
        let Some(who) = self.principal.reference() else { return Ok(Vec::new()) };
        let mut bindings = state.db.accounts().bindings_of(who).await?;
        if let Principal::Robot { tenant_id, .. } = &self.principal {
            bindings.retain(|b| b.tenant_id == *tenant_id);
        }
        Ok(bindings)
    }

    /// The caller's roles in one tenant.
    pub async fn standing(&self, state: &AppState, tenant: TenantId) -> Result<Standing> {
        if self.principal.is_system_admin() {
            return Ok(self.standing_in(&[], tenant));
        }
        Ok(self.standing_in(&self.bindings(state).await?, tenant))
    }

    /// The caller's roles in one tenant, among `bindings` (theirs, from [`Caller::bindings`]).
    fn standing_in(&self, bindings: &[Binding], tenant: TenantId) -> Standing {
        if self.principal.is_system_admin() {
            return Standing { tenant_role: Some(Role::Owner), namespace_roles: Vec::new(), own_robot: false };
        }
        let in_tenant = bindings.iter().filter(|b| b.tenant_id == tenant);
        Standing {
            tenant_role: in_tenant.clone().filter(|b| b.namespace_id.is_none()).map(|b| b.role).max(),
            namespace_roles: in_tenant.filter_map(|b| b.namespace_id.map(|n| (n, b.role))).collect(),
            own_robot: matches!(self.principal, Principal::Robot { tenant_id, .. } if tenant_id == tenant),
        }
    }
}

/// The roles a caller holds in one tenant.
#[derive(Clone, Debug)]
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

/// How much a check asks of the caller: [`Read`] or [`Manage`].
pub trait Need {
    /// True for [`Manage`].
    const MANAGE: bool;
}

/// Reading: any role in the tenant; on a namespace, any role on it or its
/// tenant, or the namespace is public.
#[derive(Debug)]
pub struct Read;

/// Managing: `admin` or `owner` on the whole tenant; on a namespace, on it or its tenant.
#[derive(Debug)]
pub struct Manage;

impl Need for Read {
    const MANAGE: bool = false;
}

impl Need for Manage {
    const MANAGE: bool = true;
}

/// Who is acting, and the write they were checked for (none for a read).
#[derive(Debug)]
struct Acting {
    caller: Caller,
    attempt: Option<Attempt>,
}

impl Acting {
    async fn record(&self, state: &AppState, tenant: Option<TenantId>, detail: Option<serde_json::Value>) {
        if let Some(attempt) = &self.attempt {
            self.caller.record(state, attempt, tenant, detail).await;
        }
    }
}

/// Proof that the caller is the system administrator.
#[derive(Debug)]
pub struct SystemAdmin {
    acting: Acting,
}

impl SystemAdmin {
    /// Who.
    pub fn caller(&self) -> &Caller {
        &self.acting.caller
    }

    /// Records the write the check was made for as done.
    pub(super) async fn record(&self, state: &AppState, tenant: Option<TenantId>, detail: Option<serde_json::Value>) {
        self.acting.record(state, tenant, detail).await;
    }

    /// Records `attempt` as done (the object named better once it was found).
    pub(super) async fn record_as(&self, state: &AppState, attempt: &Attempt) {
        self.acting.caller.record(state, attempt, None, None).await;
    }
}

/// Refuses anyone but the system administrator; a refused `attempt` is recorded.
pub async fn system_admin(state: &AppState, caller: &Caller, attempt: Option<Attempt>) -> Result<SystemAdmin> {
    if caller.principal.is_system_admin() {
        return Ok(SystemAdmin { acting: Acting { caller: caller.clone(), attempt } });
    }
    let error = Error::Denied(format!(
        "only the system administrator may do this, and {} is not one; ask them to do it for you",
        caller.actor()
    ));
    Err(caller.refused(state, attempt.as_ref(), None, error).await)
}

/// Proof that the caller may read (`N` = [`Read`]) or manage ([`Manage`]) a tenant.
#[derive(Debug)]
pub struct TenantAccess<N> {
    acting: Acting,
    tenant: Tenant,
    standing: Standing,
    need: PhantomData<N>,
}

impl<N> TenantAccess<N> {
    /// The tenant.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// The caller's roles in it.
    pub fn standing(&self) -> &Standing {
        &self.standing
    }

    /// Who.
    pub fn caller(&self) -> &Caller {
        &self.acting.caller
    }

    /// Records the write the check was made for as done, in this tenant.
    pub(super) async fn record(&self, state: &AppState, detail: Option<serde_json::Value>) {
        self.acting.record(state, Some(self.tenant.id), detail).await;
    }

    /// Records `attempt` as done in this tenant (the object named better once it was found).
    pub(super) async fn record_as(&self, state: &AppState, attempt: &Attempt, detail: Option<serde_json::Value>) {
        self.acting.caller.record(state, attempt, Some(self.tenant.id), detail).await;
    }

    /// Records `attempt` as refused in this tenant and hands back the refusal.
    pub(super) async fn refuse(&self, state: &AppState, attempt: &Attempt, error: Error) -> Error {
        self.acting.caller.refused(state, Some(attempt), Some(self.tenant.id), error).await
    }
}

/// Finds the tenant `name` and checks the caller's standing in it. A
/// refused `attempt` is recorded.
pub async fn tenant<N: Need>(
    state: &AppState,
    caller: &Caller,
    name: &str,
    attempt: Option<Attempt>,
) -> Result<TenantAccess<N>> {
    let found = state.db.tenancy().tenant(name).await?;
    let admitted = |tenant, standing, attempt| TenantAccess {
        acting: Acting { caller: caller.clone(), attempt },
        tenant,
        standing,
        need: PhantomData,
    };
    if caller.principal.is_system_admin() {
        let tenant = found.ok_or_else(|| {
            Error::not_found(Thing::Tenant, format!("tenant {name} does not exist"))
                .then("list tenants", Place::Tenants)
        })?;
        let standing = caller.standing(state, tenant.id).await?;
        return Ok(admitted(tenant, standing, attempt));
    }
    // The caller's roles are read whether the tenant exists or not, so that
    // a refusal takes as long either way.
    let bindings = caller.bindings(state).await?;
    let mut tenant_id = None;
    if let Some(tenant) = found {
        let standing = caller.standing_in(&bindings, tenant.id);
        let enough = if N::MANAGE { standing.administers() } else { standing.is_member() };
        if enough {
            return Ok(admitted(tenant, standing, attempt));
        }
        tenant_id = Some(tenant.id);
    }
    // The same words whether the tenant exists or not.
    let error = Error::Denied(if N::MANAGE {
        format!(
            "managing tenant {name} takes the admin or owner role on the whole tenant, which {} does not hold; ask \
             one of its owners",
            caller.actor()
        )
    } else {
        format!("{} has no role in tenant {name}; ask one of its owners for one", caller.actor())
    });
    Err(caller.refused(state, attempt.as_ref(), tenant_id, error).await)
}

/// The tenant that owns namespace `name`, checked like [`tenant`], for what is
/// done to a namespace's repositories with a role on its whole tenant
/// (preheat). A caller who may not is refused in the same words whether the
/// namespace exists or not, naming neither its tenant nor whether it has one.
/// The attempt is named for the tenant (`attempt` is given its name; the
/// namespace's when there is none) and recorded if refused.
pub async fn tenant_of_namespace<N: Need>(
    state: &AppState,
    caller: &Caller,
    name: &str,
    attempt: impl Fn(&str) -> Attempt,
) -> Result<TenantAccess<N>> {
    let namespace = state.db.tenancy().namespace(name).await?;
    if caller.principal.is_system_admin() {
        let namespace = namespace.ok_or_else(|| {
            Error::not_found(Thing::Namespace, format!("namespace {name} does not exist"))
                .then("create it", Place::NewNamespace)
        })?;
        return tenant(state, caller, &namespace.tenant, Some(attempt(&namespace.tenant))).await;
    }
    let bindings = caller.bindings(state).await?;
    let (mut tenant_id, mut refused) = (None, attempt(name));
    if let Some(ns) = namespace {
        let standing = caller.standing_in(&bindings, ns.tenant_id);
        let enough = if N::MANAGE { standing.administers() } else { standing.is_member() };
        if enough {
            return tenant(state, caller, &ns.tenant, Some(attempt(&ns.tenant))).await;
        }
        (tenant_id, refused) = (Some(ns.tenant_id), attempt(&ns.tenant));
    }
    // The same words whether the namespace exists or not.
    let error = Error::Denied(format!(
        "this takes the {} role on the tenant of namespace {name}, which {} does not hold; ask one of its owners",
        if N::MANAGE { "admin or owner" } else { "any" },
        caller.actor()
    ));
    Err(caller.refused(state, Some(&refused), tenant_id, error).await)
}

/// Proof that the caller may read (`N` = [`Read`]) or manage ([`Manage`]) a namespace.
#[derive(Debug)]
pub struct NamespaceAccess<N> {
    acting: Acting,
    namespace: Namespace,
    need: PhantomData<N>,
}

impl<N> NamespaceAccess<N> {
    /// The namespace, as it was when checked.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Who.
    pub fn caller(&self) -> &Caller {
        &self.acting.caller
    }

    /// Records the write the check was made for as done, in the namespace's tenant.
    pub(super) async fn record(&self, state: &AppState, detail: Option<serde_json::Value>) {
        self.acting.record(state, Some(self.namespace.tenant_id), detail).await;
    }
}

/// Finds the namespace `name` and checks the caller may use it. A refused
/// `attempt` is recorded.
pub async fn namespace<N: Need>(
    state: &AppState,
    caller: &Caller,
    name: &str,
    attempt: Option<Attempt>,
) -> Result<NamespaceAccess<N>> {
    let found = state.db.tenancy().namespace(name).await?;
    let admitted = |namespace, attempt| NamespaceAccess {
        acting: Acting { caller: caller.clone(), attempt },
        namespace,
        need: PhantomData,
    };
    if caller.principal.is_system_admin() {
        let namespace = found.ok_or_else(|| {
            Error::not_found(Thing::Namespace, format!("namespace {name} does not exist"))
                .then("create it", Place::NewNamespace)
        })?;
        return Ok(admitted(namespace, attempt));
    }
    // As for a tenant: the caller's roles are read whether the namespace exists or not.
    let bindings = caller.bindings(state).await?;
    let mut tenant = None;
    if let Some(ns) = found {
        let role = caller.standing_in(&bindings, ns.tenant_id).role_on(ns.id);
        let enough = if N::MANAGE { role >= Some(Role::Admin) } else { role.is_some() || ns.public };
        if enough {
            return Ok(admitted(ns, attempt));
        }
        tenant = Some(ns.tenant_id);
    }
    // The same words whether the namespace exists or not.
    let error = Error::Denied(if N::MANAGE {
        format!(
            "changing namespace {name} takes the admin or owner role on it or its tenant, which {} does not hold; \
             ask one of the tenant's owners",
            caller.actor()
        )
    } else {
        format!(
            "{} has no role on namespace {name} or its tenant; ask an admin of the namespace for one",
            caller.actor()
        )
    });
    Err(caller.refused(state, attempt.as_ref(), tenant, error).await)
}

/// The tenants whose audit events the caller may read: all of them for the
/// system administrator; for anyone else, those they administer (`tenant`
/// names one of them).
pub async fn audit_log(state: &AppState, caller: &Caller, tenant: Option<&str>) -> Result<Readable> {
    let found = match tenant {
        Some(name) => state.db.tenancy().tenant(name).await?,
        None => None,
    };
    let tenant_ids = |ids: Vec<i64>| -> Result<Readable> { Ok(Readable { tenant_ids: Some(ids) }) };
    if caller.principal.is_system_admin() {
        return match (tenant, found) {
            (None, _) => Ok(Readable { tenant_ids: None }),
            (Some(_), Some(t)) => tenant_ids(vec![t.id.0]),
            (Some(name), None) => Err(Error::not_found(Thing::Tenant, format!("tenant {name} does not exist"))
                .then("list tenants", Place::Tenants)),
        };
    }
    let administered: BTreeSet<i64> = caller
        .bindings(state)
        .await?
        .into_iter()
        .filter(|b| b.namespace_id.is_none() && b.role >= Role::Admin)
        .map(|b| b.tenant_id.0)
        .collect();
    match (tenant, found) {
        (Some(_), Some(t)) if administered.contains(&t.id.0) => tenant_ids(vec![t.id.0]),
        // The same words whether the tenant exists or not.
        (Some(name), _) => Err(Error::Denied(format!(
            "reading tenant {name}'s audit log takes the admin or owner role on it, which {} does not hold",
            caller.actor()
        ))),
        (None, _) if administered.is_empty() => Err(Error::Denied(format!(
            "the audit log is open to the system administrator and to tenant admins and owners; {} is neither",
            caller.actor()
        ))),
        (None, _) => tenant_ids(administered.into_iter().collect()),
    }
}
