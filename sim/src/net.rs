//! The simulated network: every node has an uplink and a downlink, every
//! ordered pair of zones may have a pipe between them, and the transfers
//! running at any moment share those links max-min fairly, as long-lived
//! TCP flows roughly do: each flow gets the smallest fair share among the
//! links it crosses, and what a flow bottlenecked elsewhere leaves of a link
//! goes to the others on it.
//!
//! Rates are recomputed for the whole network at once (progressive
//! filling), at most once per `step` of virtual time: with a step of 0 every
//! flow that starts or ends changes the others' rates at that instant; with
//! thousands of nodes a few milliseconds keep the work per simulated second
//! bounded, and a flow that starts waits at most that long for its rate.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Virtual time in nanoseconds.
pub type Nanos = u64;

/// A running transfer, by index.
pub type FlowId = u32;

/// No link (a flow within a zone crosses no pipe).
const NO_LINK: u32 = u32::MAX;

struct Flow {
    /// Uplink of the sender, downlink of the receiver, pipe between their zones.
    links: [u32; 3],
    /// Where the flow sits in each link's list.
    pos: [u32; 3],
    bytes: f64,
    /// Bytes sent as of `mark`.
    done: f64,
    mark: Nanos,
    /// Bytes per second.
    rate: f64,
    /// Bumped whenever the flow's end moves, so that stale ends are skipped.
    version: u32,
    /// What the flow carries, for its owner.
    tag: u64,
    live: bool,
}

/// The links and the flows on them.
pub struct Net {
    capacity: Vec<f64>,
    on_link: Vec<Vec<FlowId>>,
    flows: Vec<Flow>,
    free: Vec<FlowId>,
    /// Flow ends, earliest first: (when, flow, version).
    ends: BinaryHeap<Reverse<(Nanos, FlowId, u32)>>,
    nodes: usize,
    zones: usize,
    /// Rates are stale: a flow started or ended since they were computed.
    dirty: bool,
    last_allocation: Nanos,
    step: Nanos,
    /// Work space of the allocation.
    left: Vec<f64>,
    unfixed: Vec<u32>,
    fixed: Vec<u32>,
    epoch: u32,
    /// Rate computations run, for the report.
    pub allocations: u64,
}

/// Whether link rates in bytes per second are positive and finite enough to share.
fn usable(capacity: f64) -> bool {
    capacity.is_finite() && capacity > 0.0
}

impl Net {
    /// `nodes` nodes with uplinks `up[i]` and downlinks `down[i]` (bytes per
    /// second), in zones `zone[i]` of `zones`, with a pipe of `pipe` bytes
    /// per second each way between every two zones (`None`: unlimited).
    pub fn new(up: &[f64], down: &[f64], zones: usize, pipe: Option<f64>, step: Nanos) -> Net {
        let nodes = up.len();
        let mut capacity = Vec::with_capacity(2 * nodes + zones * zones);
        for i in 0..nodes {
            capacity.push(up[i]);
            capacity.push(down[i]);
        }
        for _ in 0..zones * zones {
            capacity.push(pipe.unwrap_or(f64::INFINITY));
        }
        let links = capacity.len();
        Net {
            capacity,
            on_link: vec![Vec::new(); links],
            flows: Vec::new(),
            free: Vec::new(),
            ends: BinaryHeap::new(),
            nodes,
            zones,
            dirty: false,
            last_allocation: 0,
            step,
            left: vec![0.0; links],
            unfixed: vec![0; links],
            fixed: Vec::new(),
            epoch: 0,
            allocations: 0,
        }
    }

    fn pipe(&self, from_zone: usize, to_zone: usize) -> u32 {
        if from_zone == to_zone || !self.capacity[2 * self.nodes + from_zone * self.zones + to_zone].is_finite() {
            return NO_LINK;
        }
        (2 * self.nodes + from_zone * self.zones + to_zone) as u32
    }

