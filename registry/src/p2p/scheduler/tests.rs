//! The scheduler's behaviour, join by join.

use super::seed::{in_step, SEED_WAITS_FOR_IDLE, TREES_SETTLE};
use super::trees::tree_parents;
use super::*;

fn req(node: &str, zone: &str) -> RegisterRequest {
    RegisterRequest {
        node: node.into(),
        ip: "10.0.0.1".into(),
        peer_port: 65002,
        zone: zone.into(),
        upload_slots: 4,
        version: "test".into(),
        platform: String::new(),
    }
}

const C: ClusterId = ClusterId(1);

/// A blob of `pieces` pieces small enough for stripe trees.
fn blob(pieces: usize) -> Blob {
    Blob { pieces, piece_size: 256 * 1024 }
}

/// A scheduler without stripe trees: every agent pulls.
fn pull_only() -> Scheduler {
    Scheduler::new(Duration::from_secs(10)).with_stripes(0)
}

fn progress(agent: &str, digest: Digest, have: &[u32], failed: &[String], bad: &[String]) -> ReportRequest {
    ReportRequest {
        agent_id: agent.to_owned(),
        digest,
        have: have.to_vec(),
        failed_parents: failed.to_vec(),
        bad_parents: bad.to_vec(),
        bytes_from: Vec::new(),
        uploading: None,
    }
}

