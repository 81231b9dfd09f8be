//! Three registry replicas on one PostgreSQL database and one S3 bucket
//! (SeaweedFS), behind HAProxy round robin, as a fleet runs them
//! (`damselfly_tests::scaled`). What a client does through the balancer
//! lands on every replica and holds on all of them; a change made through
//! one holds on the others within the bound the README's "Scale out" table
//! states; a replica killed with SIGKILL costs no push, pull or preheat.
//!
//! PostgreSQL and S3 are what replicas share, so these run on that pair only.

use std::time::{Duration, Instant};

use damselfly_tests::http::{create_robot, create_user, grant_role, Cred, Http};
use damselfly_tests::image::{push_image, Blob};
use damselfly_tests::scaled::Scaled;
use damselfly_tests::{metric_value, pseudo_random, Agent};
use reqwest::Method;
use serde_json::{json, Value};

/// The policy and credential caches' lifetime: a change is honoured everywhere within it.
const CACHE_BOUND: Duration = Duration::from_secs(2);
/// How often every replica re-reads the signing keys.
const KEYS_BOUND: Duration = Duration::from_secs(5);
/// Slack for waits on a replica's timers (the keys' refresh, a lease's
/// renewal): on a loaded machine a timer fires late, so these waits are
/// generous and print what they measured; the caches read on demand are
/// checked exactly, with no slack.
const SLACK: Duration = Duration::from_secs(10);

/// Sleeps until `bound` (and a little) has passed since `since`: a cache
/// entry read before then has expired, whatever the machine's speed.
async fn past(since: Instant, bound: Duration) {
    tokio::time::sleep((bound + Duration::from_millis(100)).saturating_sub(since.elapsed())).await;
}

fn replica(s: &Scaled, i: usize) -> Http {
    Http::at(&s.replicas[i].url)
}

fn front(s: &Scaled) -> Http {
    Http::at(&s.front.url)
}

