//! `damselfly-sim`: simulates a swarm of Damselfly agents pulling images
//! through the registry's real scheduler, and prints the makespan against
//! the Kumar & Ross bound, the registry's egress, the CDF of completion
//! times and the scheduler's CPU time per join.

use std::time::Duration;

use clap::Parser;
use damselfly_sim::{mbit, Image, Scenario, Service};

/// Simulate a P2P swarm on the real scheduler, with a virtual clock.
///
/// The defaults are the namespace benchmark's (`scripts/bench-swarm.sh 16`): 16 agents,
/// every link 50 Mbit/s, a 64 MiB image in 4 layers, the registry's default pieces.
#[derive(Parser, Debug)]
#[command(name = "damselfly-sim", version)]
struct Cli {
    /// Agents pulling.
    #[arg(long, env = "DAMSELFLY_SIM_NODES", default_value_t = 16)]
    nodes: usize,
    /// Zones the agents are dealt into in turn; the registry is in the first.
    #[arg(long, env = "DAMSELFLY_SIM_ZONES", default_value_t = 1)]
    zones: usize,
    /// Images pulled at once; agent i pulls image i % images.
    #[arg(long, env = "DAMSELFLY_SIM_IMAGES", default_value_t = 1)]
    images: usize,
    /// Size of each image in MiB.
    #[arg(long, env = "DAMSELFLY_SIM_IMAGE_MIB", default_value_t = 64.0)]
    image_mib: f64,
    /// Layers per image, of equal size.
    #[arg(long, env = "DAMSELFLY_SIM_LAYERS", default_value_t = 4)]
    layers: usize,
    /// Piece size in KiB (default: the registry's rule for each blob).
    #[arg(long, env = "DAMSELFLY_SIM_PIECE_KIB")]
    piece_kib: Option<u64>,
    /// Stripe trees per swarm (the registry's --p2p-stripes; 0: none).
    #[arg(long, env = "DAMSELFLY_SIM_STRIPES", default_value_t = 2)]
    stripes: usize,
    /// Every link's rate in Mbit/s, unless set apart below.
    #[arg(long, env = "DAMSELFLY_SIM_MBIT", default_value_t = 50.0)]
    mbit: f64,
    /// The registry's uplink in Mbit/s.
    #[arg(long, env = "DAMSELFLY_SIM_SEED_MBIT")]
    seed_mbit: Option<f64>,
    /// Each agent's uplink in Mbit/s.
    #[arg(long, env = "DAMSELFLY_SIM_UP_MBIT")]
    up_mbit: Option<f64>,
    /// Each agent's downlink in Mbit/s.
    #[arg(long, env = "DAMSELFLY_SIM_DOWN_MBIT")]
    down_mbit: Option<f64>,
    /// The link each way between two zones in Mbit/s, shared by every transfer crossing it (default: unlimited).
    #[arg(long, env = "DAMSELFLY_SIM_PIPE_MBIT")]
    pipe_mbit: Option<f64>,
    /// Share of a link's rate that transfers get (TCP/IP headers, queue slack).
    #[arg(long, env = "DAMSELFLY_SIM_EFFICIENCY", default_value_t = 0.95)]
    efficiency: f64,
    /// Round trip within a zone in ms: before a piece's first byte, and for every join and report.
    #[arg(long, env = "DAMSELFLY_SIM_RTT_MS", default_value_t = 20.0)]
    rtt_ms: f64,
    /// Round trip between zones in ms (default: as within).
    #[arg(long, env = "DAMSELFLY_SIM_RTT_BETWEEN_MS")]
    rtt_between_ms: Option<f64>,
    /// The registry's median time over a join before it plans it, and over a
    /// seed request before its first byte, in ms (a log-normal draw per
    /// request; 0: none).
    #[arg(long, env = "DAMSELFLY_SIM_JOIN_MS", default_value_t = 0.0)]
    join_ms: f64,
    /// The registry's median time over a report, in ms (a log-normal draw per report).
    #[arg(long, env = "DAMSELFLY_SIM_REPORT_MS", default_value_t = 0.0)]
    report_ms: f64,
    /// The spread of those times: the standard deviation of their logarithm.
    #[arg(long, env = "DAMSELFLY_SIM_SERVICE_SIGMA", default_value_t = 1.4)]
    service_sigma: f64,
    /// The agent's own time per join, report and seed request in ms, added to the registry's.
    #[arg(long, env = "DAMSELFLY_SIM_AGENT_MS", default_value_t = 0.0)]
    agent_ms: f64,
    /// The times over joins, reports and seed requests of the 16-agent
    /// benchmark on its 2-core machine (the registry's as it logged them:
    /// joins 10.6 ms, reports 2.6 ms, spread 1.4; the agent's 30 ms); with
    /// `--rtt-ms 1`, the benchmark's round trip. Overrides the three above.
    #[arg(long, env = "DAMSELFLY_SIM_BENCH_SERVICE")]
    bench_service: bool,
    /// Share of agents killed at a random moment within the bound's time.
    #[arg(long, env = "DAMSELFLY_SIM_CHURN", default_value_t = 0.0)]
    churn: f64,
    /// Seconds a killed agent stays down before it starts again with its cache (default: gone for good).
    #[arg(long, env = "DAMSELFLY_SIM_DOWNTIME_S")]
    downtime_s: Option<f64>,
    /// Share of agents that start late.
    #[arg(long, env = "DAMSELFLY_SIM_LATE", default_value_t = 0.0)]
    late: f64,
    /// Late agents start at a random moment within this many seconds.
    #[arg(long, env = "DAMSELFLY_SIM_LATE_WINDOW_S", default_value_t = 0.0)]
    late_window_s: f64,
    /// Each agent's client asks for each blob at a random moment within this many seconds of its start.
    #[arg(long, env = "DAMSELFLY_SIM_START_SPREAD_S", default_value_t = 0.5)]
    start_spread_s: f64,
    /// Agents' upload slots (the agent's --upload-slots).
    #[arg(long, env = "DAMSELFLY_SIM_UPLOAD_SLOTS", default_value_t = 2)]
    upload_slots: u32,
    /// Agents' fetch slots (the agent's --fetch-slots).
    #[arg(long, env = "DAMSELFLY_SIM_FETCH_SLOTS", default_value_t = 2)]
    fetch_slots: u32,
    /// Agents' feed slots (the agent's --feed-slots).
    #[arg(long, env = "DAMSELFLY_SIM_FEED_SLOTS", default_value_t = 32)]
    feed_slots: u32,
    /// Least virtual ms between two computations of the links' rates (default: 0 up to 200 agents, else 5).
    #[arg(long, env = "DAMSELFLY_SIM_RATE_STEP_MS")]
    rate_step_ms: Option<f64>,
    /// Seed of the random draws.
    #[arg(long, env = "DAMSELFLY_SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// Stop after this many seconds of virtual time.
    #[arg(long, env = "DAMSELFLY_SIM_HORIZON_S", default_value_t = 7200.0)]
    horizon_s: f64,
    /// Write every piece kept into this directory as the agents log it, for `scripts/swarm-timeline.py`.
    #[arg(long, env = "DAMSELFLY_SIM_PIECE_LOG")]
    piece_log: Option<std::path::PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let layer = (cli.image_mib * (1 << 20) as f64 / cli.layers.max(1) as f64) as u64;
    let scenario = Scenario {
        nodes: cli.nodes,
        zones: cli.zones.max(1),
        images: vec![Image::even(cli.layers.max(1), layer); cli.images.max(1)],
        piece_size: cli.piece_kib.map(|k| k * 1024),
        stripes: cli.stripes,
        seed_up: mbit(cli.seed_mbit.unwrap_or(cli.mbit)),
        up: mbit(cli.up_mbit.unwrap_or(cli.mbit)),
        down: mbit(cli.down_mbit.unwrap_or(cli.mbit)),
        pipe: cli.pipe_mbit.map(mbit),
        efficiency: cli.efficiency,
        rtt: secs(cli.rtt_ms / 1e3),
        rtt_between: secs(cli.rtt_between_ms.unwrap_or(cli.rtt_ms) / 1e3),
        service: if cli.bench_service {
            Some(Service::bench())
        } else {
            (cli.join_ms > 0.0 || cli.report_ms > 0.0 || cli.agent_ms > 0.0).then(|| Service {
                join: secs(cli.join_ms / 1e3),
                report: secs(cli.report_ms / 1e3),
                sigma: cli.service_sigma,
                agent: secs(cli.agent_ms / 1e3),
            })
        },
        churn: cli.churn,
        downtime: cli.downtime_s.map(secs),
        late: cli.late,
        late_window: secs(cli.late_window_s),
        start_spread: secs(cli.start_spread_s),
        upload_slots: cli.upload_slots,
        fetch_slots: cli.fetch_slots,
        feed_slots: cli.feed_slots,
        rate_step: secs(cli.rate_step_ms.unwrap_or(if cli.nodes <= 200 { 0.0 } else { 5.0 }) / 1e3),
        seed: cli.seed,
        horizon: secs(cli.horizon_s),
    };
    let outcome = match &cli.piece_log {
        Some(dir) => match damselfly_sim::run_with_piece_log(&scenario, dir) {
            Ok(outcome) => outcome,
            Err(e) => {
                eprintln!("error: cannot write the piece log into {}: {e}", dir.display());
                std::process::exit(2);
            }
        },
        None => damselfly_sim::run(&scenario),
    };
    println!("{outcome}");
    if outcome.unfinished > 0 {
        std::process::exit(1);
    }
}
