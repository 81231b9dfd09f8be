//! Deleted content leaves the P2P network: after an image is deleted and
//! garbage collected, joins for its blob are refused, the seed serves none
//! of it, and an agent that cached it drops it and refuses it to a peer
//! holding a ticket from before, all within a heartbeat. Another tenant's
//! agents hear nothing of it. On both metadata backends with their paired
//! blob stores, against a real agent.

use std::time::{Duration, Instant};

use damselfly_core::p2p::{HeartbeatResponse, JoinResponse, RegisterRequest, RegisterResponse};
use damselfly_tests::http::{create_tenant, Cred, Http};
use damselfly_tests::image::Blob;
use damselfly_tests::storage::{collect, push_image, PushedImage};
use damselfly_tests::{on_both_backends, pseudo_random, Agent, Backend, Registry};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_backends!(a_deleted_and_collected_blob_leaves_the_p2p_network);

/// A stand-in agent of the cluster `token` opens: registered, with nothing listening.
async fn fake_agent(reg: &Registry, token: &str) -> String {
    let req = RegisterRequest {
        node: "stand-in".into(),
        ip: "127.0.0.1".into(),
        peer_port: 9,
        zone: String::new(),
        upload_slots: 1,
        version: "test".into(),
        platform: "linux/amd64".into(),
    };
    let r = reqwest::Client::new()
        .post(format!("{}/p2p/v1/agents", reg.url))
        .header("authorization", format!("Cluster {token}"))
        .json(&req)
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<RegisterResponse>().await.expect("registration").agent_id
}

async fn join(reg: &Registry, cluster: &str, agent: &str, digest: &str, client: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/p2p/v1/swarms/join", reg.url))
        .header("authorization", format!("Cluster {cluster}"))
        .json(&json!({ "agent_id": agent, "repository": "accel/app", "digest": digest, "client_token": client }))
        .send()
        .await
        .expect("join")
}

async fn heartbeat(reg: &Registry, cluster: &str, agent: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/p2p/v1/agents/{agent}/heartbeat", reg.url))
        .header("authorization", format!("Cluster {cluster}"))
        .json(&json!({}))
        .send()
        .await
        .expect("heartbeat")
}

async fn piece(url: &str, ticket: &str) -> StatusCode {
    reqwest::Client::new()
        .get(url)
        .header("authorization", format!("Ticket {ticket}"))
        .send()
        .await
        .expect("piece")
        .status()
}

async fn a_deleted_and_collected_blob_leaves_the_p2p_network(backend: Backend) {
    let reg =
        Registry::start_paired_with(backend, &[("DAMSELFLY_GC_GRACE_SECS", "1"), ("DAMSELFLY_GC_INTERVAL_SECS", "0")]);
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let cluster = reg.register_cluster("edge").await;
    let layer = Blob::new(pseudo_random(3 * 1024 * 1024, 1));
    let image = PushedImage::new("accel/app", "v1", Blob::new(b"{\"config\":\"p2p\"}".to_vec()), vec![layer.clone()]);
    push_image(&http, &admin, &image).await;
    http.admin_api(Method::PATCH, "/api/v1/namespaces/accel", json!({ "p2p_enabled": true })).await;
    tokio::time::sleep(Duration::from_millis(2100)).await; // the registry caches namespaces for two seconds
    let (client, _) = http.token(&admin, &["repository:accel/app:pull"]).await;

    // An agent pulls the layer through its mirror and caches it.
    let agent = Agent::start(&reg.url, &cluster, &[]);
    let pulled = reqwest::Client::new()
        .get(format!("{}/v2/accel/app/blobs/{}", agent.mirror_url, layer.digest))
        .bearer_auth(&client)
        .send()
        .await
        .expect("pull");
    assert_eq!(pulled.status(), StatusCode::OK);
    assert!(pulled.bytes().await.expect("body") == layer.bytes, "the layer, through the agent");
    let hex = layer.digest.trim_start_matches("sha256:");
    let cached = agent.cache_dir.join("blobs").join(hex);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cached.exists() {
        assert!(Instant::now() < deadline, "the agent did not cache the layer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A peer joined before the delete: its ticket opens the agent's pieces.
    let peer = fake_agent(&reg, &cluster).await;
    let joined = join(&reg, &cluster, &peer, &layer.digest, &client).await;
    assert_eq!(joined.status(), StatusCode::OK);
    let ticket = joined.json::<JoinResponse>().await.expect("join").ticket;
    let from_agent = format!("{}/pieces/{}/0", agent.peer_url, layer.digest);
    assert_eq!(piece(&from_agent, &ticket).await, StatusCode::OK);

    // The image is deleted and collected.
    http.send(http.request(&admin, Method::DELETE, &format!("/v2/accel/app/manifests/{}", image.digest)))
        .await
        .expect(202);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let run = collect(&http, false).await;
    assert_eq!(run["blobs_deleted"], 2, "{run}");

    // No new ticket, and the seed serves nothing of it, old ticket or not.
    let refused = join(&reg, &cluster, &peer, &layer.digest, &client).await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let seed = format!("{}/p2p/v1/seed/{}/pieces/0", reg.url, layer.digest);
    assert_eq!(piece(&seed, &ticket).await, StatusCode::NOT_FOUND);
    // Within a heartbeat the agent refuses the old ticket, and drops the layer from its cache.
    let deadline = Instant::now() + Duration::from_secs(30);
    while piece(&from_agent, &ticket).await != StatusCode::GONE || cached.exists() {
        assert!(Instant::now() < deadline, "the agent still serves or holds the deleted layer; log:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(agent.log().contains("blobs left the registry; no longer serving them"), "{}", agent.log());
    // The cluster's agents hear of it; another tenant's hear nothing.
    let told = heartbeat(&reg, &cluster, &peer).await;
    assert_eq!(told.status(), StatusCode::OK);
    let told: HeartbeatResponse = told.json().await.expect("heartbeat answer");
    assert!(told.deleted.iter().any(|d| d.digest.to_string() == layer.digest), "{told:?}");
    assert!(told.deletions_cursor.is_some());
    create_tenant(&http, "other").await;
    let far = http.admin_api(Method::POST, "/api/v1/tenants/other/clusters", json!({ "name": "far" })).await;
    let far = far["token"].as_str().expect("token").to_owned();
    let stranger = fake_agent(&reg, &far).await;
    assert_eq!(heartbeat(&reg, &far, &stranger).await.status(), StatusCode::NO_CONTENT);

    // Pushed again, it is content like any other: a new ticket opens pieces again (this agent no longer holds them).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    push_image(&http, &admin, &image).await;
    let again = join(&reg, &cluster, &peer, &layer.digest, &client).await;
    assert_eq!(again.status(), StatusCode::OK);
    let fresh = again.json::<JoinResponse>().await.expect("join").ticket;
    assert_eq!(piece(&from_agent, &fresh).await, StatusCode::NOT_FOUND, "refused for not holding it, not as deleted");
    assert_eq!(piece(&seed, &fresh).await, StatusCode::OK);
}
