//! The simulated agents. What a download decides (which piece from whom,
//! when to join, when a feed lags, when to give up) is the agent's own
//! code, `damselfly_agent::schedule::Schedule`, driven on the virtual clock.
//! What a download does is modelled here after `agent/src/piece/fetch.rs`,
//! `feed.rs`, `slots.rs` and `agent/src/peer.rs`:
//!
//! - the fetch loop runs one thing at a time: while it waits for a join or
//!   a report to come back, arrivals queue up and no new fetch starts;
//! - seed pieces start at once and take a fetch slot regardless; peer
//!   fetches wait for one of the node's fetch slots, at most four per blob;
//! - a tick every 200 ms reports, joins if the schedule wants to, and looks
//!   for a stall; a seed piece that arrives, or a busy parent with no other
//!   source, is followed by a report and a join;
//! - a parent refuses a piece request when its upload slots are taken
//!   (busy) or it does not hold the piece (broken); an upload holds its slot
//!   until the last byte is acknowledged;
//! - a stripe feed waits up to 2 s for its parent's download to start,
//!   takes one of the parent's feed slots, and streams the stripe's pieces
//!   one after another, each as soon as the parent holds it;
//! - a killed agent's connections close: fetches from it break, a feed it
//!   streams breaks mid-piece or ends between pieces.
//!
//! Not modelled: CPU (hashing, the registry's own request handling besides
//! the scheduler), disk writes, TCP's slow start and losses (a link's
//! `efficiency` stands for its overheads), corrupt pieces and the seed
//! failing, the HTTP bodies of joins and reports (only their round trips).

use std::time::Duration;

use damselfly_agent::schedule::{Failure, FeedChange, Schedule, Source, REJOIN_AT_LEAST};
use damselfly_core::p2p::{stripe_of, ReportRequest};

use crate::world::{ns, Action, Block, Dl, Ev, Feed, FeedWhat, Input, Task, World, SEED};

/// Pieces fetched at once per blob (`PARALLEL` in the agent's fetch loop).
const PARALLEL: usize = 4;
/// The fetch loop's tick (`REPORT_EVERY` in the agent's fetch loop).
const REPORT_EVERY: Duration = Duration::from_millis(200);
/// How long a feed request waits for the parent's download to start (`FEED_START_WAIT`).
const FEED_START_WAIT: Duration = Duration::from_secs(2);
/// How often the parent looks meanwhile.
const FEED_START_POLL: Duration = Duration::from_millis(50);
/// A feed's end, in a `FeedBack` event.
const FEED_ENDED: u32 = u32::MAX;
/// A feed's refusal (see `Feed::refusal`), in a `FeedBack` event.
const FEED_REFUSED: u32 = u32::MAX - 1;

fn tag(kind: u64, id: usize) -> u64 {
    kind << 32 | id as u64
}

