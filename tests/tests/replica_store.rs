//! What replicas share through the database, on SQLite and PostgreSQL:
//! the P2P leases, the agents, preheat jobs, traffic statistics and failed
//! logins, through the registry's own types, two "replicas" on one database.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use damselfly_core::p2p::RegisterRequest;
use damselfly_core::Digest;
use damselfly_registry::auth::rate_limit::LoginLimiter;
use damselfly_registry::metadata::{ClusterId, Db, TenantId};
use damselfly_registry::p2p::lease::Route;
use damselfly_registry::p2p::stats::{Joining, Traffic};
use damselfly_registry::p2p::{Leases, Scheduler, Stats};
use damselfly_registry::services::preheat::jobs;
use damselfly_registry::services::preheat::{NewJob, NodePlan, PreheatState, PreheatTrigger};
use damselfly_tests::{fresh_postgres_database, on_both_backends, Backend};

struct Store {
    db: Db,
    tenant: TenantId,
    cluster: ClusterId,
    other: ClusterId,
    _dir: tempfile::TempDir,
}

async fn open(backend: Backend) -> Store {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/metadata.db", dir.path().display()),
        Backend::Postgres => fresh_postgres_database(),
    };
    let db = Db::open(&url, 4).await.expect("open store");
    let tenant = db.tenancy().create_tenant("acme").await.expect("tenant").id;
    let cluster = db.clusters().create(tenant, "edge", "token-hash-1").await.expect("cluster");
    let other = db.clusters().create(tenant, "lab", "token-hash-2").await.expect("cluster");
    Store { db, tenant, cluster, other, _dir: dir }
}

fn registration(node: &str) -> RegisterRequest {
    RegisterRequest {
        node: node.into(),
        ip: "10.0.0.1".into(),
        peer_port: 65002,
        zone: "z1".into(),
        upload_slots: 3,
        version: "1.0".into(),
        platform: "linux/arm64".into(),
    }
}

on_both_backends!(
    a_cluster_lease_has_one_holder_until_it_lapses_and_is_taken_over,
    replicas_route_a_cluster_to_its_one_holder,
    a_revoked_lease_makes_its_holder_forget_the_cluster_and_starts_a_new_term,
    agents_are_kept_with_what_they_said_and_forgotten_when_silent,
    a_preheat_job_is_done_once_every_node_reports_and_failed_if_one_fails,
    a_node_without_a_manifest_for_its_platform_fails_at_once_and_the_others_run,
    traffic_counted_on_two_replicas_adds_up_per_tenant_and_is_never_shown_to_another,
    a_swarm_is_active_on_every_replica_until_its_last_agent_holds_every_piece,
    failed_logins_count_for_every_replica_together,
);

