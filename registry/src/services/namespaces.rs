//! Namespaces: those of a tenant a caller may see, creating one, and its
//! switches (public, P2P acceleration, the clusters its new tags are
//! preheated into).

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::access::{Attempt, Caller, Manage, NamespaceAccess, TenantAccess};
use super::audit::{self, Event};
use super::names::Name;
use super::{Error, OnDuplicate, Place, Result, Thing};
use crate::auth::bootstrap::DEFAULT_TENANT;
use crate::metadata::{self, is_unique_violation, ClusterId};
use crate::state::AppState;

/// A namespace with the clusters its new tags are preheated into; it reads
/// as its row (`ns.name`, `ns.p2p_enabled`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    row: metadata::Namespace,
    /// Clusters that every newly pushed tag is preheated into, while P2P is on.
    pub preheat_on_push: Vec<PreheatTarget>,
}

impl std::ops::Deref for Namespace {
    type Target = metadata::Namespace;

    fn deref(&self) -> &metadata::Namespace {
        &self.row
    }
}

/// A cluster that new tags are preheated into.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PreheatTarget {
    /// A cluster of the namespace's tenant.
    pub cluster: String,
    /// Share of its online agents, 1 to 100 (rounded up to whole nodes); 100 if absent.
    #[serde(default = "all_agents", deserialize_with = "super::number::whole")]
    #[schema(minimum = 1, maximum = 100)]
    pub percent: u8,
}

fn all_agents() -> u8 {
    100
}

/// What to change on a namespace; `None` leaves it as it is.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// Let anyone pull.
    pub public: Option<bool>,
    /// Turn P2P acceleration on or off.
    pub p2p_enabled: Option<bool>,
    /// Replace the clusters every newly pushed tag is preheated into.
    pub preheat_on_push: Option<Vec<PreheatTarget>>,
}

async fn described(state: &AppState, n: metadata::Namespace) -> Result<Namespace> {
    let targets = state.db.clusters().preheat_targets(n.id).await?;
    let preheat_on_push = targets.into_iter().map(|(c, percent)| PreheatTarget { cluster: c.name, percent }).collect();
    Ok(Namespace { row: n, preheat_on_push })
}

/// The namespaces of a tenant the caller may see: all of them with a
/// tenant-wide role, only their own with namespace roles.
pub async fn visible<N>(state: &AppState, access: &TenantAccess<N>) -> Result<Vec<Namespace>> {
    let standing = access.standing();
    let mut namespaces = state.db.tenancy().namespaces_of(access.tenant().id).await?;
    if standing.tenant_role.is_none() {
        namespaces.retain(|n| standing.role_on(n.id).is_some());
    }
    let mut shown = Vec::with_capacity(namespaces.len());
    for n in namespaces {
        shown.push(described(state, n).await?);
    }
    Ok(shown)
}

/// The audit attempt of creating a namespace named `name`, as requested.
pub fn creating(name: &str) -> Attempt {
    Attempt::new("namespace.create", format!("namespace/{name}"))
}

/// Creates a namespace in the tenant; the check was made for [`creating`].
pub async fn create(state: &AppState, access: &TenantAccess<Manage>, name: &Name, public: bool) -> Result<Namespace> {
    state.db.tenancy().create_namespace(access.tenant().id, name.as_str(), public).await.on_duplicate(|| {
        Error::conflict(
            Thing::Namespace,
            format!("namespace {name} already exists (namespace names are unique across tenants); pick another name"),
        )
    })?;
    state.auth.invalidate();
    access.record(state, Some(json!({ "public": public }))).await;
    let created = state.db.tenancy().namespace(name.as_str()).await?;
    let created = created.ok_or_else(|| Error::Internal(format!("namespace {name} vanished after creation")))?;
    described(state, created).await
}

/// The namespace with its preheat targets.
pub async fn show<N>(state: &AppState, access: &NamespaceAccess<N>) -> Result<Namespace> {
    described(state, access.namespace().clone()).await
}

/// The audit attempt of changing namespace `name`.
pub fn updating(name: &str) -> Attempt {
    Attempt::new("namespace.update", format!("namespace/{name}"))
}

