//! Preheat jobs: a tag's blobs pushed into the caches of a cluster's online
//! agents before any workload pulls them.
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

use super::scheduler::Agent;
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

/// One node of a job.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PreheatNode {
    /// Agent id.
    pub agent_id: String,
    /// Node name.
    pub node: String,
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
    /// The manifest the tag pointed at when the job started.
    #[schema(value_type = String)]
    pub manifest: Digest,
    /// The blobs every chosen node fetches: the config and the layers.
    #[schema(value_type = Vec<String>)]
    pub blobs: Vec<Digest>,
    /// `running` until every node is done or failed; then `done`, or `failed` if any node failed.
    pub state: PreheatState,
    /// Unix seconds.
    pub created_at: i64,
    /// The chosen nodes.
    pub nodes: Vec<PreheatNode>,
    #[serde(skip)]
    cluster: ClusterId,
    #[serde(skip)]
    token: String,
}

impl PreheatJob {
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
    /// Its config and layers.
    pub blobs: Vec<Digest>,
    /// A pull token for the repository the agents join with.
    pub token: String,
}

/// Every job, by id.
#[derive(Default)]
pub struct Preheats {
    jobs: Mutex<HashMap<String, PreheatJob>>,
}

impl Preheats {
    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, PreheatJob>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a job on `agents`.
    pub fn create(&self, new: NewJob, agents: &[Agent]) -> PreheatJob {
        self.create_on(new, agents.iter().map(|a| (a.id.clone(), a.node.clone())).collect())
    }

    /// Starts a job on agents given as (id, node name).
    fn create_on(&self, new: NewJob, agents: Vec<(String, String)>) -> PreheatJob {
        let now = crate::metadata::now();
        let nodes = agents
            .into_iter()
            .map(|(agent_id, node)| PreheatNode { agent_id, node, state: PreheatState::Pending, error: None })
            .collect();
        let job = PreheatJob {
            id: uuid::Uuid::new_v4().to_string(),
            repository: new.repository,
            tag: new.tag,
            manifest: new.manifest,
            blobs: new.blobs,
            state: PreheatState::Running,
            created_at: now,
            nodes,
            cluster: new.cluster,
            token: new.token,
        };
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
        for n in &mut job.nodes {
            if matches!(n.state, PreheatState::Pending | PreheatState::Running) && !online(&n.agent_id) {
                n.state = PreheatState::Failed;
                n.error = Some("the agent went offline before it finished".into());
            }
        }
        job.settle();
        Some(job.clone())
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
                    blobs: job.blobs.clone(),
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

    fn agent(id: &str) -> (String, String) {
        (id.to_owned(), format!("node-{id}"))
    }

    #[test]
    fn a_job_is_done_once_every_node_reports_and_failed_if_one_fails() {
        let p = Preheats::default();
        let new = |tag: &str| NewJob {
            cluster: ClusterId(1),
            repository: "a/b".into(),
            tag: tag.into(),
            manifest: Digest::of(b"m"),
            blobs: vec![Digest::of(b"l")],
            token: "t".into(),
        };
        let job = p.create_on(new("v1"), vec![agent("x"), agent("y")]);
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

        let job = p.create_on(new("v2"), vec![agent("x")]);
        p.take_work(ClusterId(1), "x");
        assert!(p.report(ClusterId(1), &job.id, "x", true, None));
        assert_eq!(p.job(ClusterId(1), &job.id, |_| true).expect("job").state, PreheatState::Done);
        assert!(!p.report(ClusterId(1), &job.id, "z", true, None));
    }
}
