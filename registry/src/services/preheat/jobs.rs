//! The preheat jobs of the last hour, and the work they hand agents.
//!
//! Agents may sit behind NAT, so the registry never calls them: each chosen
//! agent finds its share of a job in its next heartbeat's answer, fetches
//! the blobs through its engine (the same swarm as any pull, so the registry
//! sends about one copy whatever the number of nodes) and reports. Jobs live
//! in the database, so that a job started through one replica is handed out
//! by the one that schedules the cluster, reported to any, and outlives the
//! loss of either; they are forgotten an hour after they start.

use std::collections::HashSet;

use damselfly_core::p2p::PreheatTask;
use damselfly_core::Digest;
use serde::Serialize;
use utoipa::ToSchema;

use crate::metadata::{ClusterId, Db, PreheatJobRow, PreheatNodeRow};

/// How long a job stays visible after it was created.
const JOB_TTL_MS: i64 = 3_600_000;
/// Why a node's share failed when its agent went away.
const WENT_OFFLINE: &str = "the agent went offline before it finished";

/// Where one node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PreheatState {
    /// Waiting for the agent's next heartbeat.
    Pending,
    /// The agent took the work and is fetching.
    Running,
    /// Every blob is verified and in the agent's cache.
    Done,
    /// The agent failed, or went offline before it finished.
    Failed,
}

impl PreheatState {
    fn as_str(self) -> &'static str {
        match self {
            PreheatState::Pending => "pending",
            PreheatState::Running => "running",
            PreheatState::Done => "done",
            PreheatState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> PreheatState {
        match s {
            "pending" => PreheatState::Pending,
            "running" => PreheatState::Running,
            "done" => PreheatState::Done,
            _ => PreheatState::Failed,
        }
    }
}

/// What started a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PreheatTrigger {
    /// A request to the management API.
    Api,
    /// A tenant admin's button on a repository page of the console.
    Console,
    /// A push of the tag into a namespace that preheats its new tags.
    Push,
}

impl PreheatTrigger {
    fn as_str(self) -> &'static str {
        match self {
            PreheatTrigger::Api => "api",
            PreheatTrigger::Console => "console",
            PreheatTrigger::Push => "push",
        }
    }

    fn parse(s: &str) -> PreheatTrigger {
        match s {
            "push" => PreheatTrigger::Push,
            "console" => PreheatTrigger::Console,
            _ => PreheatTrigger::Api,
        }
    }
}

/// One node of a job.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PreheatNode {
    /// Agent id.
    pub agent_id: String,
    /// Node name.
    pub node: String,
    /// The node's platform, e.g. `linux/amd64`.
    pub platform: String,
    /// The manifest it fetches: the tag's, or for a multi-platform tag the one of its platform.
    #[schema(value_type = Option<String>)]
    pub manifest: Option<Digest>,
    /// Where it stands.
    pub state: PreheatState,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A preheat job.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PreheatJob {
    /// Job id.
    pub id: String,
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The manifest the tag pointed at when the job started (an image, an artifact or an index).
    #[schema(value_type = String)]
    pub manifest: Digest,
    /// The blobs the chosen nodes fetch, all platforms together: configs and layers.
    #[schema(value_type = Vec<String>)]
    pub blobs: Vec<Digest>,
    /// What started it.
    pub trigger: PreheatTrigger,
    /// `running` until every node is done or failed; then `done`, or `failed` if any node failed.
    pub state: PreheatState,
    /// Unix seconds.
    pub created_at: i64,
    /// The chosen nodes.
    pub nodes: Vec<PreheatNode>,
}

impl PreheatJob {
    fn from_rows(job: PreheatJobRow, nodes: Vec<PreheatNodeRow>) -> PreheatJob {
        let digests = |json: &str| serde_json::from_str::<Vec<Digest>>(json).unwrap_or_default();
        let nodes = nodes
            .into_iter()
            .map(|n| PreheatNode {
                manifest: n.manifest.as_deref().and_then(|m| m.parse().ok()),
                agent_id: n.agent_id,
                node: n.node,
                platform: n.platform,
                state: PreheatState::parse(&n.state),
                error: n.error,
            })
            .collect();
        let mut out = PreheatJob {
            blobs: digests(&job.blobs),
            manifest: job.manifest.parse().unwrap_or_else(|_| Digest::of(b"")),
            id: job.id,
            repository: job.repository,
            tag: job.tag,
            trigger: PreheatTrigger::parse(&job.started_by),
            state: PreheatState::Running,
            created_at: job.created_ms / 1000,
            nodes,
        };
        out.settle();
        out
    }

    /// Marks failed, here and in the database, the unfinished nodes whose agent is not `online`.
    async fn check_online(&mut self, db: &Db, online: &HashSet<String>) -> Result<(), sqlx::Error> {
        for n in &mut self.nodes {
            if matches!(n.state, PreheatState::Pending | PreheatState::Running) && !online.contains(&n.agent_id) {
                db.preheat_jobs().fail_unfinished(&self.id, &n.agent_id, WENT_OFFLINE).await?;
                n.state = PreheatState::Failed;
                n.error = Some(WENT_OFFLINE.into());
            }
        }
        self.settle();
        Ok(())
    }

