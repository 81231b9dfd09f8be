//! The preheat jobs of the last hour, and the work they hand agents.
//!
//! Agents may sit behind NAT, so the registry never calls them: each chosen
//! agent finds its share of a job in its next heartbeat's answer, fetches
//! the blobs through its engine (the same swarm as any pull, so the registry
//! sends about one copy whatever the number of nodes) and reports. Jobs live
//! in memory, like the swarms, and are forgotten an hour after they start.

use std::collections::HashMap;
use std::sync::Mutex;

use damselfly_core::p2p::PreheatTask;
use damselfly_core::Digest;
use serde::Serialize;
use utoipa::ToSchema;

use crate::metadata::ClusterId;

/// How long a job stays visible after it was created.
const JOB_TTL_SECS: i64 = 3600;

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
    /// The blobs it fetches.
    #[serde(skip)]
    blobs: Vec<Digest>,
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
    #[serde(skip)]
    cluster: ClusterId,
    /// Order of creation, for listing newest first within one second.
    #[serde(skip)]
    seq: u64,
    #[serde(skip)]
    token: String,
}

impl PreheatJob {
    fn check_online(&mut self, online: &impl Fn(&str) -> bool) {
        for n in &mut self.nodes {
            if matches!(n.state, PreheatState::Pending | PreheatState::Running) && !online(&n.agent_id) {
                n.state = PreheatState::Failed;
                n.error = Some("the agent went offline before it finished".into());
            }
        }
        self.settle();
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

/// Every job, by id.
#[derive(Default)]
pub struct Preheats {
    jobs: Mutex<HashMap<String, PreheatJob>>,
    created: std::sync::atomic::AtomicU64,
}

impl Preheats {
    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, PreheatJob>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a job.
    pub fn create(&self, new: NewJob) -> PreheatJob {
        let now = crate::metadata::now();
        let mut blobs: Vec<Digest> = Vec::new();
        let nodes = new
            .nodes
            .into_iter()
            .map(|n| {
                let (manifest, fetch, state, error) = match n.fetch {
                    Ok((manifest, fetch)) => (Some(manifest), fetch, PreheatState::Pending, None),
                    Err(why) => (None, Vec::new(), PreheatState::Failed, Some(why)),
                };
                for b in &fetch {
                    if !blobs.contains(b) {
                        blobs.push(*b);
                    }
                }
                PreheatNode {
                    agent_id: n.agent_id,
                    node: n.node,
                    platform: n.platform,
                    manifest,
                    blobs: fetch,
                    state,
                    error,
                }
            })
            .collect();
        let mut job = PreheatJob {
            id: uuid::Uuid::new_v4().to_string(),
            repository: new.repository,
            tag: new.tag,
            manifest: new.manifest,
            blobs,
            trigger: new.trigger,
            state: PreheatState::Running,
            created_at: now,
            nodes,
            cluster: new.cluster,
            token: new.token,
            seq: self.created.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        job.settle();
        let mut jobs = self.jobs();
        jobs.retain(|_, j| now - j.created_at < JOB_TTL_SECS);
        jobs.insert(job.id.clone(), job.clone());
        job
    }

    /// The job `id` of `cluster`, with nodes whose agent `online` no longer
    /// knows marked failed.
    pub fn job(&self, cluster: ClusterId, id: &str, online: impl Fn(&str) -> bool) -> Option<PreheatJob> {
        let mut jobs = self.jobs();
        let job = jobs.get_mut(id).filter(|j| j.cluster == cluster)?;
        job.check_online(&online);
        Some(job.clone())
    }

    /// The jobs of `cluster`, newest first, checked as [`Preheats::job`] does.
    pub fn jobs_of(&self, cluster: ClusterId, online: impl Fn(&str) -> bool) -> Vec<PreheatJob> {
        let mut jobs = self.jobs();
        let mut found: Vec<PreheatJob> = jobs
            .values_mut()
            .filter(|j| j.cluster == cluster)
            .map(|j| {
                j.check_online(&online);
                j.clone()
            })
            .collect();
        found.sort_by_key(|j| std::cmp::Reverse(j.seq));
        found
    }

    /// The work waiting for `agent`, now marked running.
    pub fn take_work(&self, cluster: ClusterId, agent: &str) -> Vec<PreheatTask> {
        let mut jobs = self.jobs();
        let mut work = Vec::new();
        for job in jobs.values_mut().filter(|j| j.cluster == cluster) {
            for n in job.nodes.iter_mut().filter(|n| n.agent_id == agent && n.state == PreheatState::Pending) {
                n.state = PreheatState::Running;
                work.push(PreheatTask {
                    job: job.id.clone(),
                    repository: job.repository.clone(),
                    blobs: n.blobs.clone(),
                    token: job.token.clone(),
                });
            }
        }
        work
    }

    /// Records how `agent`'s share of job `id` ended; false if there is no such share.
    pub fn report(&self, cluster: ClusterId, id: &str, agent: &str, ok: bool, error: Option<String>) -> bool {
        let mut jobs = self.jobs();
        let Some(job) = jobs.get_mut(id).filter(|j| j.cluster == cluster) else { return false };
        let Some(node) = job.nodes.iter_mut().find(|n| n.agent_id == agent) else { return false };
        node.state = if ok { PreheatState::Done } else { PreheatState::Failed };
        node.error = if ok { None } else { Some(error.unwrap_or_else(|| "the agent gave no reason".into())) };
        job.settle();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> NodePlan {
        NodePlan {
            agent_id: id.to_owned(),
            node: format!("node-{id}"),
            platform: "linux/amd64".into(),
            fetch: Ok((Digest::of(b"m"), vec![Digest::of(b"l")])),
        }
    }

    #[test]
    fn a_job_is_done_once_every_node_reports_and_failed_if_one_fails() {
        let p = Preheats::default();
        let new = |tag: &str, nodes: Vec<NodePlan>| NewJob {
            cluster: ClusterId(1),
            repository: "a/b".into(),
            tag: tag.into(),
            manifest: Digest::of(b"m"),
            token: "t".into(),
            trigger: PreheatTrigger::Api,
            nodes,
        };
        let job = p.create(new("v1", vec![agent("x"), agent("y")]));
        assert_eq!(p.take_work(ClusterId(2), "x"), vec![]);
        let work = p.take_work(ClusterId(1), "x");
        assert_eq!(work.len(), 1);
        assert_eq!((work[0].blobs.clone(), work[0].token.as_str()), (vec![Digest::of(b"l")], "t"));
        assert!(p.take_work(ClusterId(1), "x").is_empty(), "work is handed out once");
        assert!(p.report(ClusterId(1), &job.id, "x", true, None));
        let seen = p.job(ClusterId(1), &job.id, |_| true).expect("job");
        assert_eq!(
            (seen.state, seen.nodes[0].state, seen.nodes[1].state),
            (PreheatState::Running, PreheatState::Done, PreheatState::Pending)
        );
        // y goes offline before it takes the work.
        let seen = p.job(ClusterId(1), &job.id, |a| a != "y").expect("job");
        assert_eq!((seen.state, seen.nodes[1].state), (PreheatState::Failed, PreheatState::Failed));
        assert!(p.job(ClusterId(2), &job.id, |_| true).is_none(), "another cluster's job is not visible");

        let job = p.create(new("v2", vec![agent("x")]));
        p.take_work(ClusterId(1), "x");
        assert!(p.report(ClusterId(1), &job.id, "x", true, None));
        assert_eq!(p.job(ClusterId(1), &job.id, |_| true).expect("job").state, PreheatState::Done);
        assert!(!p.report(ClusterId(1), &job.id, "z", true, None));
    }

    #[test]
    fn a_node_without_a_manifest_for_its_platform_fails_at_once_and_the_others_run() {
        let p = Preheats::default();
        let mut arm = agent("arm");
        arm.platform = "linux/arm64".into();
        arm.fetch = Err("the index has no manifest for linux/arm64".into());
        let mut other = agent("x");
        other.fetch = Ok((Digest::of(b"m2"), vec![Digest::of(b"l"), Digest::of(b"l2")]));
        let job = p.create(NewJob {
            cluster: ClusterId(1),
            repository: "a/b".into(),
            tag: "v1".into(),
            manifest: Digest::of(b"index"),
            token: "t".into(),
            trigger: PreheatTrigger::Push,
            nodes: vec![arm, agent("y"), other],
        });
        assert_eq!(job.state, PreheatState::Running);
        assert_eq!(job.blobs, vec![Digest::of(b"l"), Digest::of(b"l2")], "each blob once, in order");
        assert_eq!((job.nodes[0].state, job.nodes[0].manifest), (PreheatState::Failed, None));
        assert!(p.take_work(ClusterId(1), "arm").is_empty());
        assert_eq!(p.take_work(ClusterId(1), "x")[0].blobs, vec![Digest::of(b"l"), Digest::of(b"l2")]);
        assert!(p.report(ClusterId(1), &job.id, "x", true, None));
        p.take_work(ClusterId(1), "y");
        assert!(p.report(ClusterId(1), &job.id, "y", true, None));
        let jobs = p.jobs_of(ClusterId(1), |_| true);
        assert_eq!((jobs.len(), jobs[0].state), (1, PreheatState::Failed));
        assert!(p.jobs_of(ClusterId(2), |_| true).is_empty());
    }
}
