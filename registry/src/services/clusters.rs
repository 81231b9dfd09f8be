//! Clusters registered for P2P acceleration: registering one (its token is
//! shown once), and listing them with their agents that are online.

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::access::{Attempt, Manage, TenantAccess};
use super::names::Name;
use super::{Error, OnDuplicate, Place, Result, Thing};
use crate::auth::password;
use crate::metadata::{self, ClusterId};
use crate::state::AppState;

/// A registered cluster and its agents that are online.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Cluster {
    /// Key.
    #[serde(skip)]
    pub id: ClusterId,
    /// Name within the tenant.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Agents heard from within the last three heartbeats.
    pub agents: Vec<Agent>,
}

/// An agent of a cluster.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Agent {
    /// Agent id.
    pub id: String,
    /// Node name.
    pub node: String,
    /// Its piece server.
    pub url: String,
    /// Topology zone.
    pub zone: String,
    /// Agent version.
    pub version: String,
    /// The node's platform, e.g. `linux/amd64`.
    pub platform: String,
    /// Unix seconds of its last heartbeat (or registration).
    #[serde(skip)]
    pub last_heartbeat: i64,
    /// Bytes in its cache, as it last said.
    #[serde(skip)]
    pub cache_bytes: Option<u64>,
    /// Bytes it served to peers since it started, as it last said.
    #[serde(skip)]
    pub served_bytes: Option<u64>,
}

/// A cluster with its agents online, from the database: whichever replica
/// an agent registered with, every replica lists it.
async fn view(state: &AppState, c: metadata::Cluster) -> Result<Cluster> {
    let agents = state
        .db
        .agents()
        .online(c.id, crate::p2p::alive_since(state))
        .await?
        .into_iter()
        .map(|a| {
            let r = a.registered;
            Agent {
                id: a.id,
                url: format!("http://{}:{}", r.ip, r.peer_port),
                node: r.node,
                zone: r.zone,
                version: r.version,
                platform: if r.platform.is_empty() { "linux/amd64".into() } else { r.platform },
                last_heartbeat: a.last_seen,
                cache_bytes: a.cache_bytes,
                served_bytes: a.served_bytes,
            }
        })
        .collect();
    Ok(Cluster { id: c.id, name: c.name, created_at: c.created_at, agents })
}

/// The tenant's clusters by name, with their online agents.
pub async fn list(state: &AppState, access: &TenantAccess<Manage>) -> Result<Vec<Cluster>> {
    let clusters = state.db.clusters().of_tenant(access.tenant().id).await?;
    let mut out = Vec::with_capacity(clusters.len());
    for c in clusters {
        out.push(view(state, c).await?);
    }
    Ok(out)
}

/// The tenant's cluster `name`.
pub async fn find(state: &AppState, access: &TenantAccess<Manage>, name: &str) -> Result<metadata::Cluster> {
    let tenant = access.tenant();
    let clusters = state.db.clusters().of_tenant(tenant.id).await?;
    clusters.into_iter().find(|c| c.name == name).ok_or_else(|| {
        Error::not_found(Thing::Cluster, format!("cluster {name} does not exist in tenant {}", tenant.name))
            .then("list them", Place::Clusters { tenant: tenant.name.clone() })
    })
}

/// The audit attempt of registering cluster `name` in `tenant`, as requested.
pub fn registering(tenant: &str, name: &str) -> Attempt {
    Attempt::new("cluster.create", format!("cluster/{tenant}/{name}"))
}

/// A new cluster token; a prefix tells it apart from passwords and robot
/// tokens in a config file.
fn new_token() -> String {
    format!("dfc_{}", password::random_secret())
}

/// Registers a cluster and returns it with the token its agents authenticate
/// with, shown only now; the check was made for [`registering`].
pub async fn register(state: &AppState, access: &TenantAccess<Manage>, name: &Name) -> Result<(Cluster, String)> {
    let tenant = access.tenant();
    let token = new_token();
    let id = state.db.clusters().create(tenant.id, name.as_str(), &password::token_sha256(&token)).await.on_duplicate(
        || {
            Error::conflict(
                Thing::Cluster,
                format!("tenant {} already has a cluster named {name}; pick another name", tenant.name),
            )
        },
    )?;
    access.record(state, Some(json!({ "cluster_id": id.0 }))).await;
    let cluster = Cluster { id, name: name.to_string(), created_at: metadata::now(), agents: Vec::new() };
    Ok((cluster, token))
}

/// Every replica forgets the cluster's agents: their token no longer works,
/// so they are not anyone's parents any more. This replica's scheduler
/// forgets them at once; their rows go, so no replica takes them back; and
/// the cluster's lease is revoked, so the replica scheduling it (perhaps
/// another) drops what it knew at its next renewal, within
/// [`crate::p2p::lease::RENEW_EVERY`].
async fn forget_agents(state: &AppState, cluster: ClusterId) -> Result<()> {
    for agent in state.scheduler.agents_of(cluster) {
        state.scheduler.forget(cluster, &agent.id);
    }
    state.db.agents().delete_all(cluster).await?;
    state.db.leases().revoke(cluster).await?;
    Ok(())
}

/// The audit attempt of giving cluster `name` of `tenant` a new token.
pub fn reissuing(tenant: &str, name: &str) -> Attempt {
    Attempt::new("cluster.token", format!("cluster/{tenant}/{name}"))
}

/// Gives the tenant's cluster `name` a new token and returns it, shown only
/// now. The old token stops working at once: its agents and setup command
/// with it, until they are set up again with the new one. The check was
/// made for [`reissuing`].
pub async fn reissue_token(state: &AppState, access: &TenantAccess<Manage>, name: &str) -> Result<(Cluster, String)> {
    let found = find(state, access, name).await?;
    let token = new_token();
    if !state.db.clusters().set_token(found.id, &password::token_sha256(&token)).await? {
        return Err(gone(access, name));
    }
    forget_agents(state, found.id).await?;
    access.record(state, Some(json!({ "cluster_id": found.id.0 }))).await;
    Ok((view(state, found).await?, token))
}

/// The audit attempt of deleting cluster `name` of `tenant`.
pub fn deleting(tenant: &str, name: &str) -> Attempt {
    Attempt::new("cluster.delete", format!("cluster/{tenant}/{name}"))
}

/// Deletes the tenant's cluster `name`: its token stops working, its agents
/// are forgotten, and no namespace preheats new tags into it any more. The
/// nodes keep what the setup script installed until it is run with
/// `--uninstall`. The check was made for [`deleting`].
pub async fn delete(state: &AppState, access: &TenantAccess<Manage>, name: &str) -> Result<()> {
    let found = find(state, access, name).await?;
    if !state.db.clusters().delete(found.id).await? {
        return Err(gone(access, name));
    }
    // Its agents' and lease's rows went with it.
    for agent in state.scheduler.agents_of(found.id) {
        state.scheduler.forget(found.id, &agent.id);
    }
    access.record(state, Some(json!({ "cluster_id": found.id.0 }))).await;
    Ok(())
}

/// A cluster deleted between finding it and changing it.
fn gone(access: &TenantAccess<Manage>, name: &str) -> Error {
    Error::not_found(Thing::Cluster, format!("cluster {name} does not exist in tenant {}", access.tenant().name))
        .then("list them", Place::Clusters { tenant: access.tenant().name.clone() })
}
