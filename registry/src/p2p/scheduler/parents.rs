//! Parents for a requester: up to [`MAX_PARENTS`] usable peers holding
//! pieces it lacks, chosen so that together they cover as many of those
//! pieces as possible, and ranked by same zone, free upload slots, then
//! measured throughput, with ties going to the parent that was longest
//! nobody's first choice. A swarm of more than a few hundred members has a
//! rotating share of them looked at per join, not all.

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

/// Swarms of up to this many members have every member looked at as a
/// parent; larger ones, [`LOOK_AT`] of them.
const LOOK_AT_ALL_UP_TO: usize = 256;
/// In a larger swarm, a join looks at the listed holders of the rare pieces
/// the requester lacks, then at members in order of registration from
/// where the last join stopped, until it has [`CANDIDATES`] that hold a
/// piece the requester lacks or has looked at this many: the cost of a
/// join does not grow with the swarm, and successive joins look at
/// different members.
const LOOK_AT: usize = 512;
/// Enough candidates to rank, in a larger swarm.
const CANDIDATES: usize = 32;

/// The requester's parents, best first, for the pieces it is `missing`, of
/// which `availability` says how many usable members hold each.
/// Each chosen parent counts the requester against its upload slots from
/// now on, and the first notes that it was somebody's first choice.
pub(super) fn choose(swarm: &mut Swarm, view: &View, missing: &[u32], availability: &[u32]) -> Vec<Parent> {
    let (agent, now, my_zone) = (view.me, view.now, view.my_zone());
    if missing.iter().all(|&i| availability.get(i as usize).is_none_or(|&n| n == 0)) {
        // No usable member holds a piece it lacks: none would be chosen.
        swarm.leave_parents(agent);
        return Vec::new();
    }
    let Swarm { peers, order, cursor, rare, .. } = swarm;
    let mut ranked: Vec<(Rank, String, Vec<u32>)> = Vec::new();
    let consider = |id: &String, peer: &mut super::swarm::Peer| {
        // The cheap question first: most members of a large swarm hold nothing it lacks.
        let useful: Vec<u32> = missing.iter().copied().filter(|&i| peer.holds(i)).collect();
        if useful.is_empty() || !view.usable(id, peer) {
            return None;
        }
        let info = view.agents.get(id)?;
        peer.children.remove(agent);
        peer.children.expire(now, ASSIGNMENT_WINDOW);
        // Its own count of running uploads when fresh, plus requesters just
        // sent its way; else every requester sent there lately.
        let busy = match info.uploading.filter(|(_, at)| now.duration_since(*at) < UPLOADS_FRESH) {
            Some((n, _)) => i64::from(n) + peer.children.sent_within(now, JUST_SENT) as i64,
            None => peer.children.len() as i64,
        };
        let free = i64::from(info.upload_slots) - busy;
        let rank = Rank {
            same_zone: !my_zone.is_empty() && info.zone == my_zone,
            free,
            throughput: (peer.throughput / THROUGHPUT_STEP) as u64,
            first_choice: Reverse(peer.first_choice),
        };
        Some((rank, id.clone(), useful))
    };
    if peers.len() <= LOOK_AT_ALL_UP_TO {
        ranked.extend(peers.iter_mut().filter_map(|(id, peer)| consider(id, peer)));
    } else {
        // The holders of the rarest pieces it lacks first: a look at some
        // members would seldom find them; then members in turn.
        let mut looked_at: HashSet<&str> = HashSet::new();
        let mut rarest: Vec<u32> = missing.iter().copied().filter(|i| rare.contains_key(i)).collect();
        rarest.sort_by_key(|&i| (availability.get(i as usize).copied().unwrap_or(0), i));
        for id in rarest.iter().filter_map(|i| rare.get(i)).flatten() {
            if ranked.len() >= CANDIDATES {
                break;
            }
            if looked_at.insert(id) {
                ranked.extend(peers.get_mut(id).and_then(|peer| consider(id, peer)));
            }
        }
        // Members in turn: each once (fewer are looked at than there are),
        // skipping those the rare pieces' holders brought already.
        let n = order.len();
        let mut looked = 0;
        while looked < LOOK_AT.min(n) && ranked.len() < CANDIDATES {
            let id = &order[(*cursor + looked) % n].1;
            if looked_at.is_empty() || !looked_at.contains(id.as_str()) {
                ranked.extend(peers.get_mut(id).and_then(|peer| consider(id, peer)));
            }
            looked += 1;
        }
        *cursor = (*cursor + looked) % n.max(1);
    }
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));

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
            if chosen.iter().any(|(c, _)| c == id) || (pass == 0 && !adds) {
                continue;
            }
            covered.extend(useful.iter().copied());
            chosen.push((id.clone(), useful.clone()));
        }
    }
    swarm.leave_parents(agent);
    let mut parents = Vec::with_capacity(chosen.len());
    for (id, useful) in chosen {
        if let (Some(peer), Some(info)) = (swarm.peers.get_mut(&id), view.agents.get(&id)) {
            peer.children.insert(agent, now);
            if parents.is_empty() {
                peer.first_choice = Some(now);
            }
            parents.push(Parent { agent_id: id, url: info.url.clone(), pieces: useful });
        }
    }
    if let Some(me) = swarm.peers.get_mut(agent) {
        me.parents = parents.iter().map(|p| p.agent_id.clone()).collect();
    }
    parents
}