/// Polls `check` every 100 ms until it is true; how long that took, or a panic with `what` after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_and_pulls_through_the_balancer_land_on_every_replica_and_read_the_same_everywhere() {
    let s = Scaled::start(3, &[]);
    let http = front(&s);
    let admin = Cred::admin();
    let mut images = Vec::new();
    for i in 0..4 {
        images.push(push_image(&http, &admin, &format!("team/app{i}"), &format!("seed-{i}")).await);
        // A push is six requests: one more moves the next push's requests on by one replica.
        http.get(&admin, "/v2/").await.expect(200);
    }
    for image in &images {
        for _ in 0..3 {
            let m = http.get(&admin, &image.manifest_path("v1")).await.expect(200);
            assert_eq!(m.text(), image.manifest);
            let layer = http.get(&admin, &image.blob_path(&image.layer.digest)).await.expect(200);
            assert_eq!(layer.body, image.layer.bytes);
        }
        // Whichever replica stored it, each one reads the same bytes.
        for i in 0..3 {
            let m = replica(&s, i).get(&admin, &image.manifest_path("v1")).await.expect(200);
            assert_eq!(m.text(), image.manifest, "replica {i}");
        }
    }
    let (uploads, manifests, blobs) =
        (s.requests("upload", "POST"), s.requests("manifest", "PUT"), s.requests("blob", "GET"));
    eprintln!("per replica: upload POST {uploads:?}, manifest PUT {manifests:?}, blob GET {blobs:?}");
    for (what, counts) in [("upload POST", &uploads), ("manifest PUT", &manifests), ("blob GET", &blobs)] {
        assert!(counts.iter().all(|&n| n >= 1.0), "{what} requests per replica: {counts:?}");
    }
    assert_eq!(uploads.iter().sum::<f64>(), 16.0, "four blobs per image, each pushed once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_upload_moves_from_replica_to_replica() {
    let s = Scaled::start(3, &[]);
    let admin = Cred::admin();
    let bytes = pseudo_random(3 * 1024 * 1024 + 17, 7);
    let blob = Blob::new(bytes.clone());
    let mib = 1024 * 1024;
    // Started on replica 0, a chunk through 1, one through 2, its status asked of 0, finished on 1.
    let start = replica(&s, 0)
        .send(replica(&s, 0).request(&admin, Method::POST, "/v2/team/chunked/blobs/uploads/"))
        .await
        .expect(202);
    let mut location = start.header("location").expect("a session").to_owned();
    for (i, (from, to)) in [(0, mib), (mib, 2 * mib)].into_iter().enumerate() {
        let http = replica(&s, i + 1);
        let reply = http
            .send(
                http.request(&admin, Method::PATCH, &location)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{from}-{}", to - 1))
                    .body(bytes[from..to].to_vec()),
            )
            .await
            .expect(202);
        assert_eq!(
            reply.header("range"),
            Some(format!("0-{}", to - 1).as_str()),
            "after the chunk on replica {}",
            i + 1
        );
        location = reply.header("location").expect("location").to_owned();
    }
    let status = replica(&s, 0).get(&admin, &location).await.expect(204);
    assert_eq!(status.header("range"), Some(format!("0-{}", 2 * mib - 1).as_str()));
    let sep = if location.contains('?') { '&' } else { '?' };
    let http = replica(&s, 1);
    http.send(
        http.request(&admin, Method::PUT, &format!("{location}{sep}digest={}", blob.digest))
            .header("content-type", "application/octet-stream")
            .body(bytes[2 * mib..].to_vec()),
    )
    .await
    .expect(201);
    for i in 0..3 {
        let got = replica(&s, i).get(&admin, &format!("/v2/team/chunked/blobs/{}", blob.digest)).await.expect(200);
        assert!(got.body == bytes, "replica {i} reads the blob");
    }

    // Through the balancer, each request of a session goes to the next replica.
    let http = front(&s);
    let before = s.requests("upload", "PATCH");
    let start = http.send(http.request(&admin, Method::POST, "/v2/team/chunked2/blobs/uploads/")).await.expect(202);
    let mut location = start.header("location").expect("a session").to_owned();
    let chunk = 512 * 1024;
    let other = pseudo_random(6 * chunk, 8);
    for (n, piece) in other.chunks(chunk).enumerate() {
        let from = n * chunk;
        let reply = http
            .send(
                http.request(&admin, Method::PATCH, &location)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{from}-{}", from + piece.len() - 1))
                    .body(piece.to_vec()),
            )
            .await
            .expect(202);
        location = reply.header("location").expect("location").to_owned();
    }
    let digest = Blob::new(other.clone()).digest;
    let sep = if location.contains('?') { '&' } else { '?' };
    http.send(http.request(&admin, Method::PUT, &format!("{location}{sep}digest={digest}"))).await.expect(201);
    let patched: Vec<f64> = s.requests("upload", "PATCH").iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(patched.iter().all(|&n| n >= 1.0), "PATCHes per replica: {patched:?}");
    assert_eq!(http.get(&admin, &format!("/v2/team/chunked2/blobs/{digest}")).await.expect(200).body, other);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_from_one_replica_is_honoured_by_all_and_revocations_on_one_by_all_within_the_bound() {
    let s = Scaled::start(3, &[]);
    let admin = Cred::admin();
    let image = push_image(&front(&s), &admin, "team/app", "tokens").await;
    let robot =
        create_robot(&replica(&s, 0), "default", "ci", json!([{ "namespace": "team", "role": "viewer" }])).await;
    let (token, _) = replica(&s, 1).token(&robot, &["repository:team/app:pull"]).await;
    let bearer = Cred::Bearer(token.clone());
    for i in 0..3 {
        replica(&s, i).get(&bearer, &image.manifest_path("v1")).await.expect(200);
        replica(&s, i).get(&robot, &image.manifest_path("v1")).await.expect(200);
    }

    // Revoked through replica 2: the token and the robot's own login stop working on every replica.
    replica(&s, 2).api(&admin, Method::DELETE, "/api/v1/tenants/default/robots/ci", Value::Null).await.expect(204);
    past(Instant::now(), CACHE_BOUND).await;
    for i in 0..3 {
        let path = image.manifest_path("v1");
        assert_eq!(replica(&s, i).get(&bearer, &path).await.status, 401, "replica {i}: the revoked robot's token");
        assert_eq!(replica(&s, i).get(&robot, &path).await.status, 401, "replica {i}: the robot's login");
    }

    // A password changed through replica 0 is the only one any replica takes, within the bound.
    create_user(&replica(&s, 1), "dev", "dev-password-1").await;
    grant_role(&replica(&s, 1), "default", "user", "dev", None, "viewer").await;
    let old = Cred::basic("dev", "dev-password-1");
    for i in 0..3 {
        replica(&s, i).get(&old, &image.manifest_path("v1")).await.expect(200);
    }
    replica(&s, 0)
        .api(&admin, Method::PUT, "/api/v1/users/dev/password", json!({ "password": "dev-password-2" }))
        .await
        .expect(204);
    past(Instant::now(), CACHE_BOUND).await;
    for i in 0..3 {
        let path = image.manifest_path("v1");
        assert_eq!(replica(&s, i).get(&old, &path).await.status, 401, "replica {i}: the old password");
        replica(&s, i).get(&Cred::basic("dev", "dev-password-2"), &path).await.expect(200);
    }

    // A signing key rotated through replica 0 signs tokens every replica honours at once,
    // and every replica publishes it within the keys' refresh period.
    let rotated =
        replica(&s, 0).api(&admin, Method::POST, "/api/v1/signing-keys/rotate", Value::Null).await.expect(200);
    let kid = rotated.json()["kid"].as_str().expect("kid").to_owned();
    let at = Instant::now();
    let (fresh, _) = replica(&s, 0).token(&admin, &["repository:team/app:pull"]).await;
    for i in 0..3 {
        replica(&s, i).get(&Cred::Bearer(fresh.clone()), &image.manifest_path("v1")).await.expect(200);
    }
    for i in 0..3 {
        within(KEYS_BOUND + SLACK, &format!("replica {i} publishes key {kid}"), || {
            let (http, kid) = (replica(&s, i), kid.clone());
            async move { http.get(&Cred::Anonymous, "/auth/jwks.json").await.text().contains(&kid) }
        })
        .await;
    }
    eprintln!("every replica published the new key {:?} after the rotation", at.elapsed());
}

/// A console page through replica `i` with the session cookie: its status and where it redirects.
async fn console_page(s: &Scaled, i: usize, cookie: &str, path: &str) -> (u16, String, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let r = client.get(format!("{}{path}", s.replicas[i].url)).header("cookie", cookie).send().await.expect("GET");
    let location = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (r.status().as_u16(), location, r.text().await.unwrap_or_default())
}

/// The first `name="csrf"` field's value on a page.
fn csrf_of(html: &str) -> String {
    let rest = html.split("name=\"csrf\" value=\"").nth(1).unwrap_or_else(|| panic!("no CSRF field:\n{html}"));
    rest[..rest.find('"').expect("closing quote")].to_owned()
}

/// The `name=value` of a `Set-Cookie` named `name`.
fn set_cookie(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .to_owned()
}

/// Console sign-ins live in the database: the sign-in form fetched from one
/// replica is posted to another, the session opens pages on every replica,
/// and a sign-out through one ends it on all at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_console_session_opened_through_one_replica_holds_on_all_and_its_sign_out_on_all_at_once() {
    let s = Scaled::start(3, &[]);
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let form = client.get(format!("{}/console/login", s.replicas[0].url)).send().await.expect("login page");
    let login_cookie = set_cookie(&form, "damselfly_login");
    let csrf = csrf_of(&form.text().await.expect("login page"));
    let password = damselfly_tests::ADMIN_PASSWORD;
    let signed_in = client
        .post(format!("{}/console/login", s.replicas[1].url))
        .header("cookie", &login_cookie)
        .form(&[("username", "admin"), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed_in.status().as_u16(), 303, "the form from replica 0 signs in on replica 1");
    let session = set_cookie(&signed_in, "damselfly_session");
    let mut page_csrf = String::new();
    for i in 0..3 {
        let (status, _, body) = console_page(&s, i, &session, "/console/tenants").await;
        assert_eq!(status, 200, "replica {i} opens the session's pages");
        page_csrf = csrf_of(&body);
    }
    let out = client
        .post(format!("{}/console/logout", s.replicas[2].url))
        .header("cookie", &session)
        .form(&[("csrf", page_csrf.as_str())])
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status().as_u16(), 303);
    for i in 0..3 {
        let (status, location, _) = console_page(&s, i, &session, "/console/tenants").await;
        assert_eq!((status, location.as_str()), (303, "/console/login"), "replica {i} after the sign-out");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_on_every_replica_count_against_one_limit() {
    let s = Scaled::start(3, &[("DAMSELFLY_LOGIN_FAILURES_PER_MINUTE", "4")]);
    create_user(&replica(&s, 0), "eve", "eve-password-1").await;
    let wrong = Cred::basic("eve", "not-her-password");
    for i in [0, 1, 0, 1] {
        let reply = replica(&s, i).token_reply(&wrong, &[]).await;
        assert_eq!(reply.status, 401, "failure on replica {i}: {}", reply.text());
    }
    // Two failures each on replicas 0 and 1: replica 2 refuses even the right password now.
    let reply = replica(&s, 2).token_reply(&Cred::basic("eve", "eve-password-1"), &[]).await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert!(reply.header("retry-after").is_some());
}

/// Turns the `team` namespace's P2P switch through replica 0; when.
async fn switch(s: &Scaled, on: bool) -> Instant {
    let body = json!({ "p2p_enabled": on });
    replica(s, 0).api(&Cred::admin(), Method::PATCH, "/api/v1/namespaces/team", body).await.expect(200);
    Instant::now()
}

/// Agents attached to replicas 1 and 2 (their `--registry`), the P2P switch
/// turned through replica 0: a pull through either agent follows it within
/// the namespace cache's bound. Whichever replica schedules the cluster,
/// the other's agent reaches it through the call forwarding.
#[tokio::test(flavor = "multi_thread")]
async fn the_p2p_switch_turned_through_one_replica_holds_for_agents_attached_to_the_others() {
    let s = Scaled::start(3, &[("DAMSELFLY_PIECE_SIZE", "65536")]);
    let admin = Cred::admin();
    let http = front(&s);
    let blobs: Vec<Blob> = (0..3).map(|n| Blob::new(pseudo_random(512 * 1024, 100 + n))).collect();
    for b in &blobs {
        damselfly_tests::image::push_blob(&http, &admin, "team/app", b).await;
    }
    switch(&s, true).await;
    let cluster = http.admin_api(Method::POST, "/api/v1/tenants/default/clusters", json!({ "name": "edge" })).await;
    let cluster_token = cluster["token"].as_str().expect("cluster token").to_owned();
    let agents =
        [Agent::start(&s.replicas[1].url, &cluster_token, &[]), Agent::start(&s.replicas[2].url, &cluster_token, &[])];
    let (pull, _) = http.token(&admin, &["repository:team/app:pull"]).await;
    // On: the first blob comes through P2P on both; the switch is now cached where the cluster is scheduled.
    for agent in &agents {
        assert!(pull_through(agent, &pull, "team/app", &blobs[0].digest).await == blobs[0].bytes);
        let (p2p, passthrough) = agent_bytes(agent);
        assert!(p2p >= blobs[0].bytes.len() as f64 && passthrough == 0.0, "p2p {p2p}, passthrough {passthrough}");
    }
    let holder = s.scheduler().expect("one replica schedules the cluster");
    let held: Vec<f64> = (0..3).map(|i| metric_value(&s.metrics(i), "damselfly_p2p_clusters_scheduled")).collect();
    assert_eq!(held.iter().sum::<f64>(), 1.0, "exactly one replica schedules the cluster: {held:?}");
    let forwarded: f64 = (0..3).map(|i| metric_value(&s.metrics(i), "damselfly_p2p_forwarded_total")).sum();
    assert!(forwarded > 0.0, "the agent not on replica {holder} had its calls passed on");

    // Off through replica 0: once the bound has passed, both agents pass the bytes through.
    let off = switch(&s, false).await;
    tokio::time::sleep((CACHE_BOUND + Duration::from_millis(200)).saturating_sub(off.elapsed())).await;
    for agent in &agents {
        let before = agent_bytes(agent);
        assert!(pull_through(agent, &pull, "team/app", &blobs[1].digest).await == blobs[1].bytes);
        let after = agent_bytes(agent);
        assert_eq!(after.0, before.0, "no byte through P2P with the switch off");
        assert_eq!(after.1 - before.1, blobs[1].bytes.len() as f64, "the blob passed through");
    }
    for i in [1, 2] {
        let answer = replica(&s, i)
            .send(
                replica(&s, i)
                    .request(&Cred::Anonymous, Method::GET, "/p2p/v1/namespaces/team/acceleration")
                    .header("authorization", format!("Cluster {cluster_token}")),
            )
            .await
            .expect(200)
            .json();
        assert_eq!(answer["p2p_enabled"], false, "the webhook's answer on replica {i}");
    }

    // On again through replica 0: P2P again, past the bound.
    let on = switch(&s, true).await;
    tokio::time::sleep((CACHE_BOUND + Duration::from_millis(200)).saturating_sub(on.elapsed())).await;
    for agent in &agents {
        let before = agent_bytes(agent);
        assert!(pull_through(agent, &pull, "team/app", &blobs[2].digest).await == blobs[2].bytes);
        let after = agent_bytes(agent);
        assert_eq!(after.1, before.1, "nothing passed through with the switch on");
        assert!(after.0 > before.0, "bytes came through P2P");
    }
}

/// The P2P API as an agent calls it, through the balancer.
async fn p2p_call(s: &Scaled, cluster_token: &str, path: &str, body: Value) -> u16 {
    let http = front(s);
    let request = http
        .request(&Cred::Anonymous, Method::POST, path)
        .header("authorization", format!("Cluster {cluster_token}"))
        .json(&body);
    http.send(request).await.status
}

/// The ids of the cluster's online agents, as the management API lists them through the balancer.
async fn agent_ids(s: &Scaled) -> Vec<String> {
    let clusters = front(s).admin_api(Method::GET, "/api/v1/tenants/default/clusters", Value::Null).await;
    let mut ids: Vec<String> = clusters[0]["agents"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The agent's bytes from P2P (peers and seed) and passed through.
fn agent_bytes(agent: &Agent) -> (f64, f64) {
    let page = std::process::Command::new("curl")
        .args(["-fsS", &format!("{}/metrics", agent.metrics_url)])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let v = |source: &str| metric_value(&page, &format!("damselfly_agent_bytes_received_total{{source=\"{source}\"}}"));
    (v("peer") + v("seed"), v("passthrough"))
}

async fn pull_through(agent: &Agent, token: &str, repository: &str, digest: &str) -> Vec<u8> {
    let got = reqwest::Client::new()
        .get(format!("{}/v2/{repository}/blobs/{digest}", agent.mirror_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("pull through the agent");
    assert_eq!(got.status(), 200);
    got.bytes().await.expect("blob").to_vec()
}

/// A cluster `edge` with P2P on for `team`, and `n` agents on the balancer; the cluster token and the agents.
async fn cluster_with_agents(s: &Scaled, n: usize) -> (String, Vec<Agent>) {
    switch(s, true).await;
    let cluster = front(s).admin_api(Method::POST, "/api/v1/tenants/default/clusters", json!({ "name": "edge" })).await;
    let token = cluster["token"].as_str().expect("cluster token").to_owned();
    let agents = (0..n).map(|_| Agent::start(&s.front.url, &token, &[])).collect();
    (token, agents)
}

/// How long a lease outlives a holder that died just after renewing it, and the renewal period.
const TAKEOVER_BOUND: Duration = Duration::from_secs(6 + 2);

#[tokio::test(flavor = "multi_thread")]
async fn when_the_replica_scheduling_a_cluster_is_killed_another_takes_over_and_agents_keep_their_ids() {
    let mut s = Scaled::start(3, &[("DAMSELFLY_PIECE_SIZE", "65536")]);
    let admin = Cred::admin();
    let blobs: Vec<Blob> = (0..2).map(|n| Blob::new(pseudo_random(512 * 1024, 200 + n))).collect();
    for b in &blobs {
        damselfly_tests::image::push_blob(&front(&s), &admin, "team/app", b).await;
    }
    let (cluster_token, agents) = cluster_with_agents(&s, 2).await;
    let (pull, _) = front(&s).token(&admin, &["repository:team/app:pull"]).await;
    for agent in &agents {
        assert!(pull_through(agent, &pull, "team/app", &blobs[0].digest).await == blobs[0].bytes);
    }
    let holder = s.scheduler().expect("a replica schedules the cluster");
    let ids = agent_ids(&s).await;
    assert_eq!(ids.len(), 2, "{ids:?}");

    s.replicas[holder].kill();
    let killed = Instant::now();
    // The agents' heartbeats go on (every 10 s each; here every 200 ms, as many agents would
    // send them): the first after the lease lapsed moves the cluster to a live replica.
    let survivors: Vec<usize> = (0..3).filter(|&i| i != holder).collect();
    loop {
        for id in &ids {
            p2p_call(&s, &cluster_token, &format!("/p2p/v1/agents/{id}/heartbeat"), json!({})).await;
        }
        let now_held: Vec<f64> =
            survivors.iter().map(|&i| metric_value(&s.metrics(i), "damselfly_p2p_clusters_scheduled")).collect();
        if now_held.iter().sum::<f64>() == 1.0 {
            break;
        }
        assert!(killed.elapsed() < TAKEOVER_BOUND + SLACK, "no replica took the cluster over: {now_held:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = killed.elapsed();
    eprintln!("replica {holder} killed; a survivor scheduled the cluster {took:?} later");
    // The new holder took the agents over: same ids, heartbeats accepted, no registration again.
    assert_eq!(agent_ids(&s).await, ids);
    for id in &ids {
        let status = p2p_call(&s, &cluster_token, &format!("/p2p/v1/agents/{id}/heartbeat"), json!({})).await;
        assert!(status == 200 || status == 204, "heartbeat of {id}: {status}");
    }
    for agent in &agents {
        let before = agent_bytes(agent);
        assert!(pull_through(agent, &pull, "team/app", &blobs[1].digest).await == blobs[1].bytes);
        let after = agent_bytes(agent);
        assert!(after.0 > before.0 && after.1 == before.1, "P2P after the move: {before:?} → {after:?}");
        assert!(!agent.log().contains("registering again"), "the agent kept its registration:\n{}", agent.log());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_cut_by_a_killed_replica_is_retried_through_another_and_nothing_is_half_visible() {
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let mut s = Scaled::start(3, &[]);
    let admin = Cred::admin();
    let mib = 1024 * 1024;
    let layer = Blob::new(pseudo_random(24 * mib, 9));
    let victim = 1;
    let http = replica(&s, victim);
    let start = http.send(http.request(&admin, Method::POST, "/v2/team/cut/blobs/uploads/")).await.expect(202);
    let location = start.header("location").expect("a session").to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = format!("{location}{sep}digest={}", layer.digest);

    // The whole layer in one PUT to replica 1, whose body stops halfway: the client is still sending.
    let sent = Arc::new(AtomicUsize::new(0));
    let half: Vec<Vec<u8>> = layer.bytes[..12 * mib].chunks(mib).map(<[u8]>::to_vec).collect();
    let counter = sent.clone();
    let body = futures_util::stream::iter(half.into_iter().map(move |c| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(c)
    }))
    .chain(futures_util::stream::pending());
    let request = http
        .request(&admin, Method::PUT, &put)
        .header("content-type", "application/octet-stream")
        .header("content-length", layer.bytes.len())
        .body(reqwest::Body::wrap_stream(body));
    let cut = tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
    while sent.load(Ordering::SeqCst) < 12 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.replicas[victim].kill();
    let outcome = tokio::time::timeout(Duration::from_secs(30), cut).await.expect("the client notices").expect("task");
    assert!(outcome.is_err(), "the cut push failed for its client: {outcome:?}");

    // Nothing of it is visible: not the blob on any replica, not an object in the bucket.
    for i in (0..3).filter(|&i| i != victim) {
        let reply = replica(&s, i)
            .send(replica(&s, i).request(&admin, Method::HEAD, &format!("/v2/team/cut/blobs/{}", layer.digest)))
            .await;
        assert_eq!(reply.status, 404, "replica {i}");
    }
    let bucket = s.replicas[0].bucket.clone().expect("a bucket");
    let hex = layer.digest.trim_start_matches("sha256:").to_owned();
    let stored = |bucket: &str| -> Vec<String> {
        damselfly_tests::seaweedfs::SeaweedFs::shared()
            .objects(bucket)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("blobs/") && k.ends_with(&hex))
            .collect()
    };
    assert!(stored(&bucket).is_empty(), "{:?}", stored(&bucket));

    // The client's retry through the balancer: the session lives on (its state is in the
    // database), still at the length last acknowledged, and takes the whole layer again.
    let http = front(&s);
    let status = http.get(&admin, &location).await.expect(204);
    assert!(matches!(status.header("range"), None | Some("0-0")), "{:?}", status.header("range"));
    http.send(
        http.request(&admin, Method::PUT, &put)
            .header("content-type", "application/octet-stream")
            .body(layer.bytes.clone()),
    )
    .await
    .expect(201);
    assert_eq!(stored(&bucket).len(), 1);
    let manifest = json!({ "schemaVersion": 2, "mediaType": damselfly_tests::image::OCI_MANIFEST,
        "config": layer.descriptor(damselfly_tests::image::OCI_CONFIG), "layers": [layer.descriptor(damselfly_tests::image::OCI_LAYER)] })
    .to_string();
    damselfly_tests::image::push_manifest(
        &http,
        &admin,
        "team/cut",
        "v1",
        damselfly_tests::image::OCI_MANIFEST,
        &manifest,
    )
    .await
    .expect(201);
    for i in (0..3).filter(|&i| i != victim) {
        let got = replica(&s, i).get(&admin, &format!("/v2/team/cut/blobs/{}", layer.digest)).await.expect(200);
        assert!(got.body == layer.bytes, "replica {i} serves the layer whole");
        assert_eq!(replica(&s, i).get(&admin, "/v2/team/cut/manifests/v1").await.expect(200).text(), manifest);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preheat_job_completes_when_the_replica_scheduling_its_cluster_is_killed() {
    let mut s = Scaled::start(3, &[("DAMSELFLY_PIECE_SIZE", "65536")]);
    let admin = Cred::admin();
    let image = push_image(&front(&s), &admin, "team/app", "preheated").await;
    let (_, agents) = cluster_with_agents(&s, 3).await;
    within(Duration::from_secs(30), "three agents online", || async { agent_ids(&s).await.len() == 3 }).await;
    let holder = s.scheduler().expect("a replica schedules the cluster");
    let other = (holder + 1) % 3;
    let started = replica(&s, other)
        .api(
            &admin,
            Method::POST,
            "/api/v1/tenants/default/clusters/edge/preheat",
            json!({ "repository": "team/app", "tag": "v1" }),
        )
        .await
        .expect(202)
        .json();
    let job = started["id"].as_str().expect("job id").to_owned();
    s.replicas[holder].kill();
    let killed = Instant::now();
    let path = format!("/api/v1/tenants/default/clusters/edge/preheat/{job}");
    let last = loop {
        let job = front(&s).admin_api(Method::GET, &path, Value::Null).await;
        if job["state"] != "running" {
            break job;
        }
        assert!(killed.elapsed() < Duration::from_secs(120), "the preheat job did not end in 120 s: {job}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("replica {holder} killed; the job ended {:?} later: {last}", killed.elapsed());
    assert_eq!(last["state"], "done", "every node preheated: {last}");
    for i in (0..3).filter(|&i| i != holder) {
        let seen = replica(&s, i).get(&admin, &path).await.expect(200).json();
        assert_eq!(seen["state"], "done", "replica {i}: {seen}");
    }
    // The layer is in every agent's cache: pulled through any of them, no byte comes from elsewhere.
    let (pull, _) = front(&s).token(&admin, &["repository:team/app:pull"]).await;
    for agent in &agents {
        let before = agent_bytes(agent);
        assert!(pull_through(agent, &pull, "team/app", &image.layer.digest).await == image.layer.bytes);
        assert_eq!(agent_bytes(agent), before, "served from the cache");
    }
}

/// `scripts/run-scaled.sh` as a newcomer runs it: it prints the URL and the
/// admin password, serves through HAProxy from three replicas, and Ctrl-C
/// (SIGINT to its process group, as a terminal sends it) stops every
/// process it started and removes its directory.
#[test]
fn run_scaled_serves_through_haproxy_and_ctrl_c_leaves_nothing_behind() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // free_port() hands ports out in order: taking the three after the base
    // from it too keeps the other tests of this process off the replicas'
    // ports while the script starts PostgreSQL and SeaweedFS.
    let base = loop {
        let p = damselfly_tests::free_port();
        let next: Vec<u16> = (0..3).map(|_| damselfly_tests::free_port()).collect();
        if next == [p + 1, p + 2, p + 3] {
            break p;
        }
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/run-scaled.sh");
    let mut child = Command::new("setsid")
        .args(["bash", script])
        .env("DAMSELFLY_SCALED_PORT", base.to_string())
        .env("DAMSELFLY_REGISTRY_BIN", damselfly_tests::binary("damselfly-registry"))
        .env("DAMSELFLY_WEED_BIN", damselfly_tests::seaweedfs::weed_binary())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/run-scaled.sh");
    let pgid = child.id().to_string();
    let stop = |pgid: &str| {
        let _ = Command::new("kill").args(["-INT", "--", &format!("-{pgid}")]).status();
    };
    // Whatever fails below, Ctrl-C reaches the script, so that nothing it started outlives the test.
    struct Interrupt(String);
    impl Drop for Interrupt {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-INT", "--", &format!("-{}", self.0)]).status();
        }
    }
    let _interrupt = Interrupt(pgid.clone());
    let (lines, stdout) = (std::sync::mpsc::channel(), child.stdout.take().expect("stdout"));
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.0.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !printed.iter().any(|l: &String| l.contains("Press Ctrl-C")) {
        match lines.1.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => printed.push(line),
            Err(_) if Instant::now() < deadline && child.try_wait().ok().flatten().is_none() => {}
            Err(_) => {
                stop(&pgid);
                let err = child.stderr.take().map(std::io::read_to_string).and_then(Result::ok).unwrap_or_default();
                panic!("run-scaled.sh did not start:\n{}\n{err}", printed.join("\n"));
            }
        }
    }
    let field =
        |name: &str| printed.iter().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned())).expect(name);
    let password = field("admin password:");
    let work = field("replicas:").split("(logs: ").nth(1).expect("log dir").trim_end_matches(')').to_owned();
    let work = work.trim_end_matches("/replica-*.log").to_owned();
    assert!(printed.iter().any(|l| l.contains(&format!("serving http://127.0.0.1:{base} through HAProxy"))));

    let url = format!("http://127.0.0.1:{base}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let http = Http::at(&url);
        let admin = Cred::basic("admin", &password);
        let image = push_image(&http, &admin, "team/hello", "scaled").await;
        for _ in 0..3 {
            assert_eq!(http.get(&admin, &image.manifest_path("v1")).await.expect(200).text(), image.manifest);
        }
    });
    for i in 1..=3 {
        let page = Command::new("curl").args(["-fsS", &format!("http://127.0.0.1:{}/metrics", base + i)]).output();
        let page = String::from_utf8_lossy(&page.expect("curl").stdout).into_owned();
        assert!(page.contains("route=\"manifest\""), "replica {i} served manifests:\n{page}");
    }

    // SeaweedFS's ports, to check the sockets it leaves in /tmp go with it.
    let weed = Command::new("pgrep").args(["-af", &format!("{work}/s3/data")]).output().expect("pgrep");
    let weed_ports: Vec<String> = String::from_utf8_lossy(&weed.stdout)
        .split_whitespace()
        .filter(|arg| arg.contains(".port") && !arg.contains("iceberg") && !arg.contains("lance"))
        .filter_map(|arg| arg.rsplit('=').next().map(str::to_owned))
        .collect();
    assert!(weed_ports.len() >= 8, "SeaweedFS's ports: {weed_ports:?}");

    stop(&pgid);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "run-scaled.sh did not stop within 60 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = reader.join();
    assert!(!status.success(), "interrupted: {status}");
    assert!(!std::path::Path::new(&work).exists(), "{work} was removed");
    let left = Command::new("pgrep").args(["-f", &work]).output().expect("pgrep");
    assert!(left.stdout.is_empty(), "processes left running:\n{}", String::from_utf8_lossy(&left.stdout));
    let sockets: Vec<String> = std::fs::read_dir("/tmp")
        .expect("read /tmp")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            name.starts_with("seaweedfs-") && weed_ports.iter().any(|p| name.ends_with(&format!("-{p}.sock")))
        })
        .collect();
    assert!(sockets.is_empty(), "SeaweedFS's sockets left in /tmp: {sockets:?}");
}
