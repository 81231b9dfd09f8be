//! Credentials that must not work on a real `damselfly-registry`: forged,
//! tampered, expired and foreign tokens, keys rotated away, revoked robots,
//! changed passwords, and brute force, on both metadata backends.
//!
//! Tenants, namespaces, users, roles and robots are made through the
//! management API (`/api/v1/…`) as the system administrator `admin`; the
//! HTTP client and those calls are `damselfly_tests::http`'s.
//!
//! Each scenario is an `async fn(Backend)`; `on_both_backends!` turns it into
//! `<scenario>::sqlite` and `<scenario>::postgres`.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use damselfly_tests::http::{
    challenge, create_namespace, create_robot, create_tenant, create_user, grant_role, management_api_is_up, Cred,
    Http, Reply, SERVICE,
};
use damselfly_tests::image::push_image;
use damselfly_tests::jwt::{assemble, jwt, signature_of, unix_now};
use damselfly_tests::{on_both_backends, run, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(
    forged_and_tampered_tokens_are_refused_as_invalid,
    expired_tokens_are_refused_once_past_the_leeway,
    tokens_for_another_service_or_issuer_are_refused_though_the_keys_are_shared,
    a_rotated_signing_key_is_published_and_used_by_every_replica,
    a_revoked_or_expired_robot_s_tokens_and_secrets_stop_working,
    a_password_change_ends_every_token_issued_before_it,
    after_ten_failed_logins_even_the_right_password_is_throttled,
);

/// `GET /v2/team/app/tags/list` with a bearer token must be a 401 carrying `error="invalid_token"`.
async fn assert_invalid_token(http: &Http, reg: &Registry, token: &str, what: &str) {
    let reply = http.get(&Cred::Bearer(token.to_owned()), "/v2/team/app/tags/list").await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "{what}: {}", reply.text());
    assert_eq!(
        reply.header("www-authenticate"),
        Some(challenge(reg, Some("repository:team/app:pull"), Some("invalid_token")).as_str()),
        "{what}"
    );
}

/// A new P-256 key pair: its PKCS#8 DER for signing.
fn another_es256_key() -> Vec<u8> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("generate a P-256 key")
        .as_ref()
        .to_vec()
}

/// The PEM (SubjectPublicKeyInfo) of a P-256 public key given as JWK `x` and `y`.
fn public_key_pem(point: &[u8]) -> String {
    const P256_SPKI_PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
    let mut der: Vec<u8> = (0..P256_SPKI_PREFIX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&P256_SPKI_PREFIX[i..i + 2], 16).expect("hex"))
        .collect();
    der.extend_from_slice(point);
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
}