    /// Starts a flow of `bytes` from node `src` (in zone `src_zone`) to node
    /// `dst` (in `dst_zone`) at `now`, tagged `tag` for its owner. It moves
    /// no byte until rates are next computed.
    pub fn start(
        &mut self,
        now: Nanos,
        src: usize,
        src_zone: usize,
        dst: usize,
        dst_zone: usize,
        bytes: u64,
        tag: u64,
    ) -> FlowId {
        let links = [2 * src as u32, 2 * dst as u32 + 1, self.pipe(src_zone, dst_zone)];
        let flow = Flow {
            links,
            pos: [0; 3],
            bytes: bytes as f64,
            done: 0.0,
            mark: now,
            rate: 0.0,
            version: 0,
            tag,
            live: true,
        };
        let id = match self.free.pop() {
            Some(id) => {
                let version = self.flows[id as usize].version.wrapping_add(1);
                self.flows[id as usize] = Flow { version, ..flow };
                id
            }
            None => {
                self.flows.push(flow);
                self.fixed.push(0);
                (self.flows.len() - 1) as FlowId
            }
        };
        for k in 0..3 {
            let l = links[k];
            if l != NO_LINK {
                self.flows[id as usize].pos[k] = self.on_link[l as usize].len() as u32;
                self.on_link[l as usize].push(id);
            }
        }
        if bytes == 0 {
            self.ends.push(Reverse((now, id, self.flows[id as usize].version)));
        }
        self.dirty = true;
        id
    }

    /// Ends a flow before its time (its sender or receiver went away);
    /// returns the bytes it had moved.
    pub fn stop(&mut self, now: Nanos, id: FlowId) -> u64 {
        let f = &self.flows[id as usize];
        if !f.live {
            return 0;
        }
        let done = f.done + f.rate * secs(now.saturating_sub(f.mark));
        self.remove(id);
        done.min(self.flows[id as usize].bytes) as u64
    }

    fn remove(&mut self, id: FlowId) {
        let (links, pos) = {
            let f = &mut self.flows[id as usize];
            f.live = false;
            f.version = f.version.wrapping_add(1);
            (f.links, f.pos)
        };
        for k in 0..3 {
            let l = links[k];
            if l == NO_LINK {
                continue;
            }
            let list = &mut self.on_link[l as usize];
            let at = pos[k] as usize;
            list.swap_remove(at);
            if let Some(&moved) = list.get(at) {
                let m = &mut self.flows[moved as usize];
                let slot = m.links.iter().position(|&ml| ml == l).unwrap_or(0);
                m.pos[slot] = at as u32;
            }
        }
        self.free.push(id);
        self.dirty = true;
    }

    /// The flows on node `node`'s uplink now: each one's tag and rate (bytes per second).
    pub fn uplink(&self, node: usize) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.on_link[2 * node].iter().map(|&id| (self.flows[id as usize].tag, self.flows[id as usize].rate))
    }

    /// When the rates should next be computed: never if nothing changed.
    pub fn allocation_due(&self) -> Option<Nanos> {
        self.dirty.then(|| self.last_allocation + self.step)
    }

    /// The earliest flow end still current: (when, flow).
    pub fn next_end(&mut self) -> Option<Nanos> {
        while let Some(Reverse((at, id, version))) = self.ends.peek().copied() {
            let f = &self.flows[id as usize];
            if f.live && f.version == version {
                return Some(at);
            }
            self.ends.pop();
        }
        None
    }

    /// Ends the earliest flow due at `now`: its tag and bytes. Call after [`Net::next_end`] said so.
    pub fn finish_next(&mut self) -> Option<(u64, u64)> {
        let Reverse((_, id, _)) = self.ends.pop()?;
        let (tag, bytes) = (self.flows[id as usize].tag, self.flows[id as usize].bytes as u64);
        self.remove(id);
        Some((tag, bytes))
    }

    /// Computes every flow's max-min fair rate as of `now`, and when each
    /// flow whose rate changed will end.
    pub fn allocate(&mut self, now: Nanos) {
        self.dirty = false;
        self.last_allocation = now;
        self.allocations += 1;
        self.epoch = self.epoch.wrapping_add(1);
        let epoch = self.epoch;
        // Progressive filling: the link whose fair share is smallest fixes
        // its flows at that share, which leaves more for the other links
        // those flows cross; shares only grow, so a stale heap entry is
        // recognised by its share and pushed again.
        let mut heap: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
        for (l, flows) in self.on_link.iter().enumerate() {
            if flows.is_empty() {
                continue;
            }
            self.left[l] = self.capacity[l];
            self.unfixed[l] = flows.len() as u32;
            if usable(self.capacity[l]) {
                heap.push(Reverse(((self.left[l] / flows.len() as f64).to_bits(), l as u32)));
            }
        }
        let mut rates: Vec<(FlowId, f64)> = Vec::new();
        while let Some(Reverse((bits, l))) = heap.pop() {
            let l = l as usize;
            if self.unfixed[l] == 0 {
                continue;
            }
            let share = (self.left[l].max(0.0)) / self.unfixed[l] as f64;
            if share.to_bits() > bits {
                heap.push(Reverse((share.to_bits(), l as u32)));
                continue;
            }
            for k in 0..self.on_link[l].len() {
                let id = self.on_link[l][k];
                if self.fixed[id as usize] == epoch {
                    continue;
                }
                self.fixed[id as usize] = epoch;
                rates.push((id, share));
                for other in self.flows[id as usize].links {
                    if other == NO_LINK || other as usize == l {
                        continue;
                    }
                    let o = other as usize;
                    self.left[o] -= share;
                    self.unfixed[o] -= 1;
                    if self.unfixed[o] > 0 && usable(self.capacity[o]) {
                        heap.push(Reverse(((self.left[o].max(0.0) / self.unfixed[o] as f64).to_bits(), other)));
                    }
                }
            }
            self.unfixed[l] = 0;
        }
        for (id, rate) in rates {
            let f = &mut self.flows[id as usize];
            if (f.rate - rate).abs() <= 1e-9 * rate.max(1.0) {
                continue;
            }
            f.done = (f.done + f.rate * secs(now.saturating_sub(f.mark))).min(f.bytes);
            f.mark = now;
            f.rate = rate;
            f.version = f.version.wrapping_add(1);
            let left = f.bytes - f.done;
            if rate > 0.0 {
                let end = now + (left / rate * 1e9).ceil() as Nanos;
                self.ends.push(Reverse((end, id, f.version)));
            }
        }
    }
}

