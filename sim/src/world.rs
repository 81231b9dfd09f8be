//! The simulated world: the registry (its real scheduler, the long-poll its
//! routes add, and the seed), the agents, the network, and the queue of
//! events that moves the virtual clock from one to the next.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use damselfly_agent::schedule::Schedule;
use damselfly_core::p2p::{JoinMode, JoinResponse, RegisterRequest, ReportRequest, MAX_JOIN_WAIT_MS};
use damselfly_core::Digest;
use damselfly_registry::metadata::ClusterId;
use damselfly_registry::p2p::scheduler::{Blob, Clock, Plan, Scheduler};

use crate::net::{FlowId, Nanos, Net};
use crate::outcome::{Outcome, Tally};
use crate::scenario::Scenario;

/// The registry's node in the network.
pub(crate) const SEED: usize = 0;
/// The one cluster every simulated agent belongs to.
const CLUSTER: ClusterId = ClusterId(1);
/// The registry's heartbeat period (`Scheduler::new` in the registry).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Lifetime of a ticket, as the registry's routes hand it out.
const TICKET_SECS: u64 = 300;
/// How often a run says on stderr how far it got, in wall time.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// How soon a client whose pull failed asks again.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The scheduler's clock: the simulation's virtual time.
pub(crate) struct VirtualClock {
    base: Instant,
    nanos: AtomicU64,
}

impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// Something that happens at a moment of virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Ev {
    /// A node starts pulling its image (or a blob of it again, after a failure).
    Pull { node: usize, blob: Option<usize>, epoch: u32 },
    /// A download's join reaches the registry.
    JoinAt { dl: usize, gen: u32 },
    /// A held join's wait is over.
    JoinTimeout { dl: usize, gen: u32 },
    /// A join's answer reaches the agent.
    JoinBack { dl: usize, gen: u32 },
    /// A report reaches the registry.
    ReportAt { dl: usize, gen: u32 },
    /// The report's answer reaches the agent.
    ReportBack { dl: usize, gen: u32 },
    /// A download's report-and-join tick.
    Tick { dl: usize, gen: u32 },
    /// A piece request reaches its source.
    PieceAt { task: usize, gen: u32 },
    /// A piece, or the refusal of one, reaches the requester.
    PieceBack { task: usize, gen: u32 },
    /// A feed request reaches the parent, or the parent looks again for the blob.
    FeedAt { feed: usize, gen: u32 },
    /// A feed's piece, its end, or its refusal reaches the child.
    FeedBack { feed: usize, gen: u32, piece: u32 },
    /// A batched request for seed pieces reaches the seed.
    BatchAt { batch: usize, gen: u32 },
    /// A piece of a seed batch, or its end, reaches the agent.
    BatchBack { batch: usize, gen: u32, piece: u32 },
    /// A download's fetch loop wakes for a timer.
    Wake { dl: usize },
    /// A node's agent is killed.
    Leave { node: usize },
    /// A node's agent starts again.
    Return { node: usize },
    /// Every agent's heartbeat, and the registry forgetting silent agents.
    Heartbeats,
}

/// One blob of the images.
pub(crate) struct BlobInfo {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) piece_size: u64,
    pub(crate) pieces: usize,
}

impl BlobInfo {
    pub(crate) fn shape(&self) -> Blob {
        Blob { pieces: self.pieces, piece_size: self.piece_size }
    }

    pub(crate) fn piece_len(&self, i: u32) -> u64 {
        let start = u64::from(i) * self.piece_size;
        self.piece_size.min(self.size.saturating_sub(start))
    }
}

/// What a node holds of one blob.
#[derive(Default)]
pub(crate) struct Holding {
    pub(crate) have: Vec<bool>,
    pub(crate) complete: bool,
    /// The download running now.
    pub(crate) dl: Option<usize>,
    /// Feeds of this node waiting for a piece of the blob.
    pub(crate) waiting_feeds: Vec<usize>,
}

/// One node: an agent and its links.
pub(crate) struct Node {
    pub(crate) zone: usize,
    /// Its id at the scheduler (a new one each time it registers).
    pub(crate) id: String,
    pub(crate) alive: bool,
    /// Bumped when the agent is killed: what was under way is void.
    pub(crate) epoch: u32,
    pub(crate) uploads: u32,
    pub(crate) fetching: u32,
    /// Downloads waiting for a fetch slot, in turn.
    pub(crate) waiters: VecDeque<usize>,
    pub(crate) feeds_served: u32,
    /// Per blob.
    pub(crate) hold: Vec<Holding>,
    /// The blobs it pulls.
    pub(crate) wants: Vec<usize>,
    pub(crate) started: Option<Nanos>,
    pub(crate) done: Option<Nanos>,
    /// It left and does not come back.
    pub(crate) gone: bool,
}

