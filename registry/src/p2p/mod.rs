//! The registry as P2P supernode: the scheduler that forms a swarm per blob
//! and hands agents their parents, the tickets that let peers and the seed
//! serve pieces, and the seed itself, serving pieces from the blob store.

pub mod acceleration;
mod extract;
pub mod install;
mod routes;
pub mod scheduler;
pub mod stats;
pub mod ticket;

pub use routes::router;
pub use scheduler::{Scheduler, DEFAULT_STRIPES};
pub use stats::Stats;

/// Forgets silent agents every heartbeat period until the process stops.
pub async fn expire_periodically(scheduler: std::sync::Arc<Scheduler>) {
    let mut tick = tokio::time::interval(scheduler.heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        scheduler.expire();
    }
}
