//! A tenant's clusters: register one (its token and setup command shown
//! once), and see each cluster's online agents with their last heartbeat,
//! version, cache use and bytes served to peers. Tenant admins and owners
//! only, as in the API.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::{
    done, failed, human_bytes, render, segment, utc, Chrome, ConsoleResult, Flash, Kept, Posted, Secret, SignedIn,
};
use crate::services::access::{self, Manage};
use crate::services::names::Name;
use crate::services::{clusters, preheat};
use crate::state::AppState;

/// One agent as listed.
struct AgentRow {
    node: String,
    zone: String,
    version: String,
    last_heartbeat: String,
    cache: String,
    served: String,
}

/// A preheat job as listed on its cluster.
struct JobRow {
    id: String,
    reference: String,
    trigger: String,
    state: String,
    started: String,
}

/// One cluster as listed.
struct ClusterRow {
    name: String,
    registered: String,
    agents: Vec<AgentRow>,
    /// Its preheat jobs of the last hour, newest first (at most [`JOBS_LISTED`]).
    jobs: Vec<JobRow>,
}

/// Most preheat jobs a cluster's card lists.
const JOBS_LISTED: usize = 10;

fn word<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

#[derive(Template)]
#[template(path = "clusters.html")]
struct ClustersPage {
    chrome: Chrome,
    tenant: String,
    clusters: Vec<ClusterRow>,
    setup: String,
}

impl ClustersPage {
    fn base(&self) -> String {
        format!("/console/tenants/{}", segment(&self.tenant))
    }

    fn new_cluster(&self) -> Kept<'_> {
        self.chrome.kept(&format!("{}/clusters", self.base()))
    }
}

/// The one-line cluster setup: the installer script, fetched with the
/// cluster token in a header (never in the URL, which lands in logs), piped
/// to `sh` where `kubectl` reaches the cluster. `sh -s -- --node` instead
/// sets up a single machine without Kubernetes.
fn setup_command(state: &AppState, token: &str) -> String {
    format!("curl -fsSL -H 'Authorization: Cluster {token}' {}/p2p/v1/install.sh | sh", state.config.public_url())
}

/// `GET /console/tenants/{tenant}/clusters`.
pub async fn list(State(state): State<AppState>, who: SignedIn, Path(tenant): Path<String>) -> ConsoleResult<Response> {
    let access = access::tenant::<Manage>(&state, &who.caller(), &tenant, None).await?;
    let clusters = clusters::list(&state, &access).await?;
    let rows = clusters
        .into_iter()
        .map(|c| {
            let agents = c
                .agents
                .into_iter()
                .map(|a| {
                    let said = state.p2p_stats.agent(c.id, &a.id).unwrap_or_default();
                    AgentRow {
                        node: a.node,
                        zone: a.zone,
                        version: a.version,
                        last_heartbeat: if said.last_heartbeat > 0 { utc(said.last_heartbeat) } else { "-".into() },
                        cache: said.cache_bytes.map_or_else(|| "not reported".into(), human_bytes),
                        served: said.served_bytes.map_or_else(|| "not reported".into(), human_bytes),
                    }
                })
                .collect();
            let jobs = preheat::jobs(&state, c.id)
                .into_iter()
                .take(JOBS_LISTED)
                .map(|j| JobRow {
                    reference: format!("{}:{}", j.repository, j.tag),
                    trigger: word(j.trigger),
                    state: word(j.state),
                    started: utc(j.created_at),
                    id: j.id,
                })
                .collect();
            ClusterRow { name: c.name, registered: utc(c.created_at), agents, jobs }
        })
        .collect();
    let page = ClustersPage {
        chrome: who.chrome(&state, "tenants").await,
        tenant: access.tenant().name.clone(),
        clusters: rows,
        setup: setup_command(&state, "<the cluster's token>"),
    };
    Ok(render(&page))
}

/// The register-a-cluster form.
#[derive(Deserialize)]
pub struct ClusterForm {
    #[serde(default)]
    name: String,
}

/// `POST /console/tenants/{tenant}/clusters`: registers a cluster and shows its token and setup command once.
pub async fn create(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    posted: Posted<ClusterForm>,
) -> Response {
    let Posted { who, form, kept } = posted;
    let back = format!("/console/tenants/{}/clusters", segment(&tenant));
    let name = form.name.trim();
    let registered = async {
        let attempt = clusters::registering(&tenant, name);
        let access = access::tenant::<Manage>(&state, &who.caller(), &tenant, Some(attempt)).await?;
        clusters::register(&state, &access, &Name::cluster(name)?).await
    };
    match registered.await {
        Ok((cluster, token)) => {
            let name = cluster.name;
            let flash = Flash {
                notice: Some(format!(
                    "Cluster {name} registered. Run the command below where kubectl reaches the cluster; \
                     it installs the agent on every node. For one machine without Kubernetes, end it with \
                     `sh -s -- --node` instead of `sh`."
                )),
                secret: Some(Secret {
                    label: format!("Token of cluster {name}"),
                    command_label: "Set up the cluster with".to_owned(),
                    command: Some(setup_command(&state, &token)),
                    value: token,
                }),
                ..Flash::default()
            };
            done(&state, &who, &back, flash).await
        }
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}

/// One node of a preheat job as listed.
struct PreheatRow {
    node: String,
    platform: String,
    state: String,
    error: String,
}

#[derive(Template)]
#[template(path = "preheat.html")]
struct PreheatPage {
    chrome: Chrome,
    tenant: String,
    cluster: String,
    reference: String,
    state: String,
    started: String,
    trigger: String,
    blobs: usize,
    nodes: Vec<PreheatRow>,
}

impl PreheatPage {
    fn base(&self) -> String {
        format!("/console/tenants/{}", segment(&self.tenant))
    }
}

/// `GET /console/tenants/{tenant}/clusters/{cluster}/preheat/{job}`: a preheat job, node by node.
pub async fn preheat_job(
    State(state): State<AppState>,
    who: SignedIn,
    Path((tenant, cluster, job)): Path<(String, String, String)>,
) -> ConsoleResult<Response> {
    let access = access::tenant::<Manage>(&state, &who.caller(), &tenant, None).await?;
    let found = clusters::find(&state, &access, &cluster).await?;
    let job = preheat::job(&state, &found, &job)?;
    let page = PreheatPage {
        chrome: who.chrome(&state, "tenants").await,
        tenant,
        cluster,
        reference: format!("{}:{}", job.repository, job.tag),
        state: word(job.state),
        started: utc(job.created_at),
        trigger: word(job.trigger),
        blobs: job.blobs.len(),
        nodes: job
            .nodes
            .into_iter()
            .map(|n| PreheatRow {
                node: n.node,
                platform: n.platform,
                state: word(n.state),
                error: n.error.unwrap_or_default(),
            })
            .collect(),
    };
    Ok(render(&page))
}
