//! Stripe trees: where a requester sits in each of its swarm's trees, and
//! so which parent streams it each stripe.

use damselfly_core::p2p::Feed;

use super::availability::View;
use super::swarm::{Blob, Swarm};

/// Largest piece size for which a swarm gets stripe trees. A piece goes on
/// from an agent only once it is whole and verified, so every level of a
/// tree adds a piece's transfer time at half a link's speed. In the 16-agent
/// benchmark on 20 Mbit/s links the trees beat the pull schedule with
/// pieces of 256 KiB (34 s against 57) and 512 KiB (36 s against 40), and
/// lost with 1 MiB (39 s against 36) and 4 MiB pieces.
pub const TREE_MAX_PIECE_SIZE: u64 = 512 * 1024;
/// Fewest pieces for which a blob of larger pieces still gets stripe trees:
/// the levels' delay is then small beside the whole transfer. For 16 agents
/// on 50 Mbit/s links pulling a 1 GiB image of 4 MiB pieces (64 per layer),
/// the trees took 220 s against the pull schedule's 237 (bound 172).
pub const TREE_MIN_PIECES: usize = 32;
/// Stripe trees per swarm unless configured otherwise.
pub const DEFAULT_STRIPES: usize = 2;

/// The requester's parent in each of `stripes` trees (`None` where it is
/// the root), over the members it may fetch from and itself, in order of
/// registration; empty when the swarm gets no trees. `unusable` are the
/// members that cannot serve the requester, by order of registration.
///
/// A swarm whose members span zones has trees per zone: each zone's members
/// form their own trees, so that a stripe crosses into a zone once, not once
/// per member. The trees' roots in the first zone (its first member's, where
/// a crowd's seed pieces went first) take their stripes from the seed; the
/// root of a stripe's tree in every other zone takes it from the root of
/// that stripe's tree in the first zone, the one feed per stripe and zone
/// that crosses between zones.
pub(super) fn place(
    swarm: &Swarm,
    view: &View,
    unusable: &[(u64, &str)],
    blob: Blob,
    stripes: usize,
) -> Vec<Option<Feed>> {
    if stripes < 2 || !treelike(blob) {
        return Vec::new();
    }
    let Some(me) = swarm.peers.get(view.me).filter(|_| view.agents.contains_key(view.me)) else { return Vec::new() };
    let skipped = |list: &'_ [(u64, String)]| -> Vec<usize> {
        // Places in `list` of the members that cannot serve, to skip.
        unusable
            .iter()
            .filter_map(|(seq, id)| list.binary_search_by(|(s, o)| (*s, o.as_str()).cmp(&(*seq, id))).ok())
            .collect()
    };
    // The member at place `k` among a list's usable members.
    let nth = |list: &[(u64, String)], skip: &[usize], k: usize| -> Option<String> {
        let mut k = k;
        let mut skip = skip.to_vec();
        skip.sort_unstable();
        for &s in &skip {
            if s <= k {
                k += 1;
            }
        }
        list.get(k).map(|(_, id)| id.clone())
    };
    let feed = |id: String| view.agents.get(&id).map(|a| Feed { agent_id: id.clone(), url: a.url.clone() });
    let Some(here) = swarm.zones.get(&me.zone) else { return Vec::new() };
    let skip = skipped(here);
    let members = here.len() - skip.len();
    let Ok(at) = here.binary_search_by(|(s, o)| (*s, o.as_str()).cmp(&(me.seq, view.me))) else {
        return Vec::new();
    };
    let me_at = at - skip.iter().filter(|&&k| k < at).count();
    // The first zone: the zone of the first member that can serve.
    let first_zone = if swarm.zones.len() == 1 {
        None
    } else {
        let unusable_ids: std::collections::HashSet<&str> = unusable.iter().map(|(_, id)| *id).collect();
        let first = swarm.order.iter().find(|(_, id)| id == view.me || !unusable_ids.contains(id.as_str()));
        first.and_then(|(_, id)| swarm.peers.get(id)).map(|p| p.zone.as_str()).filter(|z| *z != me.zone)
    };
    tree_parents(members, me_at, stripes)
        .into_iter()
        .enumerate()
        .map(|(stripe, parent)| match (parent, first_zone) {
            (Some(k), _) => nth(here, &skip, k).and_then(feed),
            // A root outside the first zone: the first zone's root of the stripe feeds it.
            (None, Some(zone)) => {
                let there = swarm.zones.get(zone)?;
                let skip = skipped(there);
                (stripe < there.len() - skip.len()).then(|| nth(there, &skip, stripe)).flatten().and_then(feed)
            }
            (None, None) => None,
        })
        .collect()
}

/// Whether a blob's swarm gets stripe trees: its pieces are small, or many.
pub(super) fn treelike(blob: Blob) -> bool {
    blob.piece_size <= TREE_MAX_PIECE_SIZE || blob.pieces >= TREE_MIN_PIECES
}

/// The parent of the agent at `me` (of `members`, in order of registration)
/// in each of `stripes` trees, as an index into the members; `None` where it
/// is the root. Tree `s` is a `stripes`-ary heap whose first (inner) places
/// go to the members `p` with `p % stripes == s`, the rest being leaves: every
/// member is an inner node of one tree, its uplink is shared by that tree's
/// children alone, and a tree of N members is about `log(N, stripes)` deep.
/// A member that joins later may move some leaves to another parent: a
/// crowd joins within moments, and a changed parent changes only where the
/// stripe's next pieces come from. Worked out by arithmetic, not by laying
/// out the heap: a swarm may have thousands of members.
pub(super) fn tree_parents(members: usize, me: usize, stripes: usize) -> Vec<Option<usize>> {
    let k = stripes;
    (0..k)
        .map(|s| {
            let inner = if s < members { (members - 1 - s) / k + 1 } else { 0 };
            let place = if me % k == s {
                me / k
            } else {
                let inner_before = if me > s { (me - 1 - s) / k + 1 } else { 0 };
                inner + me - inner_before
            };
            let up = place.checked_sub(1)? / k;
            Some(if up < inner {
                s + k * up
            } else {
                // The j-th member that is not inner in this tree.
                let j = up - inner;
                let (block, r) = (j / (k - 1), j % (k - 1));
                block * k + if r < s { r } else { r + 1 }
            })
        })
        .collect()
}