impl World<'_> {
    /// A node's client asks for its image (or for one blob of it again):
    /// each blob it neither holds nor fetches gets a download, which joins.
    pub(crate) fn pull(&mut self, node: usize, blob: Option<usize>, epoch: u32) {
        let n = &mut self.nodes[node];
        if !n.alive || n.epoch != epoch {
            return;
        }
        n.started.get_or_insert(self.now);
        let Some(b) = blob else {
            // The client asks for every blob at once, give or take its start-up.
            for b in n.wants.clone() {
                let after = self.rng.u64(0..=ns(self.sc.start_spread));
                self.after(after, Ev::Pull { node, blob: Some(b), epoch });
            }
            return;
        };
        {
            let hold = &self.nodes[node].hold[b];
            if hold.complete || hold.dl.is_some() {
                self.check_done(node);
                return;
            }
            let stripes = self.sc.stripes;
            let dl = self.dls.len();
            self.dls.push(Dl {
                node,
                blob: b,
                schedule: None,
                over: false,
                blocked: None,
                gen: 0,
                actions: Default::default(),
                inbox: Default::default(),
                tasks: Vec::new(),
                batches: 0,
                batch_ids: Vec::new(),
                wake_at: None,
                waiting_slot: false,
                feeds: vec![None; stripes],
                tick_gen: 0,
                join_have: Vec::new(),
                join_wait: None,
                join_brief: false,
                join_fetching: None,
                answer: None,
                report: None,
                held_plan: None,
                handed: Vec::new(),
            });
            let pieces = self.blobs[b].pieces;
            let hold = &mut self.nodes[node].hold[b];
            hold.have.resize(pieces, false);
            hold.dl = Some(dl);
            // The mirror's join: nothing held (a partial blob is resumed only
            // once the download starts), not brief, no counts.
            self.send_join(dl, Vec::new(), None, false, None);
        }
        self.check_done(node);
    }

    fn send_join(&mut self, dl: usize, have: Vec<u32>, wait: Option<u32>, brief: bool, fetching: Option<u32>) {
        let d = &mut self.dls[dl];
        d.gen += 1;
        d.blocked = Some(Block::Join);
        d.join_have = have;
        d.join_wait = wait;
        d.join_brief = brief;
        d.join_fetching = fetching;
        let (gen, node) = (d.gen, d.node);
        self.tally.joins_sent += 1;
        let there = self.one_way(node, SEED) + self.service(true);
        self.after(there, Ev::JoinAt { dl, gen });
    }

    /// A join's answer arrives: the download starts, or its schedule takes the new plan.
    pub(crate) fn join_back(&mut self, dl: usize, gen: u32) {
        let now = self.instant();
        let d = &mut self.dls[dl];
        if d.over || d.gen != gen || d.blocked != Some(Block::Join) {
            return;
        }
        d.blocked = None;
        let Some(answer) = d.answer.take() else { return };
        match d.schedule.as_mut() {
            Some(s) => s.planned(answer, now),
            None => {
                let have = self.nodes[d.node].hold[d.blob].have.clone();
                d.schedule = Some(Schedule::new(answer, have, now));
                // tokio's interval ticks at once, then every period.
                d.inbox.push_back(Input::Tick);
            }
        }
        self.follow_feeds(dl);
        self.ready.push(dl);
    }

    pub(crate) fn report_back(&mut self, dl: usize, gen: u32) {
        let d = &mut self.dls[dl];
        if d.over || d.gen != gen || d.blocked != Some(Block::Report) {
            return;
        }
        d.blocked = None;
        self.ready.push(dl);
    }

    pub(crate) fn tick(&mut self, dl: usize, gen: u32) {
        let d = &mut self.dls[dl];
        if d.over || d.tick_gen != gen {
            return;
        }
        d.inbox.push_back(Input::Tick);
        self.ready.push(dl);
    }

    /// Runs the download's fetch loop until it waits for something.
    pub(crate) fn pump(&mut self, dl: usize) {
        loop {
            let d = &self.dls[dl];
            if d.over || d.blocked.is_some() || d.schedule.is_none() {
                return;
            }
            if let Some(action) = self.dls[dl].actions.pop_front() {
                self.act(dl, action);
                continue;
            }
            let now = self.instant();
            let d = &self.dls[dl];
            let node = d.node;
            let Some(s) = d.schedule.as_ref() else { return };
            if s.missing().is_empty() {
                self.dls[dl].actions.extend([Action::Flush, Action::Finish]);
                continue;
            }
            // Seed pieces go at once, in one request, with a slot of their own.
            let batch = self.dls[dl].schedule.as_ref().map(|s| s.next_seed_batch(now)).unwrap_or_default();
            if !batch.is_empty() {
                self.nodes[node].fetching += 1;
                self.start_batch(dl, batch);
            }
            let d = &self.dls[dl];
            let want = d.tasks.len() < PARALLEL && d.schedule.as_ref().is_some_and(|s| s.next_piece(now).is_some());
            if want && self.nodes[node].fetching < self.sc.fetch_slots {
                self.unwait(dl);
                self.nodes[node].fetching += 1;
                match self.dls[dl].schedule.as_ref().and_then(|s| s.next_piece(now)) {
                    Some((i, source)) => self.start_fetch(dl, i, source),
                    None => self.release_slot(node),
                }
                continue;
            }
            if want && !self.dls[dl].waiting_slot {
                self.dls[dl].waiting_slot = true;
                self.nodes[node].waiters.push_back(dl);
            } else if !want && self.dls[dl].waiting_slot {
                self.unwait(dl);
                self.offer_slot(node);
            }
            // The timer that reports a seed piece's arrival as soon as a join is due.
            if let Some(at) = self.dls[dl].schedule.as_ref().and_then(|s| s.seed_join_at()) {
                if at <= now {
                    self.dls[dl].actions.extend([Action::Flush, Action::Rejoin(REJOIN_AT_LEAST, None)]);
                    continue;
                }
                let at = self.now + ns(at.duration_since(now));
                if self.dls[dl].wake_at != Some(at) {
                    self.dls[dl].wake_at = Some(at);
                    self.at(at, Ev::Wake { dl });
                }
            }
            match self.dls[dl].inbox.pop_front() {
                Some(input) => self.take(dl, input),
                None => return,
            }
        }
    }

    fn unwait(&mut self, dl: usize) {
        if std::mem::take(&mut self.dls[dl].waiting_slot) {
            let node = self.dls[dl].node;
            self.nodes[node].waiters.retain(|&w| w != dl);
        }
    }

    /// A fetch slot of the node was given back.
    fn release_slot(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.fetching = n.fetching.saturating_sub(1);
        self.offer_slot(node);
    }

    /// Wakes the first download waiting for a slot, if one is free.
    fn offer_slot(&mut self, node: usize) {
        if self.nodes[node].fetching >= self.sc.fetch_slots {
            return;
        }
        let dls = &self.dls;
        if let Some(&w) = self.nodes[node].waiters.iter().find(|&&w| dls[w].blocked.is_none() && !dls[w].over) {
            self.ready.push(w);
        }
    }

    /// One step of the fetch loop, after a `select!` took `input`.
    fn take(&mut self, dl: usize, input: Input) {
        let now = self.instant();
        match input {
            Input::Tick => {
                let d = &mut self.dls[dl];
                d.tick_gen += 1;
                let gen = d.tick_gen;
                let idle = d.schedule.as_ref().is_some_and(|s| s.idle(!d.tasks.is_empty() || d.batches > 0, now));
                d.actions.extend([Action::Flush, Action::WantedJoin(idle), Action::AfterTick(idle)]);
                self.after(ns(REPORT_EVERY), Ev::Tick { dl, gen });
            }
            Input::Task(task) => {
                let t = &mut self.tasks[task];
                let (i, source, result, started) = (t.piece, t.source.clone(), t.result.take(), t.started);
                self.free_task(task);
                self.dls[dl].tasks.retain(|&x| x != task);
                let busy = matches!(result, Some(Err(Failure::Busy)));
                if let Some(s) = self.dls[dl].schedule.as_mut() {
                    s.ended(i);
                }
                match result {
                    Some(Ok(())) => {
                        let len = self.blobs[self.dls[dl].blob].piece_len(i);
                        self.keep(dl, i, source, len, started);
                    }
                    Some(Err(failure)) => {
                        if let Some(s) = self.dls[dl].schedule.as_mut() {
                            s.failed(source, &failure, now);
                        }
                    }
                    None => {}
                }
                let verdict = self.dls[dl].schedule.as_ref().map(|s| s.seed_verdict());
                if let Some(Err(_)) = verdict {
                    self.fail(dl);
                    return;
                }
                let none_left = self.dls[dl].schedule.as_ref().is_none_or(|s| s.next_piece(now).is_none());
                if busy && none_left {
                    self.dls[dl].actions.extend([Action::Flush, Action::Rejoin(REJOIN_AT_LEAST, None)]);
                }
            }
            Input::Seed(Some(i)) => {
                let len = self.blobs[self.dls[dl].blob].piece_len(i);
                let Some(s) = self.dls[dl].schedule.as_mut() else { return };
                s.ended(i);
                // Stored already: the batch wrote it the moment it was whole.
                if !s.has(i) {
                    s.kept(i, &Source::Seed, len, now);
                }
            }
            Input::Seed(None) => {
                let node = self.dls[dl].node;
                self.dls[dl].batches -= 1;
                self.release_slot(node);
            }
            Input::Feed { stripe, parent, what } => {
                let Some(s) = self.dls[dl].schedule.as_mut() else { return };
                match what {
                    FeedWhat::Piece(i) => {
                        s.feed_brought(stripe, &parent, now);
                        let len = self.blobs[self.dls[dl].blob].piece_len(i);
                        // The agent times a feed's piece from its arrival, as here.
                        self.keep(dl, i, Source::Parent { id: parent, url: String::new() }, len, self.now);
                    }
                    FeedWhat::Ended => s.feed_ended(stripe, &parent),
                    FeedWhat::Unknown => s.feed_unknown(stripe, &parent),
                    FeedWhat::Busy => {
                        s.feed_busy(stripe, &parent, now);
                    }
                    FeedWhat::Broken => {
                        s.feed_broke(stripe, &parent, now);
                    }
                }
            }
        }
    }

    /// Does what the fetch loop does between two `select!`s.
    fn act(&mut self, dl: usize, action: Action) {
        let now = self.instant();
        let node = self.dls[dl].node;
        match action {
            Action::Flush => {
                let Some(s) = self.dls[dl].schedule.as_mut() else { return };
                if !s.owes() {
                    return;
                }
                let owed = s.take_owed();
                let report = ReportRequest {
                    agent_id: self.nodes[node].id.clone(),
                    digest: self.blobs[self.dls[dl].blob].digest,
                    have: owed.have,
                    failed_parents: owed.failed,
                    bad_parents: owed.bad,
                    bytes_from: owed.bytes_from.into_iter().collect(),
                    uploading: Some(self.nodes[node].uploads),
                };
                let d = &mut self.dls[dl];
                d.report = Some(report);
                d.gen += 1;
                d.blocked = Some(Block::Report);
                let gen = d.gen;
                let there = self.one_way(node, SEED) + self.service(false);
                self.after(there, Ev::ReportAt { dl, gen });
            }
            Action::Rejoin(at_least, wait) => {
                let Some(s) = self.dls[dl].schedule.as_mut() else { return };
                if !s.join_due(at_least, now) {
                    return;
                }
                let brief = s.joining(now);
                let hold = &self.nodes[node].hold[self.dls[dl].blob];
                let have: Vec<u32> = (0..hold.have.len() as u32).filter(|&i| hold.have[i as usize]).collect();
                let fetching = Some(self.nodes[node].fetching);
                self.send_join(dl, have, wait, brief, fetching);
            }
            Action::WantedJoin(idle) => {
                let slot_free = self.nodes[node].fetching < self.sc.fetch_slots;
                let wanted = self.dls[dl].schedule.as_ref().and_then(|s| s.wanted_join(idle, slot_free, now));
                if let Some((every, wait)) = wanted {
                    self.act(dl, Action::Rejoin(every, wait));
                }
            }
            Action::AfterTick(idle) => {
                let Some(s) = self.dls[dl].schedule.as_mut() else { return };
                match s.after_tick(idle, now) {
                    Err(_) => self.fail(dl),
                    Ok(Some(_)) => self.tally.stall_asks += 1,
                    Ok(None) => {}
                }
            }
            Action::Finish => self.complete(dl),
        }
    }

    /// Keeps a verified piece: the node holds it, feeds waiting for it go on.
    fn keep(&mut self, dl: usize, i: u32, source: Source, len: u64, started: u64) {
        let now = self.instant();
        let d = &mut self.dls[dl];
        let Some(s) = d.schedule.as_mut() else { return };
        if s.has(i) {
            self.tally.duplicate_pieces += 1;
            return;
        }
        s.kept(i, &source, len, now);
        if let Some(log) = self.tally.piece_log.as_mut() {
            let from = match &source {
                Source::Seed => "seed".to_owned(),
                Source::Parent { id, .. } => id.clone(),
            };
            log.push(crate::outcome::PieceLogged {
                node: d.node,
                blob: d.blob,
                piece: i,
                from,
                started,
                ended: self.now,
            });
        }
        let (node, blob) = (d.node, d.blob);
        self.nodes[node].hold[blob].have[i as usize] = true;
        self.wake_feeds(node, blob);
    }

    fn wake_feeds(&mut self, node: usize, blob: usize) {
        let waiting = std::mem::take(&mut self.nodes[node].hold[blob].waiting_feeds);
        for f in waiting {
            self.send_next(f);
        }
    }

    /// The blob is whole and verified: the download ends and the node serves it from its cache.
    fn complete(&mut self, dl: usize) {
        let (node, blob) = (self.dls[dl].node, self.dls[dl].blob);
        self.end_dl(dl);
        let hold = &mut self.nodes[node].hold[blob];
        hold.complete = true;
        self.wake_feeds(node, blob);
        self.check_done(node);
    }

    /// The download gave up: the client pulls the blob again a moment later.
    fn fail(&mut self, dl: usize) {
        let (node, blob) = (self.dls[dl].node, self.dls[dl].blob);
        self.tally.failed_pulls += 1;
        self.end_dl(dl);
        // Feeds waiting on this download end: there is nothing more to come.
        self.wake_feeds(node, blob);
        let epoch = self.nodes[node].epoch;
        self.after(ns(crate::world::RETRY_AFTER), Ev::Pull { node, blob: Some(blob), epoch });
    }

    /// Stops a download's fetches and feeds; the node no longer runs it.
    fn end_dl(&mut self, dl: usize) {
        let d = &mut self.dls[dl];
        if d.over {
            return;
        }
        d.over = true;
        d.inbox.clear();
        d.actions.clear();
        d.schedule = None;
        d.answer = None;
        let (node, blob) = (d.node, d.blob);
        let tasks = std::mem::take(&mut d.tasks);
        let feeds: Vec<usize> = d.feeds.iter_mut().filter_map(Option::take).collect();
        self.unwait(dl);
        self.held.retain(|&h| h != dl);
        for task in tasks {
            self.abort_task(task);
        }
        for f in feeds {
            self.close_feed(f);
        }
        let running = std::mem::take(&mut self.dls[dl].batches);
        self.abort_batches(dl);
        for _ in 0..running {
            self.release_slot(node);
        }
        if self.nodes[node].hold[blob].dl == Some(dl) {
            self.nodes[node].hold[blob].dl = None;
        }
    }

    fn check_done(&mut self, node: usize) {
        let n = &self.nodes[node];
        if n.done.is_none() && n.started.is_some() && n.wants.iter().all(|&b| n.hold[b].complete) {
            self.nodes[node].done = Some(self.now);
            self.remaining -= 1;
        }
    }

    // Piece fetches.

    fn new_task(&mut self, task: Task) -> usize {
        match self.free_tasks.pop() {
            Some(id) => {
                let gen = self.tasks[id].gen + 1;
                self.tasks[id] = Task { gen, ..task };
                id
            }
            None => {
                self.tasks.push(task);
                self.tasks.len() - 1
            }
        }
    }

    fn free_task(&mut self, task: usize) {
        let t = &mut self.tasks[task];
        t.live = false;
        t.gen += 1;
        self.free_tasks.push(task);
    }

    /// Starts fetching piece `i` from `source`; the caller took the node's fetch slot.
    fn start_fetch(&mut self, dl: usize, i: u32, source: Source) {
        let node = self.dls[dl].node;
        if let Some(s) = self.dls[dl].schedule.as_mut() {
            s.started(i, source.clone());
        }
        let from = match &source {
            Source::Seed => Some(SEED),
            Source::Parent { id, .. } => self.ids.get(id).copied(),
        };
        let task = self.new_task(Task {
            dl,
            piece: i,
            source,
            from: from.unwrap_or(SEED),
            from_epoch: from.map_or(0, |f| self.nodes[f].epoch),
            flow: None,
            upload_held: false,
            result: None,
            started: self.now,
            gen: 0,
            live: true,
        });
        self.dls[dl].tasks.push(task);
        let gen = self.tasks[task].gen;
        match from {
            Some(from) => {
                let there = self.one_way(node, from);
                self.after(there, Ev::PieceAt { task, gen });
            }
            // An agent that registered again under a new id: its old id leads nowhere.
            None => self.refuse(task, Failure::Broken("unknown parent".into())),
        }
    }

    /// The request reaches its source, which sends the piece or refuses.
    pub(crate) fn piece_at_source(&mut self, task: usize, gen: u32) {
        let t = &self.tasks[task];
        if !t.live || t.gen != gen {
            return;
        }
        let (from, dl, i) = (t.from, t.dl, t.piece);
        let (node, blob) = (self.dls[dl].node, self.dls[dl].blob);
        if from != SEED {
            let parent = &self.nodes[from];
            if !parent.alive || parent.epoch != t.from_epoch {
                return self.refuse(task, Failure::Broken("connection refused".into()));
            }
            if parent.uploads >= self.sc.upload_slots {
                self.tally.busy_answers += 1;
                return self.refuse(task, Failure::Busy);
            }
            let hold = &parent.hold[blob];
            if !(hold.complete || hold.have.get(i as usize) == Some(&true)) {
                return self.refuse(task, Failure::Broken("answered 404".into()));
            }
            self.nodes[from].uploads += 1;
            self.tasks[task].upload_held = true;
        }
        let len = self.blobs[blob].piece_len(i);
        let (fz, nz) = (self.nodes[from].zone, self.nodes[node].zone);
        let flow = self.net.start(self.now, from, fz, node, nz, len, tag(1, task));
        self.tasks[task].flow = Some(flow);
    }

    fn refuse(&mut self, task: usize, failure: Failure) {
        let t = &mut self.tasks[task];
        t.result = Some(Err(failure));
        let (gen, from, node) = (t.gen, t.from, self.dls[t.dl].node);
        let back = self.one_way(from, node);
        self.after(back, Ev::PieceBack { task, gen });
    }

    /// The piece's last byte left its source.
    pub(crate) fn piece_sent(&mut self, task: usize, bytes: u64) {
        let t = &mut self.tasks[task];
        if !t.live {
            return;
        }
        t.flow = None;
        t.result = Some(Ok(()));
        let (gen, from, node) = (t.gen, t.from, self.dls[t.dl].node);
        self.count_bytes(from, node, bytes);
        let back = self.one_way(from, node);
        self.after(back, Ev::PieceBack { task, gen });
    }

    /// The piece (or the refusal) reached the requester: the fetch task ends.
    pub(crate) fn piece_back(&mut self, task: usize, gen: u32) {
        let t = &mut self.tasks[task];
        if !t.live || t.gen != gen {
            return;
        }
        let (dl, from) = (t.dl, t.from);
        if std::mem::take(&mut t.upload_held) && self.nodes[from].epoch == t.from_epoch {
            self.nodes[from].uploads = self.nodes[from].uploads.saturating_sub(1);
        }
        let node = self.dls[dl].node;
        self.release_slot(node);
        self.dls[dl].inbox.push_back(Input::Task(task));
        self.ready.push(dl);
    }

    /// The requester's download ended: its fetch stops.
    fn abort_task(&mut self, task: usize) {
        let t = &mut self.tasks[task];
        if !t.live {
            return;
        }
        let (from, node, flow) = (t.from, self.dls[t.dl].node, t.flow.take());
        if std::mem::take(&mut t.upload_held) && self.nodes[from].epoch == t.from_epoch {
            self.nodes[from].uploads = self.nodes[from].uploads.saturating_sub(1);
        }
        if let Some(flow) = flow {
            let bytes = self.net.stop(self.now, flow);
            self.count_bytes(from, node, bytes);
        }
        self.free_task(task);
        if self.nodes[node].alive {
            self.release_slot(node);
        }
    }

    // Seed batches.

    /// Starts a request for `pieces` from the seed; the caller took the node's fetch slot.
    fn start_batch(&mut self, dl: usize, pieces: Vec<u32>) {
        let node = self.dls[dl].node;
        if let Some(s) = self.dls[dl].schedule.as_mut() {
            for &i in &pieces {
                s.started(i, Source::Seed);
            }
        }
        self.dls[dl].batches += 1;
        let mut left = pieces;
        left.reverse();
        let gen = self.batches.len() as u32;
        self.batches.push(crate::world::Batch { dl, left, sending: None, started: self.now, gen, live: true });
        let batch = self.batches.len() - 1;
        self.dls[dl].batch_ids.push(batch);
        // The seed's route takes the registry's time before its first byte, as a join does.
        let there = self.one_way(node, SEED) + self.service(true);
        self.after(there, Ev::BatchAt { batch, gen });
    }

    /// The request reaches the seed: its first piece leaves.
    pub(crate) fn batch_at_seed(&mut self, batch: usize, gen: u32) {
        let b = &self.batches[batch];
        if !b.live || b.gen != gen {
            return;
        }
        self.batch_next(batch);
    }

    /// The seed sends the batch's next piece, right after the last.
    fn batch_next(&mut self, batch: usize) {
        let b = &mut self.batches[batch];
        let (dl, gen) = (b.dl, b.gen);
        let node = self.dls[dl].node;
        match b.left.pop() {
            Some(i) => {
                let len = self.blobs[self.dls[dl].blob].piece_len(i);
                let (sz, nz) = (self.nodes[SEED].zone, self.nodes[node].zone);
                let flow = self.net.start(self.now, SEED, sz, node, nz, len, tag(3, batch));
                self.batches[batch].sending = Some((i, flow));
            }
            None => {
                let back = self.one_way(SEED, node);
                self.after(back, Ev::BatchBack { batch, gen, piece: FEED_ENDED });
            }
        }
    }

    /// A piece of the batch left the seed: it reaches the agent a moment later, and the next follows.
    pub(crate) fn batch_piece_sent(&mut self, batch: usize, bytes: u64) {
        let b = &mut self.batches[batch];
        let Some((i, _)) = b.sending.take() else { return };
        let (dl, gen) = (b.dl, b.gen);
        let node = self.dls[dl].node;
        self.count_bytes(SEED, node, bytes);
        let back = self.one_way(SEED, node);
        self.after(back, Ev::BatchBack { batch, gen, piece: i });
        self.batch_next(batch);
    }

    /// A piece of the batch reaches the agent: the batch stores it at once
    /// and tells the fetch loop; or the batch has ended.
    pub(crate) fn batch_back(&mut self, batch: usize, gen: u32, piece: u32) {
        let b = &self.batches[batch];
        if !b.live || b.gen != gen {
            return;
        }
        let (dl, started) = (b.dl, b.started);
        let (node, blob) = (self.dls[dl].node, self.dls[dl].blob);
        if piece == FEED_ENDED {
            self.batches[batch].live = false;
        } else {
            let hold = &mut self.nodes[node].hold[blob];
            if !hold.have[piece as usize] {
                hold.have[piece as usize] = true;
                if let Some(log) = self.tally.piece_log.as_mut() {
                    log.push(crate::outcome::PieceLogged {
                        node,
                        blob,
                        piece,
                        from: "seed".into(),
                        started,
                        ended: self.now,
                    });
                }
                self.batches[batch].started = self.now;
                self.wake_feeds(node, blob);
            }
        }
        self.dls[dl].inbox.push_back(Input::Seed((piece != FEED_ENDED).then_some(piece)));
        self.ready.push(dl);
    }

    /// The agent's download ended: its batch stops.
    fn abort_batches(&mut self, dl: usize) {
        for b in std::mem::take(&mut self.dls[dl].batch_ids) {
            if self.batches[b].live && self.batches[b].dl == dl {
                self.batches[b].live = false;
                if let Some((_, flow)) = self.batches[b].sending.take() {
                    let bytes = self.net.stop(self.now, flow);
                    self.count_bytes(SEED, self.dls[dl].node, bytes);
                }
            }
        }
    }

    // Stripe feeds.

    /// Opens, moves and closes the download's feeds as its schedule says.
    fn follow_feeds(&mut self, dl: usize) {
        let now = self.instant();
        let Some(s) = self.dls[dl].schedule.as_mut() else { return };
        let changes = s.feed_changes(now);
        let (stripes, had) = (s.stripes(), s.have().to_vec());
        for change in changes {
            match change {
                FeedChange::Close(stripe) => {
                    if let Some(f) = self.dls[dl].feeds.get_mut(stripe).and_then(Option::take) {
                        self.close_feed(f);
                    }
                }
                FeedChange::Open(stripe, parent) => {
                    if self.dls[dl].feeds.len() <= stripe {
                        self.dls[dl].feeds.resize(stripe + 1, None);
                    }
                    if let Some(old) = self.dls[dl].feeds[stripe].take() {
                        self.close_feed(old);
                    }
                    self.open_feed(dl, stripe, stripes, parent.agent_id, had.clone());
                }
            }
        }
    }

    fn open_feed(&mut self, dl: usize, stripe: usize, stripes: usize, parent_id: String, had: Vec<bool>) {
        let (child, blob) = (self.dls[dl].node, self.dls[dl].blob);
        let parent = self.ids.get(&parent_id).copied();
        let feed = Feed {
            dl,
            child,
            parent: parent.unwrap_or(SEED),
            parent_epoch: parent.map_or(0, |p| self.nodes[p].epoch),
            parent_id,
            blob,
            stripe,
            stripes,
            had,
            wanted: Vec::new(),
            streaming: false,
            sending: None,
            refusal: None,
            asked_at: self.now,
            gen: 0,
            live: true,
        };
        let f = match self.free_feeds.pop() {
            Some(f) => {
                let gen = self.feeds[f].gen + 1;
                self.feeds[f] = Feed { gen, ..feed };
                f
            }
            None => {
                self.feeds.push(feed);
                self.feeds.len() - 1
            }
        };
        self.dls[dl].feeds[stripe] = Some(f);
        let gen = self.feeds[f].gen;
        match parent {
            Some(p) => {
                let there = self.one_way(child, p);
                self.after(there, Ev::FeedAt { feed: f, gen });
            }
            None => self.feed_refused(f, FeedWhat::Broken),
        }
    }

    /// The feed request reaches the parent (or the parent looks again for the blob).
    pub(crate) fn feed_at_parent(&mut self, f: usize, gen: u32) {
        let feed = &self.feeds[f];
        if !feed.live || feed.gen != gen || feed.streaming {
            return;
        }
        let (parent, blob, child, stripe) = (feed.parent, feed.blob, feed.child, feed.stripe);
        let p = &self.nodes[parent];
        if !p.alive || p.epoch != feed.parent_epoch {
            return self.feed_refused(f, FeedWhat::Broken);
        }
        let hold = &p.hold[blob];
        if !(hold.complete || hold.dl.is_some()) {
            if self.now - feed.asked_at < ns(FEED_START_WAIT) {
                self.after(ns(FEED_START_POLL), Ev::FeedAt { feed: f, gen });
            } else {
                self.feed_refused(f, FeedWhat::Unknown);
            }
            return;
        }
        // One feed per child, blob and stripe: asking again replaces the feed.
        let same = self.streaming.get(&(parent, child, blob, stripe)).copied().filter(|&o| {
            let o = &self.feeds[o];
            o.live && o.streaming && o.parent == parent && o.child == child && o.blob == blob && o.stripe == stripe
        });
        if let Some(old) = same {
            self.stop_streaming(old);
        } else if self.nodes[parent].feeds_served >= self.sc.feed_slots {
            return self.feed_refused(f, FeedWhat::Busy);
        }
        self.nodes[parent].feeds_served += 1;
        self.streaming.insert((parent, child, blob, stripe), f);
        let feed = &mut self.feeds[f];
        feed.streaming = true;
        let pieces = feed.had.len() as u32;
        feed.wanted =
            (0..pieces).filter(|&i| stripe_of(i, feed.stripes) == feed.stripe && !feed.had[i as usize]).rev().collect();
        self.send_next(f);
    }

    fn feed_refused(&mut self, f: usize, what: FeedWhat) {
        let feed = &mut self.feeds[f];
        feed.refusal = Some(what);
        let (gen, child, parent) = (feed.gen, feed.child, feed.parent);
        let back = self.one_way(parent, child);
        self.after(back, Ev::FeedBack { feed: f, gen, piece: FEED_REFUSED });
    }

    /// Sends the feed's next piece if the parent holds one the child wants;
    /// else waits for the parent's next piece, or ends.
    fn send_next(&mut self, f: usize) {
        let feed = &self.feeds[f];
        if !feed.live || !feed.streaming || feed.sending.is_some() {
            return;
        }
        let (parent, blob, child) = (feed.parent, feed.blob, feed.child);
        let hold = &self.nodes[parent].hold[blob];
        // `wanted` is kept highest first, so the lowest held is found from the end.
        let next = feed.wanted.iter().rposition(|&i| hold.complete || hold.have[i as usize]);
        match next {
            Some(at) => {
                let i = self.feeds[f].wanted.remove(at);
                let len = self.blobs[blob].piece_len(i);
                let (pz, cz) = (self.nodes[parent].zone, self.nodes[child].zone);
                let flow = self.net.start(self.now, parent, pz, child, cz, len, tag(2, f));
                self.feeds[f].sending = Some((i, flow));
            }
            None if feed.wanted.is_empty() || !(hold.complete || hold.dl.is_some()) => self.end_feed(f),
            None => self.nodes[parent].hold[blob].waiting_feeds.push(f),
        }
    }

    /// The parent sent every piece it was asked for, or has nothing more to send.
    fn end_feed(&mut self, f: usize) {
        let gen = self.feeds[f].gen;
        let (parent, child) = (self.feeds[f].parent, self.feeds[f].child);
        self.stop_streaming(f);
        let back = self.one_way(parent, child);
        self.after(back, Ev::FeedBack { feed: f, gen, piece: FEED_ENDED });
    }

    /// The parent's side of the feed stops; its slot is free.
    fn stop_streaming(&mut self, f: usize) {
        let feed = &mut self.feeds[f];
        if !std::mem::take(&mut feed.streaming) {
            return;
        }
        let (parent, blob, child, epoch) = (feed.parent, feed.blob, feed.child, feed.parent_epoch);
        let key = (parent, child, blob, feed.stripe);
        if self.streaming.get(&key) == Some(&f) {
            self.streaming.remove(&key);
        }
        let feed = &mut self.feeds[f];
        if let Some((_, flow)) = feed.sending.take() {
            let bytes = self.net.stop(self.now, flow);
            self.count_bytes(parent, child, bytes);
        }
        if self.nodes[parent].epoch == epoch {
            let p = &mut self.nodes[parent];
            p.feeds_served = p.feeds_served.saturating_sub(1);
            p.hold[blob].waiting_feeds.retain(|&w| w != f);
        }
    }

    /// A feed's piece left the parent: it reaches the child a moment later, and the next follows.
    pub(crate) fn feed_piece_sent(&mut self, f: usize, bytes: u64) {
        let feed = &mut self.feeds[f];
        let Some((i, _)) = feed.sending.take() else { return };
        let (gen, parent, child) = (feed.gen, feed.parent, feed.child);
        self.count_bytes(parent, child, bytes);
        let back = self.one_way(parent, child);
        self.after(back, Ev::FeedBack { feed: f, gen, piece: i });
        self.send_next(f);
    }

    /// A feed's piece, end or refusal reaches the child's fetch loop.
    pub(crate) fn feed_back(&mut self, f: usize, gen: u32, piece: u32) {
        let feed = &self.feeds[f];
        if !feed.live || feed.gen != gen {
            return;
        }
        let (dl, stripe, parent) = (feed.dl, feed.stripe, feed.parent_id.clone());
        let what = match piece {
            FEED_ENDED => FeedWhat::Ended,
            FEED_REFUSED => feed.refusal.unwrap_or(FeedWhat::Broken),
            i => FeedWhat::Piece(i),
        };
        if piece >= FEED_REFUSED {
            // Nothing more comes on this feed.
            self.release_feed(f);
        }
        self.dls[dl].inbox.push_back(Input::Feed { stripe, parent, what });
        self.ready.push(dl);
    }

    /// The child closes its feed (a new parent, the stripe held, the download over).
    fn close_feed(&mut self, f: usize) {
        if !self.feeds[f].live {
            return;
        }
        self.stop_streaming(f);
        self.release_feed(f);
    }

    fn release_feed(&mut self, f: usize) {
        let feed = &mut self.feeds[f];
        feed.live = false;
        feed.gen += 1;
        let (dl, stripe) = (feed.dl, feed.stripe);
        if self.dls[dl].feeds.get(stripe) == Some(&Some(f)) {
            self.dls[dl].feeds[stripe] = None;
        }
        self.free_feeds.push(f);
    }

    // Churn.

    /// The node's agent is killed: its connections close, and the registry
    /// hears nothing more from it until its heartbeats lapse.
    pub(crate) fn leave(&mut self, node: usize) {
        if !self.nodes[node].alive || self.nodes[node].done.is_some() {
            return;
        }
        self.tally.leaves += 1;
        let running: Vec<usize> = self.nodes[node].hold.iter().filter_map(|h| h.dl).collect();
        for dl in running {
            self.end_dl(dl);
        }
        // Fetches from it break.
        for task in 0..self.tasks.len() {
            let t = &self.tasks[task];
            if t.live && t.from == node && t.from_epoch == self.nodes[node].epoch && t.result.is_none() {
                if let Some(flow) = self.tasks[task].flow.take() {
                    let bytes = self.net.stop(self.now, flow);
                    let to = self.dls[self.tasks[task].dl].node;
                    self.count_bytes(node, to, bytes);
                }
                self.tasks[task].upload_held = false;
                self.refuse(task, Failure::Broken("connection reset".into()));
            }
        }
        // Feeds from it break mid-piece, or end between pieces.
        for f in 0..self.feeds.len() {
            let feed = &self.feeds[f];
            if feed.live && feed.streaming && feed.parent == node {
                let mid_piece = feed.sending.is_some();
                self.stop_streaming(f);
                if mid_piece {
                    self.feed_refused(f, FeedWhat::Broken);
                } else {
                    self.end_feed(f);
                }
            }
        }
        let n = &mut self.nodes[node];
        n.alive = false;
        n.epoch += 1;
        n.uploads = 0;
        n.fetching = 0;
        n.feeds_served = 0;
        n.waiters.clear();
        for h in &mut n.hold {
            h.waiting_feeds.clear();
        }
        match self.sc.downtime {
            Some(d) => self.after(ns(d), Ev::Return { node }),
            None => {
                self.nodes[node].gone = true;
                self.remaining -= 1;
            }
        }
    }

    /// The node's agent starts again: it registers anew and its client pulls again.
    pub(crate) fn come_back(&mut self, node: usize) {
        self.nodes[node].alive = true;
        self.register(node);
        let epoch = self.nodes[node].epoch;
        self.pull(node, None, epoch);
    }
}
