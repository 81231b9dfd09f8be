//! The P2P rows of the security matrix, against a real registry and real
//! agents on loopback, on both metadata backends:
//!
//! - a cluster accelerates its own tenant's blobs only: another tenant's
//!   blob, public or not, is passed through by the agent, with no ticket,
//!   nothing in the cluster's swarm and nothing in the agent's cache;
//! - the peer port (an agent's piece server) serves a piece, or a stripe
//!   feed, only for a ticket of its own cluster, for that blob, and not
//!   expired; no ticket, another cluster's or another blob's ticket, an
//!   expired one, one signed by another key, an access token, and digests
//!   that try to climb out of the cache directory are all refused;
//! - the seed refuses the same, and also a replayed ticket: one presented
//!   after the agent it was issued to has left its cluster's swarms;
//! - the mirror port serves a cached blob only to a client whose token may
//!   pull it.
//!
//! What "replayed" means: a ticket is a capability for one download, of one
//! blob, by one agent of one cluster, for five minutes, and it is presented
//! for every piece of that download, so using it again is not in itself a
//! replay. Presenting it outside that scope is: for another blob, to another
//! cluster, after it expired, or, at the seed (which knows the swarm), after
//! its agent left (unregistered, fell silent, or the registry restarted).
//! An agent's piece server verifies tickets offline and cannot know that an
//! agent left; there a captured ticket works until it expires, for pieces of
//! that one blob within that one cluster.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use damselfly_core::Digest;
use damselfly_tests::http::{create_namespace, create_robot, create_tenant, management_api_is_up, Cred, Http};
use damselfly_tests::jwt::{jwt, unix_now, SigningKey};
use damselfly_tests::{metric_value, on_both_backends, pseudo_random, Agent, Backend, Registry};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

on_both_backends!(
    a_cluster_passes_another_tenant_s_blobs_through_and_keeps_nothing,
    the_peer_port_serves_only_unexpired_tickets_of_its_cluster_for_that_blob,
    the_seed_refuses_tickets_out_of_their_scope_and_replayed_ones,
    the_mirror_serves_a_cached_blob_only_to_clients_that_may_pull_it,
);

const MIB: usize = 1024 * 1024;

/// A registry signing with a key the test holds; the default tenant's
/// namespace `accel` (P2P on) and clusters `c1` and `c2` of the default tenant.
struct Net {
    reg: Registry,
    http: Http,
    client: reqwest::Client,
    key: SigningKey,
    c1: String,
    c2: String,
}

impl Net {
    async fn new(backend: Backend) -> Net {
        let key = SigningKey::generate();
        let (name, value) = key.env();
        // Every blob in 4 MiB pieces (the operator's --piece-size): the checks below name pieces by their place.
        let reg = Registry::start_with(backend, &[(name, value.as_str()), ("DAMSELFLY_PIECE_SIZE", "4194304")]);
        let http = Http::new(&reg);
        management_api_is_up(&http).await;
        create_namespace(&http, "default", "accel", false).await;
        let c1 = Net::cluster(&http, "default", "c1").await;
        let c2 = Net::cluster(&http, "default", "c2").await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        Net { reg, http, client, key, c1, c2 }
    }

    async fn cluster(http: &Http, tenant: &str, name: &str) -> String {
        let path = format!("/api/v1/tenants/{tenant}/clusters");
        http.admin_api(Method::POST, &path, json!({ "name": name })).await["token"]
            .as_str()
            .expect("cluster token")
            .to_owned()
    }

    /// Turns P2P on for `namespace` and waits out the registry's two-second namespace cache.
    async fn p2p_on(&self, namespace: &str) {
        let path = format!("/api/v1/namespaces/{namespace}");
        self.http.admin_api(Method::PATCH, &path, json!({ "p2p_enabled": true })).await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }

