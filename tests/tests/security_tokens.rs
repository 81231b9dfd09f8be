//! The token rows of the security matrix, on a real `damselfly-registry`
//! and on both metadata backends: tokens that must not work, and tokens
//! that must stop working the moment what they were issued under changes,
//! on every replica, although the registry keeps verified tokens (their
//! signature and claims) until they expire.
//!
//! Rows tested elsewhere, not repeated here (tests/tests/auth_refusals.rs):
//! a token signed by another key (under the registry's `kid` and another),
//! a payload edited under a kept signature, `alg=none`, HS256 keyed with the
//! public key in five forms, an expired token, a token for another service
//! (audience) or issuer, a robot's token after revocation and expiry, a
//! user's token after a password change.
//!
//! Here: `nbf` in the future; `jwk`, `jku`, `x5u` and `x5c` headers, which
//! are never looked at; a `kid` of a key rotated out; a ticket presented as
//! a bearer token; a role removed, a role lessened (developer to viewer) and
//! a robot's namespace scope removed, each ending existing tokens at once;
//! and every kind of revocation ending a token another replica has verified
//! and kept, on that replica's next request.
//!
//! To sign what the registry would sign, the registry under test is started
//! with a key the test holds (`DAMSELFLY_SIGNING_KEY_FILE`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use damselfly_tests::http::{
    challenge, create_namespace, create_robot, create_tenant, create_user, grant_role, management_api_is_up, Cred,
    Http, Reply,
};
use damselfly_tests::image::push_image;
use damselfly_tests::jwt::{jwt, public_jwk, sign_es256, unix_now, SigningKey};
use damselfly_tests::{on_both_backends, Backend, Registry};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(
    a_token_is_refused_before_its_nbf,
    keys_a_token_carries_or_points_at_are_never_used,
    a_key_rotated_out_ends_its_tokens_though_they_were_verified_before,
    a_ticket_is_no_bearer_token,
    removing_a_member_s_role_ends_their_tokens_at_once,
    lessening_a_role_from_developer_to_viewer_ends_push_tokens_at_once,
    removing_a_robot_s_namespace_scope_ends_its_tokens_at_once,
    every_revocation_ends_a_token_on_the_next_request_at_another_replica,
);

const TAGS: &str = "/v2/team/app/tags/list";

/// A 401 with `error="invalid_token"` on the tag list of `team/app`.
fn assert_invalid_token(reg: &Registry, reply: &Reply, what: &str) {
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "{what}: {}", reply.text());
    assert_eq!(
        reply.header("www-authenticate"),
        Some(challenge(reg, Some("repository:team/app:pull"), Some("invalid_token")).as_str()),
        "{what}"
    );
}

/// A registry signing with `key`, holding `team/app:v1` (private namespace `team` of tenant `acme`).
async fn registry_with_key(backend: Backend, key: &SigningKey) -> (Registry, Http) {
    let (name, value) = key.env();
    let reg = Registry::start_with(backend, &[(name, value.as_str())]);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "team", false).await;
    push_image(&http, &Cred::admin(), "team/app", "tokens").await;
    (reg, http)
}

/// The header and claims of a genuine pull token of the admin for `team/app`.
async fn genuine(http: &Http) -> (String, Value, Value) {
    let (token, _) = http.token(&Cred::admin(), &["repository:team/app:pull"]).await;
    let (header, claims) = jwt(&token);
    (token, header, claims)
}

async fn a_token_is_refused_before_its_nbf(backend: Backend) {
    let key = SigningKey::generate();
    let (reg, http) = registry_with_key(backend, &key).await;
    let (_, header, claims) = genuine(&http).await;
    let now = unix_now();

    // The registry's own key, the registry's claims, valid from a minute from now:
    // beyond the 5 s allowed for clock skew.
    let mut later = claims.clone();
    later["nbf"] = json!(now + 60);
    later["jti"] = json!("not-yet");
    let token = key.sign(&header, &later);
    for attempt in 1..=3 {
        let reply = http.get(&Cred::Bearer(token.clone()), TAGS).await;
        assert_invalid_token(&reg, &reply, &format!("nbf a minute ahead, attempt {attempt}"));
    }
    // The same token with `nbf` now works, so it was `nbf` that refused it.
    let mut now_valid = later.clone();
    now_valid["nbf"] = json!(now);
    http.get(&Cred::Bearer(key.sign(&header, &now_valid)), TAGS).await.expect(200);
    // No `nbf` at all is refused too: the registry requires it.
    let mut without = claims.clone();
    without.as_object_mut().expect("claims").remove("nbf");
    assert_invalid_token(&reg, &http.get(&Cred::Bearer(key.sign(&header, &without)), TAGS).await, "no nbf");
}

