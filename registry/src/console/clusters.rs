//! A tenant's clusters: register one (its token and setup command shown
//! once), see each cluster's online agents with their last heartbeat,
//! version, cache use and bytes served to peers, give a cluster a new token,
//! delete one. Tenant admins and owners only, as in the API.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::{
    confirm, done, failed, finish, human_bytes, notice, render, segment, utc, Chrome, Confirm, ConsoleResult, Flash,
    Kept, Posted, Secret, SignedIn,
};
use crate::services::access::{self, Manage};
use crate::services::names::Name;
use crate::services::preheat::PreheatTrigger;
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

/// What started a preheat job, as the clusters page lists it.
fn started_by(trigger: PreheatTrigger) -> &'static str {
    match trigger {
        PreheatTrigger::Api => "the API",
        PreheatTrigger::Console => "the console",
        PreheatTrigger::Push => "a push",
    }
}

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
    /// Where accelerated Pods pull from.
    acceleration: String,
}

impl ClustersPage {
    fn base(&self) -> String {
        format!("/console/tenants/{}", segment(&self.tenant))
    }

    fn new_cluster(&self) -> Kept<'_> {
        self.chrome.kept(&format!("{}/clusters", self.base()))
    }

    fn action(&self, c: &ClusterRow, what: &str) -> String {
        format!("{}/clusters/{}/{what}", self.base(), segment(&c.name))
    }

    /// The acceleration address is each node's own agent, not a name.
    fn accelerated_locally(&self) -> bool {
        self.acceleration == "127.0.0.1:65001"
    }
}

/// The one-line cluster setup: the installer script, fetched with the
/// cluster token in a header (never in the URL, which lands in logs), piped
/// to `sh` where `kubectl` reaches the cluster. `sh -s -- --node` instead
/// sets up a single machine without Kubernetes.
///
/// No `curl -f`: a refused token is answered with a script that prints the
/// registry's reason and exits 1, which `-f` would swallow, leaving `sh`
/// nothing to run and the pipeline exiting 0.
fn setup_command(state: &AppState, token: &str) -> String {
    format!("curl -sSL -H 'Authorization: Cluster {token}' {}/p2p/v1/install.sh | sh", state.config.public_url())
}

/// A cluster's token, shown once, with the command that sets the cluster up with it.
fn token_shown(state: &AppState, name: &str, token: String) -> Secret {
    Secret {
        label: format!("Token of cluster {name}"),
        command_label: "Set the cluster up with this command, where kubectl reaches it (more under Setting up a \
                        cluster below)"
            .to_owned(),
        command: Some(setup_command(state, &token)),
        value: token,
        note: None,
    }
}

/// `GET /console/tenants/{tenant}/clusters`.
pub async fn list(State(state): State<AppState>, who: SignedIn, Path(tenant): Path<String>) -> ConsoleResult<Response> {
    let access = access::tenant::<Manage>(&state, &who.caller(), &tenant, None).await?;
    let clusters = clusters::list(&state, &access).await?;
    let mut rows = Vec::with_capacity(clusters.len());
    for c in clusters {
        let agents = c
            .agents
            .into_iter()
            .map(|a| AgentRow {
                node: a.node,
                zone: a.zone,
                version: a.version,
                last_heartbeat: if a.last_heartbeat > 0 { utc(a.last_heartbeat) } else { "-".into() },
                cache: a.cache_bytes.map_or_else(|| "not reported".into(), human_bytes),
                served: a.served_bytes.map_or_else(|| "not reported".into(), human_bytes),
            })
            .collect();
        let jobs = preheat::jobs(&state, c.id)
            .await?
            .into_iter()
            .take(JOBS_LISTED)
            .map(|j| JobRow {
                reference: format!("{}:{}", j.repository, j.tag),
                trigger: started_by(j.trigger).to_owned(),
                state: word(j.state),
                started: utc(j.created_at),
                id: j.id,
            })
            .collect();
        rows.push(ClusterRow { name: c.name, registered: utc(c.created_at), agents, jobs });
    }
    let page = ClustersPage {
        chrome: who.chrome(&state, "tenants").await,
        tenant: access.tenant().name.clone(),
        clusters: rows,
        setup: setup_command(&state, "<token>"),
        acceleration: state.config.acceleration_host(),
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
    let Posted { who, form, kept, .. } = posted;
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
                notice: Some(format!("Cluster {name} registered.")),
                secret: Some(token_shown(&state, &name, token)),
                ..Flash::default()
            };
            done(&state, &who, &back, flash).await
        }
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}

