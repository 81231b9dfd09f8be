//! Parents for a requester: up to [`MAX_PARENTS`] usable peers holding
//! pieces it lacks, chosen so that together they cover as many of those
//! pieces as possible, and ranked by same zone, free upload slots, then
//! measured throughput, with ties going to the parent that was longest
//! nobody's first choice.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use damselfly_core::p2p::Parent;

use super::availability::View;
use super::swarm::Swarm;

/// Most parents handed out per join.
pub const MAX_PARENTS: usize = 4;
/// How long a requester counts against a parent's upload slots after it was
/// last sent there.
const ASSIGNMENT_WINDOW: Duration = Duration::from_secs(10);
/// How long an agent's own count of its running uploads stands in for the
/// requesters sent to it. It says so with every join and report, several
/// times a second while it downloads.
const UPLOADS_FRESH: Duration = Duration::from_secs(1);
/// With a fresh upload count, requesters sent to a parent this recently
/// still count against its slots: they may not have asked it yet.
const JUST_SENT: Duration = Duration::from_millis(500);
/// Throughputs closer than this (bytes per second) rank the same, so that
/// small differences do not send every requester to one parent.
const THROUGHPUT_STEP: f64 = 1e6;

/// How a candidate parent compares for one requester; greater is better.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    same_zone: bool,
    free: i64,
    throughput: u64,
    first_choice: Reverse<Option<Instant>>,
}

/// The requester's parents, best first, for the pieces it is `missing`.
/// Each chosen parent counts the requester against its upload slots from
/// now on, and the first notes that it was somebody's first choice.
pub(super) fn choose(swarm: &mut Swarm, view: &View, missing: &[u32]) -> Vec<Parent> {
    let (agent, now, my_zone) = (view.me, view.now, view.my_zone());
    let mut ranked: Vec<(Rank, &String, Vec<u32>)> = Vec::new();
    for (id, peer) in swarm.peers.iter_mut() {
        if !view.usable(id, peer) {
            continue;
        }
        let Some(info) = view.agents.get(id) else { continue };
        let useful: Vec<u32> = missing.iter().copied().filter(|&i| peer.holds(i)).collect();
        if useful.is_empty() {
            continue;
        }
        peer.children.retain(|child, at| child != agent && now.duration_since(*at) < ASSIGNMENT_WINDOW);
        // Its own count of running uploads when fresh, plus requesters just
        // sent its way; else every requester sent there lately.
        let busy = match info.uploading.filter(|(_, at)| now.duration_since(*at) < UPLOADS_FRESH) {
            Some((n, _)) => {
                i64::from(n) + peer.children.values().filter(|at| now.duration_since(**at) < JUST_SENT).count() as i64
            }
            None => peer.children.len() as i64,
        };
        let free = i64::from(info.upload_slots) - busy;
        let rank = Rank {
            same_zone: !my_zone.is_empty() && info.zone == my_zone,
            free,
            throughput: (peer.throughput / THROUGHPUT_STEP) as u64,
            first_choice: Reverse(peer.first_choice),
        };
        ranked.push((rank, id, useful));
    }
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));

    // Best first, but a parent that adds no piece the others lack is
    // skipped while another could: spread over the holders of every piece.
    let mut covered: HashSet<u32> = HashSet::new();
    let mut chosen: Vec<(String, Vec<u32>)> = Vec::new();
    for pass in 0..2 {
        for (_, id, useful) in &ranked {
            if chosen.len() == MAX_PARENTS {
                break;
            }
            let adds = useful.iter().any(|i| !covered.contains(i));
            if chosen.iter().any(|(c, _)| c == *id) || (pass == 0 && !adds) {
                continue;
            }
            covered.extend(useful.iter().copied());
            chosen.push(((*id).clone(), useful.clone()));
        }
    }
    for peer in swarm.peers.values_mut() {
        peer.children.remove(agent);
    }
    let mut parents = Vec::with_capacity(chosen.len());
    for (id, useful) in chosen {
        if let (Some(peer), Some(info)) = (swarm.peers.get_mut(&id), view.agents.get(&id)) {
            peer.children.insert(agent.to_owned(), now);
            if parents.is_empty() {
                peer.first_choice = Some(now);
            }
            parents.push(Parent { agent_id: id, url: info.url.clone(), pieces: useful });
        }
    }
    parents
}