#[test]
fn the_seed_sends_a_few_pieces_at_a_time_to_different_agents_who_then_trade() {
    let s = pull_only();
    let d = Digest::of(b"blob");
    let a = s.register(C, &req("a", "z1"));
    let b = s.register(C, &req("b", "z1"));
    let c = s.register(C, &req("c", "z1"));
    let pa = s.join(C, &a, d, blob(8), &[]);
    assert_eq!(pa.seed_pieces, [0], "a newcomer gets one piece: others of a crowd may be a moment behind");
    assert_eq!(s.join(C, &b, d, blob(8), &[]).seed_pieces, [1], "each agent gets a different piece from the seed");
    assert_eq!(s.join(C, &c, d, blob(8), &[]).seed_pieces, [2]);
    let pa = s.join(C, &a, d, blob(8), &[]);
    assert_eq!(pa.seed_pieces, [0], "with others wanting pieces, one seed piece per agent");
    assert!(pa.parents.is_empty());
    let e = s.register(C, &req("e", "z1"));
    assert!(s.join(C, &e, d, blob(8), &[]).seed_pieces.is_empty(), "the cluster's seed budget of three is spent");
    s.report(C, &progress(&a, d, &[0], &[], &[]));
    let pb = s.join(C, &b, d, blob(8), &[]);
    assert_eq!(pb.parents.len(), 1);
    assert_eq!(pb.parents[0].agent_id, a);
    assert_eq!(pb.parents[0].pieces, [0]);
    assert_eq!(pb.seed_pieces, [1], "b keeps its own");
    assert_eq!(pb.availability, [1, 0, 0, 0, 0, 0, 0, 0]);
    let pa = s.join(C, &a, d, blob(8), &[0]);
    assert_eq!(pa.seed_pieces, [3], "a piece arrived, so the next goes out");
    assert_eq!(s.holders(C, d), [1, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn an_agent_alone_takes_a_run_of_seed_pieces_that_stays_its_own_while_it_reports() {
    let clock = Arc::new(ManualClock::new());
    let s = pull_only().with_clock(clock.clone());
    let d = Digest::of(b"blob");
    let (a, b) = (s.register(C, &req("a", "z1")), s.register(C, &req("b", "z1")));
    assert_eq!(s.join(C, &a, d, blob(8), &[]).seed_pieces, [0], "a newcomer may be the first of a crowd");
    let run = s.join(C, &a, d, blob(8), &[]).seed_pieces;
    assert_eq!(run, (0..8).collect::<Vec<u32>>(), "still alone, it takes every piece, whatever the budget");
    let other = s.register(C, &req("other", "z1"));
    let elsewhere = s.join(C, &other, Digest::of(b"another blob"), blob(8), &[]);
    assert!(elsewhere.seed_pieces.is_empty(), "the run counts against the cluster's budget");
    clock.advance(Duration::from_secs(15));
    s.report(C, &progress(&a, d, &[0, 1], &[], &[]));
    clock.advance(Duration::from_secs(9));
    s.report(C, &progress(&a, d, &[2], &[], &[]));
    clock.advance(Duration::from_secs(1));
    s.load(C, &b, None, None);
    let pb = s.join(C, &b, d, blob(8), &[]);
    assert!(pb.seed_pieces.is_empty(), "25 s after the run was handed out, but a reports: the run is still a's");
    assert_eq!(pb.parents[0].pieces, [0, 1, 2], "b takes what a has");
}

#[test]
fn blobs_of_one_cluster_take_turns_at_the_seed() {
    let s = pull_only();
    let (x, y) = (Digest::of(b"x"), Digest::of(b"y"));
    let xs: Vec<String> = (0..3).map(|i| s.register(C, &req(&format!("x{i}"), ""))).collect();
    let ys: Vec<String> = (0..3).map(|i| s.register(C, &req(&format!("y{i}"), ""))).collect();
    assert_eq!(s.join(C, &xs[0], x, blob(8), &[]).seed_pieces, [0], "a newcomer takes one piece");
    assert_eq!(s.join(C, &xs[1], x, blob(8), &[]).seed_pieces, [1]);
    assert_eq!(s.join(C, &ys[0], y, blob(8), &[]).seed_pieces, [0], "the budget's third piece goes to y");
    // Both blobs now wait for the seed: x asked first.
    assert!(s.join(C, &xs[2], x, blob(8), &[]).seed_pieces.is_empty());
    assert!(s.join(C, &ys[1], y, blob(8), &[]).seed_pieces.is_empty());
    s.report(C, &progress(&ys[0], y, &[0], &[], &[]));
    assert!(s.join(C, &ys[1], y, blob(8), &[]).seed_pieces.is_empty(), "x is first in line");
    assert_eq!(s.join(C, &xs[2], x, blob(8), &[]).seed_pieces, [2], "x's turn");
    s.report(C, &progress(&xs[0], x, &[0], &[], &[]));
    assert!(s.join(C, &xs[0], x, blob(8), &[0]).seed_pieces.is_empty(), "y is first in line now");
    assert_eq!(s.join(C, &ys[1], y, blob(8), &[]).seed_pieces, [1], "and y's turn again");
}

#[test]
fn a_crowd_spreads_over_the_holders_instead_of_converging_on_one() {
    let s = pull_only();
    let d = Digest::of(b"blob");
    let holders: Vec<String> = (0..4).map(|i| s.register(C, &req(&format!("h{i}"), "z1"))).collect();
    for h in &holders {
        s.join(C, h, d, blob(4), &[0, 1, 2, 3]);
    }
    let mut load: HashMap<String, usize> = HashMap::new();
    for i in 0..16 {
        let me = s.register(C, &req(&format!("n{i}"), "z1"));
        let plan = s.join(C, &me, d, blob(4), &[]);
        assert!(!plan.parents.is_empty());
        *load.entry(plan.parents[0].agent_id.clone()).or_default() += 1;
    }
    assert_eq!(load.len(), 4, "every holder is somebody's first choice: {load:?}");
    assert!(load.values().all(|&n| n == 4), "first choices are dealt out in turn: {load:?}");
}

#[test]
fn bad_and_failing_parents_are_avoided_and_same_zone_comes_first() {
    let s = pull_only();
    let d = Digest::of(b"blob");
    let near = s.register(C, &req("near", "z1"));
    let far = s.register(C, &req("far", "z2"));
    let liar = s.register(C, &req("liar", "z1"));
    let me = s.register(C, &req("me", "z1"));
    for id in [&near, &far, &liar] {
        s.join(C, id, d, blob(2), &[0, 1]);
    }
    let plan = s.join(C, &me, d, blob(2), &[]);
    let order: Vec<&str> = plan.parents.iter().map(|p| p.agent_id.as_str()).collect();
    assert_eq!(order.len(), 3);
    assert_eq!(order[2], far.as_str(), "another zone ranks last");
    assert!(plan.seed_pieces.is_empty(), "the seed is the last resort");
    s.report(C, &progress(&me, d, &[], std::slice::from_ref(&near), std::slice::from_ref(&liar)));
    let plan = s.join(C, &me, d, blob(2), &[]);
    let order: Vec<&str> = plan.parents.iter().map(|p| p.agent_id.as_str()).collect();
    assert_eq!(order, [far.as_str()]);
    assert!(plan.seed_pieces.is_empty(), "a healthy peer still holds every piece");
    // With every holder failing or bad, the seed serves the pieces.
    s.report(C, &progress(&me, d, &[], std::slice::from_ref(&far), &[]));
    let plan = s.join(C, &me, d, blob(2), &[]);
    assert!(plan.parents.is_empty());
    assert_eq!(plan.seed_pieces, [0, 1]);
}

#[test]
fn a_swarm_of_large_pieces_keeps_the_pull_schedules_seed_budget_while_trees_are_configured() {
    let s = Scheduler::new(Duration::from_secs(10));
    let large = Blob { pieces: 8, piece_size: 4 << 20 };
    let d = Digest::of(b"large");
    let [a, b, c, e] = ["a", "b", "c", "e"].map(|n| s.register(C, &req(n, "z1")));
    for (agent, piece) in [(&a, 0), (&b, 1), (&c, 2)] {
        let plan = s.join(C, agent, d, large, &[]);
        assert!(plan.feeds.is_empty(), "no trees for pieces above the limit");
        assert_eq!(plan.seed_pieces, [piece]);
    }
    assert!(s.join(C, &e, d, large, &[]).seed_pieces.is_empty(), "three, not the trees' four");
}

#[test]
fn a_busy_agent_leaves_a_seed_piece_to_an_idle_one_for_a_moment() {
    let s = pull_only();
    let d = Digest::of(b"blob");
    let [a, b, c, e] = ["a", "b", "c", "e"].map(|n| s.register(C, &req(n, "z1")));
    assert_eq!(s.join(C, &a, d, blob(8), &[]).seed_pieces, [0]);
    assert_eq!(s.join(C, &b, d, blob(8), &[]).seed_pieces, [1]);
    assert_eq!(s.join(C, &c, d, blob(8), &[]).seed_pieces, [2]);
    assert!(s.join(C, &e, d, blob(8), &[]).seed_pieces.is_empty(), "the budget of three is spent");
    s.report(C, &progress(&a, d, &[0], &[], &[]));
    s.load(C, &b, None, Some(2));
    s.load(C, &e, None, Some(0));
    assert_eq!(s.join(C, &b, d, blob(8), &[]).seed_pieces, [1], "only its own: b's downlink is busy and e's is free");
    assert_eq!(s.join(C, &e, d, blob(8), &[]).seed_pieces, [3], "the idle agent takes it");
    s.report(C, &progress(&b, d, &[1], &[], &[]));
    assert!(s.join(C, &b, d, blob(8), &[1]).seed_pieces.is_empty(), "e said it is idle");
    std::thread::sleep(SEED_WAITS_FOR_IDLE + Duration::from_millis(50));
    assert_eq!(s.join(C, &b, d, blob(8), &[1]).seed_pieces, [4], "nobody idle came: the busy agent takes it after all");
}

#[test]
fn a_join_says_what_the_agent_holds_now_so_an_evicted_blob_is_fetched_again() {
    let s = pull_only();
    let d = Digest::of(b"blob");
    let a = s.register(C, &req("a", "z1"));
    let b = s.register(C, &req("b", "z1"));
    s.join(C, &a, d, blob(2), &[]);
    s.report(C, &progress(&a, d, &[0, 1], &[], &[]));
    assert_eq!(s.holders(C, d), [1, 1]);
    // Its cache evicted the blob; it asks again with nothing.
    let plan = s.join(C, &a, d, blob(2), &[]);
    assert_eq!(s.holders(C, d), [0, 0], "it is no holder any more");
    assert_eq!(plan.seed_pieces, [0, 1], "alone, it takes the pieces from the seed again");
    assert!(s.join(C, &b, d, blob(2), &[]).parents.is_empty(), "nobody is sent to it for pieces it lost");
}

#[test]
fn an_agent_that_leaves_is_no_parent_and_holds_no_seed_piece() {
    let s = pull_only();
    let d = Digest::of(b"blob");
    let a = s.register(C, &req("a", ""));
    let b = s.register(C, &req("b", ""));
    s.join(C, &a, d, blob(8), &[0, 1]);
    assert_eq!(s.join(C, &b, d, blob(8), &[]).parents.len(), 1);
    assert!(!s.forget(ClusterId(2), &a), "only its own cluster can make it leave");
    assert!(s.forget(C, &a));
    assert!(s.agent(C, &a).is_none());
    let plan = s.join(C, &b, d, blob(8), &[]);
    assert!(plan.parents.is_empty());
    assert_eq!(plan.availability, [0; 8]);
    assert_eq!(s.census().agents, 1);
}

#[test]
fn swarms_are_per_cluster() {
    let s = pull_only();
    let d = Digest::of(b"blob");
    let a = s.register(C, &req("a", ""));
    let other = s.register(ClusterId(2), &req("b", ""));
    s.join(C, &a, d, blob(1), &[0]);
    let plan = s.join(ClusterId(2), &other, d, blob(1), &[]);
    assert!(plan.parents.is_empty(), "an agent of another cluster is never a parent");
    assert_eq!(plan.seed_pieces, [0]);
    assert!(s.agent(C, &other).is_none());
}

#[test]
fn a_parent_that_says_its_uploads_are_idle_goes_first() {
    let s = pull_only();
    let d = Digest::of(b"blob");
    // req() gives every agent 4 upload slots.
    let (busy, idle) = (s.register(C, &req("busy", "")), s.register(C, &req("idle", "")));
    s.join(C, &busy, d, blob(2), &[0, 1]);
    s.join(C, &idle, d, blob(2), &[0, 1]);
    // By name "busy" would win the tie; its own count says all four slots are taken.
    s.load(C, &busy, Some(4), None);
    s.load(C, &idle, Some(0), None);
    s.load(ClusterId(2), &idle, Some(4), None);
    let me = s.register(C, &req("me", ""));
    assert_eq!(s.join(C, &me, d, blob(2), &[]).parents[0].agent_id, idle);
    // Both free again: the one that was not just somebody's first choice goes first.
    s.load(C, &busy, Some(0), None);
    let other = s.register(C, &req("other", ""));
    assert_eq!(s.join(C, &other, d, blob(2), &[]).parents[0].agent_id, busy, "idle was just my first choice");
}
#[test]
fn the_trees_worked_out_by_arithmetic_are_the_heaps_laid_out() {
    // Tree s: the members p with p % stripes == s first, the others after, as a stripes-ary heap.
    let laid_out = |members: usize, me: usize, stripes: usize| -> Vec<Option<usize>> {
        (0..stripes)
            .map(|s| {
                let inner = (0..members).filter(|p| p % stripes == s);
                let order: Vec<usize> = inner.chain((0..members).filter(|p| p % stripes != s)).collect();
                let place = order.iter().position(|&p| p == me)?;
                (place > 0).then(|| order[(place - 1) / stripes])
            })
            .collect()
    };
    for stripes in 2..=5 {
        for members in 1..=70 {
            for me in 0..members {
                assert_eq!(tree_parents(members, me, stripes), laid_out(members, me, stripes), "{me} of {members}");
            }
        }
    }
}

#[test]
fn every_agent_has_one_parent_per_stripe_and_children_in_one_stripe_only() {
    for n in [1usize, 2, 3, 5, 8, 16, 33] {
        let parents: Vec<Vec<Option<usize>>> = (0..n).map(|me| tree_parents(n, me, 2)).collect();
        for s in 0..2 {
            let roots: Vec<usize> = (0..n).filter(|&m| parents[m][s].is_none()).collect();
            assert_eq!(roots, [if s < n { s } else { 0 }], "n={n}: one root per stripe");
            for m in 0..n {
                let children = (0..n).filter(|&c| parents[c][s] == Some(m)).count();
                assert!(children <= 2, "n={n}: {m} has {children} children in stripe {s}");
                // Up the tree to the root, within log2(n) + 1 hops.
                let (mut at, mut hops) = (m, 0);
                while let Some(p) = parents[at][s] {
                    (at, hops) = (p, hops + 1);
                    assert!(hops <= n.ilog2() as usize + 1, "n={n}: {m} is {hops} hops deep in stripe {s}");
                }
            }
        }
        for m in 0..n {
            let feeds = (0..2).filter(|&s| (0..n).any(|c| parents[c][s] == Some(m))).count();
            assert!(feeds <= 1, "n={n}: {m} forwards more than one stripe");
        }
    }
}

#[test]
fn with_stripe_trees_each_stripe_leaves_the_seed_for_its_root_only() {
    let s = Scheduler::new(Duration::from_secs(10));
    let d = Digest::of(b"blob");
    let ids: Vec<String> = (0..4).map(|i| s.register(C, &req(&format!("n{i}"), "z1"))).collect();
    let plans: Vec<Plan> = ids.iter().map(|id| s.join(C, id, d, blob(8), &[])).collect();
    assert_eq!(plans[0].seed_pieces, [0], "the first member may be alone: it takes one piece at once");
    assert!(plans[1..].iter().all(|p| p.seed_pieces.is_empty()), "a new swarm waits a moment for the crowd to join");
    std::thread::sleep(TREES_SETTLE);
    let feeds = |p: &Plan| p.feeds.iter().map(|f| f.as_ref().map(|f| f.agent_id.clone())).collect::<Vec<_>>();
    let mut plans: Vec<Plan> = ids.iter().map(|id| s.join(C, id, d, blob(8), &[])).collect();
    // Stripe 0's tree: n0 → n2, n1; n2 → n3. Stripe 1's: n1 → n3, n0; n3 → n2.
    assert_eq!(feeds(&plans[0]), [None, Some(ids[1].clone())]);
    assert_eq!(feeds(&plans[1]), [Some(ids[0].clone()), None]);
    assert_eq!(feeds(&plans[2]), [Some(ids[0].clone()), Some(ids[3].clone())]);
    assert_eq!(feeds(&plans[3]), [Some(ids[2].clone()), Some(ids[1].clone())]);
    assert_eq!(plans[0].feeds[1].as_ref().map(|f| f.url.as_str()), Some("http://10.0.0.1:65002"));
    assert_eq!(plans[0].seed_pieces, [0, 2], "the root of stripe 0 takes its stripe's pieces");
    assert_eq!(plans[1].seed_pieces, [1, 3], "and the root of stripe 1 its own");
    assert!(plans[2].seed_pieces.is_empty() && plans[3].seed_pieces.is_empty(), "the others take none");
    s.report(C, &progress(&ids[0], d, &[0, 2], &[], &[]));
    plans[0] = s.join(C, &ids[0], d, blob(8), &[0, 2]);
    assert_eq!(plans[0].seed_pieces, [4, 6], "two more of stripe 0 go out as two arrive");
    s.report(C, &progress(&ids[0], d, &[4, 6], &[], &[]));
    plans[0] = s.join(C, &ids[0], d, blob(8), &[0, 2, 4, 6]);
    assert!(plans[0].seed_pieces.is_empty(), "stripe 0 is all sent");
    // A root reported failing loses its place, and its seed pieces go to the new root.
    s.report(C, &progress(&ids[2], d, &[], std::slice::from_ref(&ids[1]), &[]));
    let p2 = s.join(C, &ids[2], d, blob(8), &[]);
    assert_eq!(feeds(&p2), [Some(ids[0].clone()), None], "n2 is stripe 1's root now");
    assert_eq!(p2.seed_pieces, [1, 3], "and takes the pieces n1 was given");
}

#[test]
fn the_seed_keeps_the_stripes_in_step() {
    // Ten pieces in two stripes; stripe 0 has had four sent, stripe 1 two.
    let unsent = [5, 7, 8, 9];
    assert_eq!(in_step(&[8], &unsent, 10, 2, 2), Vec::<u32>::new(), "stripe 0 is two ahead");
    assert_eq!(in_step(&[5, 7, 9], &unsent, 10, 2, 2), [5, 7], "stripe 1 catches up");
    assert_eq!(in_step(&[8], &[8], 10, 2, 2), [8], "a stripe with nothing left holds nobody back");
}

#[test]
fn with_stripe_trees_the_seed_sends_one_blob_before_the_next() {
    let s = Scheduler::new(Duration::from_secs(10));
    let (x, y) = (Digest::of(b"x"), Digest::of(b"y"));
    let (a, b) = (s.register(C, &req("a", "")), s.register(C, &req("b", "")));
    for d in [x, y] {
        s.join(C, &a, d, blob(4), &[]);
        s.join(C, &b, d, blob(4), &[]);
    }
    std::thread::sleep(TREES_SETTLE);
    let plan = s.join(C, &a, x, blob(4), &[]);
    assert_eq!(plan.seed_pieces, [0, 2]);
    assert!(!plan.queued);
    let plan = s.join(C, &a, y, blob(4), &[]);
    assert!(plan.seed_pieces.is_empty(), "x has pieces the seed has not sent yet");
    assert!(plan.queued, "y waits its turn, and its agents are told so");
    assert_eq!(s.join(C, &b, x, blob(4), &[]).seed_pieces, [1, 3], "x's last pieces leave the seed");
    s.report(C, &progress(&a, x, &[0, 2], &[], &[]));
    let plan = s.join(C, &a, y, blob(4), &[]);
    assert_eq!(plan.seed_pieces, [0, 2], "now y's turn");
    assert!(!plan.queued);
}
#[test]
fn blobs_of_a_few_large_pieces_have_no_trees() {
    let s = Scheduler::new(Duration::from_secs(10));
    let d = Digest::of(b"blob");
    let (a, b) = (s.register(C, &req("a", "z1")), s.register(C, &req("b", "z1")));
    s.join(C, &a, d, blob(4), &[]);
    assert_eq!(s.join(C, &b, d, blob(4), &[]).feeds.len(), 2, "one zone, small pieces");
    let large = Blob { pieces: 4, piece_size: 4 << 20 };
    assert!(s.join(C, &b, Digest::of(b"large"), large, &[]).feeds.is_empty(), "a few 4 MiB pieces");
    let many = Blob { pieces: TREE_MIN_PIECES, piece_size: 4 << 20 };
    s.join(C, &a, Digest::of(b"many"), many, &[]);
    assert_eq!(s.join(C, &b, Digest::of(b"many"), many, &[]).feeds.len(), 2, "many 4 MiB pieces");
}

#[test]
fn a_swarm_across_zones_has_trees_per_zone_and_one_feed_per_stripe_between_them() {
    let s = Scheduler::new(Duration::from_secs(10));
    let d = Digest::of(b"blob");
    // Registered alternately, as a crowd from two zones would.
    let ids: Vec<String> = (0..8).map(|i| s.register(C, &req(&format!("n{i}"), &format!("z{}", i % 2)))).collect();
    let zone = |i: usize| i % 2;
    let feeds = |p: &Plan| p.feeds.iter().map(|f| f.as_ref().map(|f| f.agent_id.clone())).collect::<Vec<_>>();
    for id in &ids {
        s.join(C, id, d, blob(8), &[]);
    }
    std::thread::sleep(TREES_SETTLE);
    let plans: Vec<Vec<Option<String>>> = ids.iter().map(|id| feeds(&s.join(C, id, d, blob(8), &[]))).collect();
    let at = |id: &str| ids.iter().position(|x| x == id).unwrap();
    let mut crossing = 0;
    for (i, plan) in plans.iter().enumerate() {
        assert_eq!(plan.len(), 2, "n{i} has a parent or the seed in each stripe");
        for (stripe, parent) in plan.iter().enumerate() {
            match parent {
                Some(p) if zone(at(p)) != zone(i) => {
                    crossing += 1;
                    assert_eq!(zone(i), 1, "only the second zone is fed from the first");
                    // Zone z0 is n0, n2, n4, n6: the root of stripe s is its s-th member.
                    assert_eq!(p, &ids[2 * stripe], "the first zone's root of stripe {stripe} feeds n{i}");
                }
                Some(_) => {}
                None => assert_eq!(zone(i), 0, "n{i}: only the first zone's roots take from the seed"),
            }
        }
    }
    assert_eq!(crossing, 2, "one feed per stripe crosses into the second zone: {plans:?}");
    let roots = plans.iter().flatten().filter(|p| p.is_none()).count();
    assert_eq!(roots, 2, "one root per stripe takes from the seed");
}

#[test]
fn on_a_manual_clock_an_agent_silent_while_fetching_loses_its_seed_pieces_to_another() {
    let clock = Arc::new(ManualClock::new());
    let s = pull_only().with_clock(clock.clone());
    let d = Digest::of(b"blob");
    let (a, b) = (s.register(C, &req("a", "z1")), s.register(C, &req("b", "z1")));
    s.join(C, &a, d, blob(8), &[]);
    assert_eq!(s.join(C, &a, d, blob(8), &[]).seed_pieces, (0..8).collect::<Vec<u32>>(), "alone, a takes a run");
    assert!(s.join(C, &b, d, blob(8), &[]).seed_pieces.is_empty());
    clock.advance(Duration::from_secs(5));
    s.load(C, &b, None, None);
    s.join(C, &b, d, blob(8), &[]);
    assert!(s.join(C, &b, d, blob(8), &[]).seed_pieces.is_empty(), "five silent seconds are no hang yet");
    clock.advance(Duration::from_secs(2));
    s.load(C, &b, None, None);
    s.join(C, &b, d, blob(8), &[]);
    assert_eq!(s.join(C, &b, d, blob(8), &[]).seed_pieces, [0], "seven are: a's pieces go to b, one at a time");
    assert!(s.agent(C, &a).is_some(), "a still counts as registered");
    clock.advance(Duration::from_secs(30));
    assert!(s.agent(C, &a).is_none(), "three heartbeats missed, a is forgotten");
}

#[test]
fn a_holder_that_falls_silent_between_two_looks_at_the_swarm_stops_counting_at_once() {
    let clock = Arc::new(ManualClock::new());
    let s = pull_only().with_clock(clock.clone());
    let d = Digest::of(b"blob");
    let (a, b) = (s.register(C, &req("a", "z1")), s.register(C, &req("b", "z1")));
    s.join(C, &a, d, blob(4), &[0]);
    assert_eq!(s.join(C, &b, d, blob(4), &[]).availability, [1, 0, 0, 0]);
    clock.advance(Duration::from_millis(5500));
    s.load(C, &b, None, None);
    assert_eq!(s.join(C, &b, d, blob(4), &[]).availability[0], 1, "a, still fetching, was heard 5.5 s ago");
    clock.advance(Duration::from_millis(600));
    s.load(C, &b, None, None);
    let plan = s.join(C, &b, d, blob(4), &[]);
    assert_eq!(plan.availability[0], 0, "6.1 s: a is silent, less than a second after the swarm was last looked at");
    assert!(plan.parents.is_empty());
    s.report(C, &progress(&a, d, &[1], &[], &[]));
    assert_eq!(s.join(C, &b, d, blob(4), &[]).availability, [1, 1, 0, 0], "heard again, a counts again");
}

#[test]
fn in_a_swarm_of_thousands_a_join_still_finds_the_one_holder_and_a_place_in_the_trees() {
    // A clock that stands still: no heartbeat lapses however slow a debug build is.
    let s = Scheduler::new(Duration::from_secs(10)).with_clock(Arc::new(ManualClock::new()));
    let d = Digest::of(b"blob");
    let agents: Vec<String> = (0..3000).map(|i| s.register(C, &req(&format!("n{i}"), "z1"))).collect();
    let tree_blob = blob(64);
    for a in &agents {
        s.join(C, a, d, tree_blob, &[]);
    }
    let holder = &agents[1234];
    s.report(C, &progress(holder, d, &[7], &[], &[]));
    for a in agents.iter().step_by(97).filter(|a| *a != holder) {
        let plan = s.join(C, a, d, tree_blob, &[]);
        assert_eq!(plan.availability[7], 1);
        assert!(
            plan.parents.iter().any(|p| p.agent_id == *holder && p.pieces == [7]),
            "{a} was not sent to the holder"
        );
        assert_eq!(plan.feeds.len(), 2);
    }
    // Tree places as laid out: agent k (in order of registration) of 3000.
    let k = 2999;
    let parents = tree_parents(3000, k, 2);
    let plan = s.join(C, &agents[k], d, tree_blob, &[]);
    let fed_by: Vec<Option<String>> = plan.feeds.iter().map(|f| f.as_ref().map(|f| f.agent_id.clone())).collect();
    assert_eq!(fed_by, parents.iter().map(|p| p.map(|p| agents[p].clone())).collect::<Vec<_>>());
    assert_eq!(s.holders(C, d)[7], 1);
}

#[test]
fn with_most_holders_failed_the_few_usable_ones_are_counted_as_they_come_and_go() {
    let clock = Arc::new(ManualClock::new());
    let s = pull_only().with_clock(clock.clone());
    let d = Digest::of(b"blob");
    let holders: Vec<String> = (0..6).map(|i| s.register(C, &req(&format!("h{i}"), "z1"))).collect();
    let me = s.register(C, &req("me", "z1"));
    for h in &holders {
        s.join(C, h, d, blob(4), &[0, 1]);
    }
    assert_eq!(s.join(C, &me, d, blob(4), &[]).availability, [6, 6, 0, 0]);
    s.report(C, &progress(&me, d, &[], &holders[..4], &[]));
    assert_eq!(s.join(C, &me, d, blob(4), &[]).availability, [2, 2, 0, 0], "four failed");
    // The next look at the swarm counts the two others, still fetching and
    // heard 5.5 s ago, among the suspects too: most suspects are unusable.
    clock.advance(Duration::from_millis(5500));
    s.load(C, &me, None, None);
    assert_eq!(s.join(C, &me, d, blob(4), &[]).availability, [2, 2, 0, 0], "two usable suspects");
    clock.advance(Duration::from_millis(600));
    s.load(C, &me, None, None);
    assert_eq!(s.join(C, &me, d, blob(4), &[]).availability, [0, 0, 0, 0], "6.1 s: both silent");
    s.report(C, &progress(&holders[4], d, &[2], &[], &[]));
    assert_eq!(s.join(C, &me, d, blob(4), &[]).availability, [1, 1, 1, 0], "heard again with a new piece");
    s.join(C, &me, d, blob(4), &[0]);
    assert_eq!(s.join(C, &holders[5], d, blob(4), &[0, 1]).availability, [2, 1, 1, 0], "as another sees it");
}
