//! Preheat: a tag's config and layers pushed into the caches of a cluster's
//! online agents before workloads pull them, on request or on every push of
//! a new tag into a namespace that asks for it. For a multi-platform tag,
//! each node fetches the manifest of its own platform.

pub mod jobs;

use std::collections::{HashMap, HashSet};

use damselfly_core::{Digest, RepositoryName};
use serde::Deserialize;
use serde_json::json;

use damselfly_core::p2p::PreheatTask;
pub use jobs::{NewJob, NodePlan, PreheatJob, PreheatNode, PreheatState, PreheatTrigger};

use super::access::{self, Attempt, Caller, Manage, TenantAccess};
use super::{Error, Place, Result, Thing};
use crate::auth::token::Access;
use crate::auth::Principal;
use crate::metadata::{Cluster, ClusterId, Tenant};
use crate::state::AppState;

/// A share of a cluster's online agents: 1 to 100 percent, rounded up to whole nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percent(u8);

impl Percent {
    /// Every agent.
    pub const ALL: Percent = Percent(100);

    /// `percent`, if it is 1 to 100.
    pub fn new(percent: u8) -> Result<Percent> {
        if !(1..=100).contains(&percent) {
            return Err(Error::invalid(
                Thing::Field,
                format!("percent {percent} is out of range: give 1 to 100 (the share of online agents to preheat)"),
            ));
        }
        Ok(Percent(percent))
    }
}

#[derive(Deserialize)]
struct Descriptor {
    digest: Digest,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Platform {
    /// Whether a node of `platform` (`<os>/<arch>[/<variant>]`) runs this.
    fn serves(&self, platform: &str) -> bool {
        let mut parts = platform.split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        os == Some(self.os.as_str())
            && arch == Some(self.architecture.as_str())
            && variant.is_none_or(|v| self.variant.as_deref() == Some(v))
    }
}

/// The parts of a manifest preheat reads: an image's (or artifact's) blobs,
/// or an index's manifests.
#[derive(Deserialize)]
struct Manifest {
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

impl Manifest {
    fn parse(content: &[u8]) -> Option<Manifest> {
        serde_json::from_slice(content).ok()
    }