/// Changes the namespace's switches; the check was made for [`updating`].
pub async fn update(state: &AppState, access: &NamespaceAccess<Manage>, change: Change) -> Result<Namespace> {
    let ns = access.namespace();
    if change.public.is_none() && change.p2p_enabled.is_none() && change.preheat_on_push.is_none() {
        return described(state, ns.clone()).await;
    }
    let mut detail = serde_json::Map::new();
    if let Some(targets) = &change.preheat_on_push {
        let rows = preheat_rows(state, ns, targets).await?;
        state.db.clusters().set_preheat_targets(ns.id, &rows).await?;
        detail.insert("preheat_on_push".into(), json!(targets));
    }
    state.db.tenancy().update_namespace(ns.id, change.public, change.p2p_enabled).await?;
    state.auth.invalidate();
    if change.p2p_enabled == Some(true) && !ns.p2p_enabled {
        state.recuts.switched_on(state, &ns.name);
    }
    if let Some(p) = change.public {
        detail.insert("public".into(), p.into());
    }
    if let Some(p) = change.p2p_enabled {
        detail.insert("p2p_enabled".into(), p.into());
    }
    access.record(state, Some(detail.into())).await;
    let updated = state.db.tenancy().namespace(&ns.name).await?;
    let updated = updated
        .ok_or_else(|| Error::not_found(Thing::Namespace, format!("namespace {} was deleted meanwhile", ns.name)))?;
    described(state, updated).await
}

/// Checks preheat targets against the namespace's tenant: each names one of
/// its clusters, once, with a percent from 1 to 100.
async fn preheat_rows(
    state: &AppState,
    ns: &metadata::Namespace,
    targets: &[PreheatTarget],
) -> Result<Vec<(ClusterId, u8)>> {
    let clusters = state.db.clusters().of_tenant(ns.tenant_id).await?;
    let mut rows = Vec::with_capacity(targets.len());
    for t in targets {
        if !(1..=100).contains(&t.percent) {
            return Err(Error::invalid(
                Thing::Field,
                format!(
                    "preheat_on_push: percent {} for cluster {} is out of range: give 1 to 100 (the share of online \
                     agents to preheat)",
                    t.percent, t.cluster
                ),
            ));
        }
        // Only the tenant's own clusters: another tenant's nodes never cache this namespace.
        let Some(c) = clusters.iter().find(|c| c.name == t.cluster) else {
            return Err(Error::not_found(
                Thing::Cluster,
                format!("preheat_on_push: cluster {} does not exist in tenant {}", t.cluster, ns.tenant),
            )
            .then("list them", Place::Clusters { tenant: ns.tenant.clone() }));
        };
        if rows.iter().any(|(id, _)| *id == c.id) {
            return Err(Error::invalid(
                Thing::Field,
                format!("preheat_on_push names cluster {} twice; give each cluster once", t.cluster),
            ));
        }
        rows.push((c.id, t.percent));
    }
    Ok(rows)
}

/// The clusters of the namespace's tenant, each with the share of its agents
/// that new tags go to (0: none), for those who may change that.
pub async fn preheat_choices(state: &AppState, access: &NamespaceAccess<Manage>) -> Result<Vec<(String, u8)>> {
    let ns = described(state, access.namespace().clone()).await?;
    let clusters = state.db.clusters().of_tenant(ns.tenant_id).await?;
    Ok(clusters
        .into_iter()
        .map(|c| {
            let percent = ns.preheat_on_push.iter().find(|t| t.cluster == c.name).map_or(0, |t| t.percent);
            (c.name, percent)
        })
        .collect())
}

/// The namespace's repositories, byte-wise, at most `limit`, each with its
/// tag count, stored bytes and last push.
pub async fn repositories<N>(
    state: &AppState,
    access: &NamespaceAccess<N>,
    limit: i64,
) -> Result<Vec<metadata::RepositorySummary>> {
    Ok(state.db.repositories().in_namespace(&access.namespace().name, limit).await?)
}

/// The system administrator's first push to a namespace that does not exist
/// creates it, private, in the default tenant. Anyone else's push there was
/// refused before it got here.
pub async fn create_on_first_push(state: &AppState, caller: &Caller, namespace: &str) -> Result<()> {
    if !caller.principal.is_system_admin() || state.auth.policy.namespace(&state.db, namespace).await?.is_some() {
        return Ok(());
    }
    let tenant =
        state.db.tenancy().tenant(DEFAULT_TENANT).await?.ok_or_else(|| {
            Error::Denied(format!("namespace {namespace} does not exist; create it in a tenant first"))
        })?;
    match state.db.tenancy().create_namespace(tenant.id, namespace, false).await {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {}
        Err(e) => return Err(e.into()),
    }
    state.auth.policy.invalidate();
    let event = Event {
        actor: caller.actor(),
        action: "namespace.create",
        object: &format!("namespace/{namespace}"),
        tenant: Some(tenant.id),
        source: &caller.source,
        outcome: "success",
        detail: Some(json!({ "reason": "first push" })),
    };
    audit::record(state, event).await;
    Ok(())
}
