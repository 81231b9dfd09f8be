//! The node agent, driven as a node drives it: container runtimes pull
//! through its mirror, agents fetch pieces from each other and from the
//! registry's seed, and nothing is served to anyone the registry would not
//! serve it to. Everything runs on loopback against a real registry; the
//! scenarios run on SQLite (the scheduler keeps its state in memory, so the
//! metadata backend changes nothing here).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use damselfly_core::p2p::{JoinResponse, RegisterRequest, RegisterResponse};
use damselfly_core::Digest;
use damselfly_tests::workstation::Workstation;
use damselfly_tests::{metric_value, pseudo_random, run, Agent, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const MIB: usize = 1024 * 1024;

/// A registry with the namespace `accel`, a cluster `edge`, and robots that may or may not pull from it.
struct Setup {
    reg: Registry,
    http: Client,
    cluster_token: String,
}

impl Setup {
    async fn new() -> Setup {
        Setup::with(Registry::start(Backend::Sqlite)).await
    }

    /// The same with 256 KiB pieces: small enough for the scheduler's stripe trees.
    async fn with_tree_pieces() -> Setup {
        Setup::with(Registry::start_with(Backend::Sqlite, &[("DAMSELFLY_PIECE_SIZE", "262144")])).await
    }

    /// The same with 4 MiB pieces for every blob (the operator's `--piece-size`),
    /// for tests that name pieces by their place in a blob.
    async fn with_4_mib_pieces() -> Setup {
        Setup::with(Registry::start_with(Backend::Sqlite, &[("DAMSELFLY_PIECE_SIZE", "4194304")])).await
    }

    /// The same around a registry started by the caller.
    async fn with(reg: Registry) -> Setup {
        let http = Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
        let mut s = Setup { reg, http, cluster_token: String::new() };
        let (status, body) =
            s.admin(reqwest::Method::POST, "/api/v1/tenants/default/clusters", json!({"name": "edge"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        s.cluster_token = body["token"].as_str().expect("cluster token").to_owned();
        s
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
        let mut req =
            self.http.request(method, format!("{}{path}", self.reg.url)).basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD));
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = req.send().await.expect("admin request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn push_blob(&self, repository: &str, blob: &[u8]) -> Digest {
        let digest = Digest::of(blob);
        let r = self
            .http
            .post(format!("{}/v2/{repository}/blobs/uploads/?digest={digest}", self.reg.url))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .body(blob.to_vec())
            .send()
            .await
            .expect("push");
        assert_eq!(r.status(), StatusCode::CREATED);
        digest
    }

    /// A robot of the default tenant; `viewer` of `accel` if `may_pull`. Returns (login, secret).
    async fn robot(&self, name: &str, may_pull: bool) -> (String, String) {
        let scopes = if may_pull { json!([{"namespace": "accel", "role": "viewer"}]) } else { json!([]) };
        let (status, body) = self
            .admin(reqwest::Method::POST, "/api/v1/tenants/default/robots", json!({"name": name, "scopes": scopes}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (body["login"].as_str().expect("login").to_owned(), body["token"].as_str().expect("token").to_owned())
    }

    /// A token for pulling `accel/app`, from the registry's token endpoint.
    async fn pull_token(&self, robot: &(String, String)) -> String {
        let r = self
            .http
            .get(format!("{}/auth/token?service=damselfly&scope=repository:accel/app:pull", self.reg.url))
            .basic_auth(&robot.0, Some(&robot.1))
            .send()
            .await
            .expect("token request");
        let body: Value = r.json().await.expect("token JSON");
        body["token"].as_str().expect("token").to_owned()
    }

    /// Pushes `blob` to `accel/app`, turns P2P on for `accel`, and makes the
    /// robot `puller`: (the blob's digest, a pull token of the robot).
    async fn accelerated(&self, blob: &[u8]) -> (Digest, String) {
        let digest = self.push_blob("accel/app", blob).await;
        self.set_p2p(true).await;
        (digest, self.pull_token(&self.robot("puller", true).await).await)
    }

    async fn set_p2p(&self, on: bool) {
        let (status, body) =
            self.admin(reqwest::Method::PATCH, "/api/v1/namespaces/accel", json!({"p2p_enabled": on})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The registry caches namespaces for two seconds.
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }

    async fn registry_metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.reg.url)).send().await.expect("metrics").text().await.expect("text")
    }

    /// Bytes the registry sent as blobs and as seed pieces.
    async fn registry_blob_bytes(&self) -> f64 {
        let page = self.registry_metrics().await;
        metric_value(&page, "damselfly_bytes_sent_total{kind=\"seed\"}")
            + metric_value(&page, "damselfly_bytes_sent_total{kind=\"blob\"}")
    }

    fn agent(&self, extra: &[&str]) -> Agent {
        Agent::start(&self.reg.url, &self.cluster_token, extra)
    }
}

async fn agent_metrics(http: &Client, agent: &Agent) -> String {
    http.get(format!("{}/metrics", agent.metrics_url)).send().await.expect("metrics").text().await.expect("text")
}

async fn get_blob(http: &Client, agent: &Agent, digest: Digest, token: Option<&str>) -> reqwest::Response {
    let mut req = http.get(format!("{}/v2/accel/app/blobs/{digest}", agent.mirror_url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("blob request")
}

#[tokio::test(flavor = "multi_thread")]
async fn three_agents_pull_one_blob_and_the_registry_sends_it_about_once() {
    let s = Setup::new().await;
    let blob = pseudo_random(24 * MIB, 7);
    let (digest, token) = s.accelerated(&blob).await;
    let agents = [s.agent(&[]), s.agent(&[]), s.agent(&[])];
    let before = s.registry_blob_bytes().await;

    let pull = |a: &Agent| {
        let (http, token, url) = (s.http.clone(), token.clone(), a.mirror_url.clone());
        async move {
            let r =
                http.get(format!("{url}/v2/accel/app/blobs/{digest}")).bearer_auth(&token).send().await.expect("pull");
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()["docker-content-digest"], digest.to_string().as_str());
            r.bytes().await.expect("blob body")
        }
    };
    let (c0, c1, c2) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(pull(&agents[0]), pull(&agents[1]), pull(&agents[2]))
    })
    .await
    .expect("pulls in 2 min");
    let copies = [c0, c1, c2];
    for copy in &copies {
        assert_eq!(copy.len(), blob.len());
        assert!(copy.as_ref() == blob.as_slice(), "every copy is byte-identical");
    }

    let sent = s.registry_blob_bytes().await - before;
    assert!(sent <= 1.25 * blob.len() as f64, "the registry sent {sent} bytes for a {} byte blob", blob.len());
    let mut from_peers = 0.0;
    for a in &agents {
        from_peers +=
            metric_value(&agent_metrics(&s.http, a).await, "damselfly_agent_bytes_received_total{source=\"peer\"}");
    }
    assert!(from_peers > 0.0, "agents traded pieces");
    let page = agent_metrics(&s.http, &agents[0]).await;
    assert!(page.contains("damselfly_agent_pieces_total{outcome=\"verified\"}"), "{page}");

    // A Range request is answered from the cache with exactly that slice.
    let r = s
        .http
        .get(format!("{}/v2/accel/app/blobs/{digest}", agents[1].mirror_url))
        .bearer_auth(&token)
        .header("range", "bytes=5000000-9000000")
        .send()
        .await
        .expect("range request");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.expect("body").as_ref(), &blob[5_000_000..=9_000_000]);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_cached_reaches_a_client_or_peer_the_registry_would_refuse() {
    let s = Setup::with_4_mib_pieces().await;
    let blob = pseudo_random(6 * MIB, 11);
    let digest = s.push_blob("accel/app", &blob).await;
    let other = s.push_blob("accel/app", b"another blob").await;
    s.set_p2p(true).await;
    let token = s.pull_token(&s.robot("puller", true).await).await;
    let outsider = s.pull_token(&s.robot("outsider", false).await).await;
    let agent = s.agent(&[]);
    let r = get_blob(&s.http, &agent, digest, Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.expect("body").as_ref() == blob.as_slice());

    // Clients: no token, a token without pull, a garbage token. The blob is in the cache all along.
    let r = get_blob(&s.http, &agent, digest, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().expect("challenge").to_owned();
    assert!(challenge.starts_with(&format!("Bearer realm=\"{}/auth/token\"", s.reg.url)), "{challenge}");
    assert!(!r.bytes().await.expect("body").windows(64).any(|w| blob.windows(64).next() == Some(w)));
    for bad in [outsider.as_str(), "not.a.token"] {
        let r = get_blob(&s.http, &agent, digest, Some(bad)).await;
        assert!(matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN), "{}", r.status());
        assert!(r.bytes().await.expect("body").len() < 1024, "an error body, not the blob");
    }
    let head = s
        .http
        .head(format!("{}/v2/accel/app/blobs/{digest}", agent.mirror_url))
        .bearer_auth(&outsider)
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), StatusCode::UNAUTHORIZED);
    let head = s
        .http
        .head(format!("{}/v2/accel/app/blobs/{digest}", agent.mirror_url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], blob.len().to_string().as_str());
    assert_eq!(head.headers()["docker-content-digest"], digest.to_string().as_str());

    // Peers: a ticket this agent accepts comes from a join for that very blob.
    let fake = register_fake_agent(&s, 9).await;
    let right = join_as(&s, &fake, digest, &token, &[]).await.ticket;
    let wrong = join_as(&s, &fake, other, &token, &[]).await.ticket;
    let piece = |auth: Option<String>| {
        let mut req = s.http.get(format!("{}/pieces/{digest}/0", agent.peer_url));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let r = piece(None).await.expect("piece");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for auth in [
        format!("Ticket {wrong}"),
        "Ticket garbage.garbage.garbage".to_owned(),
        format!("Ticket {token}"),
        format!("Bearer {right}"),
    ] {
        let r = piece(Some(auth.clone())).await.expect("piece");
        assert!(matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN), "{auth}: {}", r.status());
        assert!(r.bytes().await.expect("body").len() < 1024);
    }
    let r = piece(Some(format!("Ticket {right}"))).await.expect("piece");
    assert_eq!(r.status(), StatusCode::OK, "the right ticket opens the piece");
    assert!(r.bytes().await.expect("body").as_ref() == &blob[..4 * MIB]);
    let r = s
        .http
        .get(format!("{}/pieces/{digest}/9", agent.peer_url))
        .header("authorization", format!("Ticket {right}"))
        .send()
        .await
        .expect("piece");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "a piece the agent does not hold");

    // Feeds take the same tickets, and stream the stripe's pieces as frames:
    // the index in four big-endian bytes, then the piece (4 MiB pieces: 0 and 1).
    let feed = |auth: String, body: Value| {
        s.http.post(format!("{}/feeds/{digest}", agent.peer_url)).header("authorization", auth).json(&body).send()
    };
    let stripe_1 = json!({"stripes": 2, "stripe": 1, "have": ""});
    for auth in [format!("Ticket {wrong}"), format!("Bearer {right}"), "Ticket garbage.garbage.garbage".to_owned()] {
        let r = feed(auth.clone(), stripe_1.clone()).await.expect("feed");
        assert!(matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN), "{auth}: {}", r.status());
        assert!(r.bytes().await.expect("body").len() < 1024);
    }
    for bad in [
        json!({"stripes": 2, "stripe": 2}),
        json!({"stripes": 0, "stripe": 0}),
        json!({"stripes": 2, "stripe": 0, "have": "xyz"}),
    ] {
        let r = feed(format!("Ticket {right}"), bad.clone()).await.expect("feed");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = feed(format!("Ticket {right}"), stripe_1).await.expect("feed");
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.bytes().await.expect("feed body");
    assert_eq!(body.len(), 4 + 2 * MIB, "one frame: piece 1");
    assert_eq!(&body[..4], &[0, 0, 0, 1]);
    assert!(body[4..] == blob[4 * MIB..]);
    let r = feed(format!("Ticket {right}"), json!({"stripes": 2, "stripe": 1, "have": "02"})).await.expect("feed");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.expect("feed body").is_empty(), "nothing the requester holds already");
}