fn secs(nanos: Nanos) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1e6;

    fn run(net: &mut Net) -> Vec<(u64, f64)> {
        let mut ends = Vec::new();
        let mut now = 0;
        loop {
            if let Some(due) = net.allocation_due() {
                now = now.max(due);
                net.allocate(now);
            }
            let Some(at) = net.next_end() else { break };
            now = at;
            let (tag, _) = net.finish_next().expect("an end");
            ends.push((tag, now as f64 / 1e9));
        }
        ends
    }

    #[test]
    fn flows_share_a_link_fairly_and_the_rest_goes_to_the_unconstrained() {
        // Node 0 sends to 1 and 2; node 2's downlink is slow, so the flow to 1 takes the rest of 0's uplink.
        let mut net = Net::new(&[10.0 * MB, 0.0, 0.0], &[0.0, 100.0 * MB, 2.0 * MB], 1, None, 0);
        net.start(0, 0, 0, 1, 0, 16_000_000, 1);
        net.start(0, 0, 0, 2, 0, 4_000_000, 2);
        let ends = run(&mut net);
        assert_eq!(ends[0].0, 1, "8 MB/s for 16 MB: 2 s");
        assert!((ends[0].1 - 2.0).abs() < 1e-6, "{ends:?}");
        assert!((ends[1].1 - 2.0).abs() < 1e-6, "2 MB/s for 4 MB: 2 s; {ends:?}");
    }

    #[test]
    fn when_a_flow_ends_the_others_speed_up() {
        let mut net = Net::new(&[10.0 * MB, 0.0, 0.0], &[0.0, 100.0 * MB, 100.0 * MB], 1, None, 0);
        net.start(0, 0, 0, 1, 0, 5_000_000, 1);
        net.start(0, 0, 0, 2, 0, 15_000_000, 2);
        let ends = run(&mut net);
        // 5 MB/s each: the first ends at 1 s with 10 MB of the second left, at 10 MB/s.
        assert!((ends[0].1 - 1.0).abs() < 1e-6 && (ends[1].1 - 2.0).abs() < 1e-6, "{ends:?}");
    }

    #[test]
    fn a_pipe_between_zones_is_shared_by_every_flow_crossing_it() {
        let up = [100.0 * MB, 100.0 * MB, 0.0, 0.0];
        let down = [0.0, 0.0, 100.0 * MB, 100.0 * MB];
        let mut net = Net::new(&up, &down, 2, Some(10.0 * MB), 0);
        net.start(0, 0, 0, 2, 1, 10_000_000, 1);
        net.start(0, 1, 0, 3, 1, 10_000_000, 2);
        let ends = run(&mut net);
        assert!(ends.iter().all(|(_, t)| (t - 2.0).abs() < 1e-6), "5 MB/s each through the pipe: {ends:?}");
    }
}