    fn settle(&mut self) {
        let all_over = self.nodes.iter().all(|n| matches!(n.state, PreheatState::Done | PreheatState::Failed));
        self.state = if !all_over {
            PreheatState::Running
        } else if self.nodes.iter().any(|n| n.state == PreheatState::Failed) {
            PreheatState::Failed
        } else {
            PreheatState::Done
        };
    }
}

/// What a new job is about.
pub struct NewJob {
    /// Its cluster.
    pub cluster: ClusterId,
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The tag's manifest.
    pub manifest: Digest,
    /// A pull token for the repository the agents join with.
    pub token: String,
    /// What started it.
    pub trigger: PreheatTrigger,
    /// The chosen nodes.
    pub nodes: Vec<NodePlan>,
}

/// What one chosen node fetches.
pub struct NodePlan {
    /// Agent id.
    pub agent_id: String,
    /// Node name.
    pub node: String,
    /// Its platform.
    pub platform: String,
    /// The manifest of its platform and that manifest's config and layers;
    /// `Err` says why there is nothing for it (the node fails at once).
    pub fetch: Result<(Digest, Vec<Digest>), String>,
}

/// Starts a job: stores it with its nodes, and forgets jobs older than an hour.
pub async fn create(db: &Db, new: NewJob) -> Result<PreheatJob, sqlx::Error> {
    let created_ms = now_ms();
    let mut blobs: Vec<Digest> = Vec::new();
    let json = |digests: &[Digest]| serde_json::to_string(digests).unwrap_or_else(|_| "[]".into());
    let nodes: Vec<PreheatNodeRow> = new
        .nodes
        .into_iter()
        .map(|n| {
            let (manifest, fetch, state, error) = match n.fetch {
                Ok((manifest, fetch)) => (Some(manifest.to_string()), fetch, PreheatState::Pending, None),
                Err(why) => (None, Vec::new(), PreheatState::Failed, Some(why)),
            };
            for b in &fetch {
                if !blobs.contains(b) {
                    blobs.push(*b);
                }
            }
            PreheatNodeRow {
                agent_id: n.agent_id,
                node: n.node,
                platform: n.platform,
                manifest,
                blobs: json(&fetch),
                state: state.as_str().to_owned(),
                error,
            }
        })
        .collect();
    let job = PreheatJobRow {
        id: uuid::Uuid::new_v4().to_string(),
        cluster: new.cluster,
        repository: new.repository,
        tag: new.tag,
        manifest: new.manifest.to_string(),
        blobs: json(&blobs),
        started_by: new.trigger.as_str().to_owned(),
        token: new.token,
        created_ms,
    };
    db.preheat_jobs().insert(&job, &nodes, created_ms - JOB_TTL_MS).await?;
    Ok(PreheatJob::from_rows(job, nodes))
}

/// The job `id` of `cluster`, with nodes whose agent is not `online` any more marked failed.
pub async fn job(
    db: &Db,
    cluster: ClusterId,
    id: &str,
    online: &HashSet<String>,
) -> Result<Option<PreheatJob>, sqlx::Error> {
    let Some((job, nodes)) = db.preheat_jobs().find(cluster, id, now_ms() - JOB_TTL_MS).await? else {
        return Ok(None);
    };
    let mut job = PreheatJob::from_rows(job, nodes);
    job.check_online(db, online).await?;
    Ok(Some(job))
}

/// The jobs of `cluster`, newest first, checked as [`job`] does.
pub async fn jobs_of(db: &Db, cluster: ClusterId, online: &HashSet<String>) -> Result<Vec<PreheatJob>, sqlx::Error> {
    let mut out = Vec::new();
    for (job, nodes) in db.preheat_jobs().of_cluster(cluster, now_ms() - JOB_TTL_MS).await? {
        let mut job = PreheatJob::from_rows(job, nodes);
        job.check_online(db, online).await?;
        out.push(job);
    }
    Ok(out)
}

/// The work waiting for `agent`, now marked running: handed out once.
pub async fn take_work(db: &Db, cluster: ClusterId, agent: &str) -> Result<Vec<PreheatTask>, sqlx::Error> {
    let work = db.preheat_jobs().take_work(cluster, agent).await?;
    Ok(work
        .into_iter()
        .map(|(job, repository, blobs, token)| PreheatTask {
            job,
            repository,
            blobs: serde_json::from_str(&blobs).unwrap_or_default(),
            token,
        })
        .collect())
}

/// Records how `agent`'s share of job `id` ended; false if there is no such share.
pub async fn report(
    db: &Db,
    cluster: ClusterId,
    id: &str,
    agent: &str,
    ok: bool,
    error: Option<String>,
) -> Result<bool, sqlx::Error> {
    let (state, error) = if ok {
        (PreheatState::Done, None)
    } else {
        (PreheatState::Failed, Some(error.unwrap_or_else(|| "the agent gave no reason".into())))
    };
    db.preheat_jobs().finish(cluster, id, agent, state.as_str(), error.as_deref()).await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