/// A parent in the stripe trees that answers with garbage: a frame for a
/// piece of the wrong stripe. The agent drops the feed, reports the parent,
/// and still delivers the right blob.
#[tokio::test(flavor = "multi_thread")]
async fn a_parent_whose_feed_sends_garbage_is_dropped_and_the_blob_still_arrives() {
    let s = Setup::with_tree_pieces().await;
    let blob = pseudo_random(8 * MIB, 17);
    let (digest, token) = s.accelerated(&blob).await;
    // A peer server that answers every request with one frame claiming piece 1 (stripe 1 of 2).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let garbage = axum::Router::new().fallback(|| async { [&[0u8, 0, 0, 1][..], &[0xab; 64][..]].concat() });
    let server = tokio::spawn(async move { axum::serve(listener, garbage).await });
    // Registered first, it comes first in the trees: the agent's parent in stripe 0.
    let liar = register_fake_agent(&s, port).await;
    join_as(&s, &liar, digest, &token, &(0..32).collect::<Vec<u32>>()).await;
    let agent = s.agent(&[]);
    let body = pull_within(&s, &agent, digest, &token, 60).await;
    assert!(body == blob, "the blob arrives intact");
    let log = agent.log();
    assert!(log.contains("sent piece 1, which is not one of stripe 0 of 2"), "{log}");
    assert!(log.contains(&liar), "the parent is named: {log}");
    server.abort();
}

