//! The registry as P2P supernode: the scheduler that forms a swarm per blob
//! and hands agents their parents, the tickets that let peers and the seed
//! serve pieces, and the seed itself, serving pieces from the blob store.
//!
//! # One scheduler per cluster, across replicas
//!
//! Several registry replicas may serve one PostgreSQL database and one
//! bucket behind a load balancer, and an agent's calls land on any of them.
//! A cluster's swarms must still be scheduled as one: the seed's budget is
//! per cluster, the stripe trees span every agent of a swarm, and a held
//! join waits for the reports of the other agents. So at any moment one
//! replica schedules each cluster, in its memory, exactly as a single
//! process does, and the others pass that cluster's calls on to it.
//!
//! **The lease.** A row per cluster in `p2p_leases` names the replica that
//! schedules it, the internal URL it is reached at (`--internal-url`) and
//! when the lease expires. The first replica an agent of the cluster
//! reaches takes the lease with one conditional statement (insert, or
//! update where the lease has expired or is its own already); it renews all
//! its leases every 2 s for 6 s ([`lease::RENEW_EVERY`], [`lease::LEASE_TTL`]).
//! Expiry is read on the database's clock, so replicas whose clocks
//! disagree still agree on who holds what, and a holder stops scheduling a
//! second before its lease could lapse by its own monotonic clock, so that
//! two replicas never schedule one cluster at once. A replica that finds a
//! lease of its own taken over (it was paused, or cut off from the
//! database) forgets that cluster's agents and swarms; so does one that
//! takes a lease over, since what it may remember is from an earlier term.
//! Re-issuing a cluster's token, through any replica, deletes its agents'
//! rows and revokes its lease (no holder, expired): the holder finds it
//! gone at its next renewal and forgets the agents, whose token no longer
//! works, and the next call starts a new term.
//!
//! **Passing calls on.** The calls that change scheduling (register,
//! heartbeat, join, report, leave) go to the holder: a replica that does not
//! hold the lease streams the request to the holder's internal URL and the
//! answer back (`forward`), once at most (`x-damselfly-forwarded-by`); it
//! remembers the holder for the rest of the lease it read. A holder that does
//! not answer, or a call passed to a replica that does not hold the lease,
//! gets `503` with `Retry-After`, and the next call asks the database again.
//! Everything else is served where it lands: the seed answers any ticket
//! holder from the shared bucket (a ticket is verified offline against the
//! shared keys, and piece reads are ranged GETs), a preheat report is a row
//! in the database, the setup script and the webhook's question read the
//! database. Seed bytes, the heaviest traffic, thus never take an extra hop.
//!
//! **When the holder dies.** Its lease lapses within 6 s of its last
//! renewal; the next call of the cluster to any replica takes it over. The
//! new holder knows no agent yet. It takes an agent it does not know back
//! from `p2p_agents`, where every registration and heartbeat is written, if
//! that agent was heard from within three heartbeats: the agent keeps its
//! id and its tickets, and its next join says which pieces it holds, so no
//! verified piece is lost to the swarm. An agent silent for longer is told
//! `AGENT_UNKNOWN` and registers again. Meanwhile agents keep trading with
//! the parents and tickets they hold, and fetch from the seed (any replica);
//! calls that fail in the few seconds of the move are retried at the next
//! heartbeat or join. What is lost is scheduling state only: seed
//! reservations (pieces in flight are reported and re-planned) and the
//! stripe trees, rebuilt from the next joins. Agents holding a complete
//! blob and not pulling it are known again only when they join it again,
//! so until then the new holder may hand the seed's pieces of that blob to
//! others first: the cost is seed bytes, bounded by one copy of the blobs
//! being pulled at the time of the move.
//!
//! **Why a lease per cluster, not consistent hashing.** Dragonfly v2 places
//! each task on a scheduler by consistent hashing of its id, and every peer
//! talks to the scheduler that owns the task. That spreads load finely, but
//! it splits what Damselfly schedules as a whole: the seed's upload budget,
//! the stripe trees and the held joins of one cluster span all its blobs
//! (a cluster's swarms take turns at the seed), so hashing per blob would
//! put one budget on several replicas, and hashing per cluster on a ring
//! would need every replica to agree on the ring's membership, which is the
//! problem a lease solves with one row and no extra protocol. A lease also
//! keeps the load balancer simple: agents keep one registry URL, and any
//! replica accepts their calls. The cost is that one cluster's scheduling
//! never spans replicas; one replica schedules thousands of agents (the
//! scheduler's joins cost about the same in a swarm of ten thousand), and
//! many clusters spread over the replicas as their agents first call.
//!
//! **A single process** (SQLite, or one replica) takes every lease the
//! first time a cluster calls and renews them, with nobody to pass calls
//! to: nothing to set up.

pub mod acceleration;
mod extract;
pub mod forward;
pub mod install;
pub mod layout;
pub mod lease;
mod routes;
pub mod scheduler;
pub mod stats;
pub mod ticket;

pub use lease::Leases;
pub use routes::router;
pub use scheduler::{Scheduler, DEFAULT_STRIPES};
pub use stats::Stats;

use crate::state::AppState;

/// Unix seconds from which an agent heard from counts as online: three
/// heartbeat periods ago, as the scheduler has it.
pub fn alive_since(state: &AppState) -> i64 {
    crate::metadata::now() - 3 * state.scheduler.heartbeat().as_secs() as i64
}

/// Every heartbeat period, forgets silent agents: those this replica
/// schedules, and their rows in the database (any replica may do it).
pub async fn expire_periodically(state: AppState) {
    let mut tick = tokio::time::interval(state.scheduler.heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.scheduler.expire();
        if let Err(e) = state.db.agents().expire(alive_since(&state)).await {
            tracing::warn!(error = %e, "could not forget silent agents in the database; will retry");
        }
    }
}