/// A download's fetch loop is waiting for the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Block {
    Join,
    Report,
}

/// What the fetch loop does next once it is not waiting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Action {
    /// Report what is owed.
    Flush,
    /// Join again, unless the last join was less than this long ago.
    Rejoin(Duration, Option<u32>),
    /// Join again if the schedule wants to, at a tick.
    WantedJoin(bool),
    /// Notice a stall, at a tick.
    AfterTick(bool),
    /// The blob is whole: the download ends.
    Finish,
}

/// Something the fetch loop's `select!` takes.
#[derive(Clone, Debug)]
pub(crate) enum Input {
    /// A piece fetch ended.
    Task(usize),
    /// A seed batch stored a piece (`Some`), or ended (`None`).
    Seed(Option<u32>),
    /// A feed brought something.
    Feed { stripe: usize, parent: String, what: FeedWhat },
    /// The tick fired.
    Tick,
}

/// What a feed brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FeedWhat {
    Piece(u32),
    Ended,
    Unknown,
    Busy,
    Broken,
}

/// One download: an agent's fetch loop for one blob.
pub(crate) struct Dl {
    pub(crate) node: usize,
    pub(crate) blob: usize,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) over: bool,
    pub(crate) blocked: Option<Block>,
    /// Bumped on every join or report sent, so that stale answers are dropped.
    pub(crate) gen: u32,
    pub(crate) actions: VecDeque<Action>,
    pub(crate) inbox: VecDeque<Input>,
    pub(crate) tasks: Vec<usize>,
    /// Seed batches running.
    pub(crate) batches: usize,
    /// The seed batches it asked for, live or not.
    pub(crate) batch_ids: Vec<usize>,
    /// When the loop's timer to report a seed piece fires.
    pub(crate) wake_at: Option<Nanos>,
    pub(crate) waiting_slot: bool,
    /// The feed running for each stripe.
    pub(crate) feeds: Vec<Option<usize>>,
    pub(crate) tick_gen: u32,
    /// The join on its way: the pieces it says it holds, and how long it may be held.
    pub(crate) join_have: Vec<u32>,
    pub(crate) join_wait: Option<u32>,
    pub(crate) join_brief: bool,
    pub(crate) join_fetching: Option<u32>,
    pub(crate) answer: Option<JoinResponse>,
    pub(crate) report: Option<ReportRequest>,
    /// The held join's last plan.
    pub(crate) held_plan: Option<Plan>,
    /// The seed pieces the registry handed it so far, for the piece log.
    pub(crate) handed: Vec<u32>,
}

/// A piece fetch under way.
pub(crate) struct Task {
    pub(crate) dl: usize,
    pub(crate) piece: u32,
    pub(crate) source: damselfly_agent::schedule::Source,
    /// The node it comes from (the seed's for the seed).
    pub(crate) from: usize,
    pub(crate) from_epoch: u32,
    pub(crate) flow: Option<FlowId>,
    pub(crate) upload_held: bool,
    pub(crate) result: Option<Result<(), damselfly_agent::schedule::Failure>>,
    /// When the fetch began, for the piece log.
    pub(crate) started: Nanos,
    pub(crate) gen: u32,
    pub(crate) live: bool,
}

/// A batched request for seed pieces: the seed streams them back to back.
pub(crate) struct Batch {
    pub(crate) dl: usize,
    /// The pieces still to send, lowest last.
    pub(crate) left: Vec<u32>,
    pub(crate) sending: Option<(u32, FlowId)>,
    pub(crate) started: Nanos,
    pub(crate) gen: u32,
    pub(crate) live: bool,
}

/// A stripe feed: a parent streaming a child one stripe of a blob.
pub(crate) struct Feed {
    pub(crate) dl: usize,
    pub(crate) child: usize,
    pub(crate) parent: usize,
    pub(crate) parent_id: String,
    pub(crate) parent_epoch: u32,
    pub(crate) blob: usize,
    pub(crate) stripe: usize,
    pub(crate) stripes: usize,
    /// The child's pieces when it asked.
    pub(crate) had: Vec<bool>,
    pub(crate) wanted: Vec<u32>,
    pub(crate) streaming: bool,
    pub(crate) sending: Option<(u32, FlowId)>,
    /// The parent's answer, when it is not a stream.
    pub(crate) refusal: Option<FeedWhat>,
    pub(crate) asked_at: Nanos,
    pub(crate) gen: u32,
    pub(crate) live: bool,
}

