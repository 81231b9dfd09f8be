//! Preheat work: blobs the registry asks this node to fetch into its cache
//! before any workload pulls them, through the same engine (and swarm) as a
//! pull, joined with the short-lived pull token that came with the work.

use std::sync::Arc;

use damselfly_core::p2p::{JoinMode, PreheatTask};
use damselfly_core::Digest;
use tokio::sync::mpsc;

use crate::error::{Error, Report, Result};
use crate::piece::Engine;
use crate::supernode::Supernode;

/// Takes work from `tasks` until the agent stops; the jobs run side by side.
pub async fn work(engine: Arc<Engine>, supernode: Arc<Supernode>, mut tasks: mpsc::UnboundedReceiver<PreheatTask>) {
    while let Some(task) = tasks.recv().await {
        let (engine, supernode) = (engine.clone(), supernode.clone());
        tokio::spawn(async move {
            tracing::info!(job = task.job, repository = task.repository, blobs = task.blobs.len(), "preheating");
            let mut outcome = Ok(());
            for digest in &task.blobs {
                outcome = fetch(&engine, &supernode, &task, *digest).await;
                if outcome.is_err() {
                    break;
                }
            }
            let error = outcome.err().map(|e| Report(&e).to_string());
            if let Some(e) = &error {
                tracing::warn!(job = task.job, error = e, "preheat failed");
            }
            supernode.report_preheat(&task.job, error.is_none(), error).await;
        });
    }
}

/// Fetches one blob into the cache, or finds it there.
async fn fetch(engine: &Arc<Engine>, supernode: &Supernode, task: &PreheatTask, digest: Digest) -> Result<()> {
    let plan = supernode
        .join(&task.repository, digest, Some(&task.token), engine.have(&digest), Default::default())
        .await
        .map_err(|e| Error::Join { digest, source: Box::new(e) })?;
    if plan.mode != JoinMode::P2p {
        return Err(Error::NotAccelerated(task.repository.clone()));
    }
    let started =
        tokio::task::block_in_place(|| engine.start(&task.repository, digest, Some(task.token.clone()), plan))?;
    match started {
        None => Ok(()),
        Some(download) => download.wait_done().await.map_err(|e| Error::Blob { digest, source: Box::new(e) }),
    }
}