/// `POST /console/tenants/{tenant}/clusters/{cluster}/token`: after a
/// confirmation, a new token for the cluster, shown once with its setup command.
pub async fn reissue_token(
    State(state): State<AppState>,
    Path((tenant, cluster)): Path<(String, String)>,
    posted: Posted<super::session::NoFields>,
) -> Response {
    let Posted { who, kept, confirmed, .. } = posted;
    let back = format!("/console/tenants/{}/clusters", segment(&tenant));
    if !confirmed {
        let question = Confirm {
            title: format!("Give cluster {cluster} a new token?"),
            consequence: format!(
                "The current token stops working at once: the agents of {cluster} can no longer reach the registry, \
                 and its setup command fails, until the cluster is set up again with the command shown next, which \
                 carries the new token."
            ),
            button: "Re-issue token".to_owned(),
            cancel: back,
        };
        return confirm(&state, &who, kept, question).await;
    }
    let reissued = async {
        let attempt = clusters::reissuing(&tenant, &cluster);
        let access = access::tenant::<Manage>(&state, &who.caller(), &tenant, Some(attempt)).await?;
        clusters::reissue_token(&state, &access, &cluster).await
    };
    let outcome = reissued.await.map(|(found, token)| Flash {
        notice: Some(format!("Cluster {} has a new token; the old one no longer works.", found.name)),
        secret: Some(token_shown(&state, &found.name, token)),
        ..Flash::default()
    });
    finish(&state, &who, &back, kept, outcome).await
}

/// `POST /console/tenants/{tenant}/clusters/{cluster}/delete`: after a confirmation, deletes the cluster.
pub async fn delete(
    State(state): State<AppState>,
    Path((tenant, cluster)): Path<(String, String)>,
    posted: Posted<super::session::NoFields>,
) -> Response {
    let Posted { who, kept, confirmed, .. } = posted;
    let back = format!("/console/tenants/{}/clusters", segment(&tenant));
    if !confirmed {
        let question = Confirm {
            title: format!("Delete cluster {cluster}?"),
            consequence: "Its token stops working at once: its agents can no longer reach the registry, and \
                          namespaces stop preheating new tags into it. What the setup command installed stays on \
                          the nodes: to remove it, run the setup command ending in sh -s -- --uninstall before \
                          deleting the cluster."
                .to_owned(),
            button: "Delete cluster".to_owned(),
            cancel: back,
        };
        return confirm(&state, &who, kept, question).await;
    }
    let deleted = async {
        let attempt = clusters::deleting(&tenant, &cluster);
        let access = access::tenant::<Manage>(&state, &who.caller(), &tenant, Some(attempt)).await?;
        clusters::delete(&state, &access, &cluster).await
    };
    let outcome = deleted.await.map(|()| notice(format!("Cluster {cluster} deleted.")));
    finish(&state, &who, &back, kept, outcome).await
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
    let job = preheat::job(&state, &found, &job).await?;
    let page = PreheatPage {
        chrome: who.chrome(&state, "tenants").await,
        tenant,
        cluster,
        reference: format!("{}:{}", job.repository, job.tag),
        state: word(job.state),
        started: utc(job.created_at),
        trigger: started_by(job.trigger).to_owned(),
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