/// A parent in the stripe trees whose feed slots are all taken (here it has
/// none) answers 503; its child pulls that stripe's pieces instead, from it
/// or the seed, and does not report it as failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_child_refused_a_feed_for_want_of_slots_pulls_the_stripe_instead() {
    let s = Setup::with_tree_pieces().await;
    let blob = pseudo_random(8 * MIB, 23);
    let (digest, token) = s.accelerated(&blob).await;
    // Joined first, the parent comes first in the trees: the child's parent in stripe 0.
    let parent = s.agent(&["--feed-slots", "0"]);
    assert!(pull_within(&s, &parent, digest, &token, 60).await == blob);

    let child = s.agent(&[]);
    assert!(pull_within(&s, &child, digest, &token, 60).await == blob, "the blob arrives intact");
    let log = child.log();
    assert!(log.contains("every feed slot of the parent is busy; pulling the stripe meanwhile"), "{log}");
    assert!(!log.contains("a stripe's feed failed"), "busy is not failed: {log}");
    let page = agent_metrics(&s.http, &parent).await;
    let served = metric_value(&page, "damselfly_agent_bytes_served_to_peers_total");
    assert!(served >= (blob.len() / 4) as f64, "the parent still served pieces: {page}");
    assert!(page.contains("damselfly_agent_feeds 0"), "{page}");

    // Asked directly (after the child, which would otherwise take it for a parent).
    let fake = register_fake_agent(&s, 9).await;
    let ticket = join_as(&s, &fake, digest, &token, &[]).await.ticket;
    let r = s
        .http
        .post(format!("{}/feeds/{digest}", parent.peer_url))
        .header("authorization", format!("Ticket {ticket}"))
        .json(&json!({"stripes": 2, "stripe": 0, "have": ""}))
        .send()
        .await
        .expect("feed");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.expect("body").contains("every feed slot is busy"));
}

/// A feed holds one of the piece server's feed slots while it streams: a
/// second child waits its turn (503), the same child asking again for the
/// same stripe takes over its own slot, and a child that hangs up gives the
/// slot back.
#[tokio::test(flavor = "multi_thread")]
async fn a_feed_holds_a_feed_slot_until_its_child_hangs_up() {
    let s = Setup::new().await;
    let blob = pseudo_random(8 * MIB, 29);
    let (digest, token) = s.accelerated(&blob).await;
    // 64 KiB/s to peers: a 4 MiB piece takes a minute, so a feed stays open.
    let parent = s.agent(&["--feed-slots", "1", "--upload-rate", "65536"]);
    assert!(pull_within(&s, &parent, digest, &token, 60).await == blob);
    let (a, b) = (register_fake_agent(&s, 9).await, register_fake_agent(&s, 9).await);
    let ticket_a = join_as(&s, &a, digest, &token, &[]).await.ticket;
    let ticket_b = join_as(&s, &b, digest, &token, &[]).await.ticket;
    let feed = |ticket: &str| {
        s.http
            .post(format!("{}/feeds/{digest}", parent.peer_url))
            .header("authorization", format!("Ticket {ticket}"))
            .json(&json!({"stripes": 2, "stripe": 0, "have": ""}))
            .send()
    };
    let mut first = feed(&ticket_a).await.expect("feed");
    assert_eq!(first.status(), StatusCode::OK);
    let frame = first.chunk().await.expect("frame").expect("bytes");
    assert_eq!(&frame[..4], &[0, 0, 0, 0], "piece 0 starts");
    let page = agent_metrics(&s.http, &parent).await;
    assert!(page.contains("damselfly_agent_feeds 1"), "{page}");
    let r = feed(&ticket_b).await.expect("feed");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "the only slot is a's");

    // a asks again: its new feed replaces the first, which ends short.
    let again = feed(&ticket_a).await.expect("feed");
    assert_eq!(again.status(), StatusCode::OK);
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut n = frame.len();
        while let Ok(Some(chunk)) = first.chunk().await {
            n += chunk.len();
        }
        n
    })
    .await
    .expect("the replaced feed ends");
    assert!(rest < 4 + 4 * MIB, "the replaced feed ended before its piece: {rest} bytes");
    assert_eq!(feed(&ticket_b).await.expect("feed").status(), StatusCode::SERVICE_UNAVAILABLE);

    // a hangs up: b gets the slot.
    drop(again);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = feed(&ticket_b).await.expect("feed");
        if r.status() == StatusCode::OK {
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(std::time::Instant::now() < deadline, "the slot came back within 10 s of a hanging up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Joins the blob's swarm as the agent `agent_id`, holding the pieces `have`.
async fn join_as(s: &Setup, agent_id: &str, digest: Digest, token: &str, have: &[u32]) -> JoinResponse {
    let r = s
        .http
        .post(format!("{}/p2p/v1/swarms/join", s.reg.url))
        .header("authorization", format!("Cluster {}", s.cluster_token))
        .json(&json!({"agent_id": agent_id, "repository": "accel/app", "digest": digest, "client_token": token, "have": have}))
        .send()
        .await
        .expect("join");
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<JoinResponse>().await.expect("join JSON")
}

/// The blob pulled through `agent`, which must answer `200` and finish within `secs`.
async fn pull_within(s: &Setup, agent: &Agent, digest: Digest, token: &str, secs: u64) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(secs), async {
        let r = get_blob(&s.http, agent, digest, Some(token)).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.expect("body").to_vec()
    })
    .await
    .unwrap_or_else(|_| panic!("pull in {secs} s"))
}

async fn register_fake_agent(s: &Setup, peer_port: u16) -> String {
    let req = RegisterRequest {
        node: "test".into(),
        ip: "127.0.0.1".into(),
        peer_port,
        zone: String::new(),
        upload_slots: 1,
        version: "test".into(),
        platform: "linux/amd64".into(),
    };
    let r = s
        .http
        .post(format!("{}/p2p/v1/agents", s.reg.url))
        .header("authorization", format!("Cluster {}", s.cluster_token))
        .json(&req)
        .send()
        .await
        .expect("register");
    r.json::<RegisterResponse>().await.expect("register JSON").agent_id
}