    /// A pull token for `repository` from `cred`.
    async fn pull_token(&self, cred: &Cred, repository: &str) -> String {
        let (token, scope) = self.http.token(cred, &[&format!("repository:{repository}:pull")]).await;
        assert_eq!(scope, format!("repository:{repository}:pull"), "{cred:?} may pull {repository}");
        token
    }

    /// Registers a stand-in agent with `cluster_token`; its id.
    async fn register(&self, cluster_token: &str) -> String {
        let r = self
            .client
            .post(format!("{}/p2p/v1/agents", self.reg.url))
            .header("authorization", format!("Cluster {cluster_token}"))
            .json(&json!({ "node": "stand-in", "ip": "127.0.0.1", "peer_port": 9 }))
            .send()
            .await
            .expect("register");
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.expect("JSON")["agent_id"].as_str().expect("agent id").to_owned()
    }

    /// The answer to a join by `agent` of `cluster_token`.
    async fn join(
        &self,
        cluster_token: &str,
        agent: &str,
        repository: &str,
        digest: Digest,
        token: Option<&str>,
    ) -> Value {
        let r = self
            .client
            .post(format!("{}/p2p/v1/swarms/join", self.reg.url))
            .header("authorization", format!("Cluster {cluster_token}"))
            .json(&json!({ "agent_id": agent, "repository": repository, "digest": digest, "client_token": token }))
            .send()
            .await
            .expect("join");
        let status = r.status();
        let body: Value = r.json().await.expect("JSON");
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// A ticket signed with the registry's key, saying whatever `claims` say.
    fn forge_ticket(&self, model: &str, claims: Value) -> String {
        let (header, _) = jwt(model);
        self.key.sign(&header, &claims)
    }
}

/// The files under `dir`, by name, with their sizes.
fn files_under(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), e.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
    }
    out
}

async fn agent_metrics(client: &reqwest::Client, agent: &Agent) -> String {
    client.get(format!("{}/metrics", agent.metrics_url)).send().await.expect("metrics").text().await.expect("text")
}