async fn forged_and_tampered_tokens_are_refused_as_invalid(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    push_image(&http, &Cred::admin(), "team/app", "forged").await;
    let (genuine, _) = http.token(&Cred::admin(), &["repository:team/app:pull"]).await;
    let (header, claims) = jwt(&genuine);
    let kid = header["kid"].as_str().expect("kid").to_owned();
    assert_eq!(
        http.get(&Cred::Bearer(genuine.clone()), "/v2/team/app/tags/list").await.expect(200).json()["tags"],
        json!(["v1"])
    );

    // The same claims, signed by a key that is not the registry's: under its kid, and under another.
    let foreign = EncodingKey::from_ec_der(&another_es256_key());
    for (label, kid) in [("the registry's kid", kid.clone()), ("another kid", "0123456789abcdef".to_owned())] {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid);
        h.typ = Some("JWT".into());
        let forged = jsonwebtoken::encode(&h, &claims, &foreign).expect("sign");
        assert_invalid_token(&http, &reg, &forged, &format!("signed by another ES256 key with {label}")).await;
    }

    // A genuine anonymous token whose payload is edited: the signature is kept.
    let (anonymous, scope) = http.token(&Cred::Anonymous, &["repository:team/app:pull"]).await;
    assert_eq!(scope, "", "team is private: nothing granted to anonymous");
    let (anon_header, mut anon_claims) = jwt(&anonymous);
    anon_claims["access"] = json!([{ "type": "repository", "name": "team/app", "actions": ["pull"] }]);
    let tampered = assemble(&anon_header, &anon_claims, signature_of(&anonymous));
    assert_invalid_token(&http, &reg, &tampered, "access claim widened, signature kept").await;
    anon_claims["sub"] = json!("admin");
    let tampered = assemble(&anon_header, &anon_claims, signature_of(&anonymous));
    assert_invalid_token(&http, &reg, &tampered, "subject changed to admin, signature kept").await;
    let (mut admin_header, _) = jwt(&genuine);
    admin_header["kid"] = json!("0000000000000000");
    let tampered = assemble(&admin_header, &claims, signature_of(&genuine));
    assert_invalid_token(&http, &reg, &tampered, "kid changed, signature kept").await;

    // No signature at all.
    for alg in ["none", "None", "NONE"] {
        let unsigned = assemble(&json!({ "alg": alg, "typ": "JWT", "kid": kid }), &claims, "");
        assert_invalid_token(&http, &reg, &unsigned, &format!("alg {alg}")).await;
    }
    let stripped = genuine.rsplit_once('.').expect("three parts").0.to_owned() + ".";
    assert_invalid_token(&http, &reg, &stripped, "the genuine header and claims without the signature").await;

    // HS256 with the public key as the HMAC secret, in every form it is published or derived in.
    let jwks = http.get(&Cred::Anonymous, "/auth/jwks.json").await.expect(200).json();
    let jwk = jwks["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == kid.as_str()).expect("jwk").clone();
    let (x, y) = (jwk["x"].as_str().expect("x"), jwk["y"].as_str().expect("y"));
    let mut point = vec![4u8];
    point.extend(URL_SAFE_NO_PAD.decode(x).expect("x"));
    point.extend(URL_SAFE_NO_PAD.decode(y).expect("y"));
    let pem = public_key_pem(&point);
    let secrets: [(&str, Vec<u8>); 5] = [
        ("the public key PEM", pem.clone().into_bytes()),
        ("the public key PEM without its newline", pem.trim_end().as_bytes().to_vec()),
        ("the uncompressed point", point.clone()),
        ("the JWK as JSON", jwk.to_string().into_bytes()),
        ("the JWK x", x.as_bytes().to_vec()),
    ];
    for (label, secret) in secrets {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.clone());
        h.typ = Some("JWT".into());
        let confused = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(&secret)).expect("sign");
        assert_invalid_token(&http, &reg, &confused, &format!("HS256 keyed with {label}")).await;
    }

    // Garbage in the header.
    for junk in ["a.b.c", "not-a-jwt", &genuine[..genuine.len() - 2]] {
        assert_invalid_token(&http, &reg, junk, &format!("{junk:?}")).await;
    }
    // The genuine token still works.
    http.get(&Cred::Bearer(genuine), "/v2/team/app/tags/list").await.expect(200);
}

async fn expired_tokens_are_refused_once_past_the_leeway(backend: Backend) {
    let reg = Registry::start_with(backend, &[("DAMSELFLY_TOKEN_TTL_SECS", "1")]);
    let http = Http::new(&reg);
    push_image(&http, &Cred::admin(), "team/app", "expiring").await;
    let body = http.token_reply(&Cred::admin(), &["repository:team/app:pull"]).await.expect(200).json();
    assert_eq!(body["expires_in"], 1);
    let token = body["token"].as_str().expect("token").to_owned();
    let exp = jwt(&token).1["exp"].as_i64().expect("exp");
    http.get(&Cred::Bearer(token.clone()), "/v2/team/app/tags/list").await.expect(200);

    // Valid through the 5 s leeway for clock skew; refused after it.
    while unix_now() <= exp + 6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_invalid_token(&http, &reg, &token, "expired more than 5 s ago").await;
}