/// Whether the blob lands among the agent's completed blobs within 10 s: the
/// agent moves it there just after the last bytes went to the client.
async fn cached(agent: &Agent, digest: Digest) -> bool {
    let path = agent.cache_dir.join("blobs").join(digest.hex());
    for _ in 0..100 {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_serving_corrupt_pieces_is_reported_and_the_blob_arrives_intact() {
    corrupt_pieces_are_caught(Setup::new().await).await;
}

/// The same with pieces small enough for the stripe trees: the corrupt
/// pieces come down the liar's feed rather than one request at a time.
#[tokio::test(flavor = "multi_thread")]
async fn a_parent_feeding_corrupt_pieces_is_reported_and_the_blob_arrives_intact() {
    corrupt_pieces_are_caught(Setup::with_tree_pieces().await).await;
}

async fn corrupt_pieces_are_caught(s: Setup) {
    let blob = pseudo_random(16 * MIB, 23);
    let (digest, token) = s.accelerated(&blob).await;
    let liar = s.agent(&["--corrupt-pieces-for-testing"]);
    let honest = s.agent(&[]);

    let r = get_blob(&s.http, &liar, digest, Some(&token)).await;
    assert!(r.bytes().await.expect("body").as_ref() == blob.as_slice(), "the liar itself has the right bytes");
    let r = pull_within(&s, &honest, digest, &token, 90).await;
    assert!(r == blob, "the blob arrives intact");
    let page = agent_metrics(&s.http, &honest).await;
    assert!(metric_value(&page, "damselfly_agent_pieces_total{outcome=\"rejected\"}") >= 1.0, "{page}");
    assert!(s.reg.log().contains("peers sent corrupt pieces"), "the liar was reported to the scheduler");
    assert!(cached(&honest, digest).await, "the verified blob is kept in the cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_keeps_its_blobs_and_needs_no_seed_bytes() {
    let s = Setup::new().await;
    let blob = pseudo_random(9 * MIB, 31);
    let (digest, token) = s.accelerated(&blob).await;
    let mut agent = s.agent(&[]);
    let r = get_blob(&s.http, &agent, digest, Some(&token)).await;
    assert!(r.bytes().await.expect("body").as_ref() == blob.as_slice());
    // The client has every byte once the last piece is verified, a moment
    // before the agent has stored it and named the blob complete; the kill
    // below is for a blob the cache holds whole.
    assert!(cached(&agent, digest).await, "the pulled blob is stored whole in the cache");
    let before = s.registry_blob_bytes().await;

    agent.restart(&s.cluster_token);
    let r = get_blob(&s.http, &agent, digest, Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.expect("body").as_ref() == blob.as_slice());
    assert_eq!(s.registry_blob_bytes().await, before, "no blob or seed bytes after the restart");
}

/// A partial blob left by a killed agent is resumed: verified pieces are kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_partial_blob_resumes_after_a_restart() {
    let s = Setup::with_4_mib_pieces().await;
    let blob = pseudo_random(12 * MIB, 41);
    let (digest, token) = s.accelerated(&blob).await;
    let mut agent = s.agent(&[]);
    let r = get_blob(&s.http, &agent, digest, Some(&token)).await;
    assert!(r.bytes().await.expect("body").as_ref() == blob.as_slice());
    // Turn the completed blob back into a partial one holding pieces 0 and 2, then corrupt piece 2.
    assert!(cached(&agent, digest).await);
    let complete = agent.cache_dir.join("blobs").join(digest.hex());
    let partial = agent.cache_dir.join("partial").join(digest.hex());
    let mut bytes = std::fs::read(&complete).expect("cached blob");
    bytes[8 * MIB] ^= 1;
    std::fs::write(&partial, &bytes).expect("partial");
    std::fs::write(agent.cache_dir.join("partial").join(format!("{}.bitmap", digest.hex())), [1u8, 0, 1])
        .expect("bitmap");
    std::fs::remove_file(&complete).expect("remove");
    agent.restart(&s.cluster_token);
    let before = s.registry_blob_bytes().await;
    // The agent's previous life is still registered and listed as holding every piece; the new one
    // finds it fails and goes to the seed within seconds rather than waiting for it to be forgotten.
    let body = tokio::time::timeout(Duration::from_secs(15), async {
        get_blob(&s.http, &agent, digest, Some(&token)).await.bytes().await.expect("body")
    })
    .await
    .expect("resumed pull in 15 s");
    assert!(body.as_ref() == blob.as_slice());
    let sent = s.registry_blob_bytes().await - before;
    assert_eq!(sent, (8 * MIB) as f64, "only the missing piece and the corrupt one came from the seed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_gone_bad_in_the_registry_s_store_is_caught_piece_by_piece_and_never_served_whole() {
    let s = Setup::with_4_mib_pieces().await;
    let blob = pseudo_random(12 * MIB, 43);
    let (digest, token) = s.accelerated(&blob).await;
    // The disk under the registry flips a bit in the second piece, after the push was verified.
    let hex = digest.hex();
    let stored = s.reg.data_dir.join("blobs/sha256").join(&hex[..2]).join(hex);
    let mut bytes = std::fs::read(&stored).expect("the stored blob");
    bytes[5 * MIB] ^= 1;
    std::fs::write(&stored, &bytes).expect("rewrite the stored blob");
    let agent = s.agent(&[]);
    let r = get_blob(&s.http, &agent, digest, Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK, "the answer starts before the bad piece arrives");
    let body = tokio::time::timeout(Duration::from_secs(60), r.bytes()).await.expect("the pull ends in 60 s");
    assert!(body.is_err(), "the client never gets the whole length: its stream breaks at the bad piece");
    let page = agent_metrics(&s.http, &agent).await;
    assert!(metric_value(&page, "damselfly_agent_pieces_total{outcome=\"rejected\"}") >= 1.0, "{page}");
    assert!(agent.log().contains("the seed sent a piece that does not match its digest"), "{}", agent.log());
    assert!(!agent.cache_dir.join("blobs").join(digest.hex()).exists(), "nothing is kept");
}

// ----- real clients -----

/// Builds and pushes `<reg>/accel/app:1.0`, two layers, with podman; returns (image ID, layers, manifest digest).
fn build_and_push(reg: &Registry) -> (String, String, String) {
    let ws = Workstation::new();
    ws.login(&reg.host, ADMIN_USER, ADMIN_PASSWORD);
    let ctx = ws.path("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    std::fs::write(ctx.join("small.txt"), "hello from a damselfly\n").expect("write");
    std::fs::write(ctx.join("big.bin"), pseudo_random(9 * MIB, 99)).expect("write");
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY small.txt /etc/small.txt\nCOPY big.bin /srv/big.bin\n",
    )
    .expect("write");
    let image = format!("{}/accel/app:1.0", reg.host);
    run(ws.podman().args(["build", "--quiet", "--format", "oci", "-t", &image]).arg(&ctx));
    let digest_file = ws.path("pushed.digest");
    run(ws.podman().args(["push", "--quiet", "--tls-verify=false", "--digestfile"]).arg(&digest_file).arg(&image));
    let digest = std::fs::read_to_string(&digest_file).expect("digest file").trim().to_owned();
    (ws.image_id(&image), ws.layers(&image), digest)
}

fn pull_through(agent: &Agent, robot: &(String, String), expected: &(String, String, String)) {
    let ws = Workstation::new();
    ws.login(&agent.mirror_host, &robot.0, &robot.1);
    let image = format!("{}/accel/app:1.0", agent.mirror_host);
    run(ws.podman().args(["pull", "--quiet", "--tls-verify=false", &image]));
    assert_eq!(ws.image_id(&image), expected.0, "image ID after the pull through the agent");
    assert_eq!(ws.layers(&image), expected.1, "layers (diff IDs)");
    let repo_digests = run(ws.podman().args(["image", "inspect", "--format", "{{json .RepoDigests}}", &image]));
    assert!(repo_digests.contains(&format!("{}/accel/app@{}", agent.mirror_host, expected.2)), "{repo_digests}");

    // skopeo copies the same image out of the mirror into an OCI layout, digests kept.
    let layout = ws.path("layout");
    let digest_file = ws.path("copied.digest");
    run(ws
        .command("skopeo")
        .args(["--insecure-policy", "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false", "--digestfile"])
        .arg(&digest_file)
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:pulled", layout.display())));
    assert_eq!(std::fs::read_to_string(&digest_file).expect("digest").trim(), expected.2);
    assert_blobs_match_their_names(&layout.join("blobs/sha256"));
}

fn assert_blobs_match_their_names(dir: &Path) {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("blobs dir").flatten() {
        let bytes = std::fs::read(e.path()).expect("blob");
        assert_eq!(Digest::of(&bytes).hex(), e.file_name().to_string_lossy(), "blob content matches its digest");
        n += 1;
    }
    assert!(n >= 4, "manifest, config and two layers");
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_and_skopeo_pull_through_the_mirror_with_p2p_on_and_off() {
    let s = Setup::new().await;
    let pushed = {
        let reg = &s.reg;
        tokio::task::block_in_place(|| build_and_push(reg))
    };
    let robot = s.robot("node-puller", true).await;
    let agent = s.agent(&[]);

    // Acceleration off: the agent passes blobs through from the registry.
    tokio::task::block_in_place(|| pull_through(&agent, &robot, &pushed));
    let page = agent_metrics(&s.http, &agent).await;
    assert!(metric_value(&page, "damselfly_agent_bytes_received_total{source=\"passthrough\"}") > 9e6, "{page}");
    assert_eq!(metric_value(&page, "damselfly_agent_bytes_received_total{source=\"seed\"}"), 0.0);

    // Acceleration on: the same image, now piece by piece from the seed.
    s.set_p2p(true).await;
    tokio::task::block_in_place(|| pull_through(&agent, &robot, &pushed));
    let page = agent_metrics(&s.http, &agent).await;
    assert!(metric_value(&page, "damselfly_agent_bytes_received_total{source=\"seed\"}") > 9e6, "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_cached_from_one_repository_is_not_served_through_another() {
    let s = Setup::new().await;
    let secret = pseudo_random(5 * MIB, 53);
    let digest = s.push_blob("vault/keys", &secret).await;
    s.push_blob("accel/app", b"public bytes").await;
    for ns in ["accel", "vault"] {
        let (status, body) =
            s.admin(reqwest::Method::PATCH, &format!("/api/v1/namespaces/{ns}"), json!({"p2p_enabled": true})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let agent = s.agent(&[]);
    // The administrator pulls the secret blob through the agent, which caches it.
    let r = s
        .http
        .get(format!("{}/auth/token?service=damselfly&scope=repository:vault/keys:pull", s.reg.url))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("token");
    let admin_token = r.json::<Value>().await.expect("JSON")["token"].as_str().expect("token").to_owned();
    let r = s
        .http
        .get(format!("{}/v2/vault/keys/blobs/{digest}", agent.mirror_url))
        .bearer_auth(&admin_token)
        .send()
        .await
        .expect("pull");
    assert!(r.bytes().await.expect("body").as_ref() == secret.as_slice());
    assert!(cached(&agent, digest).await);

    // A client who may pull accel/app asks for the secret's digest under accel/app.
    let token = s.pull_token(&s.robot("puller", true).await).await;
    let r = get_blob(&s.http, &agent, digest, Some(&token)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body = r.bytes().await.expect("body");
    assert!(body.len() < 1024, "an error, not the blob");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_evicts_least_recently_used_blobs_beyond_its_limit() {
    let s = Setup::new().await;
    let first = pseudo_random(5 * MIB, 61);
    let second = pseudo_random(5 * MIB, 62);
    let d1 = s.push_blob("accel/app", &first).await;
    let d2 = s.push_blob("accel/app", &second).await;
    s.set_p2p(true).await;
    let token = s.pull_token(&s.robot("puller", true).await).await;
    let limit = (8 * MIB).to_string();
    let agent = s.agent(&["--cache-max-bytes", &limit]);
    for (d, bytes) in [(d1, &first), (d2, &second)] {
        let r = get_blob(&s.http, &agent, d, Some(&token)).await;
        assert!(r.bytes().await.expect("body").as_ref() == bytes.as_slice());
    }
    // The client has every byte a moment before the agent files the blob away and evicts.
    let evicted = agent.cache_dir.join("blobs").join(d1.hex());
    for _ in 0..100 {
        if !evicted.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!evicted.exists(), "the older blob was evicted");
    assert!(agent.cache_dir.join("blobs").join(d2.hex()).exists(), "the newer blob stays");
    // The evicted one is fetched again when asked for.
    let r = get_blob(&s.http, &agent, d1, Some(&token)).await;
    assert!(r.bytes().await.expect("body").as_ref() == first.as_slice());
}

/// TLS in front of the registry, as an ingress would put it: socat with a
/// certificate for 127.0.0.1 from a throwaway CA. Stopped on drop.
struct TlsFront {
    child: std::process::Child,
    ca: std::path::PathBuf,
    url: String,
    _dir: tempfile::TempDir,
}

impl TlsFront {
    fn new(port: u16, backend: &str) -> TlsFront {
        let dir = tempfile::Builder::new().prefix("damselfly-tls-").tempdir().expect("temp dir");
        let d = dir.path();
        let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(d).args(args));
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=Test CA"],
            ]
            .concat(),
        );
        openssl(
            &[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat(),
        );
        std::fs::write(d.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "san.cnf",
        ]);
        let child = Command::new("socat")
            .current_dir(d)
            .arg(format!("OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert=server.pem,key=server.key,verify=0"))
            .arg(format!("TCP:{backend}"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start socat");
        let front = TlsFront { child, ca: d.join("ca.pem"), url: format!("https://127.0.0.1:{port}"), _dir: dir };
        for _ in 0..100 {
            let ok = Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", "--cacert"])
                .arg(&front.ca)
                .arg(format!("{}/v2/", front.url))
                .status()
                .is_ok_and(|s| s.code() == Some(22)); // 401 from the registry, through TLS
            if ok {
                return front;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("TLS in front of the registry did not come up");
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_reaches_a_registry_behind_https_with_its_ca() {
    let port = damselfly_tests::free_port();
    let public = format!("https://127.0.0.1:{port}");
    let s = Setup::with(Registry::start_with(Backend::Sqlite, &[("DAMSELFLY_PUBLIC_URL", &public)])).await;
    let tls = TlsFront::new(port, &s.reg.host);
    let blob = pseudo_random(9 * MIB, 91);
    let (digest, token) = s.accelerated(&blob).await;
    // Without the CA, the agent does not trust the registry and says so.
    let untrusting = Command::new("timeout")
        .arg("3")
        .arg(damselfly_tests::binary("damselfly-agent"))
        .args(["run", "--registry", &tls.url, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0", "--cache-dir"])
        .arg(tls._dir.path().join("cache"))
        .env("DAMSELFLY_AGENT_CLUSTER_TOKEN", &s.cluster_token)
        .output()
        .expect("run the agent");
    let log = String::from_utf8_lossy(&untrusting.stderr).into_owned() + &String::from_utf8_lossy(&untrusting.stdout);
    assert!(log.contains("cannot register with the registry") && log.contains("certificate"), "{log}");

    let ca = tls.ca.display().to_string();
    let agent = Agent::start(&tls.url, &s.cluster_token, &["--registry-ca", &ca]);

    // The challenge, the keys, the join and the seed's pieces all go over TLS.
    let r = s.http.get(format!("{}/v2/", agent.mirror_url)).send().await.expect("/v2/");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().expect("header").to_owned();
    assert!(challenge.contains(&format!("realm=\"{public}/auth/token\"")), "{challenge}");
    let r = get_blob(&s.http, &agent, digest, Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.expect("body").as_ref() == blob.as_slice());
    let page = agent_metrics(&s.http, &agent).await;
    assert_eq!(
        metric_value(&page, "damselfly_agent_bytes_received_total{source=\"seed\"}"),
        (9 * MIB) as f64,
        "{page}"
    );
}

/// A small tmpfs, mounted for one test (root only) and unmounted on drop:
/// a real filesystem that really fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(mib: usize) -> SmallDisk {
        let dir = tempfile::Builder::new().prefix("damselfly-small-disk-").tempdir().expect("temp dir");
        run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"]).arg(dir.path()));
        SmallDisk { dir }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().expect("UTF-8 path")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_full_disk_the_pull_passes_the_bytes_through() {
    let s = Setup::new().await;
    let blob = pseudo_random(16 * MIB, 71);
    let (digest, token) = s.accelerated(&blob).await;
    let disk = SmallDisk::new(6);
    let agent = s.agent(&["--cache-dir", disk.path()]);

    let r = get_blob(&s.http, &agent, digest, Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.expect("body").as_ref() == blob.as_slice(), "the client gets the whole blob");
    let page = agent_metrics(&s.http, &agent).await;
    assert_eq!(metric_value(&page, "damselfly_agent_bytes_received_total{source=\"passthrough\"}"), (16 * MIB) as f64);
    assert_eq!(metric_value(&page, "damselfly_agent_bytes_received_total{source=\"seed\"}"), 0.0);
    assert!(!agent.cache_dir.join("blobs").join(digest.hex()).exists());
    assert!(!agent.cache_dir.join("partial").join(digest.hex()).exists(), "no partial file is left to fill the disk");
    assert!(agent.log().contains("passing it through"), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_high_watermark_least_recently_used_blobs_go_until_the_low_one() {
    let s = Setup::new().await;
    let blobs: Vec<Vec<u8>> = (0..3).map(|i| pseudo_random(8 * MIB, 80 + i)).collect();
    let mut digests = Vec::new();
    for b in &blobs {
        digests.push(s.push_blob("accel/app", b).await);
    }
    s.set_p2p(true).await;
    let token = s.pull_token(&s.robot("puller", true).await).await;
    // 40 MiB: two blobs fill it to 40 %, the third to 60 %, past the high watermark of 55 %;
    // evicting one least recently used blob brings it to 40 %, under the low one of 45 %.
    let disk = SmallDisk::new(40);
    let agent = s.agent(&["--cache-dir", disk.path(), "--cache-high-watermark", "55", "--cache-low-watermark", "45"]);
    let kept = |d: &Digest| agent.cache_dir.join("blobs").join(d.hex()).exists();
    for (d, bytes) in digests.iter().zip(&blobs).take(2) {
        let r = get_blob(&s.http, &agent, *d, Some(&token)).await;
        assert!(r.bytes().await.expect("body").as_ref() == bytes.as_slice());
        assert!(cached(&agent, *d).await);
    }
    // Reading the first makes the second the least recently used.
    let r = get_blob(&s.http, &agent, digests[0], Some(&token)).await;
    assert!(r.bytes().await.expect("body").as_ref() == blobs[0].as_slice());
    let r = get_blob(&s.http, &agent, digests[2], Some(&token)).await;
    assert!(r.bytes().await.expect("body").as_ref() == blobs[2].as_slice());
    assert!(cached(&agent, digests[2]).await);
    for _ in 0..100 {
        if !kept(&digests[1]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!kept(&digests[1]), "the least recently used blob went first: {}", agent.log());
    assert!(kept(&digests[0]) && kept(&digests[2]), "one eviction reached the low watermark: {}", agent.log());
}

#[test]
fn the_agent_explains_what_is_missing_and_documents_every_flag() {
    let out = Command::new(damselfly_tests::binary("damselfly-agent"))
        .args(["run", "--cluster-token", "x"])
        .env_clear()
        .output()
        .expect("run the agent");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--registry") && err.contains("DAMSELFLY_AGENT_REGISTRY"), "{err}");

    let help = run(Command::new(damselfly_tests::binary("damselfly-agent")).args(["run", "--help"]));
    for flag in [
        "--registry",
        "--cluster-token",
        "--listen",
        "--peer-listen",
        "--metrics-listen",
        "--advertise-ip",
        "--node-name",
        "--zone",
        "--cache-dir",
        "--upload-slots",
        "--fetch-slots",
        "DAMSELFLY_AGENT_FETCH_SLOTS",
        "--upload-rate",
        "--download-rate",
        "--cache-max-bytes",
        "--cache-high-watermark",
        "--cache-low-watermark",
        "--registry-ca",
        "--config",
        "--log-format",
        "DAMSELFLY_AGENT_LOG_FORMAT",
        "DAMSELFLY_AGENT_LISTEN",
        "DAMSELFLY_AGENT_CACHE_HIGH_WATERMARK",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}:\n{help}");
    }
    assert!(!help.contains("corrupt"), "the testing flag stays hidden");
    let version = run(Command::new(damselfly_tests::binary("damselfly-agent")).arg("--version"));
    assert!(version.starts_with("damselfly-agent "), "{version}");
}

/// With `--log-format json` every line the agent logs is one JSON object, for log pipelines.
#[tokio::test(flavor = "multi_thread")]
async fn with_log_format_json_the_agent_logs_one_json_object_a_line() {
    let s = Setup::new().await;
    let agent = Agent::start(&s.reg.url, &s.cluster_token, &["--log-format", "json"]);
    let log = agent.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the agent logged nothing");
    for line in &lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(event["level"].is_string() && event["timestamp"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("\"registered")), "no registration logged:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_reads_its_settings_from_a_toml_file() {
    let s = Setup::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (mirror, peer, metrics) =
        (damselfly_tests::free_port(), damselfly_tests::free_port(), damselfly_tests::free_port());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "registry = \"{}\"\ncluster_token = \"{}\"\nlisten = \"127.0.0.1:{mirror}\"\npeer_listen = \"127.0.0.1:{peer}\"\n\
             metrics_listen = \"127.0.0.1:{metrics}\"\ncache_dir = \"{}\"\n",
            s.reg.url,
            s.cluster_token,
            dir.path().join("cache").display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(damselfly_tests::binary("damselfly-agent"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut healthy = false;
    for _ in 0..200 {
        if let Ok(r) = s.http.get(format!("http://127.0.0.1:{metrics}/healthz")).send().await {
            if r.status() == StatusCode::OK {
                healthy = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v2 = s.http.get(format!("http://127.0.0.1:{mirror}/v2/")).send().await.map(|r| r.status());
    // Anything but a blob read is relayed as it is, request body included.
    let pushed = s
        .http
        .post(format!("http://127.0.0.1:{mirror}/v2/accel/app/blobs/uploads/?digest={}", Digest::of(b"via the mirror")))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .body(b"via the mirror".to_vec())
        .send()
        .await
        .map(|r| (r.status(), r.headers().get("docker-content-digest").cloned()));
    let _ = child.kill();
    let _ = child.wait();
    assert!(healthy, "the agent registered with the settings from the file");
    assert_eq!(v2.expect("mirror answers"), StatusCode::UNAUTHORIZED, "the mirror relays the registry's challenge");
    assert!(dir.path().join("cache/blobs").is_dir());
    let (status, digest) = pushed.expect("push through the mirror");
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(digest.expect("digest header"), Digest::of(b"via the mirror").to_string().as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_registry_restart_the_agent_registers_again_and_keeps_accelerating() {
    let mut s = Setup::new().await;
    let blob = pseudo_random(6 * MIB, 71);
    let (digest, token) = s.accelerated(&blob).await;
    let agent = s.agent(&[]);

    // The scheduler lives in memory: a restarted registry knows no agent.
    s.reg.restart();
    let seed_before = metric_value(&s.registry_metrics().await, "damselfly_bytes_sent_total{kind=\"seed\"}");
    assert_eq!(seed_before, 0.0);
    let r = get_blob(&s.http, &agent, digest, Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.expect("body").as_ref() == blob.as_slice());
    let page = s.registry_metrics().await;
    assert_eq!(
        metric_value(&page, "damselfly_bytes_sent_total{kind=\"seed\"}"),
        blob.len() as f64,
        "the blob came through the swarm, not passed through; agent log:\n{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_the_registry_forgets_mid_pull_gets_new_tickets_and_every_pull_finishes_through_the_swarm() {
    let s = Setup::new().await;
    // Two layers pulled at once, slowly enough (24 MiB/s for the node) to be mid-pull when the registry forgets
    // the agent, and larger than the 64 MiB an agent alone is handed by the seed at once, so that both ask the
    // seed again afterwards. The first call that notices registers the agent again, under a new id; every
    // download then needs a ticket for that id, which the seed insists on, whichever call noticed.
    let blobs: Vec<Vec<u8>> = (0..2).map(|i| pseudo_random(80 * MIB, 90 + i)).collect();
    let mut digests = Vec::new();
    for blob in &blobs {
        digests.push(s.push_blob("accel/app", blob).await);
    }
    s.set_p2p(true).await;
    let token = s.pull_token(&s.robot("puller", true).await).await;
    let agent = s.agent(&["--download-rate", &(24 * MIB).to_string()]);
    let agents = || async {
        let (status, clusters) = s.admin(reqwest::Method::GET, "/api/v1/tenants/default/clusters", Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{clusters}");
        let ids = clusters[0]["agents"].as_array().expect("agents").iter();
        ids.map(|a| a["id"].as_str().expect("id").to_owned()).collect::<Vec<_>>()
    };
    let first = agents().await;
    assert_eq!(first.len(), 1, "{first:?}");

    let pulls: Vec<_> = digests
        .iter()
        .map(|&digest| {
            let (http, agent_url, token) = (s.http.clone(), agent.mirror_url.clone(), token.clone());
            tokio::spawn(async move {
                let url = format!("{agent_url}/v2/accel/app/blobs/{digest}");
                let r = http.get(url).bearer_auth(token).send().await.expect("pull through the agent");
                (r.status(), r.bytes().await.map(|b| b.to_vec()))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The registry forgets the agent, as after a restart with its rows gone or a long silence.
    let r = s
        .http
        .delete(format!("{}/p2p/v1/agents/{}", s.reg.url, first[0]))
        .header("authorization", format!("Cluster {}", s.cluster_token))
        .send()
        .await
        .expect("forget the agent");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for ((pull, blob), digest) in pulls.into_iter().zip(&blobs).zip(&digests) {
        let (status, body) = pull.await.expect("pull task");
        assert_eq!(status, StatusCode::OK, "{digest}");
        let body = body.unwrap_or_else(|e| panic!("{digest}: the body broke off: {e}; agent log:\n{}", agent.log()));
        assert!(body == *blob, "{digest}: every byte, in order; agent log:\n{}", agent.log());
    }
    let now = agents().await;
    assert!(now.len() == 1 && now != first, "registered again under a new id: {first:?} then {now:?}");
    let page = s.registry_metrics().await;
    let total: usize = blobs.iter().map(Vec::len).sum();
    let seed = metric_value(&page, "damselfly_bytes_sent_total{kind=\"seed\"}");
    // A batch in flight when the agent was forgotten is sent whole; at most a few pieces go twice.
    assert!(
        seed >= total as f64 && seed <= 1.1 * total as f64,
        "the seed sent {seed} bytes for {total}; agent log:\n{}",
        agent.log()
    );
    assert_eq!(metric_value(&page, "damselfly_bytes_sent_total{kind=\"blob\"}"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mirror_streams_the_first_pieces_before_the_blob_is_complete() {
    let s = Setup::new().await;
    // Ten pieces: the scheduler hands out at most four seed pieces per join, so the rest take more joins.
    let blob = pseudo_random(40 * MIB, 83);
    let (digest, token) = s.accelerated(&blob).await;
    let agent = s.agent(&[]);
    let mut r = get_blob(&s.http, &agent, digest, Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], blob.len().to_string().as_str());
    let first = r.chunk().await.expect("first chunk").expect("some bytes");
    assert!(
        !agent.cache_dir.join("blobs").join(digest.hex()).exists(),
        "the first bytes arrive while the blob is still being fetched"
    );
    assert!(agent.cache_dir.join("partial").join(digest.hex()).exists());
    let mut received = first.to_vec();
    while let Some(chunk) = r.chunk().await.expect("chunk") {
        received.extend_from_slice(&chunk);
    }
    assert!(received == blob, "in order, every byte");
}

/// One GET of a blob with curl, the body to `out` (`/dev/null` for the
/// benchmark): (seconds, bytes received). Panics unless the answer is 200.
fn curl_blob(url: &str, token: &str, out: &Path) -> (f64, u64) {
    let written = run(Command::new("curl")
        .args(["-sS", "--max-time", "300", "-H", &format!("Authorization: Bearer {token}"), "-o"])
        .arg(out)
        .args(["-w", "%{http_code} %{size_download} %{time_total}", url]));
    let fields: Vec<&str> = written.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"200"), "GET {url}: {written}");
    (fields[2].parse().expect("time_total"), fields[1].parse().expect("size_download"))
}

/// One agent alone on loopback: a blob of `mib` MiB straight from the
/// registry, then through a fresh agent cold (nothing cached) and again
/// (cached), `rounds` times, each with a new agent. Returns each round's
/// (direct, cold, cached) rates in MB/s. With `check`, every copy is kept and
/// must match the blob's digest; the benchmark leaves that to the agent (a
/// whole answer means it verified the blob) and to the cached file's digest.
async fn agent_alone(mib: usize, rounds: usize, check: bool) -> Vec<[f64; 3]> {
    let s = Setup::new().await;
    let blob = pseudo_random(mib * MIB, 20);
    let (digest, token) = s.accelerated(&blob).await;
    drop(blob);
    let dir = tempfile::tempdir().expect("temp dir");
    let direct_url = format!("{}/v2/accel/app/blobs/{digest}", s.reg.url);
    let mut rates = Vec::new();
    for round in 0..rounds {
        // A cluster of its own each round: the last round's agent, gone now, is no parent to this one.
        let cluster = s.reg.register_cluster(&format!("alone-{round}")).await;
        let agent = Agent::start(&s.reg.url, &cluster, &[]);
        let via_agent = format!("{}/v2/accel/app/blobs/{digest}", agent.mirror_url);
        let mut row = [0.0; 3];
        for (k, url) in [&direct_url, &via_agent, &via_agent].into_iter().enumerate() {
            let out = if check { dir.path().join(format!("copy-{round}-{k}")) } else { "/dev/null".into() };
            let (secs, len) = tokio::task::block_in_place(|| curl_blob(url, &token, &out));
            assert_eq!(len, (mib * MIB) as u64, "round {round}, GET {k}: a whole blob");
            if check {
                let copy = std::fs::read(&out).expect("the copy");
                assert_eq!(Digest::of(&copy), digest, "round {round}, GET {k}: the bytes are the blob");
                std::fs::remove_file(&out).expect("remove the copy");
            }
            row[k] = len as f64 / secs / 1e6;
        }
        assert!(cached(&agent, digest).await, "the agent kept the blob");
        let kept = std::fs::read(agent.cache_dir.join("blobs").join(digest.hex())).expect("the cached blob");
        assert_eq!(Digest::of(&kept), digest, "the cache holds the blob's bytes");
        if let Ok(dir) = std::env::var("SOLO_LOG_DIR") {
            std::fs::write(Path::new(&dir).join(format!("agent-{round}.log")), agent.log()).expect("agent log");
        }
        rates.push(row);
    }
    rates
}

/// The loopback benchmark of one agent alone (scripts/bench-solo.sh):
/// SOLO_BLOB_MIB (512) MiB, SOLO_ROUNDS (5) rounds; prints each round's
/// rates, the medians, and the agent's rates against the registry's.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run scripts/bench-solo.sh"]
async fn bench_agent_alone() {
    let setting = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (mib, rounds) = (setting("SOLO_BLOB_MIB", 512), setting("SOLO_ROUNDS", 5).max(1));
    let rates = agent_alone(mib, rounds, false).await;
    println!();
    println!("one agent alone on loopback: a {mib} MiB blob, {rounds} rounds, a fresh agent each round");
    println!("| round | direct MB/s | agent cold MB/s | agent cached MB/s | cold / direct | cached / direct |");
    println!("|------:|------------:|----------------:|------------------:|--------------:|----------------:|");
    let row = |name: &str, [d, c, k]: [f64; 3]| {
        println!("| {name:>5} | {d:11.0} | {c:15.0} | {k:17.0} | {:13.2} | {:15.2} |", c / d, k / d);
    };
    for (i, r) in rates.iter().enumerate() {
        row(&(i + 1).to_string(), *r);
    }
    let median = |k: usize| {
        let mut v: Vec<f64> = rates.iter().map(|r| r[k]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    row("med", [median(0), median(1), median(2)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_through_one_agent_alone_arrives_whole_cold_and_cached() {
    let rates = agent_alone(24, 1, true).await;
    assert_eq!(rates.len(), 1);
}
