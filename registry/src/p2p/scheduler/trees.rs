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
/// registration; empty when the swarm gets no trees. Zones come first: a
/// swarm that spans several has no trees, and the pull loop keeps its
/// transfers within a zone where it can. `unusable` are the members that
/// cannot serve the requester, by order of registration.
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
    let members = swarm.order.len() - unusable.len();
    let unusable_here =
        unusable.iter().filter(|(_, id)| swarm.peers.get(*id).is_some_and(|p| p.zone == me.zone)).count();
    let here = swarm.zones.get(&me.zone).copied().unwrap_or(0) - unusable_here;
    if here != members {
        return Vec::new();
    }
    // Places in `order` of the members that cannot serve, to skip.
    let skip: Vec<usize> = unusable
        .iter()
        .filter_map(|(seq, id)| swarm.order.binary_search_by(|(s, o)| (*s, o.as_str()).cmp(&(*seq, id))).ok())
        .collect();
    let Ok(at) = swarm.order.binary_search_by(|(s, o)| (*s, o.as_str()).cmp(&(me.seq, view.me))) else {
        return Vec::new();
    };
    let me_at = at - skip.iter().filter(|&&k| k < at).count();
    tree_parents(members, me_at, stripes)
        .into_iter()
        .map(|parent| {
            // The parent's place among the members, back to its place in `order`.
            let mut k = parent?;
            for &s in &skip {
                if s <= k {
                    k += 1;
                }
            }
            let id = &swarm.order.get(k)?.1;
            view.agents.get(id).map(|a| Feed { agent_id: id.clone(), url: a.url.clone() })
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
