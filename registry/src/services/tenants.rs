//! Tenants: which ones a caller sees, and creating one.

use std::collections::HashSet;

use super::access::{Attempt, Caller, SystemAdmin};
use super::names::Name;
use super::{Error, OnDuplicate, Result, Thing};
use crate::auth::Principal;
use crate::metadata::{Tenant, TenantId};
use crate::state::AppState;

/// Tenants the caller holds a role in, or belongs to as a robot (every
/// tenant, for the system administrator), by name.
pub async fn visible(state: &AppState, caller: &Caller) -> Result<Vec<Tenant>> {
    let mut tenants = state.db.tenancy().tenants().await?;
    if !caller.principal.is_system_admin() {
        let mut visible: HashSet<TenantId> = caller.bindings(state).await?.into_iter().map(|b| b.tenant_id).collect();
        if let Principal::Robot { tenant_id, .. } = &caller.principal {
            visible.insert(*tenant_id);
        }
        tenants.retain(|t| visible.contains(&t.id));
    }
    Ok(tenants)
}

/// The audit attempt of creating a tenant named `name`, as requested.
pub fn creating(name: &str) -> Attempt {
    Attempt::new("tenant.create", format!("tenant/{name}"))
}

/// Creates a tenant; the system administrator's check was made for [`creating`].
pub async fn create(state: &AppState, admin: &SystemAdmin, name: &Name) -> Result<Tenant> {
    let tenant =
        state.db.tenancy().create_tenant(name.as_str()).await.on_duplicate(|| {
            Error::conflict(Thing::Tenant, format!("tenant {name} already exists; pick another name"))
        })?;
    admin.record(state, Some(tenant.id), None).await;
    Ok(tenant)
}