/// A JWKS document server on loopback that counts the requests it gets.
async fn counting_key_server(jwks: Value) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let body = jwks.to_string();
        async move { ([("content-type", "application/json")], body) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

async fn keys_a_token_carries_or_points_at_are_never_used(backend: Backend) {
    let key = SigningKey::generate();
    let (reg, http) = registry_with_key(backend, &key).await;
    let (_, header, claims) = genuine(&http).await;
    let kid = header["kid"].as_str().expect("kid").to_owned();

    // An attacker's key, offered every way a JWT header can offer one.
    let attacker = {
        let rng = ring::rand::SystemRandom::new();
        ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("key")
            .as_ref()
            .to_vec()
    };
    let attacker_jwk = public_jwk(&attacker, "attacker");
    let (server, hits) = counting_key_server(json!({ "keys": [attacker_jwk.clone()] })).await;
    let headers = [
        ("jwk, no kid", json!({ "alg": "ES256", "typ": "JWT", "jwk": attacker_jwk })),
        ("jwk under the registry's kid", json!({ "alg": "ES256", "typ": "JWT", "kid": kid, "jwk": attacker_jwk })),
        ("jku, no kid", json!({ "alg": "ES256", "typ": "JWT", "jku": format!("{server}/jwks.json") })),
        (
            "jku under the attacker's kid",
            json!({ "alg": "ES256", "typ": "JWT", "kid": "attacker", "jku": format!("{server}/jwks.json") }),
        ),
        (
            "x5u under the attacker's kid",
            json!({ "alg": "ES256", "typ": "JWT", "kid": "attacker", "x5u": format!("{server}/cert.pem") }),
        ),
        ("x5c", json!({ "alg": "ES256", "typ": "JWT", "kid": "attacker", "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOC"] })),
    ];
    for (what, h) in &headers {
        let forged = sign_es256(&attacker, h, &claims);
        assert_invalid_token(&reg, &http.get(&Cred::Bearer(forged), TAGS).await, &format!("attacker-signed, {what}"));
    }

    // The registry's own signature with the same headers added: they change
    // nothing, the token works as it would without them.
    for (what, h) in &headers {
        let mut h = h.clone();
        h["kid"] = json!(kid);
        let mut c = claims.clone();
        c["jti"] = json!(format!("headers {what}"));
        let reply = http.get(&Cred::Bearer(key.sign(&h, &c)), TAGS).await;
        assert_eq!(reply.status, 200, "registry-signed with {what}: {}", reply.text());
    }
    // Nobody ever went to fetch the keys the headers pointed at.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the registry fetched a key a token pointed at");
}