async fn tokens_for_another_service_or_issuer_are_refused_though_the_keys_are_shared(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    push_image(&http, &Cred::admin(), "team/app", "audience").await;
    // Replicas on the same database: one for another service at the same
    // public URL, one for the same service at another public URL.
    let other_service = Registry::start_sharing(
        &reg,
        &[("DAMSELFLY_TOKEN_SERVICE", "other"), ("DAMSELFLY_PUBLIC_URL", reg.url.as_str())],
    );
    let other_issuer = Registry::start_sharing(&reg, &[]);
    let replica = Registry::start_sharing(&reg, &[("DAMSELFLY_PUBLIC_URL", reg.url.as_str())]);
    let jwks = http.get(&Cred::Anonymous, "/auth/jwks.json").await.expect(200).json();
    for r in [&other_service, &other_issuer, &replica] {
        assert_eq!(
            Http::new(r).get(&Cred::Anonymous, "/auth/jwks.json").await.expect(200).json(),
            jwks,
            "keys are shared"
        );
    }

    // A true replica's tokens work here: same keys, service and issuer.
    let (token, _) = Http::new(&replica).token(&Cred::admin(), &["repository:team/app:pull"]).await;
    http.get(&Cred::Bearer(token), "/v2/team/app/tags/list").await.expect(200);

    let query = [("service", "other"), ("scope", "repository:team/app:pull")];
    let other = Http::new(&other_service);
    let body =
        other.send(other.request(&Cred::admin(), Method::GET, "/auth/token").query(&query)).await.expect(200).json();
    let token = body["token"].as_str().expect("token").to_owned();
    let (header, claims) = jwt(&token);
    assert_eq!((&claims["aud"], &claims["iss"]), (&json!("other"), &json!(reg.url)));
    assert!(
        jwks["keys"].as_array().expect("keys").iter().any(|k| k["kid"] == header["kid"]),
        "signed with a shared key"
    );
    assert_eq!(
        other.get(&Cred::Bearer(token.clone()), "/v2/team/app/tags/list").await.expect(200).json()["tags"],
        json!(["v1"]),
        "valid where it was meant for"
    );
    assert_invalid_token(&http, &reg, &token, "audience other").await;
    let reply = http.send(http.request(&Cred::admin(), Method::GET, "/auth/token").query(&query)).await;
    assert_eq!(reply.status_and_code(), (400, Some("DENIED".into())), "this registry issues nothing for service other");

    let (token, _) = Http::new(&other_issuer).token(&Cred::admin(), &["repository:team/app:pull"]).await;
    assert_eq!(jwt(&token).1["iss"], json!(other_issuer.url));
    assert_invalid_token(&http, &reg, &token, "issuer another URL").await;

    drop((other_service, other_issuer, replica));
}

/// How long a replica may take to notice a change another one made in the
/// database: seconds, like the registry's other caches (which live 2 s).
const REPLICA_CONVERGENCE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread")]
async fn a_signing_key_file_signs_for_every_replica_until_the_api_rotates_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("key.pem");
    let public = dir.path().join("public.pem");
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
        .arg(&key));
    run(Command::new("openssl").arg("pkey").arg("-in").arg(&key).arg("-pubout").arg("-out").arg(&public));
    let key_file = key.display().to_string();
    let env = [("DAMSELFLY_SIGNING_KEY_FILE", key_file.as_str())];
    let reg = Registry::start_with(Backend::Sqlite, &env);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;

    // Tokens verify with the file's public key, under the id every replica derives from it.
    let scope = ["repository:team/app:pull"];
    let (token, _) = http.token(&Cred::admin(), &scope).await;
    let kid = jwt(&token).0["kid"].as_str().expect("kid").to_owned();
    let verifying = DecodingKey::from_ec_pem(&fs::read(&public).expect("public key")).expect("PEM public key");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[SERVICE]);
    jsonwebtoken::decode::<Value>(&token, &verifying, &validation).expect("signed with the file's key");
    let replica = Registry::start_sharing(&reg, &[("DAMSELFLY_PUBLIC_URL", reg.url.as_str()), env[0]]);
    let (from_replica, _) = Http::new(&replica).token(&Cred::admin(), &scope).await;
    assert_eq!(jwt(&from_replica).0["kid"], kid.as_str(), "a replica with the same file signs with the same key");

    // Rotated through the API, the file's key is not brought back by a replica starting with it.
    let rotated = http.admin_api(Method::POST, "/api/v1/signing-keys/rotate", Value::Null).await["kid"]
        .as_str()
        .expect("kid")
        .to_owned();
    let late = Registry::start_sharing(&reg, &[("DAMSELFLY_PUBLIC_URL", reg.url.as_str()), env[0]]);
    let (from_late, _) = Http::new(&late).token(&Cred::admin(), &scope).await;
    assert_eq!(jwt(&from_late).0["kid"], rotated.as_str());

    // A file that is not a P-256 PKCS#8 key stops the start with what to do.
    fs::write(&key, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n").expect("write");
    let out = Command::new("timeout")
        .arg("30")
        .arg(damselfly_tests::binary("damselfly-registry"))
        .env_clear()
        .env("DAMSELFLY_LISTEN", format!("127.0.0.1:{}", damselfly_tests::free_port()))
        .env("DAMSELFLY_DATA_DIR", dir.path().join("data"))
        .env("DAMSELFLY_SIGNING_KEY_FILE", &key)
        .output()
        .expect("run the registry");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("signing key file") && err.contains("openssl genpkey"), "{err}");
}

