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
}

fn view(state: &AppState, c: metadata::Cluster) -> Cluster {
    let agents = state
        .scheduler
        .agents_of(c.id)
        .into_iter()
        .map(|a| Agent { id: a.id, node: a.node, url: a.url, zone: a.zone, version: a.version, platform: a.platform })
        .collect();
    Cluster { id: c.id, name: c.name, created_at: c.created_at, agents }
}

/// The tenant's clusters by name, with their online agents.
pub async fn list(state: &AppState, access: &TenantAccess<Manage>) -> Result<Vec<Cluster>> {
    let clusters = state.db.clusters().of_tenant(access.tenant().id).await?;
    Ok(clusters.into_iter().map(|c| view(state, c)).collect())
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

/// Registers a cluster and returns it with the token its agents authenticate
/// with, shown only now; the check was made for [`registering`].
pub async fn register(state: &AppState, access: &TenantAccess<Manage>, name: &Name) -> Result<(Cluster, String)> {
    let tenant = access.tenant();
    // A prefix tells the token apart from passwords and robot tokens in a config file.
    let token = format!("dfc_{}", password::random_secret());
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
