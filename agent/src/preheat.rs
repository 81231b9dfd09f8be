//! Preheat work: blobs the registry asks this node to fetch into its cache
//! before any workload pulls them, through the same engine (and swarm) as a
//! pull, joined with the short-lived pull token that came with the work.

use std::sync::Arc;

use damselfly_core::p2p::{JoinMode, PreheatTask};
use damselfly_core::Digest;
use tokio::sync::mpsc;

use crate::piece::Engine;
use crate::registry::RegistryClient;

/// Takes work from `tasks` until the agent stops; the jobs run side by side.
pub async fn work(engine: Arc<Engine>, registry: Arc<RegistryClient>, mut tasks: mpsc::UnboundedReceiver<PreheatTask>) {
    while let Some(task) = tasks.recv().await {
        let (engine, registry) = (engine.clone(), registry.clone());
        tokio::spawn(async move {
            tracing::info!(job = task.job, repository = task.repository, blobs = task.blobs.len(), "preheating");
            let mut outcome = Ok(());
            for digest in &task.blobs {
                outcome = fetch(&engine, &registry, &task, *digest).await;
                if outcome.is_err() {
                    break;
                }
            }
            if let Err(e) = &outcome {
                tracing::warn!(job = task.job, error = e, "preheat failed");
            }
            registry.report_preheat(&task.job, outcome.is_ok(), outcome.err()).await;
        });
    }
}

/// Fetches one blob into the cache, or finds it there.
async fn fetch(
    engine: &Arc<Engine>,
    registry: &RegistryClient,
    task: &PreheatTask,
    digest: Digest,
) -> Result<(), String> {
    let plan = registry
        .join(&task.repository, digest, Some(&task.token), engine.have(&digest), Default::default())
        .await
        .map_err(|e| format!("cannot join the swarm of {digest}: {e}"))?;
    if plan.mode != JoinMode::P2p {
        return Err(format!("the registry does not accelerate {}: P2P is off for its namespace", task.repository));
    }
    let started =
        tokio::task::block_in_place(|| engine.start(&task.repository, digest, Some(task.token.clone()), plan));
    match started {
        Ok(None) => Ok(()),
        Ok(Some(download)) => download.wait_done().await.map_err(|e| format!("{digest}: {e}")),
        Err(e) => Err(format!("cannot cache {digest}: {e}")),
    }
}