async fn pull(
    client: &reqwest::Client,
    agent: &Agent,
    repository: &str,
    digest: Digest,
    token: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let mut req = client.get(format!("{}/v2/{repository}/blobs/{digest}", agent.mirror_url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("pull");
    let status = r.status();
    (status, r.bytes().await.expect("body").to_vec())
}

async fn a_cluster_passes_another_tenant_s_blobs_through_and_keeps_nothing(backend: Backend) {
    let net = Net::new(backend).await;
    // Tenant beta, with a private and a public namespace, both with P2P on.
    create_tenant(&net.http, "beta").await;
    create_namespace(&net.http, "beta", "beta-apps", false).await;
    create_namespace(&net.http, "beta", "beta-pub", true).await;
    let private = pseudo_random(5 * MIB, 101);
    let public = pseudo_random(3 * MIB, 102);
    let own = pseudo_random(2 * MIB, 103);
    let private_digest = net.reg.push_blob("beta-apps/app", &private).await;
    let public_digest = net.reg.push_blob("beta-pub/app", &public).await;
    let own_digest = net.reg.push_blob("accel/app", &own).await;
    for ns in ["beta-apps", "beta-pub", "accel"] {
        let path = format!("/api/v1/namespaces/{ns}");
        net.http.admin_api(Method::PATCH, &path, json!({ "p2p_enabled": true })).await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let beta_robot =
        create_robot(&net.http, "beta", "puller", json!([{ "namespace": "beta-apps", "role": "viewer" }])).await;
    let beta_token = net.pull_token(&beta_robot, "beta-apps/app").await;
    let own_robot =
        create_robot(&net.http, "default", "puller", json!([{ "namespace": "accel", "role": "viewer" }])).await;
    let own_token = net.pull_token(&own_robot, "accel/app").await;

    // The join itself, as the agent of cluster c1 (tenant default) sends it.
    let stand_in = net.register(&net.c1).await;
    for (what, repository, digest, token) in [
        ("beta's private blob, with beta's pull token", "beta-apps/app", private_digest, Some(beta_token.as_str())),
        ("beta's public blob, anonymously", "beta-pub/app", public_digest, None),
    ] {
        let answer = net.join(&net.c1, &stand_in, repository, digest, token).await;
        assert_eq!(answer["mode"], "passthrough", "{what}: {answer}");
        assert_eq!(answer["ticket"], "", "{what}: no ticket");
        assert_eq!(answer["ticket_expires_in"], 0, "{what}");
        for empty in ["piece_digests", "parents", "seed_pieces"] {
            assert_eq!(answer[empty], json!([]), "{what}: {empty}");
        }
    }
    let answer = net.join(&net.c1, &stand_in, "accel/app", own_digest, Some(&own_token)).await;
    assert_eq!(answer["mode"], "p2p", "its own tenant's blob is accelerated: {answer}");
    assert!(!answer["ticket"].as_str().expect("ticket").is_empty());
    // The webhook is told the same: the public namespace is seen, but not accelerated.
    let r = net
        .client
        .get(format!("{}/p2p/v1/namespaces/beta-pub/acceleration", net.reg.url))
        .header("authorization", format!("Cluster {}", net.c1))
        .send()
        .await
        .expect("acceleration");
    assert_eq!(r.json::<Value>().await.expect("JSON"), json!({ "namespace": "beta-pub", "p2p_enabled": false }));

    // A real agent of cluster c1: beta's bytes reach the client, and nothing of them stays.
    let agent = Agent::start(&net.reg.url, &net.c1, &[]);
    let seed_before = metric_value(&net.reg_metrics().await, "damselfly_bytes_sent_total{kind=\"seed\"}");
    let (status, body) = pull(&net.client, &agent, "beta-apps/app", private_digest, Some(&beta_token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == private, "beta's private blob arrives intact");
    // Anonymous clients of a public namespace get a token anonymously, as any client does.
    let (anonymous, scope) = net.http.token(&Cred::Anonymous, &["repository:beta-pub/app:pull"]).await;
    assert_eq!(scope, "repository:beta-pub/app:pull");
    let (status, body) = pull(&net.client, &agent, "beta-pub/app", public_digest, Some(&anonymous)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == public, "beta's public blob arrives intact");
    let page = agent_metrics(&net.client, &agent).await;
    let passed = metric_value(&page, "damselfly_agent_bytes_received_total{source=\"passthrough\"}");
    assert!(passed >= (private.len() + public.len()) as f64, "streamed from the registry: {passed}");
    for source in ["peer", "seed"] {
        let sample = format!("damselfly_agent_bytes_received_total{{source=\"{source}\"}}");
        assert_eq!(metric_value(&page, &sample), 0.0, "nothing from the swarm ({source})");
    }
    let seed_after = metric_value(&net.reg_metrics().await, "damselfly_bytes_sent_total{kind=\"seed\"}");
    assert_eq!(seed_after, seed_before, "the seed sent nothing into c1's swarm");
    for digest in [private_digest, public_digest] {
        let held: Vec<(String, u64)> =
            files_under(&agent.cache_dir).into_iter().filter(|(path, _)| path.contains(&digest.hex())).collect();
        assert_eq!(held, Vec::<(String, u64)>::new(), "the agent's cache holds nothing of {digest}");
    }
    let big = files_under(&agent.cache_dir).into_iter().filter(|(_, size)| *size >= MIB as u64).count();
    assert_eq!(big, 0, "no blob-sized file at all in the cache");

    // The same agent does cache what is its own tenant's.
    let (status, body) = pull(&net.client, &agent, "accel/app", own_digest, Some(&own_token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == own);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !agent.cache_dir.join("blobs").join(own_digest.hex()).exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(agent.cache_dir.join("blobs").join(own_digest.hex()).exists(), "its own tenant's blob is cached");
}

impl Net {
    async fn reg_metrics(&self) -> String {
        self.client.get(format!("{}/metrics", self.reg.url)).send().await.expect("metrics").text().await.expect("text")
    }
}

/// Sends `GET <path>` (or POST with a feed body) exactly as written, over a
/// raw connection, so that no client library tidies `..` segments away; the
/// status and the body.
fn raw_request(url: &str, method: &str, path: &str, ticket: &str) -> (u16, Vec<u8>) {
    let host = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let body = if method == "POST" { r#"{"stripes":1,"stripe":0,"have":""}"# } else { "" };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Ticket {ticket}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| answer[i + 4..].to_vec()).unwrap_or_default();
    (status, body)
}

/// Digests that try to leave the cache directory, as path segments.
fn traversals(digest: Digest) -> Vec<String> {
    let hex = digest.hex();
    vec![
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd".to_owned(),
        "sha256:..%2F..%2F..%2Fetc%2Fpasswd".to_owned(),
        format!("sha256:{hex}%2F..%2F..%2F..%2Fetc%2Fpasswd"),
        format!("sha256:..%2F{}", &hex[3..]),
        "sha256%3A..%2F..%2Fblobs".to_owned(),
        "%2Fetc%2Fpasswd".to_owned(),
        format!("sha256:{}", hex.to_uppercase()),
    ]
}

async fn the_peer_port_serves_only_unexpired_tickets_of_its_cluster_for_that_blob(backend: Backend) {
    let net = Net::new(backend).await;
    net.p2p_on("accel").await;
    let blob = pseudo_random(6 * MIB, 7);
    let digest = net.reg.push_blob("accel/app", &blob).await;
    let other = net.reg.push_blob("accel/app", b"another blob of the same repository").await;
    let robot = create_robot(&net.http, "default", "puller", json!([{ "namespace": "accel", "role": "viewer" }])).await;
    let token = net.pull_token(&robot, "accel/app").await;
    // An agent of c1 that holds the blob.
    let agent = Agent::start(&net.reg.url, &net.c1, &[]);
    let (status, body) = pull(&net.client, &agent, "accel/app", digest, Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == blob);

    // Tickets a join hands out: to a peer of c1 for the blob and for another, to a peer of c2 for the blob.
    let peer_1 = net.register(&net.c1).await;
    let peer_2 = net.register(&net.c2).await;
    let own = net.join(&net.c1, &peer_1, "accel/app", digest, Some(&token)).await["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();
    let other_blob = net.join(&net.c1, &peer_1, "accel/app", other, Some(&token)).await["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();
    let other_cluster = net.join(&net.c2, &peer_2, "accel/app", digest, Some(&token)).await["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();
    let (_, claims) = jwt(&own);
    assert_ne!(jwt(&other_cluster).1["cluster"], claims["cluster"], "two clusters, two cluster claims");
    let now = unix_now();
    let mut expired = claims.clone();
    expired["exp"] = json!(now - 60);
    expired["iat"] = json!(now - 400);
    expired["nbf"] = json!(now - 400);
    let expired = net.forge_ticket(&own, expired);
    let mut early = claims.clone();
    early["nbf"] = json!(now + 120);
    let early = net.forge_ticket(&own, early);
    let foreign_key = {
        let stranger = SigningKey::generate();
        let (header, _) = jwt(&own);
        stranger.sign(&header, &claims)
    };

    let piece = |auth: Option<String>| {
        let mut req = net.client.get(format!("{}/pieces/{digest}/0", agent.peer_url));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let feed = |auth: String| {
        net.client
            .post(format!("{}/feeds/{digest}", agent.peer_url))
            .header("authorization", auth)
            .json(&json!({ "stripes": 1, "stripe": 0, "have": "" }))
            .send()
    };
    let r = piece(None).await.expect("piece");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no ticket");
    let r = net
        .client
        .post(format!("{}/feeds/{digest}", agent.peer_url))
        .json(&json!({"stripes": 1, "stripe": 0}))
        .send()
        .await
        .expect("feed");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no ticket, feed");
    for (what, auth, status) in [
        ("another cluster's ticket for this very blob", format!("Ticket {other_cluster}"), StatusCode::FORBIDDEN),
        ("a ticket for another blob", format!("Ticket {other_blob}"), StatusCode::FORBIDDEN),
        ("an expired ticket", format!("Ticket {expired}"), StatusCode::FORBIDDEN),
        ("a ticket valid only in two minutes", format!("Ticket {early}"), StatusCode::FORBIDDEN),
        ("a ticket signed by another key", format!("Ticket {foreign_key}"), StatusCode::FORBIDDEN),
        ("an access token", format!("Ticket {token}"), StatusCode::FORBIDDEN),
        ("the right ticket in the wrong scheme", format!("Bearer {own}"), StatusCode::UNAUTHORIZED),
    ] {
        let r = piece(Some(auth.clone())).await.expect("piece");
        assert_eq!(r.status(), status, "piece: {what}");
        assert!(r.bytes().await.expect("body").len() < 1024, "piece: {what}: an error, not the piece");
        let r = feed(auth).await.expect("feed");
        assert_eq!(r.status(), status, "feed: {what}");
        assert!(r.bytes().await.expect("body").len() < 1024, "feed: {what}");
    }
    let r = piece(Some(format!("Ticket {other_cluster}"))).await.expect("piece");
    assert!(r.text().await.expect("text").contains("another cluster"), "says why");

    // Digests that climb out of the cache directory name no blob.
    for path in traversals(digest) {
        for (method, route) in [("GET", format!("/pieces/{path}/0")), ("POST", format!("/feeds/{path}"))] {
            let (status, body) = raw_request(&agent.peer_url, method, &route, &own);
            assert!(matches!(status, 400 | 404), "{method} {route}: {status}");
            assert!(body.len() < 1024 && !String::from_utf8_lossy(&body).contains("root:"), "{method} {route}");
        }
    }
    for route in ["/pieces/../../../../etc/passwd/0", "/feeds/../../../../etc/passwd", "/pieces/sha256:../blobs/0"] {
        let (status, body) = raw_request(&agent.peer_url, "GET", route, &own);
        assert!(matches!(status, 400 | 404 | 405), "GET {route}: {status}");
        assert!(!String::from_utf8_lossy(&body).contains("root:"), "GET {route}");
    }

    // The ticket c1's join gave, and only it, opens the piece; again and again within its lifetime.
    for _ in 0..3 {
        let r = piece(Some(format!("Ticket {own}"))).await.expect("piece");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.bytes().await.expect("body").as_ref() == &blob[..4 * MIB]);
    }
    let r = feed(format!("Ticket {own}")).await.expect("feed");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("feed").len(), 4 + 4 + blob.len(), "both pieces, each after its index");
}

async fn the_seed_refuses_tickets_out_of_their_scope_and_replayed_ones(backend: Backend) {
    let net = Net::new(backend).await;
    net.p2p_on("accel").await;
    let blob = pseudo_random(5 * MIB, 9);
    let digest = net.reg.push_blob("accel/app", &blob).await;
    let other = net.reg.push_blob("accel/app", b"another blob").await;
    let robot = create_robot(&net.http, "default", "puller", json!([{ "namespace": "accel", "role": "viewer" }])).await;
    let token = net.pull_token(&robot, "accel/app").await;
    let peer = net.register(&net.c1).await;
    let ticket = net.join(&net.c1, &peer, "accel/app", digest, Some(&token)).await["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();
    let other_blob =
        net.join(&net.c1, &peer, "accel/app", other, Some(&token)).await["ticket"].as_str().expect("ticket").to_owned();
    let (_, claims) = jwt(&ticket);
    let mut expired = claims.clone();
    expired["exp"] = json!(unix_now() - 60);
    let expired = net.forge_ticket(&ticket, expired);

    let seed = |digest: String, index: &str, ticket: Option<&str>| {
        let mut req = net.client.get(format!("{}/p2p/v1/seed/{digest}/pieces/{index}", net.reg.url));
        if let Some(t) = ticket {
            req = req.header("authorization", format!("Ticket {t}"));
        }
        async move {
            let r = req.send().await.expect("seed");
            let status = r.status();
            let ctype = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let body = r.bytes().await.expect("body").to_vec();
            (status, ctype, body)
        }
    };
    let code = |body: &[u8]| {
        serde_json::from_slice::<Value>(body).ok().and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
    };
    let d = digest.to_string();
    for (what, ticket, status, expected) in [
        ("no ticket", None, 401, "UNAUTHORIZED"),
        ("a ticket for another blob", Some(other_blob.as_str()), 403, "DENIED"),
        ("an expired ticket", Some(expired.as_str()), 403, "DENIED"),
        ("an access token", Some(token.as_str()), 403, "DENIED"),
    ] {
        let (s, ctype, body) = seed(d.clone(), "0", ticket).await;
        assert_eq!((s.as_u16(), code(&body).as_deref()), (status, Some(expected)), "{what}");
        assert_eq!(ctype, "application/json", "{what}");
    }
    // Digests that climb out of the blob store, and indices that are not piece numbers: OCI error bodies.
    for path in traversals(digest) {
        let (status, body) = raw_request(&net.reg.url, "GET", &format!("/p2p/v1/seed/{path}/pieces/0"), &ticket);
        assert!(matches!(status, 400 | 403 | 404), "{path}: {status}");
        assert!(code(&body).is_some(), "{path}: an OCI error body: {}", String::from_utf8_lossy(&body));
    }
    for index in ["-1", "4294967296", "one", "0x1"] {
        let (s, ctype, body) = seed(d.clone(), index, Some(&ticket)).await;
        assert_eq!((s.as_u16(), code(&body).as_deref()), (400, Some("UNSUPPORTED")), "index {index}");
        assert_eq!(ctype, "application/json", "index {index}");
    }

    // The ticket works for every piece, again and again, while its agent is in the swarm…
    for _ in 0..2 {
        for i in 0..2 {
            let (s, _, body) = seed(d.clone(), &i.to_string(), Some(&ticket)).await;
            assert_eq!(s, StatusCode::OK);
            assert!(body == blob[i * 4 * MIB..((i + 1) * 4 * MIB).min(blob.len())]);
        }
    }
    // …and is a replay once its agent has left.
    let r = net
        .client
        .delete(format!("{}/p2p/v1/agents/{peer}", net.reg.url))
        .header("authorization", format!("Cluster {}", net.c1))
        .send()
        .await
        .expect("leave");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (s, _, body) = seed(d.clone(), "0", Some(&ticket)).await;
    assert_eq!((s.as_u16(), code(&body).as_deref()), (403, Some("DENIED")), "a ticket of an agent that left");
    assert!(String::from_utf8_lossy(&body).contains("join again"), "{}", String::from_utf8_lossy(&body));
    // A ticket naming a live agent of another cluster than its own is no better.
    let peer_2 = net.register(&net.c2).await;
    let mut crossed = claims.clone();
    crossed["sub"] = json!(peer_2);
    let crossed = net.forge_ticket(&ticket, crossed);
    let (s, _, _) = seed(d.clone(), "0", Some(&crossed)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an agent of c2 under c1's cluster claim");
}

async fn the_mirror_serves_a_cached_blob_only_to_clients_that_may_pull_it(backend: Backend) {
    let net = Net::new(backend).await;
    net.p2p_on("accel").await;
    create_tenant(&net.http, "beta").await;
    create_namespace(&net.http, "beta", "beta-apps", false).await;
    create_namespace(&net.http, "default", "elsewhere", false).await;
    let blob = pseudo_random(5 * MIB, 13);
    let digest = net.reg.push_blob("accel/app", &blob).await;
    net.reg.push_blob("elsewhere/app", b"elsewhere").await;
    let puller =
        create_robot(&net.http, "default", "puller", json!([{ "namespace": "accel", "role": "viewer" }])).await;
    let token = net.pull_token(&puller, "accel/app").await;
    let leaver =
        create_robot(&net.http, "default", "leaver", json!([{ "namespace": "accel", "role": "viewer" }])).await;
    let revoked = net.pull_token(&leaver, "accel/app").await;
    let agent = Agent::start(&net.reg.url, &net.c1, &[]);
    let (status, body) = pull(&net.client, &agent, "accel/app", digest, Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == blob);
    let cached = agent.cache_dir.join("blobs").join(digest.hex());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cached.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cached.exists(), "the blob is in the agent's cache");

    // Tokens that do not grant pull on accel/app, from every kind of client.
    let beta_robot = create_robot(&net.http, "beta", "ci", json!([{ "role": "admin" }])).await;
    let (beta_token, _) = net.http.token(&beta_robot, &["repository:accel/app:pull"]).await;
    let elsewhere =
        create_robot(&net.http, "default", "elsewhere", json!([{ "namespace": "elsewhere", "role": "viewer" }])).await;
    let (elsewhere_token, _) =
        net.http.token(&elsewhere, &["repository:accel/app:pull", "repository:elsewhere/app:pull"]).await;
    let (anonymous_token, scope) = net.http.token(&Cred::Anonymous, &["repository:accel/app:pull"]).await;
    assert_eq!(scope, "");
    let (header, claims) = jwt(&token);
    let mut expired_claims = claims.clone();
    expired_claims["exp"] = json!(unix_now() - 60);
    let expired = net.key.sign(&header, &expired_claims);
    let mut widened = jwt(&elsewhere_token).1;
    widened["access"] = json!([{ "type": "repository", "name": "accel/app", "actions": ["pull"] }]);
    let stranger = SigningKey::generate().sign(&header, &widened);
    // A token that did pull, whose robot has been revoked since: the agent
    // cannot see that offline, but the registry refuses the join on its behalf.
    let (status, _) = pull(&net.client, &agent, "accel/app", digest, Some(&revoked)).await;
    assert_eq!(status, StatusCode::OK, "before the revocation");
    net.http.admin_api(Method::DELETE, "/api/v1/tenants/default/robots/leaver", Value::Null).await;
    for (what, t) in [
        ("a token whose robot was revoked since", Some(revoked.as_str())),
        ("no token", None),
        ("another tenant's robot", Some(beta_token.as_str())),
        ("a robot of this tenant scoped elsewhere", Some(elsewhere_token.as_str())),
        ("an anonymous token", Some(anonymous_token.as_str())),
        ("an expired token that once granted pull", Some(expired.as_str())),
        ("a token granting pull, signed by another key", Some(stranger.as_str())),
        ("garbage", Some("not.a.token")),
    ] {
        for method in [Method::GET, Method::HEAD] {
            let mut req =
                net.client.request(method.clone(), format!("{}/v2/accel/app/blobs/{digest}", agent.mirror_url));
            if let Some(t) = t {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.expect("request");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} with {what}");
            assert!(r.headers().get("www-authenticate").is_some(), "{method} with {what}: a challenge");
            assert_ne!(
                r.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()),
                Some(digest.to_string().as_str()),
                "{method} with {what}: not even the digest"
            );
            assert!(r.bytes().await.expect("body").len() < 1024, "{method} with {what}: an error, not the blob");
        }
    }
    let (status, _) = pull(&net.client, &agent, "accel/app", digest, Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "the token that may pull still does");
}
