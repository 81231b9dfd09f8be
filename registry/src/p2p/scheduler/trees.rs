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
/// transfers within a zone where it can.
pub(super) fn place(swarm: &Swarm, view: &View, blob: Blob, stripes: usize) -> Vec<Option<Feed>> {
    let agents = view.agents;
    let mut members: Vec<(u64, &String)> = swarm
        .peers
        .iter()
        .filter(|(id, p)| *id == view.me || view.usable(id, p))
        .filter_map(|(id, _)| agents.get(id).map(|a| (a.seq, id)))
        .collect();
    let my_zone = view.my_zone();
    let one_zone = members.iter().all(|(_, id)| agents.get(*id).is_some_and(|a| a.zone == my_zone));
    members.sort_unstable();
    let me_at = members.iter().position(|(_, id)| *id == view.me);
    match me_at {
        Some(me_at) if stripes >= 2 && one_zone && treelike(blob) => tree_parents(members.len(), me_at, stripes)
            .into_iter()
            .map(|parent| {
                let id = members[parent?].1;
                agents.get(id).map(|a| Feed { agent_id: id.clone(), url: a.url.clone() })
            })
            .collect(),
        _ => Vec::new(),
    }
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
/// stripe's next pieces come from.
pub(super) fn tree_parents(members: usize, me: usize, stripes: usize) -> Vec<Option<usize>> {
    (0..stripes)
        .map(|s| {
            let inner = (0..members).filter(|p| p % stripes == s);
            let order: Vec<usize> = inner.chain((0..members).filter(|p| p % stripes != s)).collect();
            let place = order.iter().position(|&p| p == me)?;
            (place > 0).then(|| order[(place - 1) / stripes])
        })
        .collect()
}