    fn blobs(self) -> Vec<Digest> {
        let mut blobs: Vec<Digest> = self.config.into_iter().chain(self.layers).map(|d| d.digest).collect();
        blobs.dedup();
        blobs
    }
}

/// The audit attempt of preheating into cluster `cluster` of `tenant`.
pub fn starting(tenant: &str, cluster: &str) -> Attempt {
    Attempt::new("cluster.preheat", format!("cluster/{tenant}/{cluster}"))
}

/// Starts a preheat job of `name:tag` into the cluster, found in the
/// caller's tenant, asked for through `trigger` (the API or the console);
/// the check was made for [`starting`].
pub async fn start(
    state: &AppState,
    access: &TenantAccess<Manage>,
    cluster: &Cluster,
    name: &RepositoryName,
    tag: &str,
    percent: Percent,
    trigger: PreheatTrigger,
) -> Result<PreheatJob> {
    let what = Launch { tenant: access.tenant(), cluster, name, tag, percent };
    let job = launch(state, what, &access.caller().principal, trigger).await?;
    let detail = json!({ "job": job.id, "repository": job.repository, "tag": job.tag, "nodes": job.nodes.len() });
    access.record(state, Some(detail)).await;
    Ok(job)
}

/// The ids of the cluster's online agents, whichever replica they registered with.
async fn online(state: &AppState, cluster: ClusterId) -> Result<HashSet<String>> {
    let agents = state.db.agents().online(cluster, crate::p2p::alive_since(state)).await?;
    Ok(agents.into_iter().map(|a| a.id).collect())
}

/// The cluster's jobs of the last hour, newest first.
pub async fn jobs(state: &AppState, cluster: ClusterId) -> Result<Vec<PreheatJob>> {
    let online = online(state, cluster).await?;
    Ok(jobs::jobs_of(&state.db, cluster, &online).await?)
}

/// The cluster's job `id`.
pub async fn job(state: &AppState, cluster: &Cluster, id: &str) -> Result<PreheatJob> {
    let online = online(state, cluster.id).await?;
    jobs::job(&state.db, cluster.id, id, &online).await?.ok_or_else(|| {
        Error::not_found(
            Thing::PreheatJob,
            format!("cluster {} has no preheat job {id} (jobs are kept for an hour)", cluster.name),
        )
    })
}

/// The preheat work waiting for an agent of the cluster, handed out once.
pub async fn take_work(state: &AppState, cluster: ClusterId, agent: &str) -> Result<Vec<PreheatTask>, sqlx::Error> {
    jobs::take_work(&state.db, cluster, agent).await
}

/// Records how an agent's share of job `job` ended; false if it has no share in it.
pub async fn report(
    state: &AppState,
    cluster: ClusterId,
    job: &str,
    agent: &str,
    ok: bool,
    error: Option<String>,
) -> Result<bool, sqlx::Error> {
    jobs::report(&state.db, cluster, job, agent, ok, error).await
}

/// What to preheat where.
struct Launch<'a> {
    /// The tenant of the cluster; the repository's namespace must be its own.
    tenant: &'a Tenant,
    cluster: &'a Cluster,
    name: &'a RepositoryName,
    tag: &'a str,
    percent: Percent,
}

/// Plans and starts a preheat job: the chosen agents, and for each the
/// manifest of its platform with that manifest's blobs. The agents join
/// with a pull token of the repository issued to `principal`.
async fn launch(
    state: &AppState,
    what: Launch<'_>,
    principal: &Principal,
    trigger: PreheatTrigger,
) -> Result<PreheatJob> {
    let Launch { tenant, cluster, name, tag, percent: Percent(percent) } = what;
    let missing =
        || Error::not_found(Thing::Tag, format!("{}:{tag} does not exist in tenant {}", name.as_str(), tenant.name));
    // Only the tenant's own namespaces: a cluster never caches another tenant's blobs.
    let namespace = state.db.tenancy().namespace(name.namespace()).await?.filter(|n| n.tenant_id == tenant.id);
    let namespace = namespace.ok_or_else(missing)?;
    if !namespace.p2p_enabled {
        return Err(Error::conflict(
            Thing::Namespace,
            format!("P2P acceleration is off for namespace {}", namespace.name),
        )
        .then(": switch it on first", Place::P2pSwitch { namespace: namespace.name.clone() }));
    }
    let manifest = state.db.manifests().find_by_tag(name.as_str(), tag).await?.ok_or_else(missing)?;
    let parsed = Manifest::parse(&manifest.content).ok_or_else(|| {
        Error::invalid(
            Thing::Manifest,
            format!("{}:{tag} is not a JSON manifest; it cannot be preheated", name.as_str()),
        )
    })?;
    let mut agents = state.db.agents().online(cluster.id, crate::p2p::alive_since(state)).await?;
    if agents.is_empty() {
        return Err(Error::conflict(
            Thing::Cluster,
            format!("cluster {} has no online agent to preheat", cluster.name),
        )
        .then("check its nodes", Place::Clusters { tenant: tenant.name.clone() }));
    }
    agents.sort_by(|a, b| a.registered.node.cmp(&b.registered.node));
    let chosen = (agents.len() * usize::from(percent)).div_ceil(100).max(1);
    agents.truncate(chosen);

    let mut nodes = Vec::with_capacity(agents.len());
    if parsed.manifests.is_empty() {
        let blobs = parsed.blobs();
        for a in agents {
            nodes.push(NodePlan {
                agent_id: a.id,
                node: a.registered.node,
                platform: platform_of(&a.registered.platform),
                fetch: Ok((manifest.digest, blobs.clone())),
            });
        }
    } else {
        // One lookup per platform the chosen nodes run, not per node.
        let mut per_platform: HashMap<String, std::result::Result<(Digest, Vec<Digest>), String>> = HashMap::new();
        for a in agents {
            let platform = platform_of(&a.registered.platform);
            if !per_platform.contains_key(&platform) {
                let fetch = platform_manifest(state, name, &parsed, &platform).await?;
                per_platform.insert(platform.clone(), fetch);
            }
            let fetch = per_platform[&platform].clone();
            nodes.push(NodePlan { agent_id: a.id, node: a.registered.node, platform, fetch });
        }
    }
    let access =
        vec![Access { kind: "repository".into(), name: name.as_str().to_owned(), actions: vec!["pull".into()] }];
    let (token, _) = state.auth.issue(principal, access, "access").map_err(Error::Internal)?;
    Ok(jobs::create(
        &state.db,
        NewJob {
            cluster: cluster.id,
            repository: name.as_str().to_owned(),
            tag: tag.to_owned(),
            manifest: manifest.digest,
            token,
            trigger,
            nodes,
        },
    )
    .await?)
}

/// An agent's platform as it registered it; none said means `linux/amd64`.
fn platform_of(registered: &str) -> String {
    if registered.is_empty() {
        "linux/amd64".into()
    } else {
        registered.to_owned()
    }
}

/// Preheats a tag just pushed into the clusters its namespace names for new
/// tags, while P2P is on there; as `principal`, the pusher. Returns each
/// cluster's job, or why it has none (e.g. no agent is online). Never fails
/// the push: the caller logs what went wrong.
pub async fn on_push(
    state: &AppState,
    name: &RepositoryName,
    tag: &str,
    principal: &Principal,
) -> Vec<(String, Result<PreheatJob>)> {
    let found = async {
        // Through the policy cache, as every push already looks the namespace up there.
        let Some(ns) = state.auth.policy.namespace(&state.db, name.namespace()).await? else { return Ok(None) };
        if !ns.p2p_enabled {
            return Ok(None);
        }
        let targets = state.db.clusters().preheat_targets(ns.id).await?;
        if targets.is_empty() {
            return Ok(None);
        }
        let tenant = state.db.tenancy().tenant(&ns.tenant).await?;
        Ok::<_, sqlx::Error>(tenant.map(|t| (t, targets)))
    };
    let (tenant, targets) = match found.await {
        Ok(Some(found)) => found,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![(String::new(), Err(e.into()))],
    };
    let mut jobs = Vec::with_capacity(targets.len());
    for (cluster, percent) in targets {
        let what = Launch { tenant: &tenant, cluster: &cluster, name, tag, percent: Percent(percent) };
        let job = launch(state, what, principal, PreheatTrigger::Push).await;
        jobs.push((cluster.name.clone(), job));
    }
    jobs
}

/// The manifest of an index for nodes of `platform`, with its blobs; `Err`
/// (for the node, not the request) when the index has none.
async fn platform_manifest(
    state: &AppState,
    name: &RepositoryName,
    index: &Manifest,
    platform: &str,
) -> Result<std::result::Result<(Digest, Vec<Digest>), String>> {
    let Some(entry) = index.manifests.iter().find(|m| m.platform.as_ref().is_some_and(|p| p.serves(platform))) else {
        return Ok(Err(format!("the tag is an index with no manifest for this node's platform {platform}")));
    };
    let Some(child) = state.db.manifests().find_by_digest(name.as_str(), &entry.digest).await? else {
        return Ok(Err(format!("the manifest {} of platform {platform} is not in the repository", entry.digest)));
    };
    match Manifest::parse(&child.content) {
        Some(m) if m.manifests.is_empty() => Ok(Ok((child.digest, m.blobs()))),
        _ => Ok(Err(format!("the manifest {} of platform {platform} is not an image manifest", entry.digest))),
    }
}

/// The tenant whose clusters a repository may be preheated into: its namespace's.
pub async fn tenant_of(state: &AppState, name: &RepositoryName) -> Result<String> {
    let namespace = state.db.tenancy().namespace(name.namespace()).await?;
    let namespace = namespace
        .ok_or_else(|| Error::not_found(Thing::Namespace, format!("namespace {} does not exist", name.namespace())))?;
    Ok(namespace.tenant)
}

/// The clusters a repository may be preheated into by the caller: its
/// tenant's, if the caller manages that tenant; none otherwise.
pub async fn clusters_for(state: &AppState, caller: &Caller, name: &RepositoryName) -> Result<Vec<String>> {
    let Some(namespace) = state.db.tenancy().namespace(name.namespace()).await? else { return Ok(Vec::new()) };
    let Ok(_) = access::tenant::<Manage>(state, caller, &namespace.tenant, None).await else { return Ok(Vec::new()) };
    let clusters = state.db.clusters().of_tenant(namespace.tenant_id).await?;
    Ok(clusters.into_iter().map(|c| c.name).collect())
}
