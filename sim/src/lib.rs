//! A discrete-event simulation of a Damselfly P2P swarm. It drives the
//! registry's real scheduler (`damselfly_registry::p2p::Scheduler`, on a
//! virtual [`Clock`](damselfly_registry::p2p::scheduler::Clock)) and, for
//! every simulated agent, the agent's real fetch schedule
//! (`damselfly_agent::schedule::Schedule`), over simulated links and piece
//! transfers, with no sockets: thousands of nodes run in minutes, and what
//! is measured is what the registry and the agents decide.
//!
//! `agent.rs` says what of an agent is modelled rather than run, and
//! `net.rs` how links are shared.

mod agent;
mod net;
mod outcome;
pub mod scenario;
mod world;

pub use outcome::Outcome;
pub use scenario::{mbit, Image, Scenario, Service};

/// Runs one simulation to its end: every agent has its image, has left
/// for good, or the scenario's horizon has passed.
pub fn run(scenario: &Scenario) -> Outcome {
    world::World::new(scenario, false).run()
}

/// [`run`], and then writes every piece an agent kept into `dir` as the
/// agents log it, for `scripts/swarm-timeline.py`.
pub fn run_with_piece_log(scenario: &Scenario, dir: &std::path::Path) -> std::io::Result<Outcome> {
    let mut world = world::World::new(scenario, true);
    let outcome = world.run();
    world.write_piece_log(dir)?;
    Ok(outcome)
}