async fn a_cluster_lease_has_one_holder_until_it_lapses_and_is_taken_over(backend: Backend) {
    let s = open(backend).await;
    let leases = s.db.leases();
    assert_eq!(leases.acquire(s.cluster, "a", "http://a", 60_000).await.unwrap(), Some(1));
    assert_eq!(leases.acquire(s.cluster, "b", "http://b", 60_000).await.unwrap(), None, "held by a");
    assert_eq!(leases.acquire(s.cluster, "a", "http://a", 60_000).await.unwrap(), Some(1), "a renews");
    let held = leases.holder(s.cluster).await.unwrap().expect("a holder");
    assert_eq!((held.holder.as_str(), held.url.as_str(), held.term), ("a", "http://a", 1));
    assert!(held.remaining_ms > 50_000 && held.remaining_ms <= 60_000, "{held:?}");
    // Another cluster's lease is another row.
    assert_eq!(leases.acquire(s.other, "b", "http://b", 60_000).await.unwrap(), Some(1));
    assert_eq!(leases.renew("a", 60_000).await.unwrap(), vec![s.cluster]);

    // a lets its lease lapse (it stops renewing); b takes it over in the next term.
    assert_eq!(leases.acquire(s.cluster, "a", "http://a", 200).await.unwrap(), Some(1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(leases.holder(s.cluster).await.unwrap().expect("row").remaining_ms, 0);
    assert_eq!(leases.acquire(s.cluster, "b", "http://b", 60_000).await.unwrap(), Some(2));
    assert!(leases.renew("a", 60_000).await.unwrap().is_empty(), "a finds it holds nothing");
    let mut held_by_b = leases.renew("b", 60_000).await.unwrap();
    held_by_b.sort();
    assert_eq!(held_by_b, vec![s.cluster, s.other]);

    // b stops: its leases lapse at once, and a takes one over without waiting.
    assert_eq!(leases.release_all("b").await.unwrap(), 2);
    assert_eq!(leases.acquire(s.cluster, "a", "http://a", 60_000).await.unwrap(), Some(3));
    assert_eq!(leases.holder(s.cluster).await.unwrap().expect("row").url, "http://a");
    // a is restarted on the same address (a single process, say): the new
    // process takes its predecessor's lease at once, in a new term.
    assert_eq!(leases.acquire(s.cluster, "a-restarted", "http://a", 60_000).await.unwrap(), Some(4));
    assert_eq!(leases.acquire(s.cluster, "c", "http://c", 60_000).await.unwrap(), None);
}

async fn replicas_route_a_cluster_to_its_one_holder(backend: Backend) {
    let s = open(backend).await;
    let scheduler = || Arc::new(Scheduler::new(Duration::from_secs(10)));
    let (sa, sb) = (scheduler(), scheduler());
    let a = Leases::new(s.db.clone(), "http://replica-a:5000".into(), sa.clone());
    let b = Leases::new(s.db.clone(), "http://replica-b:5000".into(), sb.clone());
    assert_ne!(a.replica(), b.replica());
    assert_eq!(a.route_of(s.cluster).await.unwrap(), Route::Here, "the first to ask takes the lease");
    assert_eq!(b.route_of(s.cluster).await.unwrap(), Route::Holder("http://replica-a:5000".into()));
    assert_eq!(b.route_of(s.other).await.unwrap(), Route::Here, "clusters spread over replicas");
    assert_eq!(a.route_of(s.other).await.unwrap(), Route::Holder("http://replica-b:5000".into()));
    assert_eq!((a.held(), b.held()), (1, 1));
    a.renew().await.unwrap();
    assert_eq!(a.route_of(s.cluster).await.unwrap(), Route::Here);

    // a schedules an agent, then stops; b takes the cluster over at its next
    // call and starts with an empty scheduler for it.
    sa.register(s.cluster, &registration("n1"));
    a.release().await;
    assert_eq!(a.held(), 0);
    b.forget_holder(s.cluster);
    assert_eq!(b.route_of(s.cluster).await.unwrap(), Route::Here);
    assert!(sb.agents_of(s.cluster).is_empty());
    // a, told it holds nothing, routes to b; were it to take the cluster
    // back later, it would start clean too.
    a.renew().await.unwrap();
    assert_eq!(a.route_of(s.cluster).await.unwrap(), Route::Holder("http://replica-b:5000".into()));
    b.release().await;
    a.forget_holder(s.cluster);
    assert_eq!(a.route_of(s.cluster).await.unwrap(), Route::Here);
    assert!(sa.agents_of(s.cluster).is_empty(), "what a knew is from an earlier term");
}

/// A cluster's token re-issued through any replica: its agents' rows go and
/// its lease is revoked, so the replica scheduling it forgets its agents at
/// its next renewal and whoever schedules it next starts clean.
async fn a_revoked_lease_makes_its_holder_forget_the_cluster_and_starts_a_new_term(backend: Backend) {
    let s = open(backend).await;
    let scheduler = || Arc::new(Scheduler::new(Duration::from_secs(10)));
    let (sa, sb) = (scheduler(), scheduler());
    let a = Leases::new(s.db.clone(), "http://replica-a:5000".into(), sa.clone());
    let b = Leases::new(s.db.clone(), "http://replica-b:5000".into(), sb.clone());
    assert_eq!(a.route_of(s.cluster).await.unwrap(), Route::Here);
    assert_eq!(a.route_of(s.other).await.unwrap(), Route::Here);
    let id = sa.register(s.cluster, &registration("n1"));
    s.db.agents().insert(&id, s.cluster, &registration("n1")).await.unwrap();
    let kept = sa.register(s.other, &registration("n2"));

    s.db.agents().delete_all(s.cluster).await.unwrap();
    s.db.leases().revoke(s.cluster).await.unwrap();
    let now = damselfly_registry::metadata::now();
    assert!(s.db.agents().online(s.cluster, now - 30).await.unwrap().is_empty());
    a.renew().await.unwrap();
    assert_eq!(a.held(), 1, "only the other cluster's lease is left");
    assert!(sa.agents_of(s.cluster).is_empty(), "a forgot the revoked cluster's agents");
    assert_eq!(sa.agents_of(s.other).iter().map(|a| a.id.clone()).collect::<Vec<_>>(), vec![kept]);
    assert_eq!(b.route_of(s.cluster).await.unwrap(), Route::Here, "b takes the revoked lease at once");
    assert_eq!(s.db.leases().holder(s.cluster).await.unwrap().expect("row").term, 2);
}

async fn agents_are_kept_with_what_they_said_and_forgotten_when_silent(backend: Backend) {
    let s = open(backend).await;
    let agents = s.db.agents();
    agents.insert("id-b", s.cluster, &registration("node-b")).await.unwrap();
    agents.insert("id-a", s.cluster, &registration("node-a")).await.unwrap();
    agents.insert("id-x", s.other, &registration("node-x")).await.unwrap();
    let now = damselfly_registry::metadata::now();
    let online = agents.online(s.cluster, now - 30).await.unwrap();
    assert_eq!(online.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["id-a", "id-b"], "by node name");
    assert_eq!(online[0].registered, registration("node-a"));
    assert_eq!((online[0].cache_bytes, online[0].served_bytes), (None, None));

    assert!(agents.heard_from(s.cluster, "id-a", Some(7), Some(9)).await.unwrap());
    assert!(agents.heard_from(s.cluster, "id-a", None, Some(11)).await.unwrap());
    let a = agents.find(s.cluster, "id-a", now - 30).await.unwrap().expect("id-a");
    assert_eq!((a.cache_bytes, a.served_bytes), (Some(7), Some(11)), "None keeps what was said");
    assert!(!agents.heard_from(s.other, "id-a", None, None).await.unwrap(), "not the other cluster's agent");
    assert!(agents.find(s.other, "id-a", now - 30).await.unwrap().is_none());
    assert!(agents.find(s.cluster, "id-a", now + 60).await.unwrap().is_none(), "not heard from since");

    assert!(agents.delete(s.cluster, "id-b").await.unwrap());
    assert!(!agents.delete(s.cluster, "id-b").await.unwrap());
    assert_eq!(agents.expire(now + 1).await.unwrap(), 2, "id-a and id-x fell silent");
    assert!(agents.online(s.cluster, 0).await.unwrap().is_empty());
}

fn node(id: &str) -> NodePlan {
    NodePlan {
        agent_id: id.to_owned(),
        node: format!("node-{id}"),
        platform: "linux/amd64".into(),
        fetch: Ok((Digest::of(b"m"), vec![Digest::of(b"l")])),
    }
}

fn new_job(cluster: ClusterId, tag: &str, nodes: Vec<NodePlan>) -> NewJob {
    NewJob {
        cluster,
        repository: "a/b".into(),
        tag: tag.into(),
        manifest: Digest::of(b"m"),
        token: "t".into(),
        trigger: PreheatTrigger::Api,
        nodes,
    }
}

fn online(ids: &[&str]) -> HashSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

async fn a_preheat_job_is_done_once_every_node_reports_and_failed_if_one_fails(backend: Backend) {
    let s = open(backend).await;
    let db = &s.db;
    let job = jobs::create(db, new_job(s.cluster, "v1", vec![node("x"), node("y")])).await.unwrap();
    assert_eq!(job.state, PreheatState::Running);
    assert_eq!(jobs::take_work(db, s.other, "x").await.unwrap(), vec![]);
    let work = jobs::take_work(db, s.cluster, "x").await.unwrap();
    assert_eq!(work.len(), 1);
    assert_eq!((work[0].blobs.clone(), work[0].token.as_str()), (vec![Digest::of(b"l")], "t"));
    assert!(jobs::take_work(db, s.cluster, "x").await.unwrap().is_empty(), "work is handed out once");
    assert!(jobs::report(db, s.cluster, &job.id, "x", true, None).await.unwrap());
    let seen = jobs::job(db, s.cluster, &job.id, &online(&["x", "y"])).await.unwrap().expect("job");
    assert_eq!(
        (seen.state, seen.nodes[0].state, seen.nodes[1].state),
        (PreheatState::Running, PreheatState::Done, PreheatState::Pending)
    );
    // y goes offline before it takes the work: failed, and it stays so.
    let seen = jobs::job(db, s.cluster, &job.id, &online(&["x"])).await.unwrap().expect("job");
    assert_eq!((seen.state, seen.nodes[1].state), (PreheatState::Failed, PreheatState::Failed));
    assert_eq!(seen.nodes[1].error.as_deref(), Some("the agent went offline before it finished"));
    let again = jobs::job(db, s.cluster, &job.id, &online(&["x", "y"])).await.unwrap().expect("job");
    assert_eq!(again.nodes[1].state, PreheatState::Failed);
    assert!(jobs::take_work(db, s.cluster, "y").await.unwrap().is_empty());
    assert!(
        jobs::job(db, s.other, &job.id, &online(&["x"])).await.unwrap().is_none(),
        "another cluster's job is not visible"
    );

    let second = jobs::create(db, new_job(s.cluster, "v2", vec![node("x")])).await.unwrap();
    jobs::take_work(db, s.cluster, "x").await.unwrap();
    assert!(jobs::report(db, s.cluster, &second.id, "x", true, None).await.unwrap());
    let done = jobs::job(db, s.cluster, &second.id, &online(&["x"])).await.unwrap().expect("job");
    assert_eq!(done.state, PreheatState::Done);
    assert!(!jobs::report(db, s.cluster, &second.id, "z", true, None).await.unwrap());
    let listed = jobs::jobs_of(db, s.cluster, &online(&["x"])).await.unwrap();
    assert_eq!(listed.iter().map(|j| j.tag.as_str()).collect::<Vec<_>>(), ["v2", "v1"], "newest first");
    assert!(jobs::jobs_of(db, s.other, &online(&["x"])).await.unwrap().is_empty());
}

async fn a_node_without_a_manifest_for_its_platform_fails_at_once_and_the_others_run(backend: Backend) {
    let s = open(backend).await;
    let db = &s.db;
    let mut arm = node("arm");
    arm.platform = "linux/arm64".into();
    arm.fetch = Err("the index has no manifest for linux/arm64".into());
    let mut other = node("x");
    other.fetch = Ok((Digest::of(b"m2"), vec![Digest::of(b"l"), Digest::of(b"l2")]));
    let mut new = new_job(s.cluster, "v1", vec![arm, node("y"), other]);
    new.manifest = Digest::of(b"index");
    new.trigger = PreheatTrigger::Push;
    let job = jobs::create(db, new).await.unwrap();
    assert_eq!(job.state, PreheatState::Running);
    assert_eq!(job.blobs, vec![Digest::of(b"l"), Digest::of(b"l2")], "each blob once, in order");
    assert_eq!((job.nodes[0].state, job.nodes[0].manifest), (PreheatState::Failed, None));
    assert!(jobs::take_work(db, s.cluster, "arm").await.unwrap().is_empty());
    let work = jobs::take_work(db, s.cluster, "x").await.unwrap();
    assert_eq!(work[0].blobs, vec![Digest::of(b"l"), Digest::of(b"l2")]);
    assert!(jobs::report(db, s.cluster, &job.id, "x", true, None).await.unwrap());
    jobs::take_work(db, s.cluster, "y").await.unwrap();
    assert!(jobs::report(db, s.cluster, &job.id, "y", false, Some("disk full".into())).await.unwrap());
    let all = online(&["arm", "x", "y"]);
    let jobs = jobs::jobs_of(db, s.cluster, &all).await.unwrap();
    assert_eq!((jobs.len(), jobs[0].state, jobs[0].trigger), (1, PreheatState::Failed, PreheatTrigger::Push));
    assert_eq!(jobs[0].nodes[2].manifest, Some(Digest::of(b"m2")));
    assert_eq!(jobs[0].nodes[1].error.as_deref(), Some("disk full"));
}

async fn traffic_counted_on_two_replicas_adds_up_per_tenant_and_is_never_shown_to_another(backend: Backend) {
    let s = open(backend).await;
    let db = &s.db;
    let globex = db.tenancy().create_tenant("globex").await.unwrap().id;
    let gx_cluster = db.clusters().create(globex, "gx", "token-hash-3").await.unwrap();
    let digest = |n: u8| Digest::of(&[n]);
    // The replica scheduling acme's cluster hears of the join and of bytes from peers…
    let holder = Stats::new(Duration::from_secs(60));
    let fresh = Joining { agent: "a", pieces: 4, held: &[] };
    holder.joined(db, s.tenant, s.cluster, "web", digest(1), fresh).await.unwrap();
    holder.joined(db, globex, gx_cluster, "gx", digest(1), fresh).await.unwrap();
    holder.received(s.cluster, digest(1), Traffic { peers: 300, seed: 0 });
    // …another serves the seed's pieces and finds the swarm in the database.
    let seed = Stats::new(Duration::from_secs(60));
    seed.received(s.cluster, digest(1), Traffic { peers: 0, seed: 100 });
    seed.received(gx_cluster, digest(1), Traffic { peers: 0, seed: 50 });
    // Bytes for a swarm nobody joined are not attributed to anyone.
    seed.received(s.other, digest(2), Traffic { peers: 7, seed: 7 });
    holder.flush(db).await.unwrap();
    seed.flush(db).await.unwrap();
    let reader = Stats::new(Duration::from_secs(60));
    let a = reader.of_tenant(db, s.tenant).await.unwrap();
    assert_eq!(a.total, Traffic { peers: 300, seed: 100 });
    assert_eq!(a.total.saved_percent(), 75.0);
    assert_eq!(a.by_namespace, vec![("web".to_owned(), Traffic { peers: 300, seed: 100 })]);
    assert_eq!(a.by_cluster, vec![(s.cluster, Traffic { peers: 300, seed: 100 })]);
    assert_eq!(a.active_swarms, vec![(s.cluster, 1)]);
    // One point, or two if a period ended between the flush and the read.
    assert!(matches!(a.series.len(), 1 | 2), "{:?}", a.series);
    assert_eq!(a.series[0].traffic, Traffic { peers: 300, seed: 100 });
    let g = reader.of_tenant(db, globex).await.unwrap();
    assert_eq!(g.total, Traffic { peers: 0, seed: 50 });
    assert_eq!(g.by_namespace, vec![("gx".to_owned(), Traffic { peers: 0, seed: 50 })]);
    // Flushed again, nothing is counted twice.
    holder.flush(db).await.unwrap();
    seed.received(s.cluster, digest(1), Traffic { peers: 0, seed: 10 });
    seed.flush(db).await.unwrap();
    assert_eq!(reader.of_tenant(db, s.tenant).await.unwrap().total, Traffic { peers: 300, seed: 110 });
}

/// A swarm is active while one of its agents still downloads, not for
/// minutes after every pull has ended; the replica scheduling the cluster
/// hears of it and another replica's dashboard shows it.
async fn a_swarm_is_active_on_every_replica_until_its_last_agent_holds_every_piece(backend: Backend) {
    let s = open(backend).await;
    let db = &s.db;
    let digest = |n: u8| Digest::of(&[n]);
    let holder = Stats::new(Duration::from_secs(60));
    let reader = Stats::new(Duration::from_secs(60));
    let active = || async { reader.of_tenant(db, s.tenant).await.unwrap().active_swarms };
    let join =
        |agent, pieces, held, d| holder.joined(db, s.tenant, s.cluster, "web", d, Joining { agent, pieces, held });
    join("a", 4, &[], digest(1)).await.unwrap();
    join("b", 4, &[0], digest(1)).await.unwrap();
    assert_eq!(active().await, vec![(s.cluster, 1)]);
    holder.progressed(db, s.cluster, digest(1), "a", &[0, 1, 2, 3]).await.unwrap();
    assert_eq!(active().await, vec![(s.cluster, 1)], "b still downloads");
    holder.progressed(db, s.cluster, digest(1), "b", &[1, 2]).await.unwrap();
    holder.progressed(db, s.cluster, digest(1), "b", &[3]).await.unwrap();
    assert_eq!(active().await, vec![], "both hold every piece");
    // An agent that joins holding the whole blob (from its cache) downloads nothing.
    join("c", 2, &[0, 1], digest(2)).await.unwrap();
    assert_eq!(active().await, vec![]);
    // A report from an agent the swarm never saw join changes nothing.
    holder.progressed(db, s.cluster, digest(2), "d", &[0]).await.unwrap();
    assert_eq!(active().await, vec![]);
    // An agent resumed after a restart announces what it holds, and its first report says it
    // again: it still downloads until it holds the pieces it lacked.
    join("e", 4, &[0, 1], digest(4)).await.unwrap();
    holder.progressed(db, s.cluster, digest(4), "e", &[0, 1, 2]).await.unwrap();
    assert_eq!(active().await, vec![(s.cluster, 1)], "piece 3 is still missing");
    holder.progressed(db, s.cluster, digest(4), "e", &[3]).await.unwrap();
    assert_eq!(active().await, vec![]);
    // A swarm whose downloading agents went quiet stops counting after the bound.
    let quiet_since = damselfly_registry::metadata::now() - 3_600;
    db.traffic().swarm_active(s.cluster, &digest(3).to_string(), s.tenant, "web", quiet_since, true).await.unwrap();
    assert_eq!(active().await, vec![]);
}

async fn failed_logins_count_for_every_replica_together(backend: Backend) {
    let s = open(backend).await;
    let db = &s.db;
    // Two replicas' limiters, one database.
    let (a, b) = (LoginLimiter::new(3, Duration::from_secs(60)), LoginLimiter::new(3, Duration::from_secs(60)));
    let c = LoginLimiter::new(3, Duration::from_secs(60));
    assert_eq!(c.standing(db, &["user:eve"]).await.unwrap(), Default::default(), "c has looked: nothing yet");
    a.failed(db, &["user:eve", "addr:10.0.0.9"]).await.unwrap();
    b.failed(db, &["user:eve", "addr:10.0.0.9"]).await.unwrap();
    let standing = a.standing(db, &["user:eve", "addr:10.0.0.9"]).await.unwrap();
    assert!(standing.failures && standing.blocked.is_none(), "{standing:?}");
    a.failed(db, &["user:eve", "addr:10.0.0.9"]).await.unwrap();
    let wait =
        b.standing(db, &["user:bob", "addr:10.0.0.9"]).await.unwrap().blocked.expect("the address is blocked on b");
    // c, which failed nobody, sees the others' failures once its view is
    // refreshed: within the stated bound.
    tokio::time::sleep(damselfly_registry::auth::rate_limit::WATCH_REFRESH).await;
    assert!(c.standing(db, &["user:eve"]).await.unwrap().blocked.is_some(), "blocked on c too");
    assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(50), "{wait:?}");
    b.succeeded(db, "user:eve").await.unwrap();
    assert!(a.standing(db, &["user:eve"]).await.unwrap().blocked.is_none());
    assert!(!a.standing(db, &["user:carol"]).await.unwrap().failures);
    // Failures older than the window do not count.
    let short = LoginLimiter::new(1, Duration::from_millis(200));
    short.failed(db, &["user:dan"]).await.unwrap();
    assert!(short.standing(db, &["user:dan"]).await.unwrap().blocked.is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(short.standing(db, &["user:dan"]).await.unwrap().blocked.is_none());
}
