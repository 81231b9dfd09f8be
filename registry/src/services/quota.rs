//! Quotas: how much a tenant and each of its namespaces may store, in
//! bytes and optionally in repositories, and what they use.
//!
//! The system administrator sets a tenant's quota; the tenant's admins and
//! owners (and the system administrator) set its namespaces' quotas within
//! it. Anyone with a role on a namespace or tenant may read its use. A limit
//! is read by the very transaction that commits a blob or a manifest (see
//! `metadata::usage`), so a raised quota takes effect at once, and a commit
//! that would pass a limit is refused with nothing of it kept.

use serde_json::json;

use super::access::{self, Attempt, Caller, NamespaceAccess, SystemAdmin, TenantAccess};
use super::{Error, Result, Thing};
use crate::metadata::{QuotaExceeded, Usage};
use crate::state::AppState;

/// New limits; `None` removes one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes.
    pub bytes: Option<i64>,
    /// Most repositories.
    pub repositories: Option<i64>,
}

impl Limits {
    fn check(self) -> Result<Limits> {
        if self.bytes.is_some_and(|b| b < 0) || self.repositories.is_some_and(|r| r < 0) {
            return Err(Error::invalid(
                Thing::Field,
                "a quota is a number of bytes or repositories, 0 or more, or null for no limit",
            ));
        }
        Ok(self)
    }
}

/// A namespace's quota and use, for a caller who may read the namespace.
pub async fn of_namespace<N>(state: &AppState, access: &NamespaceAccess<N>) -> Result<Usage> {
    Ok(state.db.storage().namespace(access.namespace().id).await?)
}

/// A tenant's quota and use, for a caller who may read the tenant.
pub async fn of_tenant<N>(state: &AppState, access: &TenantAccess<N>) -> Result<Usage> {
    Ok(state.db.storage().tenant(access.tenant().id).await?)
}

/// The audit attempt of setting tenant `name`'s quota.
pub fn setting_tenant(name: &str) -> Attempt {
    Attempt::new("quota.update", format!("tenant/{name}"))
}

/// Sets a tenant's quota (system administrator).
pub async fn set_tenant(state: &AppState, admin: &SystemAdmin, tenant: &str, limits: Limits) -> Result<Usage> {
    let limits = limits.check()?;
    let found = state.db.tenancy().tenant(tenant).await?;
    let tenant = found.ok_or_else(|| Error::not_found(Thing::Tenant, format!("tenant {tenant} does not exist")))?;
    state.db.storage().set_tenant_quota(tenant.id, limits.bytes, limits.repositories).await?;
    admin
        .record(state, Some(tenant.id), Some(json!({ "bytes": limits.bytes, "repositories": limits.repositories })))
        .await;
    Ok(state.db.storage().tenant(tenant.id).await?)
}

/// The audit attempt of setting namespace `name`'s quota.
pub fn setting_namespace(name: &str) -> Attempt {
    Attempt::new("quota.update", format!("namespace/{name}"))
}

/// Sets a namespace's quota: the tenant's admins and owners, and the system administrator.
pub async fn set_namespace(state: &AppState, caller: &Caller, namespace: &str, limits: Limits) -> Result<Usage> {
    let limits = limits.check()?;
    let attempt = setting_namespace(namespace);
    let ns = access::namespace::<access::Read>(state, caller, namespace, Some(attempt.clone())).await?;
    let ns = ns.namespace().clone();
    let tenant =
        access::tenant::<access::Manage>(state, caller, &ns.tenant, Some(attempt.clone())).await.map_err(|_| {
            Error::Denied(format!(
            "setting namespace {namespace}'s quota takes the admin or owner role on tenant {}, which {} does not hold",
            ns.tenant,
            caller.actor()
        ))
        })?;
    state.db.storage().set_namespace_quota(ns.id, limits.bytes, limits.repositories).await?;
    tenant
        .record_as(state, &attempt, Some(json!({ "bytes": limits.bytes, "repositories": limits.repositories })))
        .await;
    Ok(state.db.storage().namespace(ns.id).await?)
}

/// The refusal as a service error (`DENIED`).
pub fn denied(q: &QuotaExceeded, what: &str) -> Error {
    Error::Denied(q.refusal(what))
}
