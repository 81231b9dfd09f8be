//! The registry as P2P supernode, driven as agents drive it: clusters
//! register, agents join a blob's swarm on behalf of a client, the
//! scheduler splits the seed's pieces and points agents at each other, and
//! the seed serves pieces only to ticket holders.

use damselfly_core::p2p::{JoinMode, JoinRequest, JoinResponse, RegisterRequest, RegisterResponse, ReportRequest};
use damselfly_core::Digest;
use damselfly_tests::http::{create_robot, Http};
use damselfly_tests::{on_both_backends, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

on_both_backends!(
    agents_join_swarms_the_seed_splits_cold_starts_and_peers_trade,
    joins_refuse_clients_without_pull_and_blobs_of_other_repositories,
    the_seed_serves_pieces_only_with_a_ticket_for_that_blob,
    another_tenant_neither_sees_nor_registers_clusters_here,
    an_agent_that_leaves_is_forgotten_at_once,
    an_agent_the_scheduler_does_not_know_is_told_so_with_the_p2p_code,
    every_p2p_answer_that_is_no_success_is_an_oci_error_body,
    a_blob_cut_under_another_piece_size_is_cut_again_on_its_first_join,
    blobs_are_cut_when_p2p_is_switched_on_or_as_their_push_completes_not_at_their_first_join,
);

const MIB: usize = 1024 * 1024;
/// The piece size the registry's rule gives the fixture's 10 MiB blob: its smallest.
const PIECE: usize = 256 * 1024;
/// Pieces of the fixture's blob.
const PIECES: u32 = 40;

struct Fixture {
    reg: Registry,
    http: Client,
    cluster_token: String,
    blob: Vec<u8>,
    digest: Digest,
}

/// A registry with `accel/app` holding a 10 MiB blob (in P2P, forty 256 KiB
/// pieces) and a cluster `edge` in the default tenant.
async fn fixture(backend: Backend) -> Fixture {
    fixture_with(backend, &[]).await
}

/// Pushes `blob` into `accel/app` in one request, as the admin; its digest.
async fn push_blob(http: &Client, url: &str, blob: &[u8]) -> Digest {
    let digest = Digest::of(blob);
    let r = http
        .post(format!("{url}/v2/accel/app/blobs/uploads/?digest={digest}"))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .body(blob.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    digest
}

/// [`fixture`] with extra registry settings.
async fn fixture_with(backend: Backend, env: &[(&str, &str)]) -> Fixture {
    // PostgreSQL with S3: the seed reads its pieces with ranged GETs from the bucket.
    let reg = Registry::start_paired_with(backend, env);
    let http = Client::new();
    let blob: Vec<u8> = (0..10 * MIB as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let digest = push_blob(&http, &reg.url, &blob).await;
    let r = reg.admin(reqwest::Method::POST, "/api/v1/tenants/default/clusters", json!({"name": "edge"})).await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    assert_eq!(r.1["name"], "edge");
    let cluster_token = r.1["token"].as_str().expect("cluster token").to_owned();
    assert!(cluster_token.starts_with("dfc_"));
    Fixture { reg, http, cluster_token, blob, digest }
}

impl Fixture {
    async fn register(&self, node: &str, zone: &str) -> String {
        let req = RegisterRequest {
            node: node.into(),
            ip: "127.0.0.1".into(),
            peer_port: 65002,
            zone: zone.into(),
            upload_slots: 8,
            version: "test".into(),
            platform: "linux/amd64".into(),
        };
        let r = self
            .http
            .post(format!("{}/p2p/v1/agents", self.reg.url))
            .header("authorization", format!("Cluster {}", self.cluster_token))
            .json(&req)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: RegisterResponse = r.json().await.unwrap();
        assert_eq!(body.heartbeat_secs, 10);
        body.agent_id
    }

    async fn join_raw(
        &self,
        agent: &str,
        repository: &str,
        digest: Digest,
        client_token: Option<&str>,
    ) -> reqwest::Response {
        self.send_join(JoinRequest {
            agent_id: agent.into(),
            repository: repository.into(),
            digest,
            client_token: client_token.map(str::to_owned),
            have: Vec::new(),
            uploading: None,
            wait_ms: None,
            brief: false,
            fetching: None,
        })
        .await
    }

    async fn send_join(&self, req: JoinRequest) -> reqwest::Response {
        self.http
            .post(format!("{}/p2p/v1/swarms/join", self.reg.url))
            .header("authorization", format!("Cluster {}", self.cluster_token))
            .json(&req)
            .send()
            .await
            .unwrap()
    }

    async fn join(&self, agent: &str, client_token: &str) -> JoinResponse {
        let r = self.join_raw(agent, "accel/app", self.digest, Some(client_token)).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// A pull token for `accel/app` from a robot that may pull from `accel`.
    async fn client_token(&self, robot: &str, namespace_role: Option<&str>) -> String {
        let scopes = match namespace_role {
            Some(role) => json!([{"namespace": "accel", "role": role}]),
            None => json!([]),
        };
        let http = Http::new(&self.reg);
        let robot = create_robot(&http, "default", robot, scopes).await;
        http.token(&robot, &["repository:accel/app:pull"]).await.0
    }

    async fn set_p2p(&self, on: bool) {
        let (status, body) =
            self.reg.admin(reqwest::Method::PATCH, "/api/v1/namespaces/accel", json!({"p2p_enabled": on})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The registry's namespace cache lives two seconds.
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    }

    /// Waits (at most 20 s) until the registry's log holds `needle`.
    async fn until_logged(&self, needle: &str, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !self.reg.log().contains(needle) {
            assert!(std::time::Instant::now() < deadline, "{what}: {}", self.reg.log());
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn seed_piece(&self, digest: Digest, index: u32, ticket: Option<&str>) -> reqwest::Response {
        self.seed_get(&format!("{}/p2p/v1/seed/{digest}/pieces/{index}", self.reg.url), ticket).await
    }

    /// The seed's batched read: `pieces` as its query spells them.
    async fn seed_pieces(&self, digest: Digest, pieces: &str, ticket: Option<&str>) -> reqwest::Response {
        self.seed_get(&format!("{}/p2p/v1/seed/{digest}/pieces?pieces={pieces}", self.reg.url), ticket).await
    }

    async fn seed_get(&self, url: &str, ticket: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(url);
        if let Some(t) = ticket {
            req = req.header("authorization", format!("Ticket {t}"));
        }
        req.send().await.unwrap()
    }

    async fn report(&self, agent: &str, have: &[u32]) {
        let req = ReportRequest {
            agent_id: agent.into(),
            digest: self.digest,
            have: have.to_vec(),
            failed_parents: Vec::new(),
            bad_parents: Vec::new(),
            bytes_from: Vec::new(),
            uploading: None,
        };
        let r = self
            .http
            .post(format!("{}/p2p/v1/swarms/report", self.reg.url))
            .header("authorization", format!("Cluster {}", self.cluster_token))
            .json(&req)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
}

async fn error_code(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["errors"][0]["code"].as_str().unwrap_or_default().to_owned())
}

async fn agents_join_swarms_the_seed_splits_cold_starts_and_peers_trade(backend: Backend) {
    let f = fixture(backend).await;
    let token = f.client_token("puller", Some("viewer")).await;
    let a = f.register("node-a", "zone-1").await;
    let b = f.register("node-b", "zone-1").await;

    // Acceleration is off by default: the agent passes the blob through.
    let off = f.join(&a, &token).await;
    assert_eq!(off.mode, JoinMode::Passthrough);
    assert!(off.parents.is_empty() && off.seed_pieces.is_empty());

    f.set_p2p(true).await;
    let ja = f.join(&a, &token).await;
    assert_eq!(ja.mode, JoinMode::P2p);
    // Pushed with pieces of 4 MiB recorded, the blob is cut by the rule on its first join.
    assert_eq!((ja.size, ja.piece_size), (10 * MIB as u64, PIECE as u64));
    let expected: Vec<String> = f.blob.chunks(PIECE).map(|c| Digest::of(c).hex()).collect();
    assert_eq!(ja.piece_digests, expected);
    assert_eq!(ja.seed_pieces, [0], "a newcomer gets one seed piece: others starting cold may be a moment behind");
    let ja = f.join(&a, &token).await;
    let all: Vec<u32> = (0..PIECES).collect();
    assert_eq!(ja.seed_pieces, all, "still alone when it comes back, it takes a run of pieces: here all of them");
    assert_eq!(ja.availability, vec![0; PIECES as usize]);
    assert!(ja.parents.is_empty());
    assert_eq!(ja.seed_url, format!("{}/p2p/v1/seed/{}/pieces", f.reg.url, f.digest));

    let jb = f.join(&b, &token).await;
    assert!(jb.seed_pieces.is_empty(), "pieces already handed out are not sent by the seed twice");
    assert!(jb.parents.is_empty());

    // With nothing to fetch, B asks the registry to hold its next join; it
    // is answered as soon as A reports its pieces, not when the wait ends.
    let held = JoinRequest {
        agent_id: b.clone(),
        repository: "accel/app".into(),
        digest: f.digest,
        client_token: Some(token.clone()),
        have: Vec::new(),
        uploading: None,
        wait_ms: Some(60_000),
        brief: true,
        fetching: Some(0),
    };
    let asked = std::time::Instant::now();
    let held = f.send_join(held);
    tokio::pin!(held);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), held.as_mut()).await.is_err(),
        "held while there is nothing to fetch"
    );

    // Agent A fetches its run from the seed in one stream, and verifies
    // each piece (the seed serves any piece of the blob to a holder of its ticket).
    let r = f.seed_pieces(f.digest, "0-39", Some(&ja.ticket)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.content_length(), Some(10 * MIB as u64));
    let bytes = r.bytes().await.unwrap();
    for (i, piece) in bytes.chunks(PIECE).enumerate() {
        assert_eq!(Digest::of(piece).hex(), ja.piece_digests[i]);
    }
    f.report(&a, &all).await;
    let held: JoinResponse = held.await.json().await.unwrap();
    assert!(asked.elapsed().as_secs() < 10, "answered when A's pieces arrived, within the 2 s cap at most");
    assert_eq!(held.parents.len(), 1, "A holds what B lacks");
    assert_eq!(held.parents[0].agent_id, a);
    assert!(held.piece_digests.is_empty() && held.ticket.is_empty(), "a brief join leaves out digests and ticket");

    let jb = f.join(&b, &token).await;
    assert_eq!(jb.parents.len(), 1);
    assert_eq!(jb.parents[0].agent_id, a);
    assert_eq!(jb.parents[0].url, "http://127.0.0.1:65002");
    assert_eq!(jb.parents[0].pieces, all);
    assert!(jb.seed_pieces.is_empty(), "the seed is the last resort");
    assert_eq!(jb.availability, vec![1; PIECES as usize]);

    // The seed sent the blob once, as the metrics count it.
    let metrics = f.http.get(format!("{}/metrics", f.reg.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("damselfly_bytes_sent_total{{kind=\"seed\"}} {}", 10 * MIB)), "{metrics}");
    assert!(metrics.contains("damselfly_p2p_agents 2\n"), "{metrics}");
    assert!(metrics.contains("damselfly_p2p_swarms 1\n"), "{metrics}");

    // The console's data: the cluster and its two online agents.
    let (status, clusters) = f.reg.admin(reqwest::Method::GET, "/api/v1/tenants/default/clusters", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let mut nodes: Vec<&str> =
        clusters[0]["agents"].as_array().unwrap().iter().map(|a| a["node"].as_str().unwrap()).collect();
    nodes.sort();
    assert_eq!(nodes, ["node-a", "node-b"]);
    assert!(clusters[0].get("token").is_none(), "the cluster token is shown only at creation");
}

async fn joins_refuse_clients_without_pull_and_blobs_of_other_repositories(backend: Backend) {
    let f = fixture(backend).await;
    f.set_p2p(true).await;
    let a = f.register("node-a", "").await;

    let outsider = f.client_token("outsider", None).await;
    assert_eq!(
        error_code(f.join_raw(&a, "accel/app", f.digest, Some(&outsider)).await).await,
        (StatusCode::FORBIDDEN, "DENIED".into())
    );
    assert_eq!(
        error_code(f.join_raw(&a, "accel/app", f.digest, None).await).await,
        (StatusCode::FORBIDDEN, "DENIED".into())
    );
    assert_eq!(
        error_code(f.join_raw(&a, "accel/app", f.digest, Some("not.a.token")).await).await,
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into())
    );

    // The same bytes in another repository do not open this one's swarm.
    let reader = f.client_token("reader", Some("viewer")).await;
    let other = Digest::of(b"elsewhere");
    let r = f
        .http
        .post(format!("{}/v2/accel/other/blobs/uploads/?digest={other}", f.reg.url))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .body(b"elsewhere".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        error_code(f.join_raw(&a, "accel/app", other, Some(&reader)).await).await,
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into())
    );

    // Unknown agents and wrong cluster tokens get nothing.
    assert_eq!(f.join_raw("nobody", "accel/app", f.digest, Some(&reader)).await.status(), StatusCode::NOT_FOUND);
    let r = f
        .http
        .post(format!("{}/p2p/v1/swarms/join", f.reg.url))
        .header("authorization", "Cluster dfc_wrong")
        .json(&json!({"agent_id": a, "repository": "accel/app", "digest": f.digest, "client_token": reader}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into()));
}

async fn the_seed_serves_pieces_only_with_a_ticket_for_that_blob(backend: Backend) {
    let f = fixture(backend).await;
    f.set_p2p(true).await;
    let a = f.register("node-a", "").await;
    let token = f.client_token("puller", Some("viewer")).await;
    let joined = f.join(&a, &token).await;

    assert_eq!(
        error_code(f.seed_piece(f.digest, 0, None).await).await,
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into())
    );
    // A ticket opens only its own blob.
    let small = Digest::of(b"tiny");
    let r = f
        .http
        .post(format!("{}/v2/accel/app/blobs/uploads/?digest={small}", f.reg.url))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .body(b"tiny".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        error_code(f.seed_piece(small, 0, Some(&joined.ticket)).await).await,
        (StatusCode::FORBIDDEN, "DENIED".into())
    );
    // An access token is no ticket, and a forged one is refused.
    assert_eq!(
        error_code(f.seed_piece(f.digest, 0, Some(&token)).await).await,
        (StatusCode::FORBIDDEN, "DENIED".into())
    );
    let mut forged = joined.ticket.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert_eq!(
        error_code(f.seed_piece(f.digest, 0, Some(&forged)).await).await,
        (StatusCode::FORBIDDEN, "DENIED".into())
    );
    assert_eq!(f.seed_piece(f.digest, PIECES, Some(&joined.ticket)).await.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let last = f.seed_piece(f.digest, PIECES - 1, Some(&joined.ticket)).await.bytes().await.unwrap();
    assert_eq!(last.as_ref(), &f.blob[(PIECES as usize - 1) * PIECE..]);

    // The batched read: the listed pieces back to back, in order, runs and single ones.
    let r = f.seed_pieces(f.digest, "1-2,5,38-39", Some(&joined.ticket)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let got = r.bytes().await.unwrap();
    let want = [&f.blob[PIECE..3 * PIECE], &f.blob[5 * PIECE..6 * PIECE], &f.blob[38 * PIECE..]].concat();
    assert!(
        got.as_ref() == want.as_slice(),
        "{} bytes, not the {} of pieces 1, 2, 5, 38 and 39",
        got.len(),
        want.len()
    );
    assert_eq!(
        error_code(f.seed_pieces(f.digest, "0-1", None).await).await,
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into())
    );
    assert_eq!(
        error_code(f.seed_pieces(small, "0", Some(&joined.ticket)).await).await,
        (StatusCode::FORBIDDEN, "DENIED".into())
    );
    for bad in ["", "2,1", "1,1", "3-1", "39-40", "40", "a", "1-", "-1"] {
        let r = f.seed_pieces(f.digest, bad, Some(&joined.ticket)).await;
        assert_eq!(error_code(r).await, (StatusCode::RANGE_NOT_SATISFIABLE, "SIZE_INVALID".into()), "{bad:?}");
    }
}

async fn a_blob_cut_under_another_piece_size_is_cut_again_on_its_first_join(backend: Backend) {
    // An operator's --piece-size holds for every blob.
    let mut f = fixture_with(backend, &[("DAMSELFLY_PIECE_SIZE", "4194304")]).await;
    f.set_p2p(true).await;
    let token = f.client_token("puller", Some("viewer")).await;
    let a = f.register("node-a", "").await;
    let joined = f.join(&a, &token).await;
    assert_eq!(joined.piece_size, 4 * MIB as u64);
    assert_eq!(joined.piece_digests.len(), 3);

    // Without it, the blob, cut as it was pushed, is cut again by the rule
    // on its first join, from its stored bytes, checked against its digest.
    f.reg.stop();
    f.reg.start_again(&[]);
    let a = f.register("node-a", "").await;
    let joined = f.join(&a, &token).await;
    assert_eq!(joined.piece_size, PIECE as u64);
    let expected: Vec<String> = f.blob.chunks(PIECE).map(|c| Digest::of(c).hex()).collect();
    assert_eq!(joined.piece_digests, expected);
    let r = f.seed_piece(f.digest, 7, Some(&joined.ticket)).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &f.blob[7 * PIECE..8 * PIECE]);
    assert_eq!(f.reg.log().matches("blob cut into pieces again").count(), 1, "{}", f.reg.log());
    // Recorded: later joins, and a restart, find it cut.
    f.reg.stop();
    f.reg.start_again(&[]);
    let a = f.register("node-a", "").await;
    assert_eq!(f.join(&a, &token).await.piece_digests, expected);
    assert_eq!(f.reg.log().matches("blob cut into pieces again").count(), 1, "{}", f.reg.log());
}

async fn blobs_are_cut_when_p2p_is_switched_on_or_as_their_push_completes_not_at_their_first_join(backend: Backend) {
    // The fixture's blob was pushed while P2P was off in `accel`: recorded in 4 MiB pieces, left so.
    let f = fixture(backend).await;
    let cuts = |at: &str| f.reg.log().matches(&format!("\"at\":\"{at}\"")).count();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(f.reg.log().matches("blob cut into pieces again").count(), 0, "{}", f.reg.log());

    // Switching P2P on cuts the namespace's blobs, beside the request.
    f.set_p2p(true).await;
    f.until_logged("\"at\":\"p2p switched on\"", "the blob pushed before is cut when P2P is switched on").await;
    // A blob pushed now is cut as its push completes.
    let other: Vec<u8> = (0..3 * MIB as u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8).collect();
    let other_digest = push_blob(&f.http, &f.reg.url, &other).await;
    f.until_logged("\"at\":\"push\"", "a blob pushed with P2P on is cut as its push completes").await;
    assert_eq!(cuts("p2p switched on") + cuts("push"), 2, "{}", f.reg.log());

    // Their first joins find them cut by the rule, and cut nothing.
    let token = f.client_token("puller", Some("viewer")).await;
    let a = f.register("node-a", "").await;
    let joined = f.join(&a, &token).await;
    assert_eq!(joined.piece_size, PIECE as u64);
    let expected: Vec<String> = f.blob.chunks(PIECE).map(|c| Digest::of(c).hex()).collect();
    assert_eq!(joined.piece_digests, expected);
    let r = f.join_raw(&a, "accel/app", other_digest, Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let joined: JoinResponse = r.json().await.unwrap();
    let size = damselfly_core::p2p::piece_size_for(other.len() as u64) as usize;
    assert_eq!(joined.piece_size, size as u64);
    let expected: Vec<String> = other.chunks(size).map(|c| Digest::of(c).hex()).collect();
    assert_eq!(joined.piece_digests, expected);
    assert_eq!(cuts("join"), 0, "{}", f.reg.log());
    assert_eq!(f.reg.log().matches("blob cut into pieces again").count(), 2, "{}", f.reg.log());
}

async fn another_tenant_neither_sees_nor_registers_clusters_here(backend: Backend) {
    let f = fixture(backend).await;
    let post = reqwest::Method::POST;
    assert_eq!(f.reg.admin(post.clone(), "/api/v1/tenants", json!({"name": "other"})).await.0, StatusCode::CREATED);
    let user = json!({"username": "olga", "password": "olga-password"});
    assert_eq!(f.reg.admin(post.clone(), "/api/v1/users", user).await.0, StatusCode::CREATED);
    let grant = json!({"kind": "user", "name": "olga", "role": "owner"});
    assert_eq!(f.reg.admin(reqwest::Method::PUT, "/api/v1/tenants/other/members", grant).await.0, StatusCode::OK);
    let as_olga = |method: reqwest::Method, path: &str| {
        f.http.request(method, format!("{}{path}", f.reg.url)).basic_auth("olga", Some("olga-password"))
    };
    let r = as_olga(reqwest::Method::GET, "/api/v1/tenants/default/clusters").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = as_olga(post.clone(), "/api/v1/tenants/default/clusters")
        .json(&json!({"name": "sneaky"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Her own tenant's clusters are hers, and do not include default's.
    let r = as_olga(post, "/api/v1/tenants/other/clusters").json(&json!({"name": "edge"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let listed: Value =
        as_olga(reqwest::Method::GET, "/api/v1/tenants/other/clusters").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let (_, default_clusters) =
        f.reg.admin(reqwest::Method::GET, "/api/v1/tenants/default/clusters", Value::Null).await;
    let names: Vec<&str> = default_clusters.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["edge"]);
}

async fn an_agent_that_leaves_is_forgotten_at_once(backend: Backend) {
    let f = fixture(backend).await;
    let a = f.register("node-a", "").await;
    let leave = |token: String| {
        f.http.delete(format!("{}/p2p/v1/agents/{a}", f.reg.url)).header("authorization", format!("Cluster {token}"))
    };
    let r = leave("dfc_wrong".into()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "only its cluster can make it leave");
    let r = leave(f.cluster_token.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = f
        .http
        .post(format!("{}/p2p/v1/agents/{a}/heartbeat", f.reg.url))
        .header("authorization", format!("Cluster {}", f.cluster_token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "a heartbeat after leaving means registering again");
    let r = leave(f.cluster_token.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (status, clusters) = f.reg.admin(reqwest::Method::GET, "/api/v1/tenants/default/clusters", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(clusters[0]["agents"], json!([]), "{clusters}");
}

async fn an_agent_the_scheduler_does_not_know_is_told_so_with_the_p2p_code(backend: Backend) {
    let f = fixture(backend).await;
    f.set_p2p(true).await;
    let token = f.client_token("puller", Some("viewer")).await;
    let as_cluster = |r: reqwest::RequestBuilder| r.header("authorization", format!("Cluster {}", f.cluster_token));
    let unknown = (StatusCode::NOT_FOUND, "AGENT_UNKNOWN".to_owned());
    let a = f.register("node-a", "").await;
    assert_eq!(f.join_raw(&a, "accel/app", f.digest, Some(&token)).await.status(), StatusCode::OK);
    let r = as_cluster(f.http.delete(format!("{}/p2p/v1/agents/{a}", f.reg.url))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for agent in ["nobody", a.as_str()] {
        assert_eq!(error_code(f.join_raw(agent, "accel/app", f.digest, Some(&token)).await).await, unknown, "{agent}");
        let heartbeat = f.http.post(format!("{}/p2p/v1/agents/{agent}/heartbeat", f.reg.url));
        assert_eq!(error_code(as_cluster(heartbeat).send().await.unwrap()).await, unknown, "{agent}");
        let report = f
            .http
            .post(format!("{}/p2p/v1/swarms/report", f.reg.url))
            .json(&json!({"agent_id": agent, "digest": f.digest, "have": [0]}));
        assert_eq!(error_code(as_cluster(report).send().await.unwrap()).await, unknown, "{agent}");
        let leave = f.http.delete(format!("{}/p2p/v1/agents/{agent}", f.reg.url));
        assert_eq!(error_code(as_cluster(leave).send().await.unwrap()).await, unknown, "{agent}");
    }
}

/// Every refusal and failure under `/p2p/v1`, axum's own rejections of a
/// path or a body included, and paths or methods the API does not have,
/// comes as the same JSON error body as the rest of the API. The setup
/// script and the agent layer (`install.sh`, `agent.tar`) are read by `sh`,
/// not by agents: their refusals are a script that fails loudly, and a
/// sentence of text (tests/cluster_setup.rs).
async fn every_p2p_answer_that_is_no_success_is_an_oci_error_body(backend: Backend) {
    let f = fixture(backend).await;
    f.set_p2p(true).await;
    let a = f.register("node-a", "").await;
    let token = f.client_token("puller", Some("viewer")).await;
    let ticket = f.join(&a, &token).await.ticket;
    let url = |path: &str| format!("{}{path}", f.reg.url);
    let cluster = format!("Cluster {}", f.cluster_token);
    let seed = |index: &str| {
        f.http
            .get(url(&format!("/p2p/v1/seed/{}/pieces/{index}", f.digest)))
            .header("authorization", format!("Ticket {ticket}"))
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("a negative piece index", seed("-1"), 400, "UNSUPPORTED"),
        ("a piece index above u32", seed("4294967296"), 400, "UNSUPPORTED"),
        ("a piece index that is no number", seed("first"), 400, "UNSUPPORTED"),
        ("a piece index past the blob", seed("40"), 416, "SIZE_INVALID"),
        (
            "a batched read with no list",
            f.http
                .get(url(&format!("/p2p/v1/seed/{}/pieces?other=1", f.digest)))
                .header("authorization", format!("Ticket {ticket}")),
            416,
            "SIZE_INVALID",
        ),
        ("a seed digest that is none", f.http.get(url("/p2p/v1/seed/sha256:xyz/pieces/0")), 400, "DIGEST_INVALID"),
        (
            "a register body that is not JSON",
            f.http
                .post(url("/p2p/v1/agents"))
                .header("authorization", &cluster)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "UNSUPPORTED",
        ),
        (
            "a register body without its content type",
            f.http
                .post(url("/p2p/v1/agents"))
                .header("authorization", &cluster)
                .body(r#"{"node":"n","ip":"127.0.0.1","peer_port":1}"#),
            415,
            "UNSUPPORTED",
        ),
        (
            "a register body missing fields",
            f.http.post(url("/p2p/v1/agents")).header("authorization", &cluster).json(&json!({"node": "n"})),
            422,
            "UNSUPPORTED",
        ),
        (
            "a join whose digest is none",
            f.http.post(url("/p2p/v1/swarms/join")).header("authorization", &cluster).json(
                &json!({"agent_id": a, "repository": "accel/app", "digest": "sha256:nope", "client_token": null}),
            ),
            422,
            "UNSUPPORTED",
        ),
        (
            "a report that is an array",
            f.http.post(url("/p2p/v1/swarms/report")).header("authorization", &cluster).json(&json!([1, 2])),
            422,
            "UNSUPPORTED",
        ),
        (
            "a preheat report without its body",
            f.http.post(url("/p2p/v1/preheat/job-1/report")).header("authorization", &cluster),
            415,
            "UNSUPPORTED",
        ),
        (
            "an agent id that is not UTF-8",
            f.http.delete(url("/p2p/v1/agents/%FF%FE")).header("authorization", &cluster),
            400,
            "UNSUPPORTED",
        ),
        (
            "a namespace name that is not UTF-8",
            f.http.get(url("/p2p/v1/namespaces/%FF/acceleration")).header("authorization", &cluster),
            400,
            "UNSUPPORTED",
        ),
        (
            "a path that is no endpoint",
            f.http.get(url("/p2p/v1/nothing/here")).header("authorization", &cluster),
            404,
            "UNSUPPORTED",
        ),
        ("the API's root", f.http.get(url("/p2p/v1")), 404, "UNSUPPORTED"),
        ("the API's root with a slash", f.http.get(url("/p2p/v1/")), 404, "UNSUPPORTED"),
        (
            "GET on the register endpoint",
            f.http.get(url("/p2p/v1/agents")).header("authorization", &cluster),
            405,
            "UNSUPPORTED",
        ),
        (
            "PUT on the join endpoint",
            f.http.put(url("/p2p/v1/swarms/join")).header("authorization", &cluster),
            405,
            "UNSUPPORTED",
        ),
        ("POST on the seed", f.http.post(url(&format!("/p2p/v1/seed/{}/pieces/0", f.digest))), 405, "UNSUPPORTED"),
        ("no cluster token", f.http.post(url("/p2p/v1/swarms/join")).json(&json!({})), 401, "UNAUTHORIZED"),
        (
            "a bearer token instead",
            f.http.post(url("/p2p/v1/swarms/join")).bearer_auth(&token).json(&json!({})),
            401,
            "UNAUTHORIZED",
        ),
        ("no ticket at the seed", f.http.get(url(&format!("/p2p/v1/seed/{}/pieces/0", f.digest))), 401, "UNAUTHORIZED"),
        (
            "an unknown agent",
            f.http.post(url("/p2p/v1/agents/nobody/heartbeat")).header("authorization", &cluster),
            404,
            "AGENT_UNKNOWN",
        ),
    ];
    for (what, request, status, code) in cases {
        let r = request.send().await.unwrap();
        let got = r.status().as_u16();
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let allow = r.headers().get("allow").is_some();
        let text = r.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
        assert_eq!((got, body["errors"][0]["code"].as_str()), (status, Some(code)), "{what}: {text}");
        assert_eq!(content_type, "application/json", "{what}");
        let error = &body["errors"][0];
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a message: {text}");
        assert!(error.get("detail").is_some(), "{what}: the detail member, as every OCI error body has: {text}");
        assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "{what}");
        if status == 405 {
            assert!(allow, "{what}: Allow names the methods the endpoint takes");
        }
    }
}