async fn a_key_rotated_out_ends_its_tokens_though_they_were_verified_before(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    push_image(&http, &Cred::admin(), "team/app", "rotation").await;
    let (old, _) = http.token(&Cred::admin(), &["repository:team/app:pull"]).await;
    let old_kid = jwt(&old).0["kid"].as_str().expect("kid").to_owned();
    for _ in 0..3 {
        http.get(&Cred::Bearer(old.clone()), TAGS).await.expect(200);
    }

    let new_kid = http.admin_api(Method::POST, "/api/v1/signing-keys/rotate", Value::Null).await["kid"]
        .as_str()
        .expect("kid")
        .to_owned();
    http.get(&Cred::Bearer(old.clone()), TAGS).await.expect(200);

    // The old key's grace (the longest token lifetime) runs out, as if its
    // tokens had all expired. Every replica re-reads the keys every 5 s.
    reg.sql(&format!("UPDATE signing_keys SET retired_at = 1 WHERE kid = '{old_kid}'")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let kids = loop {
        let jwks = http.get(&Cred::Anonymous, "/auth/jwks.json").await.expect(200).json();
        let kids: Vec<String> =
            jwks["keys"].as_array().expect("keys").iter().map(|k| k["kid"].as_str().expect("kid").to_owned()).collect();
        if !kids.contains(&old_kid) || std::time::Instant::now() > deadline {
            break kids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(kids, vec![new_kid], "the JWKS no longer publishes the old key");
    // The token was verified and kept before: it still ends with its key.
    assert_invalid_token(&reg, &http.get(&Cred::Bearer(old), TAGS).await, "signed by a key rotated out");
    let (fresh, _) = http.token(&Cred::admin(), &["repository:team/app:pull"]).await;
    http.get(&Cred::Bearer(fresh), TAGS).await.expect(200);
}

async fn a_ticket_is_no_bearer_token(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    let image = push_image(&http, &Cred::admin(), "team/app", "ticket").await;
    http.admin_api(Method::PATCH, "/api/v1/namespaces/team", json!({ "p2p_enabled": true })).await;
    let cluster = http.admin_api(Method::POST, "/api/v1/tenants/default/clusters", json!({ "name": "edge" })).await
        ["token"]
        .as_str()
        .expect("cluster token")
        .to_owned();
    let as_cluster = |path: &str, body: &Value| {
        let request =
            http.request(&Cred::Anonymous, Method::POST, path).header("authorization", format!("Cluster {cluster}"));
        http.send(request.json(body))
    };
    let register = json!({ "node": "n1", "ip": "127.0.0.1", "peer_port": 65002 });
    let agent = as_cluster("/p2p/v1/agents", &register).await.expect(200).json()["agent_id"]
        .as_str()
        .expect("agent id")
        .to_owned();
    let (token, _) = http.token(&Cred::admin(), &["repository:team/app:pull"]).await;
    let join =
        json!({ "agent_id": agent, "repository": "team/app", "digest": image.layer.digest, "client_token": token });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ticket = loop {
        let answer = as_cluster("/p2p/v1/swarms/join", &join).await.expect(200).json();
        // The namespace cache lives two seconds: the switch counts soon after.
        if answer["mode"] == "p2p" || std::time::Instant::now() > deadline {
            break answer["ticket"].as_str().expect("ticket").to_owned();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(!ticket.is_empty(), "a ticket for the accelerated blob");
    assert_eq!(jwt(&ticket).1["aud"], "damselfly-p2p");
    assert_invalid_token(&reg, &http.get(&Cred::Bearer(ticket.clone()), TAGS).await, "a ticket as a bearer token");
    let reply = http.get(&Cred::Bearer(ticket.clone()), &image.blob_path(&image.layer.digest)).await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "{}", reply.text());
    let reply = http.api(&Cred::Bearer(ticket), Method::GET, "/api/v1/tenants/default", Value::Null).await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "{}", reply.text());
}

/// Tenant `acme` with namespaces `team` (holding `team/app:v1`) and `other`,
/// and user `dana` with `role` on the whole tenant.
async fn acme_with_dana(backend: Backend, role: &str) -> (Registry, Http, Cred) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "team", false).await;
    create_namespace(&http, "acme", "other", false).await;
    push_image(&http, &Cred::admin(), "team/app", "grants").await;
    create_user(&http, "dana", "dana-password").await;
    grant_role(&http, "acme", "user", "dana", None, role).await;
    (reg, http, Cred::basic("dana", "dana-password"))
}

/// Starts a blob upload to `team/app`: 202 if the credentials may push.
async fn start_upload(http: &Http, cred: &Cred) -> Reply {
    http.send(http.request(cred, Method::POST, "/v2/team/app/blobs/uploads/")).await
}

async fn removing_a_member_s_role_ends_their_tokens_at_once(backend: Backend) {
    let (reg, http, dana) = acme_with_dana(backend, "viewer").await;
    let (token, scope) = http.token(&dana, &["repository:team/app:pull"]).await;
    assert_eq!(scope, "repository:team/app:pull");
    let bearer = Cred::Bearer(token);
    for _ in 0..3 {
        http.get(&bearer, TAGS).await.expect(200);
    }
    // A refresh token holds no grants: it outlives the change.
    let refresh = http
        .oauth(&[
            ("grant_type", "password"),
            ("username", "dana"),
            ("password", "dana-password"),
            ("access_type", "offline"),
        ])
        .await
        .expect(200)
        .json()["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();

    http.api(&Cred::admin(), Method::DELETE, "/api/v1/tenants/acme/members?kind=user&name=dana", Value::Null)
        .await
        .expect(204);

    assert_invalid_token(&reg, &http.get(&bearer, TAGS).await, "issued before the role was removed");
    let reply = http.get(&dana, TAGS).await;
    assert_eq!(reply.status_and_code(), (403, Some("DENIED".into())), "Basic: {}", reply.text());
    let (_, scope) = http.token(&dana, &["repository:team/app:pull"]).await;
    assert_eq!(scope, "", "a new token grants nothing");
    // The refresh token holds no grants and lives on; what it gets is what dana holds now.
    let reply = http
        .oauth(&[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("scope", "repository:team/app:pull")])
        .await;
    assert_eq!(reply.expect(200).json()["scope"], "", "refreshed: nothing granted");

    // Given a role again, dana's new tokens work, and widening a role ends nothing.
    grant_role(&http, "acme", "user", "dana", None, "viewer").await;
    let (token, _) = http.token(&dana, &["repository:team/app:pull"]).await;
    let bearer = Cred::Bearer(token);
    http.get(&bearer, TAGS).await.expect(200);
    grant_role(&http, "acme", "user", "dana", None, "developer").await;
    grant_role(&http, "acme", "user", "dana", Some("other"), "viewer").await;
    http.get(&bearer, TAGS).await.expect(200);
}

async fn lessening_a_role_from_developer_to_viewer_ends_push_tokens_at_once(backend: Backend) {
    let (reg, http, dana) = acme_with_dana(backend, "developer").await;
    let (token, scope) = http.token(&dana, &["repository:team/app:pull,push"]).await;
    assert_eq!(scope, "repository:team/app:pull,push");
    let bearer = Cred::Bearer(token);
    let started = start_upload(&http, &bearer).await.expect(202);
    let location = started.header("location").expect("Location").to_owned();

    grant_role(&http, "acme", "user", "dana", None, "viewer").await;

    let reply = start_upload(&http, &bearer).await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "{}", reply.text());
    assert_eq!(
        reply.header("www-authenticate"),
        Some(challenge(&reg, Some("repository:team/app:pull,push"), Some("invalid_token")).as_str())
    );
    // The upload session opened before the change cannot be finished with it either.
    let reply = http
        .send(
            http.request(&bearer, Method::PATCH, &location)
                .header("content-type", "application/octet-stream")
                .body(b"x".to_vec()),
        )
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_invalid_token(&reg, &http.get(&bearer, TAGS).await, "its pull right went with the token");
    let reply = start_upload(&http, &dana).await;
    assert_eq!(reply.status_and_code(), (403, Some("DENIED".into())), "Basic: {}", reply.text());
    // What dana asks for now is what a viewer gets.
    let (token, scope) = http.token(&dana, &["repository:team/app:pull,push"]).await;
    assert_eq!(scope, "repository:team/app:pull");
    http.get(&Cred::Bearer(token), TAGS).await.expect(200);
}

async fn removing_a_robot_s_namespace_scope_ends_its_tokens_at_once(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "team", false).await;
    create_namespace(&http, "acme", "other", false).await;
    push_image(&http, &Cred::admin(), "team/app", "robot scope").await;
    push_image(&http, &Cred::admin(), "other/app", "robot scope").await;
    let robot = create_robot(
        &http,
        "acme",
        "ci",
        json!([{ "namespace": "team", "role": "viewer" }, { "namespace": "other", "role": "viewer" }]),
    )
    .await;
    let (token, scope) = http.token(&robot, &["repository:team/app:pull", "repository:other/app:pull"]).await;
    assert_eq!(scope, "repository:team/app:pull repository:other/app:pull");
    let bearer = Cred::Bearer(token);
    http.get(&bearer, TAGS).await.expect(200);
    http.get(&bearer, "/v2/other/app/tags/list").await.expect(200);

    http.api(
        &Cred::admin(),
        Method::DELETE,
        "/api/v1/tenants/acme/members?kind=robot&name=ci&namespace=team",
        Value::Null,
    )
    .await
    .expect(204);

    assert_invalid_token(&reg, &http.get(&bearer, TAGS).await, "the scope removed");
    let reply = http.get(&bearer, "/v2/other/app/tags/list").await;
    assert_eq!(reply.status, 401, "the whole token ends, its other grants too: {}", reply.text());
    let reply = http.get(&robot, TAGS).await;
    assert_eq!(reply.status_and_code(), (403, Some("DENIED".into())), "Basic: {}", reply.text());
    let (token, scope) = http.token(&robot, &["repository:team/app:pull", "repository:other/app:pull"]).await;
    assert_eq!(scope, "repository:other/app:pull", "the scope that is left");
    http.get(&Cred::Bearer(token), "/v2/other/app/tags/list").await.expect(200);
}