async fn a_rotated_signing_key_is_published_and_used_by_every_replica(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    push_image(&http, &Cred::admin(), "team/app", "rotation").await;
    let replica = Registry::start_sharing(&reg, &[("DAMSELFLY_PUBLIC_URL", reg.url.as_str())]);
    let at_replica = Http::new(&replica);
    let scope = ["repository:team/app:pull"];
    let (before, _) = http.token(&Cred::admin(), &scope).await;
    let old_kid = jwt(&before).0["kid"].as_str().expect("kid").to_owned();

    let new_kid = http.admin_api(Method::POST, "/api/v1/signing-keys/rotate", Value::Null).await["kid"]
        .as_str()
        .expect("kid")
        .to_owned();

    assert_ne!(new_kid, old_kid);
    let jwks = http.get(&Cred::Anonymous, "/auth/jwks.json").await.expect(200).json();
    let mut kids: Vec<&str> = jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
    kids.sort();
    let mut expected = [old_kid.as_str(), new_kid.as_str()];
    expected.sort();
    assert_eq!(kids, expected, "the JWKS publishes the new key and the old one, which still verifies");
    let (after, _) = http.token(&Cred::admin(), &scope).await;
    assert_eq!(jwt(&after).0["kid"], new_kid.as_str(), "new tokens are signed with the new key");
    http.get(&Cred::Bearer(before.clone()), "/v2/team/app/tags/list").await.expect(200);

    // The replica publishes the same keys and signs with the new one, without
    // first being shown a token signed with it.
    let deadline = Instant::now() + REPLICA_CONVERGENCE;
    let (replica_jwks, replica_kid) = loop {
        let replica_jwks = at_replica.get(&Cred::Anonymous, "/auth/jwks.json").await.expect(200).json();
        let (token, _) = at_replica.token(&Cred::admin(), &scope).await;
        let replica_kid = jwt(&token).0["kid"].as_str().expect("kid").to_owned();
        if (replica_jwks == jwks && replica_kid == new_kid) || Instant::now() > deadline {
            break (replica_jwks, replica_kid);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        (replica_kid, replica_jwks),
        (new_kid, jwks),
        "the key the replica signs with, and its JWKS, {REPLICA_CONVERGENCE:?} after the rotation"
    );
    for (token, what) in [(&before, "signed with the old key"), (&after, "signed with the new key")] {
        for (name, h) in [("replica", &at_replica), ("rotating registry", &http)] {
            let reply = h.get(&Cred::Bearer(token.clone()), "/v2/team/app/tags/list").await;
            assert_eq!(reply.status, 200, "a token {what} at the {name}: {}", reply.text());
        }
    }
    drop(replica);
}

async fn a_revoked_or_expired_robot_s_tokens_and_secrets_stop_working(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "team", false).await;
    push_image(&http, &Cred::admin(), "team/app", "robot").await;
    let robot = create_robot(&http, "acme", "ci", json!([{ "namespace": "team", "role": "developer" }])).await;
    let (token, scope) = http.token(&robot, &["repository:team/app:pull"]).await;
    assert_eq!(scope, "repository:team/app:pull");
    http.get(&Cred::Bearer(token.clone()), "/v2/team/app/tags/list").await.expect(200);
    http.get(&robot, "/v2/team/app/tags/list").await.expect(200);
    let Cred::Basic(login, secret) = &robot else { unreachable!() };
    let offline = [("grant_type", "password"), ("username", login), ("password", secret), ("access_type", "offline")];
    let refresh = http.oauth(&offline).await.expect(200).json()["refresh_token"].as_str().expect("refresh").to_owned();

    http.admin_api(Method::DELETE, "/api/v1/tenants/acme/robots/ci", Value::Null).await;

    assert_invalid_token(&http, &reg, &token, "issued to a robot since revoked").await;
    let reply = http.get(&robot, "/v2/team/app/tags/list").await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "its secret by Basic auth");
    let reply = http.token_reply(&robot, &["repository:team/app:pull"]).await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "its secret at the token endpoint");
    let reply = http.oauth(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!((reply.status, reply.json()["error"].clone()), (400, json!("invalid_grant")), "its refresh token");

    // A robot made to expire is refused once it has, as if revoked.
    let body =
        json!({ "name": "short", "scopes": [{ "namespace": "team", "role": "developer" }], "expires_in_secs": 2 });
    let created = http.api(&Cred::admin(), Method::POST, "/api/v1/tenants/acme/robots", body).await.expect(201).json();
    let expiring = Cred::basic(created["login"].as_str().expect("login"), created["token"].as_str().expect("token"));
    let expires_at = created["expires_at"].as_i64().expect("expires_at");
    let (token, _) = http.token(&expiring, &["repository:team/app:pull"]).await;
    http.get(&Cred::Bearer(token.clone()), "/v2/team/app/tags/list").await.expect(200);
    // Past the expiry, and past the two seconds the registry caches who an account is.
    while unix_now() <= expires_at + 2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_invalid_token(&http, &reg, &token, "issued to a robot since expired").await;
    let reply = http.get(&expiring, "/v2/team/app/tags/list").await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "an expired robot's secret");
}

