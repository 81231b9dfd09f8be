//! What a simulation measured, and how it is printed.

use std::fmt;
use std::time::Duration;

use crate::world::World;

/// Counters kept while the simulation runs.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) seed_bytes: u64,
    pub(crate) peer_bytes: u64,
    pub(crate) cross_zone_bytes: u64,
    /// The scheduler's CPU time of every join it planned, in nanoseconds.
    pub(crate) join_cpu: Vec<u32>,
    pub(crate) report_cpu_ns: u64,
    pub(crate) reports: u64,
    pub(crate) joins_sent: u64,
    pub(crate) joins_answered: u64,
    pub(crate) reregistrations: u64,
    pub(crate) stall_asks: u64,
    pub(crate) failed_pulls: u64,
    pub(crate) duplicate_pieces: u64,
    pub(crate) busy_answers: u64,
    pub(crate) leaves: u64,
    pub(crate) wall: Duration,
    pub(crate) rate_allocations: u64,
    /// Every piece kept, when a piece log was asked for.
    pub(crate) piece_log: Option<Vec<PieceLogged>>,
    /// When the seed's last byte left.
    pub(crate) seed_last: u64,
    /// Every registration, for the piece log: (node, agent id).
    pub(crate) registrations: Option<Vec<(usize, String)>>,
    /// Bytes the seed sent in each 100 ms of the run, per blob, for the piece log: (step, blob) -> bytes.
    pub(crate) seed_steps: Option<std::collections::BTreeMap<(u64, usize), f64>>,
    /// Every hand-out of seed pieces, for the piece log: (when, agent id, blob, pieces).
    pub(crate) handouts: Option<Vec<(u64, String, usize, Vec<u32>)>>,
}

/// One piece an agent kept, for the piece log.
pub(crate) struct PieceLogged {
    pub(crate) node: usize,
    pub(crate) blob: usize,
    pub(crate) piece: u32,
    /// The parent's agent id, or `seed`.
    pub(crate) from: String,
    pub(crate) started: u64,
    pub(crate) ended: u64,
}

/// The figures of one simulation.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// What ran, in words.
    pub setting: String,
    /// Agents.
    pub nodes: usize,
    /// Agents that got their whole image.
    pub completed: usize,
    /// Agents that left for good.
    pub gone: usize,
    /// Agents neither done nor gone when the simulation stopped (its horizon).
    pub unfinished: usize,
    /// Seconds from the start until the last agent had its image.
    pub makespan: f64,
    /// The Kumar & Ross lower bound, in seconds.
    pub bound: f64,
    /// Each completed agent's completion, in seconds from the start, sorted.
    pub completion: Vec<f64>,
    /// Bytes of every image.
    pub image_bytes: u64,
    /// Bytes the registry's seed sent.
    pub seed_bytes: u64,
    /// Bytes agents sent each other.
    pub peer_bytes: u64,
    /// Bytes that crossed from one zone into another.
    pub cross_zone_bytes: u64,
    /// Seconds from the start until the seed's last byte left.
    pub seed_last: f64,
    /// Joins the scheduler planned (held joins planned again count again).
    pub joins: u64,
    /// Joins agents sent.
    pub joins_sent: u64,
    /// The scheduler's CPU time per join, in microseconds: mean, median, 99th percentile, maximum.
    pub join_cpu_us: [f64; 4],
    /// Reports, and the scheduler's mean CPU time per report in microseconds.
    pub reports: u64,
    /// Mean CPU per report, microseconds.
    pub report_cpu_us: f64,
    /// Pulls that failed (and were retried by their client).
    pub failed_pulls: u64,
    /// Agents killed.
    pub leaves: u64,
    /// Agents the scheduler had forgotten when they joined.
    pub reregistrations: u64,
    /// Times a stalled download asked the seed directly.
    pub stall_asks: u64,
    /// Pieces that arrived twice.
    pub duplicate_pieces: u64,
    /// Piece requests a parent refused as busy.
    pub busy_answers: u64,
    /// Wall-clock seconds the simulation took.
    pub wall_secs: f64,
    /// Times the links' rates were computed.
    pub rate_allocations: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