/// The whole simulation.
pub(crate) struct World<'s> {
    pub(crate) sc: &'s Scenario,
    pub(crate) now: Nanos,
    clock: Arc<VirtualClock>,
    pub(crate) scheduler: Scheduler,
    pub(crate) net: Net,
    events: BinaryHeap<Reverse<(Nanos, u64, Ev)>>,
    seq: u64,
    pub(crate) nodes: Vec<Node>,
    pub(crate) blobs: Vec<BlobInfo>,
    pub(crate) dls: Vec<Dl>,
    pub(crate) tasks: Vec<Task>,
    pub(crate) free_tasks: Vec<usize>,
    pub(crate) feeds: Vec<Feed>,
    pub(crate) free_feeds: Vec<usize>,
    pub(crate) batches: Vec<Batch>,
    /// The feed each parent streams each child, per blob and stripe: (parent, child, blob, stripe) → feed.
    pub(crate) streaming: HashMap<(usize, usize, usize, usize), usize>,
    /// Scheduler agent id → node.
    pub(crate) ids: HashMap<String, usize>,
    /// Joins the registry holds open: download → (generation, until).
    pub(crate) held: Vec<usize>,
    /// Downloads whose fetch loop may have something to do.
    pub(crate) ready: Vec<usize>,
    pub(crate) tally: Tally,
    pub(crate) rng: fastrand::Rng,
    /// Draws of the registry's time per request, apart from `rng` so that
    /// a run without it draws everything else as before.
    service_rng: fastrand::Rng,
    /// Nodes neither done nor gone for good.
    pub(crate) remaining: usize,
    /// Until when the seed's sending is counted in `tally.seed_steps`.
    seed_mark: Nanos,
}

/// Virtual nanoseconds of a duration.
pub(crate) fn ns(d: Duration) -> Nanos {
    d.as_nanos() as Nanos
}