async fn a_password_change_ends_every_token_issued_before_it(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "team", false).await;
    push_image(&http, &Cred::admin(), "team/app", "password").await;
    create_user(&http, "pat", "first-password").await;
    grant_role(&http, "acme", "user", "pat", None, "developer").await;
    let old = Cred::basic("pat", "first-password");
    let (token, _) = http.token(&old, &["repository:team/app:pull"]).await;
    let refresh = http
        .oauth(&[
            ("grant_type", "password"),
            ("username", "pat"),
            ("password", "first-password"),
            ("access_type", "offline"),
        ])
        .await
        .expect(200)
        .json()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    http.get(&Cred::Bearer(token.clone()), "/v2/team/app/tags/list").await.expect(200);

    http.admin_api(Method::PUT, "/api/v1/users/pat/password", json!({ "password": "second-password" })).await;

    assert_invalid_token(&http, &reg, &token, "issued before the password change").await;
    let reply = http.oauth(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!((reply.status, reply.json()["error"].clone()), (400, json!("invalid_grant")), "the refresh token too");
    let reply = http.token_reply(&old, &["repository:team/app:pull"]).await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "the old password at the token endpoint");
    let reply = http.get(&old, "/v2/team/app/tags/list").await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "the old password by Basic auth");
    let new = Cred::basic("pat", "second-password");
    let (token, _) = http.token(&new, &["repository:team/app:pull"]).await;
    http.get(&Cred::Bearer(token), "/v2/team/app/tags/list").await.expect(200);
    http.get(&new, "/v2/team/app/tags/list").await.expect(200);
}

// ---------------------------------------------------------------------------
// Brute force
// ---------------------------------------------------------------------------

async fn after_ten_failed_logins_even_the_right_password_is_throttled(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    let wrong = Cred::basic(ADMIN_USER, "not-the-password");
    let scope = ["repository:team/app:pull"];
    http.token(&Cred::admin(), &scope).await;

    for attempt in 1..=10 {
        let reply = http.token_reply(&wrong, &scope).await;
        assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "wrong password #{attempt}");
    }

    let throttled = |reply: &Reply, what: &str| {
        assert_eq!(reply.status_and_code(), (429, Some("TOOMANYREQUESTS".into())), "{what}: {}", reply.text());
        let wait: u64 = reply
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{what}: Retry-After in seconds"));
        assert!((1..=60).contains(&wait), "{what}: Retry-After {wait}");
    };
    throttled(&http.token_reply(&Cred::admin(), &scope).await, "the right password at GET /auth/token");
    throttled(&http.token_reply(&wrong, &scope).await, "another wrong password");
    throttled(
        &http.oauth(&[("grant_type", "password"), ("username", ADMIN_USER), ("password", ADMIN_PASSWORD)]).await,
        "the right password in the OAuth2 password grant",
    );
    throttled(&http.get(&Cred::admin(), "/v2/").await, "the right password as Basic auth on /v2/");
    throttled(
        &http.api(&Cred::admin(), Method::GET, "/api/v1/tenants", Value::Null).await,
        "the right password as Basic auth on the management API",
    );
    // Counted per address too: another name from the same address waits as well.
    throttled(
        &http.token_reply(&Cred::basic("someone-else", "whatever"), &scope).await,
        "another user from this address",
    );

    // Guessing through Basic auth on /v2/ is counted the same way.
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    for attempt in 1..=10 {
        let reply = http.get(&wrong, "/v2/").await;
        assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "wrong password #{attempt} on /v2/");
    }
    throttled(&http.get(&Cred::admin(), "/v2/").await, "the right password on /v2/ after ten wrong ones there");
    throttled(&http.token_reply(&Cred::admin(), &scope).await, "the right password at the token endpoint after them");
}