impl Outcome {
    pub(crate) fn from_world(w: &World) -> Outcome {
        let sc = w.sc;
        let agents = || w.nodes.iter().skip(1);
        let mut completion: Vec<f64> = agents().filter_map(|n| n.done).map(|t| t as f64 / 1e9).collect();
        completion.sort_by(f64::total_cmp);
        let mut cpu: Vec<u32> = w.tally.join_cpu.clone();
        cpu.sort_unstable();
        let us = |ns: f64| ns / 1e3;
        let mean = if cpu.is_empty() { 0.0 } else { cpu.iter().map(|&c| c as f64).sum::<f64>() / cpu.len() as f64 };
        let pct = |p: f64| {
            if cpu.is_empty() {
                0.0
            } else {
                cpu[((p * cpu.len() as f64).ceil() as usize).clamp(1, cpu.len()) - 1] as f64
            }
        };
        let t = &w.tally;
        let piece_kib = w.blobs.first().map_or(0, |b| b.piece_size / 1024);
        let layers: usize = sc.images.iter().map(|i| i.layers.len()).sum();
        let service = sc.service.map_or(String::new(), |s| {
            format!(
                "; registry's time per join {:.1} ms, per report {:.1} ms (medians, spread {:.1})",
                s.join.as_secs_f64() * 1e3,
                s.report.as_secs_f64() * 1e3,
                s.sigma
            )
        });
        let pipe = sc.pipe.map_or(String::new(), |p| format!(", {:.0} Mbit/s each way between zones", p * 8.0 / 1e6));
        let setting = format!(
            "{} agents in {} zone(s){pipe}; {} image(s), {:.1} MiB each on average, {layers} layers in all, {piece_kib} KiB pieces; \
             registry up {:.0} Mbit/s, agents up {:.0} / down {:.0} Mbit/s at {:.2} efficiency; RTT {} ms ({} ms between zones){service}; \
             stripes {}; churn {:.0} % ({}), late {:.0} % within {} s",
            sc.nodes,
            sc.zones,
            sc.images.len(),
            sc.mean_image() / (1 << 20) as f64,
            sc.seed_up * 8.0 / 1e6,
            sc.up * 8.0 / 1e6,
            sc.down * 8.0 / 1e6,
            sc.efficiency,
            sc.rtt.as_millis(),
            sc.rtt_between.as_millis(),
            sc.stripes,
            sc.churn * 100.0,
            sc.downtime.map_or("gone for good".into(), |d| format!("back after {} s", d.as_secs())),
            sc.late * 100.0,
            sc.late_window.as_secs(),
        );
        Outcome {
            setting,
            nodes: sc.nodes,
            completed: completion.len(),
            gone: agents().filter(|n| n.gone).count(),
            unfinished: agents().filter(|n| n.done.is_none() && !n.gone).count(),
            makespan: completion.last().copied().unwrap_or(f64::NAN),
            bound: sc.bound(),
            completion,
            image_bytes: sc.images.iter().map(|i| i.size()).sum(),
            seed_bytes: t.seed_bytes,
            peer_bytes: t.peer_bytes,
            cross_zone_bytes: t.cross_zone_bytes,
            seed_last: t.seed_last as f64 / 1e9,
            joins: cpu.len() as u64,
            joins_sent: t.joins_sent,
            join_cpu_us: [us(mean), us(pct(0.5)), us(pct(0.99)), us(pct(1.0))],
            reports: t.reports,
            report_cpu_us: if t.reports == 0 { 0.0 } else { us(t.report_cpu_ns as f64 / t.reports as f64) },
            failed_pulls: t.failed_pulls,
            leaves: t.leaves,
            reregistrations: t.reregistrations,
            stall_asks: t.stall_asks,
            duplicate_pieces: t.duplicate_pieces,
            busy_answers: t.busy_answers,
            wall_secs: t.wall.as_secs_f64(),
            rate_allocations: t.rate_allocations,
        }
    }

    /// The completion time by which a share `p` (0 to 1) of the completed agents had their image.
    pub fn percentile(&self, p: f64) -> f64 {
        percentile(&self.completion, p)
    }

    /// The registry's egress as a multiple of the images' bytes.
    pub fn egress(&self) -> f64 {
        self.seed_bytes as f64 / self.image_bytes as f64
    }

    /// Joins per second one registry replica's scheduler can plan, at the mean CPU time per join.
    pub fn joins_per_second(&self) -> f64 {
        1e6 / self.join_cpu_us[0]
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        writeln!(f, "damselfly-sim: {}", self.setting)?;
        writeln!(
            f,
            "makespan {:.1} s, Kumar-Ross bound {:.1} s, makespan/bound {:.2}; {} of {} agents completed, {} gone for good, {} unfinished",
            self.makespan,
            self.bound,
            self.makespan / self.bound,
            self.completed,
            self.nodes,
            self.gone,
            self.unfinished
        )?;
        write!(f, "completion CDF (s from the start):")?;
        for p in [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0] {
            write!(f, " p{}={:.1}", (p * 100.0) as u32, self.percentile(p))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "registry egress {:.1} MiB = {:.3}x the images ({:.1} MiB), its last byte at {:.1} s; peers sent {:.1} MiB; cross-zone {:.1} MiB = {:.2}x the images",
            mib(self.seed_bytes),
            self.egress(),
            mib(self.image_bytes),
            self.seed_last,
            mib(self.peer_bytes),
            mib(self.cross_zone_bytes),
            self.cross_zone_bytes as f64 / self.image_bytes as f64
        )?;
        let [mean, p50, p99, max] = self.join_cpu_us;
        writeln!(
            f,
            "scheduler: {} joins planned ({} sent by agents, {:.0}/s of simulated time); CPU per join mean {mean:.1} us, p50 {p50:.1}, p99 {p99:.1}, max {max:.0}; \
             {} reports at {:.1} us each; one replica plans about {:.0} joins/s",
            self.joins,
            self.joins_sent,
            self.joins as f64 / self.makespan,
            self.reports,
            self.report_cpu_us,
            self.joins_per_second()
        )?;
        writeln!(
            f,
            "failed pulls {}, agents killed {}, re-registrations {}, stalls asked of the seed {}, duplicate pieces {}, busy answers {}",
            self.failed_pulls, self.leaves, self.reregistrations, self.stall_asks, self.duplicate_pieces, self.busy_answers
        )?;
        write!(f, "simulated in {:.1} s of wall time ({} rate computations)", self.wall_secs, self.rate_allocations)
    }
}