/// The thread's CPU time so far, in nanoseconds.
fn cpu_now() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl<'s> World<'s> {
    pub(crate) fn new(sc: &'s Scenario, piece_log: bool) -> World<'s> {
        let clock = Arc::new(VirtualClock { base: Instant::now(), nanos: AtomicU64::new(0) });
        let scheduler = Scheduler::new(HEARTBEAT).with_stripes(sc.stripes).with_clock(clock.clone());
        let mut blobs = Vec::new();
        let mut image_blobs = Vec::new();
        for (k, image) in sc.images.iter().enumerate() {
            let mut of_image = Vec::new();
            for (l, &size) in image.layers.iter().enumerate() {
                let piece_size = sc.piece_size.unwrap_or_else(|| damselfly_core::p2p::piece_size_for(size));
                let digest = Digest::of(format!("simulated image {k} layer {l}").as_bytes());
                of_image.push(blobs.len());
                blobs.push(BlobInfo { digest, size, piece_size, pieces: size.div_ceil(piece_size) as usize });
            }
            image_blobs.push(of_image);
        }
        let total = sc.nodes + 1;
        let eff = sc.efficiency;
        let up: Vec<f64> = (0..total).map(|i| if i == SEED { sc.seed_up } else { sc.up } * eff).collect();
        let down: Vec<f64> = (0..total).map(|i| if i == SEED { 0.0 } else { sc.down * eff }).collect();
        let zone_of = |i: usize| if i == SEED { 0 } else { (i - 1) % sc.zones.max(1) };
        let net = Net::new(&up, &down, sc.zones.max(1), sc.pipe.map(|p| p * eff), ns(sc.rate_step));
        let nodes = (0..total)
            .map(|i| Node {
                zone: zone_of(i),
                id: String::new(),
                alive: true,
                epoch: 0,
                uploads: 0,
                fetching: 0,
                waiters: VecDeque::new(),
                feeds_served: 0,
                hold: (0..blobs.len()).map(|_| Holding::default()).collect(),
                wants: if i == SEED { Vec::new() } else { image_blobs[(i - 1) % image_blobs.len()].clone() },
                started: None,
                done: None,
                gone: false,
            })
            .collect();
        World {
            sc,
            now: 0,
            clock,
            scheduler,
            net,
            events: BinaryHeap::new(),
            seq: 0,
            nodes,
            blobs,
            dls: Vec::new(),
            tasks: Vec::new(),
            free_tasks: Vec::new(),
            feeds: Vec::new(),
            free_feeds: Vec::new(),
            batches: Vec::new(),
            streaming: HashMap::new(),
            ids: HashMap::new(),
            held: Vec::new(),
            ready: Vec::new(),
            tally: Tally {
                piece_log: piece_log.then(Vec::new),
                registrations: piece_log.then(Vec::new),
                handouts: piece_log.then(Vec::new),
                seed_steps: piece_log.then(Default::default),
                ..Tally::default()
            },
            rng: fastrand::Rng::with_seed(sc.seed),
            service_rng: fastrand::Rng::with_seed(sc.seed ^ 0x5e41_1ce5),
            remaining: sc.nodes,
            seed_mark: 0,
        }
    }

    /// The virtual time as the scheduler and the agents' schedules read it.
    pub(crate) fn instant(&self) -> Instant {
        self.clock.now()
    }

    /// Schedules `ev` at `at`.
    pub(crate) fn at(&mut self, at: Nanos, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, ev)));
    }

    /// Schedules `ev` `after` from now.
    pub(crate) fn after(&mut self, after: Nanos, ev: Ev) {
        self.at(self.now + after, ev);
    }

    /// Half the round trip between two nodes.
    pub(crate) fn one_way(&self, a: usize, b: usize) -> Nanos {
        let rtt = if self.nodes[a].zone == self.nodes[b].zone { self.sc.rtt } else { self.sc.rtt_between };
        ns(rtt) / 2
    }

    /// The registry's time over a join (`join`) or a report, drawn.
    pub(crate) fn service(&mut self, join: bool) -> Nanos {
        let Some(service) = self.sc.service else { return 0 };
        let median = if join { service.join } else { service.report };
        // A standard normal draw (Box-Muller), then the log-normal around the median.
        let (u, v) = (1.0 - self.service_rng.f64(), self.service_rng.f64());
        let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        (ns(median) as f64 * (service.sigma * z).exp()) as Nanos + ns(service.agent)
    }

    /// Registers node `i`'s agent with the scheduler (again).
    pub(crate) fn register(&mut self, i: usize) {
        let req = RegisterRequest {
            node: format!("node-{i}"),
            ip: format!("10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff),
            peer_port: 65002,
            zone: format!("zone-{}", self.nodes[i].zone),
            upload_slots: self.sc.upload_slots,
            version: "sim".into(),
            platform: String::new(),
        };
        let old = std::mem::take(&mut self.nodes[i].id);
        self.ids.remove(&old);
        let id = self.scheduler.register(CLUSTER, &req);
        if let Some(ids) = self.tally.registrations.as_mut() {
            ids.push((i, id.clone()));
        }
        self.ids.insert(id.clone(), i);
        self.nodes[i].id = id;
    }

    /// Runs the simulation to its end.
    pub(crate) fn run(&mut self) -> Outcome {
        let started = std::time::Instant::now();
        for i in 1..=self.sc.nodes {
            self.register(i);
        }
        let n = self.sc.nodes;
        let late = ((self.sc.late * n as f64).round() as usize).min(n);
        let churn = ((self.sc.churn * n as f64).round() as usize).min(n);
        let mut order: Vec<usize> = (1..=n).collect();
        self.rng.shuffle(&mut order);
        for (k, &i) in order.iter().enumerate() {
            let start = if k < late { self.rng.u64(0..=ns(self.sc.late_window)) } else { 0 };
            self.at(start, Ev::Pull { node: i, blob: None, epoch: 0 });
        }
        // Leavers are drawn independently of late starters; each leaves at a
        // random moment within the bound's time of its start.
        self.rng.shuffle(&mut order);
        let bound = ns(Duration::from_secs_f64(self.sc.bound()));
        for &i in order.iter().take(churn) {
            let at = self.rng.u64(0..=bound.max(1));
            self.at(at, Ev::Leave { node: i });
        }
        self.at(ns(HEARTBEAT), Ev::Heartbeats);
        let horizon = ns(self.sc.horizon);
        // A line on stderr every half minute of wall time: a large run shows how far it got.
        let (mut steps, mut said) = (0u64, std::time::Instant::now());
        loop {
            steps += 1;
            if steps % 4096 == 0 && said.elapsed() >= PROGRESS_EVERY {
                said = std::time::Instant::now();
                eprintln!(
                    "damselfly-sim: {:.1} s simulated in {:.0} s of wall time; {} of {} agents done or gone; {} joins planned",
                    self.now as f64 / 1e9,
                    started.elapsed().as_secs_f64(),
                    self.sc.nodes - self.remaining,
                    self.sc.nodes,
                    self.tally.join_cpu.len()
                );
            }
            let next_event = self.events.peek().map(|Reverse((t, _, _))| *t);
            let next_end = self.net.next_end();
            let next = [next_event, next_end].into_iter().flatten().min();
            // New and ended flows get their rates before anything later happens.
            if let Some(due) = self.net.allocation_due() {
                if next.is_none_or(|t| due <= t) {
                    self.count_seed_until(self.now.max(due));
                    self.now = self.now.max(due);
                    self.net.allocate(self.now);
                    continue;
                }
            }
            let Some(t) = next else { break };
            if t > horizon || self.finished() {
                break;
            }
            self.count_seed_until(t);
            self.now = t;
            self.clock.nanos.store(t, Ordering::Relaxed);
            if next_end == Some(t) && next_event.is_none_or(|e| e >= t) {
                if let Some((tag, bytes)) = self.net.finish_next() {
                    self.flow_ended(tag, bytes);
                }
            } else if let Some(Reverse((_, _, ev))) = self.events.pop() {
                self.handle(ev);
            }
            while let Some(dl) = self.ready.pop() {
                self.pump(dl);
            }
        }
        self.tally.wall = started.elapsed();
        self.tally.rate_allocations = self.net.allocations;
        Outcome::from_world(self)
    }

    /// Counts what the seed's flows sent from the last count until `until`,
    /// at their rates of now, per 100 ms and blob (only for the piece log).
    fn count_seed_until(&mut self, until: Nanos) {
        const STEP: Nanos = 100_000_000;
        if self.tally.seed_steps.is_none() || until <= self.seed_mark {
            return;
        }
        let blob_of = |tag: u64| -> usize {
            let id = (tag & 0xffff_ffff) as usize;
            match tag >> 32 {
                1 => self.dls[self.tasks[id].dl].blob,
                _ => self.dls[self.batches[id].dl].blob,
            }
        };
        let flows: Vec<(usize, f64)> = self.net.uplink(SEED).map(|(tag, rate)| (blob_of(tag), rate)).collect();
        let steps = self.tally.seed_steps.as_mut().expect("counted");
        let mut from = self.seed_mark;
        while from < until {
            let to = until.min((from / STEP + 1) * STEP);
            for &(blob, rate) in &flows {
                *steps.entry((from / STEP, blob)).or_default() += rate * (to - from) as f64 / 1e9;
            }
            from = to;
        }
        self.seed_mark = until;
    }

    /// Writes the piece log as the agents' logs would say it, one file per
    /// agent (`agent-<k>.log`, agent k being node k + 1), so that
    /// `scripts/swarm-timeline.py` reads a simulation like a benchmark run.
    pub(crate) fn write_piece_log(&self, dir: &std::path::Path) -> std::io::Result<()> {
        use std::fmt::Write as _;
        std::fs::create_dir_all(dir)?;
        let mut files: Vec<String> = vec![String::new(); self.nodes.len()];
        // A calendar day from midnight: the timestamps parse as ISO 8601.
        let stamp = |t: Nanos| {
            let (secs, micros) = (t / 1_000_000_000, (t % 1_000_000_000) / 1000);
            format!("2026-01-01T{:02}:{:02}:{:02}.{micros:06}Z", secs / 3600, secs / 60 % 60, secs % 60)
        };
        for (node, id) in self.tally.registrations.iter().flatten() {
            let _ = writeln!(
                files[*node],
                "{}  INFO damselfly_agent: registered with the registry agent_id=\"{id}\"",
                stamp(0)
            );
        }
        for p in self.tally.piece_log.iter().flatten() {
            let millis = (p.ended - p.started) / 1_000_000;
            let _ = writeln!(
                files[p.node],
                "{}  DEBUG damselfly_agent::piece::fetch: piece verified digest={} piece={} from=\"{}\" millis={millis}",
                stamp(p.ended),
                self.blobs[p.blob].digest,
                p.piece,
                p.from
            );
        }
        for (node, text) in files.iter().enumerate().skip(1) {
            std::fs::write(dir.join(format!("agent-{}.log", node - 1)), text)?;
        }
        // The registry's scheduler log (its `debug` lines of seed hand-outs), in its JSON form.
        let mut registry = String::new();
        for (t, agent, blob, pieces) in self.tally.handouts.iter().flatten() {
            let pieces = pieces.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
            let _ = writeln!(
                registry,
                r#"{{"timestamp":"{}","level":"DEBUG","message":"seed pieces handed out","digest":"{}","agent":"{agent}","pieces":"[{pieces}]","target":"damselfly_registry::p2p::scheduler::seed"}}"#,
                stamp(*t),
                self.blobs[*blob].digest,
            );
        }
        std::fs::write(dir.join("registry.log"), registry)?;
        // What the seed's link sent, per 100 ms and blob: step, blob, bytes.
        let mut seed = String::from("step\tblob\tbytes\n");
        for ((step, blob), bytes) in self.tally.seed_steps.iter().flatten() {
            let _ = writeln!(seed, "{step}\t{blob}\t{bytes:.0}");
        }
        std::fs::write(dir.join("seed-link.tsv"), seed)?;
        Ok(())
    }

    /// Every node that is still around has its image.
    fn finished(&self) -> bool {
        self.remaining == 0
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Pull { node, blob, epoch } => self.pull(node, blob, epoch),
            Ev::JoinAt { dl, gen } => self.join_at_registry(dl, gen),
            Ev::JoinTimeout { dl, gen } => self.join_timeout(dl, gen),
            Ev::JoinBack { dl, gen } => self.join_back(dl, gen),
            Ev::ReportAt { dl, gen } => self.report_at_registry(dl, gen),
            Ev::ReportBack { dl, gen } => self.report_back(dl, gen),
            Ev::Tick { dl, gen } => self.tick(dl, gen),
            Ev::PieceAt { task, gen } => self.piece_at_source(task, gen),
            Ev::PieceBack { task, gen } => self.piece_back(task, gen),
            Ev::FeedAt { feed, gen } => self.feed_at_parent(feed, gen),
            Ev::FeedBack { feed, gen, piece } => self.feed_back(feed, gen, piece),
            Ev::BatchAt { batch, gen } => self.batch_at_seed(batch, gen),
            Ev::BatchBack { batch, gen, piece } => self.batch_back(batch, gen, piece),
            Ev::Wake { dl } => self.ready.push(dl),
            Ev::Leave { node } => self.leave(node),
            Ev::Return { node } => self.come_back(node),
            Ev::Heartbeats => {
                let alive: Vec<String> = self.nodes.iter().skip(1).filter(|n| n.alive).map(|n| n.id.clone()).collect();
                for id in alive {
                    self.scheduler.heartbeat_from(CLUSTER, &id);
                }
                self.scheduler.expire();
                self.after(ns(HEARTBEAT), Ev::Heartbeats);
            }
        }
    }

    /// A flow's last byte left its sender.
    fn flow_ended(&mut self, tag: u64, bytes: u64) {
        let (kind, id) = (tag >> 32, (tag & 0xffff_ffff) as usize);
        match kind {
            1 => self.piece_sent(id, bytes),
            2 => self.feed_piece_sent(id, bytes),
            _ => self.batch_piece_sent(id, bytes),
        }
    }

    /// Counts `bytes` sent from `from` to `to`.
    pub(crate) fn count_bytes(&mut self, from: usize, to: usize, bytes: u64) {
        if from == SEED {
            self.tally.seed_bytes += bytes;
            self.tally.seed_last = self.now;
        } else {
            self.tally.peer_bytes += bytes;
        }
        if self.nodes[from].zone != self.nodes[to].zone {
            self.tally.cross_zone_bytes += bytes;
        }
    }

    // The registry.

    /// A join reaches the registry: the scheduler plans, and the routes hold
    /// an idle plan open for as long as the agent asked.
    fn join_at_registry(&mut self, dl: usize, gen: u32) {
        let d = &self.dls[dl];
        if d.over || d.gen != gen || d.blocked != Some(Block::Join) {
            return;
        }
        let node = d.node;
        if !self.nodes[node].alive {
            return;
        }
        if self.scheduler.agent(CLUSTER, &self.nodes[node].id).is_none() {
            // AGENT_UNKNOWN: the agent registers again and asks for everything.
            self.tally.reregistrations += 1;
            self.register(node);
            self.dls[dl].join_brief = false;
        }
        let id = self.nodes[node].id.clone();
        let (uploading, fetching) = (self.nodes[node].uploads, self.dls[dl].join_fetching);
        self.scheduler.load(CLUSTER, &id, Some(uploading), fetching);
        let plan = self.plan(dl);
        let wait = self.dls[dl].join_wait.unwrap_or(0).min(MAX_JOIN_WAIT_MS);
        if plan.is_idle() && wait > 0 {
            self.dls[dl].held_plan = Some(plan);
            self.held.push(dl);
            self.after(ns(Duration::from_millis(u64::from(wait))), Ev::JoinTimeout { dl, gen });
        } else {
            self.answer(dl, plan);
        }
    }

    /// The scheduler's plan for the download's join on its way, timed.
    fn plan(&mut self, dl: usize) -> Plan {
        let d = &self.dls[dl];
        let (blob, id) = (&self.blobs[d.blob], &self.nodes[d.node].id);
        let cpu = cpu_now();
        let plan = self.scheduler.join(CLUSTER, id, blob.digest, blob.shape(), &d.join_have);
        let spent = cpu_now().saturating_sub(cpu);
        self.tally.join_cpu.push(spent.min(u64::from(u32::MAX)) as u32);
        plan
    }

    fn join_timeout(&mut self, dl: usize, gen: u32) {
        if self.dls[dl].gen != gen {
            return;
        }
        if let Some(at) = self.held.iter().position(|&h| h == dl) {
            self.held.swap_remove(at);
            if let Some(plan) = self.dls[dl].held_plan.take() {
                self.answer(dl, plan);
            }
        }
    }

    /// Sends the join's answer on its way back to the agent.
    fn answer(&mut self, dl: usize, plan: Plan) {
        let d = &self.dls[dl];
        let blob = &self.blobs[d.blob];
        let brief = d.join_brief;
        self.tally.joins_answered += 1;
        let answer = JoinResponse {
            mode: JoinMode::P2p,
            size: blob.size,
            piece_size: blob.piece_size,
            piece_digests: Vec::new(),
            parents: plan.parents,
            seed_pieces: plan.seed_pieces,
            availability: plan.availability,
            seed_url: String::new(),
            ticket: if brief { String::new() } else { "ticket".into() },
            ticket_expires_in: if brief { 0 } else { TICKET_SECS },
            feeds: plan.feeds,
            queued: plan.queued,
        };
        let (node, gen) = (d.node, d.gen);
        if let Some(log) = self.tally.handouts.as_mut() {
            let handed = &mut self.dls[dl].handed;
            let new: Vec<u32> = answer.seed_pieces.iter().copied().filter(|i| !handed.contains(i)).collect();
            if !new.is_empty() {
                handed.extend(&new);
                log.push((self.now, self.nodes[node].id.clone(), self.dls[dl].blob, new));
            }
        }
        self.dls[dl].answer = Some(answer);
        let back = self.one_way(node, SEED);
        self.after(back, Ev::JoinBack { dl, gen });
    }

    /// A report reaches the registry; one that changes things wakes the held joins.
    fn report_at_registry(&mut self, dl: usize, gen: u32) {
        let d = &mut self.dls[dl];
        if d.gen != gen {
            return;
        }
        let Some(report) = d.report.take() else { return };
        let node = d.node;
        let cpu = cpu_now();
        let known = self.scheduler.agent(CLUSTER, &report.agent_id).is_some();
        let changed = known && self.scheduler.report(CLUSTER, &report);
        let spent = cpu_now().saturating_sub(cpu);
        self.tally.report_cpu_ns += spent;
        self.tally.reports += 1;
        if changed {
            self.wake_held();
        }
        let back = self.one_way(node, SEED);
        self.after(back, Ev::ReportBack { dl, gen });
    }

    /// Plans every held join again; those with something to fetch are answered.
    fn wake_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        for dl in held {
            if self.dls[dl].over || !self.nodes[self.dls[dl].node].alive {
                continue;
            }
            let plan = self.plan(dl);
            if plan.is_idle() {
                self.dls[dl].held_plan = Some(plan);
                self.held.push(dl);
            } else {
                self.dls[dl].held_plan = None;
                self.answer(dl, plan);
            }
        }
    }
}