/// How each kind of revocation is made, through the management API of `http`.
async fn revoke(http: &Http, how: &str) {
    let admin = Cred::admin();
    let (method, path, body) = match how {
        "password changed" => (Method::PUT, "/api/v1/users/dana/password", json!({ "password": "dana-second" })),
        "role removed" => (Method::DELETE, "/api/v1/tenants/acme/members?kind=user&name=dana", Value::Null),
        "role lessened" => {
            (Method::PUT, "/api/v1/tenants/acme/members", json!({ "kind": "user", "name": "dana", "role": "viewer" }))
        }
        "robot revoked" => (Method::DELETE, "/api/v1/tenants/acme/robots/ci", Value::Null),
        "robot rotated" => (Method::POST, "/api/v1/tenants/acme/robots/ci/rotate", Value::Null),
        "robot scope removed" => {
            (Method::DELETE, "/api/v1/tenants/acme/members?kind=robot&name=ci&namespace=team", Value::Null)
        }
        other => panic!("no such revocation {other}"),
    };
    let reply = http.api(&admin, method, path, body).await;
    assert!((200..300).contains(&reply.status), "{how}: {} {}", reply.status, reply.text());
}

async fn every_revocation_ends_a_token_on_the_next_request_at_another_replica(backend: Backend) {
    for how in
        ["password changed", "role removed", "role lessened", "robot revoked", "robot rotated", "robot scope removed"]
    {
        let (reg, http, dana) = acme_with_dana(backend, "developer").await;
        let replica = Registry::start_sharing(&reg, &[("DAMSELFLY_PUBLIC_URL", reg.url.as_str())]);
        let there = Http::new(&replica);
        let robot = create_robot(&http, "acme", "ci", json!([{ "namespace": "team", "role": "developer" }])).await;
        let holder = if how.starts_with("robot") { robot } else { dana.clone() };
        let (token, scope) = there.token(&holder, &["repository:team/app:pull,push"]).await;
        assert_eq!(scope, "repository:team/app:pull,push", "{how}");
        let bearer = Cred::Bearer(token);
        // The replica has verified the token, and keeps it, before the change.
        for _ in 0..5 {
            there.get(&bearer, TAGS).await.expect(200);
        }
        start_upload(&there, &bearer).await.expect(202);

        revoke(&http, how).await;

        let reply = there.get(&bearer, TAGS).await;
        // The replica answers for the same public URL, so its challenge names the same realm.
        assert_invalid_token(&reg, &reply, &format!("{how} through another replica, the next request here"));
        let reply = start_upload(&there, &bearer).await;
        assert_eq!(reply.status, 401, "{how}: {}", reply.text());
        // And where the change was made.
        assert_invalid_token(&reg, &http.get(&bearer, TAGS).await, &format!("{how}, where it was made"));
        // A new token from the replica, whose caches may still hold the holder as it was, grants what is
        // left and works: it carries the grants version its grants were read under.
        let left = match how {
            "role lessened" => Some("repository:team/app:pull"),
            "role removed" | "robot scope removed" => Some(""),
            _ => None,
        };
        if let Some(left) = left {
            let (token, scope) = there.token(&holder, &["repository:team/app:pull,push"]).await;
            assert_eq!(scope, left, "{how}: a new token grants what is left");
            if !left.is_empty() {
                there.get(&Cred::Bearer(token), TAGS).await.expect(200);
            }
        }
        drop(replica);
    }
}
