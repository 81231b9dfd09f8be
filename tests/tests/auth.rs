//! Who may do what to a real `damselfly-registry`: the token protocol
//! (`/auth/token`, `/auth/jwks.json`), tokens that must not work, brute-force
//! protection, tenants that cannot see or touch each other, the OCI clients
//! logging in as robot accounts, and the audit log of it all, on both
//! metadata backends.
//!
//! Tenants, namespaces, users, roles and robots are made through the
//! management API (`/api/v1/…`) as the system administrator `admin`.
//!
//! Each scenario is an `async fn(Backend)`; `on_both_backends!` turns it into
//! `<scenario>::sqlite` and `<scenario>::postgres`.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use damselfly_tests::containerd::Containerd;
use damselfly_tests::workstation::Workstation;
use damselfly_tests::{on_both_backends, run, sha256_digest, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

on_both_backends!(
    // The token protocol.
    a_token_is_an_es256_jwt_with_the_standard_claims_that_verifies_against_the_jwks,
    a_token_grants_only_the_asked_actions_the_principal_holds,
    anonymous_tokens_grant_pull_on_public_namespaces_and_nothing_else,
    oauth2_password_and_refresh_token_grants_issue_tokens,
    // Tokens that must not work.
    forged_and_tampered_tokens_are_refused_as_invalid,
    expired_tokens_are_refused_once_past_the_leeway,
    tokens_for_another_service_or_issuer_are_refused_though_the_keys_are_shared,
    a_rotated_signing_key_is_published_and_used_by_every_replica,
    a_revoked_or_expired_robot_s_tokens_and_secrets_stop_working,
    a_password_change_ends_every_token_issued_before_it,
    // Brute force.
    after_ten_failed_logins_even_the_right_password_is_throttled,
    // Tenants.
    nobody_can_read_write_or_delete_in_another_tenant_s_repositories,
    a_cross_tenant_mount_falls_back_to_an_upload_and_links_nothing,
    knowing_another_tenant_s_digests_and_upload_ids_gives_nothing,
    the_catalog_lists_only_own_and_public_repositories,
    the_management_api_refuses_reads_and_writes_on_another_tenant,
    a_public_namespace_is_pulled_by_anyone_and_pushed_by_members_only,
    // Clients.
    podman_skopeo_and_ctr_push_and_pull_as_a_robot_account,
    // The record.
    the_audit_log_records_logins_tokens_pushes_deletes_and_role_changes,
);

// ---------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------

const SERVICE: &str = "damselfly";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const SIGNATURE: &str = "application/vnd.example.signature.v1+json";

/// How a request authenticates.
#[derive(Clone, Debug)]
enum Cred {
    /// No `Authorization` header.
    Anonymous,
    /// `Authorization: Basic …`, straight to the endpoint.
    Basic(String, String),
    /// `Authorization: Bearer <token from /auth/token>`.
    Bearer(String),
}

impl Cred {
    fn admin() -> Cred {
        Cred::basic(ADMIN_USER, ADMIN_PASSWORD)
    }

    fn basic(user: &str, secret: &str) -> Cred {
        Cred::Basic(user.to_owned(), secret.to_owned())
    }

    fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        match self {
            Cred::Anonymous => request,
            Cred::Basic(user, secret) => request.basic_auth(user, Some(secret)),
            Cred::Bearer(token) => request.bearer_auth(token),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Cred::Anonymous => "anonymous",
            Cred::Basic(..) => "basic",
            Cred::Bearer(_) => "bearer",
        }
    }
}

/// A whole response, read.
struct Reply {
    method: Method,
    url: String,
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} {}: body is not JSON ({e}): {}", self.method, self.url, self.text()))
    }

    /// `errors[0].code` of an OCI or management API error body.
    fn code(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body).ok()?["errors"][0]["code"].as_str().map(str::to_owned)
    }

    /// Fails with the request and the body unless the status is `status`.
    fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status, status, "{} {}: {}", self.method, self.url, self.text());
        self
    }

    /// `(status, errors[0].code)`, for exact comparisons.
    fn status_and_code(&self) -> (u16, Option<String>) {
        (self.status, self.code())
    }
}

/// An HTTP client aimed at one registry.
#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    url: String,
}

impl Http {
    fn new(reg: &Registry) -> Http {
        // A fresh connection per request, as in distribution_api.rs: the
        // registry closes connections after refused writes.
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("HTTP client");
        Http { client, url: reg.url.clone() }
    }

    fn request(&self, cred: &Cred, method: Method, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.url) };
        cred.apply(self.client.request(method, url))
    }

    async fn send(&self, request: RequestBuilder) -> Reply {
        let request = request.build().expect("a valid request");
        let (method, url) = (request.method().clone(), request.url().to_string());
        let resp = self.client.execute(request).await.unwrap_or_else(|e| panic!("{method} {url}: no answer: {e}"));
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Reply { method, url, status, headers, body }
    }

    async fn get(&self, cred: &Cred, path: &str) -> Reply {
        self.send(self.request(cred, Method::GET, path)).await
    }

    /// A management API call with a JSON body (or none for `Value::Null`).
    async fn api(&self, cred: &Cred, method: Method, path: &str, body: Value) -> Reply {
        let mut request = self.request(cred, method, path);
        if !body.is_null() {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// A management API call as the system administrator that must succeed.
    async fn admin_api(&self, method: Method, path: &str, body: Value) -> Value {
        let reply = self.api(&Cred::admin(), method, path, body).await;
        assert!(
            (200..300).contains(&reply.status),
            "{} {}: {} {}",
            reply.method,
            reply.url,
            reply.status,
            reply.text()
        );
        if reply.body.is_empty() {
            Value::Null
        } else {
            reply.json()
        }
    }

    /// `GET /auth/token?service=damselfly&scope=…` (one `scope` parameter per scope).
    async fn token_reply(&self, cred: &Cred, scopes: &[&str]) -> Reply {
        let mut query: Vec<(&str, &str)> = vec![("service", SERVICE)];
        query.extend(scopes.iter().map(|s| ("scope", *s)));
        self.send(self.request(cred, Method::GET, "/auth/token").query(&query)).await
    }

    /// A token for `scopes`, which the endpoint must issue; returns it and the granted `scope`.
    async fn token(&self, cred: &Cred, scopes: &[&str]) -> (String, String) {
        let body = self.token_reply(cred, scopes).await.expect(200).json();
        let token = body["token"].as_str().expect("token").to_owned();
        (token, body["scope"].as_str().expect("scope").to_owned())
    }

    /// `POST /auth/token` with a form.
    async fn oauth(&self, form: &[(&str, &str)]) -> Reply {
        self.send(self.request(&Cred::Anonymous, Method::POST, "/auth/token").form(form)).await
    }
}

/// The `WWW-Authenticate` challenge the registry must send.
fn challenge(reg: &Registry, scope: Option<&str>, error: Option<&str>) -> String {
    let mut v = format!("Bearer realm=\"{}/auth/token\",service=\"{SERVICE}\"", reg.url);
    if let Some(s) = scope {
        v.push_str(&format!(",scope=\"{s}\""));
    }
    if let Some(e) = error {
        v.push_str(&format!(",error=\"{e}\""));
    }
    v
}

/// The header and the claims of a JWT, decoded without verification.
fn jwt(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS in compact form: {token}");
    let decode =
        |p: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON") };
    (decode(parts[0]), decode(parts[1]))
}

/// A JWT put together from a header, claims and a signature part as given.
fn assemble(header: &Value, claims: &Value, signature: &str) -> String {
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{signature}", encode(header), encode(claims))
}

/// The signature part of a JWT.
fn signature_of(token: &str) -> &str {
    token.rsplit('.').next().expect("signature")
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// Some bytes and their digest.
#[derive(Clone)]
struct Blob {
    bytes: Vec<u8>,
    digest: String,
}

impl Blob {
    fn new(bytes: impl Into<Vec<u8>>) -> Blob {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        Blob { bytes, digest }
    }

    fn descriptor(&self, media_type: &str) -> Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// An image pushed to a repository under the tag `v1`, with one referrer (a signature).
#[derive(Clone)]
struct Image {
    repo: String,
    config: Blob,
    layer: Blob,
    manifest: String,
    digest: String,
    referrer: String,
}

impl Image {
    fn manifest_path(&self, reference: &str) -> String {
        format!("/v2/{}/manifests/{reference}", self.repo)
    }

    fn blob_path(&self, digest: &str) -> String {
        format!("/v2/{}/blobs/{digest}", self.repo)
    }
}

async fn push_blob(http: &Http, cred: &Cred, repo: &str, blob: &Blob) {
    let path = format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest);
    http.send(http.request(cred, Method::POST, &path).body(blob.bytes.clone())).await.expect(201);
}

async fn push_manifest(http: &Http, cred: &Cred, repo: &str, reference: &str, media_type: &str, body: &str) -> Reply {
    let path = format!("/v2/{repo}/manifests/{reference}");
    http.send(http.request(cred, Method::PUT, &path).header("content-type", media_type).body(body.to_owned())).await
}

/// Pushes an image whose bytes depend on `seed`, and a signature referring to it.
async fn push_image(http: &Http, cred: &Cred, repo: &str, seed: &str) -> Image {
    let config = Blob::new(format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}"));
    let layer = Blob::new(format!("layer of {seed} ").repeat(100));
    push_blob(http, cred, repo, &config).await;
    push_blob(http, cred, repo, &layer).await;
    let manifest = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": config.descriptor(OCI_CONFIG), "layers": [layer.descriptor(OCI_LAYER)] })
    .to_string();
    let digest = sha256_digest(manifest.as_bytes());
    push_manifest(http, cred, repo, "v1", OCI_MANIFEST, &manifest).await.expect(201);
    let empty = Blob::new(b"{}".to_vec());
    let signature = Blob::new(format!("signature of {seed}"));
    push_blob(http, cred, repo, &empty).await;
    push_blob(http, cred, repo, &signature).await;
    let artifact = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIGNATURE,
        "config": empty.descriptor(OCI_EMPTY), "layers": [signature.descriptor("application/octet-stream")],
        "subject": { "mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len() } })
    .to_string();
    let referrer = sha256_digest(artifact.as_bytes());
    push_manifest(http, cred, repo, &referrer, OCI_MANIFEST, &artifact).await.expect(201);
    Image { repo: repo.to_owned(), config, layer, manifest, digest, referrer }
}

// --- The management API, as the system administrator -----------------------

async fn create_tenant(http: &Http, name: &str) {
    http.admin_api(Method::POST, "/api/v1/tenants", json!({ "name": name })).await;
}

async fn create_namespace(http: &Http, tenant: &str, name: &str, public: bool) {
    let path = format!("/api/v1/tenants/{tenant}/namespaces");
    http.admin_api(Method::POST, &path, json!({ "name": name, "public": public })).await;
}

async fn create_user(http: &Http, username: &str, password: &str) {
    http.admin_api(Method::POST, "/api/v1/users", json!({ "username": username, "password": password })).await;
}

async fn grant_role(http: &Http, tenant: &str, kind: &str, name: &str, namespace: Option<&str>, role: &str) {
    let path = format!("/api/v1/tenants/{tenant}/members");
    let mut body = json!({ "kind": kind, "name": name, "role": role });
    if let Some(ns) = namespace {
        body["namespace"] = json!(ns);
    }
    http.admin_api(Method::PUT, &path, body).await;
}

/// Creates a robot; returns its credentials (`robot$<tenant>+<name>` and its token).
async fn create_robot(http: &Http, tenant: &str, name: &str, scopes: Value) -> Cred {
    let path = format!("/api/v1/tenants/{tenant}/robots");
    let reply = http.api(&Cred::admin(), Method::POST, &path, json!({ "name": name, "scopes": scopes })).await;
    let body = reply.expect(201).json();
    assert_eq!(body["login"], format!("robot${tenant}+{name}"), "{body}");
    Cred::basic(body["login"].as_str().expect("login"), body["token"].as_str().expect("token"))
}

async fn audit(http: &Http, query: &[(&str, &str)]) -> Vec<Value> {
    let reply = http.send(http.request(&Cred::admin(), Method::GET, "/api/v1/audit").query(query)).await;
    reply.expect(200).json()["events"].as_array().expect("events").clone()
}

/// Checks the management API answers, so that a scenario needing it fails on that first.
async fn management_api_is_up(http: &Http) {
    let reply = http.api(&Cred::admin(), Method::GET, "/api/v1/tenants", Value::Null).await;
    assert_eq!(reply.status, 200, "the management API is not there: {}", reply.text());
}

// ---------------------------------------------------------------------------
// The token protocol
// ---------------------------------------------------------------------------

async fn a_token_is_an_es256_jwt_with_the_standard_claims_that_verifies_against_the_jwks(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    let before = unix_now();

    let reply = http.token_reply(&Cred::admin(), &["repository:team/app:pull,push"]).await.expect(200);

    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    let token = body["token"].as_str().expect("token").to_owned();
    assert_eq!(body["access_token"], token.as_str(), "access_token is the same token, for OAuth2 clients");
    assert_eq!((&body["expires_in"], &body["scope"]), (&json!(300), &json!("repository:team/app:pull,push")));
    let mut fields: Vec<&str> = body.as_object().expect("object").keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["access_token", "expires_in", "scope", "token"], "no refresh token unless asked for");
    let (header, claims) = jwt(&token);
    assert_eq!((&header["alg"], &header["typ"]), (&json!("ES256"), &json!("JWT")));
    let kid = header["kid"].as_str().expect("a kid in the header").to_owned();
    assert_eq!(
        (&claims["iss"], &claims["sub"], &claims["aud"]),
        (&json!(reg.url), &json!("admin"), &json!(SERVICE)),
        "{claims}"
    );
    let iat = claims["iat"].as_i64().expect("iat");
    assert!((before..=unix_now()).contains(&iat), "iat {iat} is now");
    assert_eq!((claims["nbf"].as_i64(), claims["exp"].as_i64()), (Some(iat), Some(iat + 300)));
    assert_eq!(claims["jti"].as_str().map(str::len), Some(36), "a UUID jti: {claims}");
    assert_eq!(claims["access"], json!([{ "type": "repository", "name": "team/app", "actions": ["pull", "push"] }]));
    let (_, second) = jwt(&http.token(&Cred::admin(), &["repository:team/app:pull"]).await.0);
    assert_ne!(second["jti"], claims["jti"], "every token has its own jti");

    // Verifiable offline with nothing but the JWKS.
    let jwks = http.get(&Cred::Anonymous, "/auth/jwks.json").await.expect(200).json();
    let keys = jwks["keys"].as_array().expect("keys");
    let jwk = keys.iter().find(|k| k["kid"] == kid.as_str()).unwrap_or_else(|| panic!("kid {kid} in {jwks}"));
    assert_eq!(
        [&jwk["kty"], &jwk["crv"], &jwk["alg"], &jwk["use"]],
        [&json!("EC"), &json!("P-256"), &json!("ES256"), &json!("sig")]
    );
    let key = DecodingKey::from_ec_components(jwk["x"].as_str().expect("x"), jwk["y"].as_str().expect("y"))
        .expect("a P-256 public key");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[SERVICE]);
    validation.set_issuer(&[reg.url.as_str()]);
    let verified = jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("the token verifies with the JWKS");
    assert_eq!(verified.claims, claims);
    assert_eq!(http.get(&Cred::Anonymous, "/.well-known/jwks.json").await.expect(200).json(), jwks);

    // And the registry takes it: the push creates the namespace, the pull reads it back.
    let blob = Blob::new(b"pushed with a token".to_vec());
    push_blob(&http, &Cred::Bearer(token.clone()), "team/app", &blob).await;
    let pulled = http.get(&Cred::Bearer(token), &format!("/v2/team/app/blobs/{}", blob.digest)).await.expect(200);
    assert_eq!(pulled.body, blob.bytes);
    let namespace = http.admin_api(Method::GET, "/api/v1/namespaces/team", Value::Null).await;
    assert_eq!((&namespace["tenant"], &namespace["public"]), (&json!("default"), &json!(false)), "{namespace}");
}

async fn a_token_grants_only_the_asked_actions_the_principal_holds(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "shop", false).await;
    create_namespace(&http, "acme", "lab", false).await;
    create_user(&http, "vic", "vic-password-1").await;
    grant_role(&http, "acme", "user", "vic", Some("shop"), "viewer").await;
    create_user(&http, "dev", "dev-password-1").await;
    grant_role(&http, "acme", "user", "dev", None, "developer").await;
    let shop = push_image(&http, &Cred::admin(), "shop/app", "shop").await;
    push_image(&http, &Cred::admin(), "lab/app", "lab").await;
    let vic = Cred::basic("vic", "vic-password-1");
    let dev = Cred::basic("dev", "dev-password-1");

    // A viewer asking to push gets pull, and no error.
    let (token, scope) = http.token(&vic, &["repository:shop/app:pull,push"]).await;
    assert_eq!(scope, "repository:shop/app:pull");
    assert_eq!(jwt(&token).1["access"], json!([{ "type": "repository", "name": "shop/app", "actions": ["pull"] }]));
    let viewer = Cred::Bearer(token);
    assert_eq!(http.get(&viewer, &shop.manifest_path("v1")).await.expect(200).text(), shop.manifest);
    let refused = http.send(http.request(&viewer, Method::POST, "/v2/shop/app/blobs/uploads/")).await;
    assert_eq!(refused.status_and_code(), (401, Some("UNAUTHORIZED".into())));
    assert_eq!(
        refused.header("www-authenticate"),
        Some(challenge(&reg, Some("repository:shop/app:pull,push"), Some("insufficient_scope")).as_str())
    );
    // Its namespace role reaches no other namespace of the tenant.
    let (_, scope) = http.token(&vic, &["repository:lab/app:pull", "repository:shop/app:pull"]).await;
    assert_eq!(scope, "repository:shop/app:pull");

    // A developer gets pull and push but not delete; `*` is spelled out; a
    // repository that does not exist yet takes an admin to create.
    let (token, scope) = http
        .token(&dev, &["repository:shop/app:pull,push,delete", "repository:lab/app:*", "repository:lab/new:push"])
        .await;
    assert_eq!(scope, "repository:shop/app:pull,push repository:lab/app:pull,push");
    assert_eq!(
        jwt(&token).1["access"],
        json!([
            { "type": "repository", "name": "shop/app", "actions": ["pull", "push"] },
            { "type": "repository", "name": "lab/app", "actions": ["pull", "push"] },
        ])
    );
    let developer = Cred::Bearer(token);
    let refused = http.send(http.request(&developer, Method::DELETE, &shop.manifest_path("v1"))).await;
    assert_eq!(refused.status_and_code(), (401, Some("UNAUTHORIZED".into())));
    assert_eq!(
        refused.header("www-authenticate"),
        Some(challenge(&reg, Some("repository:shop/app:delete"), Some("insufficient_scope")).as_str())
    );
    // The same refusals with Basic credentials are 403 DENIED: the caller is known, the action is not theirs.
    let by_basic = http.send(http.request(&vic, Method::POST, "/v2/shop/app/blobs/uploads/")).await;
    assert_eq!(by_basic.status_and_code(), (403, Some("DENIED".into())));
    let by_basic = http.send(http.request(&dev, Method::DELETE, &shop.manifest_path("v1"))).await;
    assert_eq!(by_basic.status_and_code(), (403, Some("DENIED".into())));
    assert_eq!(http.get(&Cred::admin(), &shop.manifest_path("v1")).await.expect(200).text(), shop.manifest);

    // Scopes that name nothing grantable are left out, not errors.
    let (token, scope) =
        http.token(&dev, &["repository:Not/Valid:pull", "repository:app:pull", "nonsense", "registry:catalog:*"]).await;
    assert_eq!(scope, "registry:catalog:*");
    assert_eq!(jwt(&token).1["access"], json!([{ "type": "registry", "name": "catalog", "actions": ["*"] }]));

    // The service must be this registry's.
    let reply = http
        .send(
            http.request(&dev, Method::GET, "/auth/token")
                .query(&[("service", "elsewhere"), ("scope", "repository:shop/app:pull")]),
        )
        .await;
    assert_eq!(reply.status_and_code(), (400, Some("DENIED".into())));

    // A robot scoped to one namespace gets nothing in the tenant's others.
    let robot = create_robot(&http, "acme", "shop-bot", json!([{ "namespace": "shop", "role": "developer" }])).await;
    let (_, scope) = http.token(&robot, &["repository:shop/app:pull,push", "repository:lab/app:pull"]).await;
    assert_eq!(scope, "repository:shop/app:pull,push");
    let by_basic = http.get(&robot, "/v2/lab/app/tags/list").await;
    assert_eq!(by_basic.status_and_code(), (403, Some("DENIED".into())));

    // A role taken away counts at once: for new tokens and for Basic credentials.
    http.admin_api(Method::DELETE, "/api/v1/tenants/acme/members?kind=user&name=vic&namespace=shop", Value::Null).await;
    let (_, scope) = http.token(&vic, &["repository:shop/app:pull"]).await;
    assert_eq!(scope, "");
    let by_basic = http.get(&vic, &shop.manifest_path("v1")).await;
    assert_eq!(by_basic.status_and_code(), (403, Some("DENIED".into())));
}

async fn anonymous_tokens_grant_pull_on_public_namespaces_and_nothing_else(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "open", true).await;
    create_namespace(&http, "acme", "closed", false).await;
    let open = push_image(&http, &Cred::admin(), "open/app", "open").await;
    let closed = push_image(&http, &Cred::admin(), "closed/app", "closed").await;

    let (token, scope) = http
        .token(
            &Cred::Anonymous,
            &["repository:open/app:pull,push,delete", "repository:closed/app:pull", "registry:catalog:*"],
        )
        .await;

    assert_eq!(scope, "repository:open/app:pull");
    let (_, claims) = jwt(&token);
    assert_eq!(
        (&claims["sub"], &claims["access"]),
        (&json!(""), &json!([{ "type": "repository", "name": "open/app", "actions": ["pull"] }]))
    );
    let anonymous = Cred::Bearer(token);
    assert_eq!(http.get(&anonymous, &open.manifest_path("v1")).await.expect(200).text(), open.manifest);
    assert_eq!(http.get(&anonymous, &open.blob_path(&open.layer.digest)).await.expect(200).body, open.layer.bytes);
    for (method, path, scope) in [
        (Method::GET, closed.manifest_path("v1"), "repository:closed/app:pull"),
        (Method::POST, "/v2/open/app/blobs/uploads/".to_owned(), "repository:open/app:pull,push"),
        (Method::DELETE, open.manifest_path("v1"), "repository:open/app:delete"),
    ] {
        let reply = http.send(http.request(&anonymous, method, &path)).await;
        assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "{path}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some(challenge(&reg, Some(scope), Some("insufficient_scope")).as_str())
        );
    }
    // An anonymous token is no login: the catalog stays closed.
    let reply = http.get(&anonymous, "/v2/_catalog").await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())));
    assert_eq!(http.get(&Cred::admin(), &closed.manifest_path("v1")).await.expect(200).text(), closed.manifest);
}

async fn oauth2_password_and_refresh_token_grants_issue_tokens(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    let image = push_image(&http, &Cred::admin(), "team/app", "oauth").await;
    let scope = "repository:team/app:pull";

    let body = http
        .oauth(&[
            ("grant_type", "password"),
            ("username", ADMIN_USER),
            ("password", ADMIN_PASSWORD),
            ("service", SERVICE),
            ("scope", scope),
            ("client_id", "tests"),
            ("access_type", "offline"),
        ])
        .await
        .expect(200)
        .json();

    assert_eq!(
        (&body["token_type"], &body["expires_in"], &body["scope"]),
        (&json!("Bearer"), &json!(300), &json!(scope))
    );
    assert_eq!(body["token"], body["access_token"]);
    let access = body["access_token"].as_str().expect("access_token").to_owned();
    let refresh = body["refresh_token"].as_str().expect("refresh_token with access_type=offline").to_owned();
    let (_, claims) = jwt(&access);
    assert_eq!(
        (&claims["sub"], &claims["access"]),
        (&json!("admin"), &json!([{ "type": "repository", "name": "team/app", "actions": ["pull"] }]))
    );
    assert_eq!(http.get(&Cred::Bearer(access), &image.manifest_path("v1")).await.expect(200).text(), image.manifest);
    // A refresh token opens nothing by itself.
    let reply = http.get(&Cred::Bearer(refresh.clone()), &image.manifest_path("v1")).await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())));
    assert_eq!(reply.header("www-authenticate"), Some(challenge(&reg, Some(scope), Some("invalid_token")).as_str()));

    let body = http
        .oauth(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", SERVICE),
            ("scope", "repository:team/app:pull,push"),
            ("client_id", "tests"),
        ])
        .await
        .expect(200)
        .json();
    assert_eq!(body["scope"], "repository:team/app:pull,push");
    assert_eq!(body.get("refresh_token"), None, "no new refresh token without access_type=offline");
    let (_, claims) = jwt(body["access_token"].as_str().expect("access_token"));
    assert_eq!(claims["sub"], "admin");
    let pushed = Blob::new(b"pushed after a refresh".to_vec());
    push_blob(&http, &Cred::Bearer(body["access_token"].as_str().expect("token").to_owned()), "team/app", &pushed)
        .await;

    // Refusals, in the OAuth2 shape for what only OAuth2 has.
    let wrong = http
        .oauth(&[("grant_type", "password"), ("username", ADMIN_USER), ("password", "wrong"), ("service", SERVICE)])
        .await;
    assert_eq!((wrong.status, wrong.json()["error"].clone()), (400, json!("invalid_grant")));
    let reply =
        http.oauth(&[("grant_type", "refresh_token"), ("refresh_token", "not.a.token"), ("service", SERVICE)]).await;
    assert_eq!((reply.status, reply.json()["error"].clone()), (400, json!("invalid_grant")));
    let access_as_refresh = http.token(&Cred::admin(), &[scope]).await.0;
    let reply = http.oauth(&[("grant_type", "refresh_token"), ("refresh_token", &access_as_refresh)]).await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, json!("invalid_grant")),
        "an access token is no refresh token"
    );
    let reply = http.oauth(&[("grant_type", "client_credentials")]).await;
    assert_eq!((reply.status, reply.json()["error"].clone()), (400, json!("unsupported_grant_type")));
    let reply = http.oauth(&[("grant_type", "password"), ("username", ADMIN_USER)]).await;
    assert_eq!((reply.status, reply.json()["error"].clone()), (400, json!("invalid_request")));

    // `docker login` asks the GET endpoint for a refresh token with offline_token=true.
    let query = [("service", SERVICE), ("client_id", "docker"), ("offline_token", "true")];
    let reply = http.send(http.request(&Cred::admin(), Method::GET, "/auth/token").query(&query)).await;
    let refresh = reply.expect(200).json()["refresh_token"].as_str().expect("refresh_token").to_owned();
    let body = http
        .oauth(&[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("service", SERVICE), ("scope", scope)])
        .await
        .expect(200)
        .json();
    assert_eq!(body["scope"], scope);
}

// ---------------------------------------------------------------------------
// Tokens that must not work
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Tenants
// ---------------------------------------------------------------------------

/// Two tenants as their admins would set them up:
///
/// | tenant | namespace  | public | image (by the admin)   | members, tenant-wide           |
/// |--------|------------|--------|------------------------|--------------------------------|
/// | alpha  | alpha-apps | no     | alpha-apps/app:v1 (+1) | developers alice, robot$alpha+ci |
/// | alpha  | alpha-pub  | yes    | alpha-pub/app:v1 (+1)  |                                |
/// | beta   | beta-apps  | no     | beta-apps/app:v1 (+1)  | developers bob, robot$beta+ci  |
///
/// (+1: a signature referring to the image), and, in each private
/// repository, an upload session the admin left open holding three bytes.
struct World {
    reg: Registry,
    http: Http,
    alice: Cred,
    alpha_robot: Cred,
    bob: Cred,
    beta_robot: Cred,
    alpha_app: Image,
    alpha_pub: Image,
    beta_app: Image,
    alpha_upload: String,
    beta_upload: String,
}

impl World {
    async fn build(backend: Backend) -> World {
        let reg = Registry::start(backend);
        let http = Http::new(&reg);
        management_api_is_up(&http).await;
        for (tenant, namespaces) in
            [("alpha", &[("alpha-apps", false), ("alpha-pub", true)][..]), ("beta", &[("beta-apps", false)][..])]
        {
            create_tenant(&http, tenant).await;
            for (ns, public) in namespaces {
                create_namespace(&http, tenant, ns, *public).await;
            }
        }
        create_user(&http, "alice", "alice-password").await;
        grant_role(&http, "alpha", "user", "alice", None, "developer").await;
        create_user(&http, "bob", "bob-password").await;
        grant_role(&http, "beta", "user", "bob", None, "developer").await;
        let alpha_robot = create_robot(&http, "alpha", "ci", json!([{ "role": "developer" }])).await;
        let beta_robot = create_robot(&http, "beta", "ci", json!([{ "role": "developer" }])).await;
        let admin = Cred::admin();
        let alpha_app = push_image(&http, &admin, "alpha-apps/app", "alpha private").await;
        let alpha_pub = push_image(&http, &admin, "alpha-pub/app", "alpha public").await;
        let beta_app = push_image(&http, &admin, "beta-apps/app", "beta private").await;
        let mut uploads = Vec::new();
        for repo in ["alpha-apps/app", "beta-apps/app"] {
            let started =
                http.send(http.request(&admin, Method::POST, &format!("/v2/{repo}/blobs/uploads/"))).await.expect(202);
            let location = started.header("location").expect("Location").to_owned();
            http.send(
                http.request(&admin, Method::PATCH, &location)
                    .header("content-type", "application/octet-stream")
                    .body(b"abc".to_vec()),
            )
            .await
            .expect(202);
            uploads.push(location);
        }
        let beta_upload = uploads.pop().expect("beta upload");
        let alpha_upload = uploads.pop().expect("alpha upload");
        World {
            reg,
            http,
            alice: Cred::basic("alice", "alice-password"),
            alpha_robot,
            bob: Cred::basic("bob", "bob-password"),
            beta_robot,
            alpha_app,
            alpha_pub,
            beta_app,
            alpha_upload,
            beta_upload,
        }
    }

    /// The principals of one tenant, each with what is theirs and what is the other tenant's.
    fn outsiders(&self) -> Vec<(&'static str, Cred, Option<&Image>, &Image, &str)> {
        vec![
            (
                "alice (user of alpha)",
                self.alice.clone(),
                Some(&self.alpha_app),
                &self.beta_app,
                self.beta_upload.as_str(),
            ),
            (
                "robot$alpha+ci",
                self.alpha_robot.clone(),
                Some(&self.alpha_app),
                &self.beta_app,
                self.beta_upload.as_str(),
            ),
            ("bob (user of beta)", self.bob.clone(), Some(&self.beta_app), &self.alpha_app, self.alpha_upload.as_str()),
            (
                "robot$beta+ci",
                self.beta_robot.clone(),
                Some(&self.beta_app),
                &self.alpha_app,
                self.alpha_upload.as_str(),
            ),
            ("anonymous, against beta", Cred::Anonymous, None, &self.beta_app, self.beta_upload.as_str()),
            ("anonymous, against alpha", Cred::Anonymous, None, &self.alpha_app, self.alpha_upload.as_str()),
        ]
    }

    /// The credentials to try for a principal: its Basic credentials (or
    /// none), and a bearer token it got asking for everything in `scopes`.
    /// The token must grant exactly `granted`.
    async fn credentials(&self, who: &str, basic: &Cred, scopes: &[String], granted: &str) -> Vec<Cred> {
        let asked: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let (token, scope) = self.http.token(basic, &asked).await;
        assert_eq!(scope, granted, "{who} asked for {asked:?}");
        vec![basic.clone(), Cred::Bearer(token)]
    }

    /// Everything the admin sees of an image: it must not change under attempts that were refused.
    async fn state_of(&self, image: &Image, upload: &str) -> Vec<String> {
        let admin = Cred::admin();
        let http = &self.http;
        vec![
            http.get(&admin, &format!("/v2/{}/tags/list", image.repo)).await.expect(200).text(),
            http.get(&admin, &image.manifest_path("v1")).await.expect(200).text(),
            http.get(&admin, &image.manifest_path(&image.digest)).await.expect(200).text(),
            sha256_digest(&http.get(&admin, &image.blob_path(&image.layer.digest)).await.expect(200).body),
            sha256_digest(&http.get(&admin, &image.blob_path(&image.config.digest)).await.expect(200).body),
            http.get(&admin, &format!("/v2/{}/referrers/{}", image.repo, image.digest)).await.expect(200).text(),
            http.get(&admin, upload).await.expect(204).header("range").unwrap_or_default().to_owned(),
            http.get(&admin, "/v2/_catalog").await.expect(200).text(),
        ]
    }
}

/// A request someone without rights to `repo` makes, and the action its challenge names.
struct Attempt {
    what: String,
    method: Method,
    path: String,
    body: Option<(Vec<u8>, &'static str)>,
    repo: String,
    actions: &'static str,
}

impl Attempt {
    fn new(what: &str, method: Method, path: String, repo: &str, actions: &'static str) -> Attempt {
        Attempt { what: what.to_owned(), method, path, body: None, repo: repo.to_owned(), actions }
    }

    fn with_body(mut self, bytes: Vec<u8>, content_type: &'static str) -> Attempt {
        self.body = Some((bytes, content_type));
        self
    }
}

/// Every read, write and delete on another tenant's repository (and on an
/// upload session open in it), on a repository that does not exist in its
/// namespace, and on a namespace nobody created.
fn attempts_on(image: &Image, upload: Option<&str>) -> Vec<Attempt> {
    let repo = image.repo.as_str();
    let ns = repo.split('/').next().expect("namespace");
    let absent = format!("{ns}/nothing-here");
    let evil = image.manifest.replacen('{', "{\"annotations\":{\"by\":\"intruder\"},", 1);
    let mut attempts = vec![
        Attempt::new("GET manifest by tag", Method::GET, image.manifest_path("v1"), repo, "pull"),
        Attempt::new("HEAD manifest by tag", Method::HEAD, image.manifest_path("v1"), repo, "pull"),
        Attempt::new("GET manifest by digest", Method::GET, image.manifest_path(&image.digest), repo, "pull"),
        Attempt::new("HEAD manifest by digest", Method::HEAD, image.manifest_path(&image.digest), repo, "pull"),
        Attempt::new("GET manifest by an unknown tag", Method::GET, image.manifest_path("nope"), repo, "pull"),
        Attempt::new("GET layer", Method::GET, image.blob_path(&image.layer.digest), repo, "pull"),
        Attempt::new("HEAD layer", Method::HEAD, image.blob_path(&image.layer.digest), repo, "pull"),
        Attempt::new("GET config", Method::GET, image.blob_path(&image.config.digest), repo, "pull"),
        Attempt::new("GET tag list", Method::GET, format!("/v2/{repo}/tags/list"), repo, "pull"),
        Attempt::new("GET referrers", Method::GET, format!("/v2/{repo}/referrers/{}", image.digest), repo, "pull"),
        Attempt::new("POST upload session", Method::POST, format!("/v2/{repo}/blobs/uploads/"), repo, "pull,push"),
        Attempt::new(
            "POST monolithic upload",
            Method::POST,
            format!("/v2/{repo}/blobs/uploads/?digest={}", sha256_digest(b"evil")),
            repo,
            "pull,push",
        )
        .with_body(b"evil".to_vec(), "application/octet-stream"),
        Attempt::new(
            "POST mount within the repository",
            Method::POST,
            format!("/v2/{repo}/blobs/uploads/?mount={}&from={repo}", image.layer.digest),
            repo,
            "pull,push",
        ),
        Attempt::new("PUT manifest under a new tag", Method::PUT, image.manifest_path("evil"), repo, "pull,push")
            .with_body(evil.clone().into_bytes(), OCI_MANIFEST),
        Attempt::new("PUT manifest over the tag v1", Method::PUT, image.manifest_path("v1"), repo, "pull,push")
            .with_body(evil.into_bytes(), OCI_MANIFEST),
        Attempt::new("DELETE manifest by tag", Method::DELETE, image.manifest_path("v1"), repo, "delete"),
        Attempt::new("DELETE manifest by digest", Method::DELETE, image.manifest_path(&image.digest), repo, "delete"),
        Attempt::new("DELETE referrer", Method::DELETE, image.manifest_path(&image.referrer), repo, "delete"),
        Attempt::new("DELETE layer", Method::DELETE, image.blob_path(&image.layer.digest), repo, "delete"),
        Attempt::new(
            "GET tag list of an absent repository",
            Method::GET,
            format!("/v2/{absent}/tags/list"),
            &absent,
            "pull",
        ),
        Attempt::new(
            "GET manifest of an absent repository",
            Method::GET,
            format!("/v2/{absent}/manifests/v1"),
            &absent,
            "pull",
        ),
        Attempt::new(
            "POST upload to an absent repository",
            Method::POST,
            format!("/v2/{absent}/blobs/uploads/"),
            &absent,
            "pull,push",
        ),
        Attempt::new(
            "POST upload to a namespace nobody created",
            Method::POST,
            "/v2/nobody-s/app/blobs/uploads/".to_owned(),
            "nobody-s/app",
            "pull,push",
        ),
    ];
    if let Some(upload) = upload {
        let with_digest = format!("{upload}?digest={}", sha256_digest(b"abc"));
        attempts.extend([
            Attempt::new("GET the open upload session", Method::GET, upload.to_owned(), repo, "pull,push"),
            Attempt::new("PATCH the open upload session", Method::PATCH, upload.to_owned(), repo, "pull,push")
                .with_body(b"evil".to_vec(), "application/octet-stream"),
            Attempt::new("PUT the open upload session", Method::PUT, with_digest, repo, "pull,push"),
            Attempt::new("DELETE the open upload session", Method::DELETE, upload.to_owned(), repo, "pull,push"),
        ]);
    }
    attempts
}

/// Sends an attempt and checks it was refused the way `cred` is refused:
/// Basic credentials are known but lack the right (403 DENIED), a token
/// lacks the scope (401, `insufficient_scope`), no credentials need a login (401).
async fn assert_refused(w: &World, who: &str, cred: &Cred, attempt: &Attempt) {
    let mut request = w.http.request(cred, attempt.method.clone(), &attempt.path);
    if let Some((bytes, content_type)) = &attempt.body {
        request = request.header("content-type", *content_type).body(bytes.clone());
    }
    let reply = w.http.send(request).await;
    let scope = format!("repository:{}:{}", attempt.repo, attempt.actions);
    let (status, code, www_authenticate) = match cred {
        Cred::Basic(..) => (403, "DENIED", None),
        Cred::Bearer(_) => (401, "UNAUTHORIZED", Some(challenge(&w.reg, Some(&scope), Some("insufficient_scope")))),
        Cred::Anonymous => (401, "UNAUTHORIZED", Some(challenge(&w.reg, Some(&scope), None))),
    };
    let context = format!("{who} ({}): {} {} {}", cred.kind(), attempt.what, attempt.method, attempt.path);
    let code = (attempt.method != Method::HEAD).then(|| code.to_owned());
    assert_eq!(reply.status_and_code(), (status, code), "{context}: {}", reply.text());
    assert_eq!(reply.header("www-authenticate").map(str::to_owned), www_authenticate, "{context}");
}

async fn nobody_can_read_write_or_delete_in_another_tenant_s_repositories(backend: Backend) {
    let w = World::build(backend).await;
    let before = (w.state_of(&w.alpha_app, &w.alpha_upload).await, w.state_of(&w.beta_app, &w.beta_upload).await);

    for (who, basic, own, foreign, upload) in w.outsiders() {
        let mut scopes: Vec<String> = vec![format!("repository:{}:pull,push,delete", foreign.repo)];
        let mut granted = String::new();
        if let Some(own) = own {
            scopes.insert(0, format!("repository:{}:pull,push", own.repo));
            granted = format!("repository:{}:pull,push", own.repo);
        }
        // Asking for the other tenant's repository grants nothing on it.
        let (_, alone) = w.http.token(&basic, &[scopes.last().expect("foreign scope").as_str()]).await;
        assert_eq!(alone, "", "{who} asked only for {}", foreign.repo);
        for cred in w.credentials(who, &basic, &scopes, &granted).await {
            if let Some(own) = own {
                // What is theirs they reach with the same credentials.
                let reply = w.http.get(&cred, &own.manifest_path("v1")).await;
                assert_eq!(
                    (reply.status, reply.text()),
                    (200, own.manifest.clone()),
                    "{who} ({}) pulls its own",
                    cred.kind()
                );
            }
            for attempt in attempts_on(foreign, Some(upload)) {
                assert_refused(&w, who, &cred, &attempt).await;
            }
        }
    }

    let after = (w.state_of(&w.alpha_app, &w.alpha_upload).await, w.state_of(&w.beta_app, &w.beta_upload).await);
    assert_eq!(after, before, "the refused attempts changed nothing");
}

async fn a_cross_tenant_mount_falls_back_to_an_upload_and_links_nothing(backend: Backend) {
    let w = World::build(backend).await;
    for (who, basic, own, foreign, _) in w.outsiders() {
        let Some(own) = own else { continue };
        let scopes = [format!("repository:{}:pull,push", own.repo), format!("repository:{}:pull", foreign.repo)];
        let granted = format!("repository:{}:pull,push", own.repo);
        for cred in w.credentials(who, &basic, &scopes, &granted).await {
            for blob in [&foreign.layer, &foreign.config] {
                let path = format!("/v2/{}/blobs/uploads/?mount={}&from={}", own.repo, blob.digest, foreign.repo);
                let reply = w.http.send(w.http.request(&cred, Method::POST, &path)).await;
                let context = format!("{who} ({}) mounting {} from {}", cred.kind(), blob.digest, foreign.repo);
                assert_eq!(reply.status, 202, "{context}: an upload session instead: {}", reply.text());
                let location = reply.header("location").expect("Location").to_owned();
                let uuid = reply.header("docker-upload-uuid").expect("Docker-Upload-UUID");
                assert_eq!(location, format!("/v2/{}/blobs/uploads/{uuid}", own.repo), "{context}");
                assert_eq!(reply.header("range"), Some("0-0"), "{context}");
                assert_eq!(reply.header("docker-content-digest"), None, "{context}");
                let linked = w.http.get(&cred, &own.blob_path(&blob.digest)).await;
                assert_eq!(linked.status_and_code(), (404, Some("BLOB_UNKNOWN".into())), "{context}");
                // The session is a real one, and its owner can use it.
                assert_eq!(w.http.get(&cred, &location).await.expect(204).header("range"), Some("0-0"), "{context}");
                w.http.send(w.http.request(&cred, Method::DELETE, &location)).await.expect(204);
            }
        }
    }
    // Mounting within one's own tenant does link.
    let path = format!("/v2/alpha-apps/copy/blobs/uploads/?mount={}&from=alpha-pub/app", w.alpha_pub.layer.digest);
    let reply = w.http.send(w.http.request(&Cred::admin(), Method::POST, &path)).await.expect(201);
    assert_eq!(reply.header("docker-content-digest"), Some(w.alpha_pub.layer.digest.as_str()));
}

async fn knowing_another_tenant_s_digests_and_upload_ids_gives_nothing(backend: Backend) {
    let w = World::build(backend).await;
    let upload_id = |location: &str| location.rsplit('/').next().expect("id").to_owned();
    let mut cases: Vec<(&str, Cred, &Image, &Image, String)> = Vec::new();
    for (who, basic, own, foreign, upload) in w.outsiders() {
        if let Some(own) = own {
            cases.push((who, basic, own, foreign, upload_id(upload)));
        }
    }
    // Anonymous, through the public repository.
    cases.push(("anonymous", Cred::Anonymous, &w.alpha_pub, &w.beta_app, upload_id(&w.beta_upload)));

    for (who, basic, own, foreign, foreign_upload) in cases {
        let scopes = [format!("repository:{}:pull,push", own.repo)];
        let granted =
            if matches!(basic, Cred::Anonymous) { format!("repository:{}:pull", own.repo) } else { scopes[0].clone() };
        for cred in w.credentials(who, &basic, &scopes, &granted).await {
            let context = |what: &str| format!("{who} ({}) in {}: {what}", cred.kind(), own.repo);
            for (what, method, path, expected) in [
                ("GET the other tenant's layer", Method::GET, own.blob_path(&foreign.layer.digest), "BLOB_UNKNOWN"),
                ("GET the other tenant's config", Method::GET, own.blob_path(&foreign.config.digest), "BLOB_UNKNOWN"),
                (
                    "GET the other tenant's manifest",
                    Method::GET,
                    own.manifest_path(&foreign.digest),
                    "MANIFEST_UNKNOWN",
                ),
                (
                    "GET the other tenant's referrer",
                    Method::GET,
                    own.manifest_path(&foreign.referrer),
                    "MANIFEST_UNKNOWN",
                ),
            ] {
                let reply = w.http.send(w.http.request(&cred, method, &path)).await;
                assert_eq!(reply.status_and_code(), (404, Some(expected.into())), "{}", context(what));
            }
            let reply = w.http.send(w.http.request(&cred, Method::HEAD, &own.blob_path(&foreign.layer.digest))).await;
            assert_eq!(reply.status, 404, "{}", context("HEAD the other tenant's layer"));
            let reply = w.http.get(&cred, &format!("/v2/{}/referrers/{}", own.repo, foreign.digest)).await.expect(200);
            assert_eq!(
                reply.json(),
                json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] }),
                "{}",
                context("referrers of the other tenant's manifest")
            );
            if matches!(basic, Cred::Anonymous) {
                continue;
            }
            // The other tenant's upload session, under one's own repository.
            let session = format!("/v2/{}/blobs/uploads/{foreign_upload}", own.repo);
            for (method, path) in [
                (Method::GET, session.clone()),
                (Method::PATCH, session.clone()),
                (Method::PUT, format!("{session}?digest={}", sha256_digest(b"abc"))),
                (Method::DELETE, session.clone()),
            ] {
                let reply = w.http.send(w.http.request(&cred, method.clone(), &path)).await;
                assert_eq!(
                    reply.status_and_code(),
                    (404, Some("BLOB_UPLOAD_UNKNOWN".into())),
                    "{}",
                    context(&format!("{method} {path}"))
                );
            }
            // A manifest over the other tenant's blobs, or an index over its manifest, is refused.
            let image = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": foreign.config.descriptor(OCI_CONFIG), "layers": [foreign.layer.descriptor(OCI_LAYER)] })
            .to_string();
            let reply = push_manifest(&w.http, &cred, &own.repo, "stolen", OCI_MANIFEST, &image).await;
            assert_eq!(
                reply.status_and_code(),
                (400, Some("MANIFEST_BLOB_UNKNOWN".into())),
                "{}",
                context("manifest over foreign blobs")
            );
            let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                { "mediaType": OCI_MANIFEST, "digest": foreign.digest, "size": foreign.manifest.len() }] })
            .to_string();
            let reply = push_manifest(&w.http, &cred, &own.repo, "stolen", OCI_INDEX, &index).await;
            assert_eq!(
                reply.status_and_code(),
                (400, Some("MANIFEST_BLOB_UNKNOWN".into())),
                "{}",
                context("index over a foreign manifest")
            );
        }
    }
    // The sessions are the admin's still, untouched.
    for location in [&w.alpha_upload, &w.beta_upload] {
        assert_eq!(w.http.get(&Cred::admin(), location).await.expect(204).header("range"), Some("0-2"));
    }
}

async fn the_catalog_lists_only_own_and_public_repositories(backend: Backend) {
    let w = World::build(backend).await;
    let alpha_sees = json!({ "repositories": ["alpha-apps/app", "alpha-pub/app"] });
    let beta_sees = json!({ "repositories": ["alpha-pub/app", "beta-apps/app"] });
    for (who, basic, expected) in [
        ("alice", w.alice.clone(), &alpha_sees),
        ("robot$alpha+ci", w.alpha_robot.clone(), &alpha_sees),
        ("bob", w.bob.clone(), &beta_sees),
        ("robot$beta+ci", w.beta_robot.clone(), &beta_sees),
    ] {
        for cred in w.credentials(who, &basic, &["registry:catalog:*".to_owned()], "registry:catalog:*").await {
            let listed = w.http.get(&cred, "/v2/_catalog").await.expect(200).json();
            assert_eq!(&listed, expected, "{who} ({})", cred.kind());
            // Paging shows nothing more.
            let first = w.http.get(&cred, "/v2/_catalog?n=1").await.expect(200);
            let next = first.header("link").expect("Link to the second page").to_owned();
            let target = next.trim_start_matches('<').split_once('>').expect("<…>").0.to_owned();
            let second = w.http.get(&cred, &target).await.expect(200);
            assert_eq!(second.header("link"), None, "{who}: two pages");
            let paged = [first.json()["repositories"][0].clone(), second.json()["repositories"][0].clone()];
            assert_eq!(json!(paged), expected["repositories"], "{who} ({}) paging", cred.kind());
        }
    }
    let reply = w.http.get(&Cred::Anonymous, "/v2/_catalog").await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())));
    assert_eq!(reply.header("www-authenticate"), Some(challenge(&w.reg, Some("registry:catalog:*"), None).as_str()));
    assert_eq!(
        w.http.get(&Cred::admin(), "/v2/_catalog").await.expect(200).json(),
        json!({ "repositories": ["alpha-apps/app", "alpha-pub/app", "beta-apps/app"] })
    );
}

async fn the_management_api_refuses_reads_and_writes_on_another_tenant(backend: Backend) {
    let w = World::build(backend).await;
    let tenants_before = w.http.admin_api(Method::GET, "/api/v1/tenants", Value::Null).await;
    let mut state_before = Vec::new();
    for t in ["alpha", "beta"] {
        for what in ["namespaces", "members", "robots"] {
            state_before.push(w.http.admin_api(Method::GET, &format!("/api/v1/tenants/{t}/{what}"), Value::Null).await);
        }
    }
    let users_before = w.http.admin_api(Method::GET, "/api/v1/users", Value::Null).await;

    for (who, basic, other, other_ns, other_member) in [
        ("alice", w.alice.clone(), "beta", "beta-apps", "bob"),
        ("robot$alpha+ci", w.alpha_robot.clone(), "beta", "beta-apps", "bob"),
        ("bob", w.bob.clone(), "alpha", "alpha-apps", "alice"),
        ("robot$beta+ci", w.beta_robot.clone(), "alpha", "alpha-apps", "alice"),
    ] {
        let (token, _) = w.http.token(&basic, &[]).await;
        for cred in [basic.clone(), Cred::Bearer(token)] {
            let me = match &basic {
                Cred::Basic(login, _) => login.clone(),
                _ => unreachable!(),
            };
            for (method, path, body) in [
                (Method::GET, format!("/api/v1/tenants/{other}"), Value::Null),
                (Method::GET, format!("/api/v1/tenants/{other}/namespaces"), Value::Null),
                (
                    Method::POST,
                    format!("/api/v1/tenants/{other}/namespaces"),
                    json!({ "name": "intruder", "public": true }),
                ),
                (Method::GET, format!("/api/v1/namespaces/{other_ns}"), Value::Null),
                (Method::PATCH, format!("/api/v1/namespaces/{other_ns}"), json!({ "public": true })),
                (Method::GET, format!("/api/v1/tenants/{other}/members"), Value::Null),
                (
                    Method::PUT,
                    format!("/api/v1/tenants/{other}/members"),
                    json!({ "kind": "user", "name": me, "role": "admin" }),
                ),
                (Method::DELETE, format!("/api/v1/tenants/{other}/members?kind=user&name={other_member}"), Value::Null),
                (Method::GET, format!("/api/v1/tenants/{other}/robots"), Value::Null),
                (
                    Method::POST,
                    format!("/api/v1/tenants/{other}/robots"),
                    json!({ "name": "intruder", "scopes": [{ "role": "admin" }] }),
                ),
                (Method::POST, format!("/api/v1/tenants/{other}/robots/ci/rotate"), Value::Null),
                (Method::DELETE, format!("/api/v1/tenants/{other}/robots/ci"), Value::Null),
                (Method::GET, format!("/api/v1/audit?tenant={other}"), Value::Null),
                (Method::POST, "/api/v1/tenants".to_owned(), json!({ "name": "intruder" })),
                (
                    Method::POST,
                    "/api/v1/users".to_owned(),
                    json!({ "username": "intruder", "password": "intruder-password" }),
                ),
                (Method::PUT, format!("/api/v1/users/{other_member}/password"), json!({ "password": "taken-over-1" })),
                (Method::POST, "/api/v1/signing-keys/rotate".to_owned(), Value::Null),
            ] {
                let reply = w.http.api(&cred, method.clone(), &path, body).await;
                assert_eq!(
                    reply.status_and_code(),
                    (403, Some("DENIED".into())),
                    "{who} ({}): {method} {path}: {}",
                    cred.kind(),
                    reply.text()
                );
            }
        }
    }

    assert_eq!(w.http.admin_api(Method::GET, "/api/v1/tenants", Value::Null).await, tenants_before);
    let mut state_after = Vec::new();
    for t in ["alpha", "beta"] {
        for what in ["namespaces", "members", "robots"] {
            state_after.push(w.http.admin_api(Method::GET, &format!("/api/v1/tenants/{t}/{what}"), Value::Null).await);
        }
    }
    assert_eq!(state_after, state_before);
    assert_eq!(w.http.admin_api(Method::GET, "/api/v1/users", Value::Null).await, users_before);
    // The people and robots refused are still who they were: bob's password, the robots' tokens.
    for cred in [&w.alice, &w.bob, &w.alpha_robot, &w.beta_robot] {
        w.http.get(cred, "/v2/").await.expect(200);
    }
    let reply = w.http.get(&Cred::Anonymous, &w.beta_app.manifest_path("v1")).await;
    assert_eq!(reply.status, 401, "beta-apps is still private");
}

async fn a_public_namespace_is_pulled_by_anyone_and_pushed_by_members_only(backend: Backend) {
    let w = World::build(backend).await;
    let image = &w.alpha_pub;
    let (token, scope) = w.http.token(&Cred::Anonymous, &["repository:alpha-pub/app:pull,push"]).await;
    assert_eq!(scope, "repository:alpha-pub/app:pull");
    let (bob_token, bob_scope) = w.http.token(&w.bob, &["repository:alpha-pub/app:pull,push,delete"]).await;
    assert_eq!(bob_scope, "repository:alpha-pub/app:pull");

    for (who, cred) in [
        ("anonymous", Cred::Anonymous),
        ("anonymous (token)", Cred::Bearer(token)),
        ("bob of beta", w.bob.clone()),
        ("bob of beta (token)", Cred::Bearer(bob_token)),
    ] {
        let reply = w.http.get(&cred, &image.manifest_path("v1")).await.expect(200);
        assert_eq!(
            (reply.header("docker-content-digest"), reply.text()),
            (Some(image.digest.as_str()), image.manifest.clone()),
            "{who}"
        );
        let reply =
            w.http.send(w.http.request(&cred, Method::HEAD, &image.manifest_path(&image.digest))).await.expect(200);
        assert_eq!(reply.header("docker-content-digest"), Some(image.digest.as_str()), "{who}");
        assert_eq!(
            w.http.get(&cred, &image.blob_path(&image.layer.digest)).await.expect(200).body,
            image.layer.bytes,
            "{who}"
        );
        let reply =
            w.http.send(w.http.request(&cred, Method::HEAD, &image.blob_path(&image.config.digest))).await.expect(200);
        assert_eq!(reply.header("content-length"), Some(image.config.bytes.len().to_string().as_str()), "{who}");
        assert_eq!(
            w.http.get(&cred, "/v2/alpha-pub/app/tags/list").await.expect(200).json(),
            json!({ "name": "alpha-pub/app", "tags": ["v1"] })
        );
        let referrers =
            w.http.get(&cred, &format!("/v2/alpha-pub/app/referrers/{}", image.digest)).await.expect(200).json();
        assert_eq!(referrers["manifests"][0]["digest"], image.referrer.as_str(), "{who}");

        for attempt in attempts_on(image, None).into_iter().filter(|a| a.actions != "pull" && a.repo == image.repo) {
            assert_refused(&w, who, &cred, &attempt).await;
        }
    }
    // alice, a developer of alpha, pushes there.
    let blob = Blob::new(b"pushed by a member".to_vec());
    push_blob(&w.http, &w.alice, "alpha-pub/app", &blob).await;
    assert_eq!(w.http.get(&Cred::Anonymous, &image.blob_path(&blob.digest)).await.expect(200).body, blob.bytes);

    // Made private, it closes to outsiders at once.
    w.http.admin_api(Method::PATCH, "/api/v1/namespaces/alpha-pub", json!({ "public": false })).await;
    let reply = w.http.get(&Cred::Anonymous, &image.manifest_path("v1")).await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())));
    assert_eq!(
        reply.header("www-authenticate"),
        Some(challenge(&w.reg, Some("repository:alpha-pub/app:pull"), None).as_str())
    );
    let (_, scope) = w.http.token(&Cred::Anonymous, &["repository:alpha-pub/app:pull"]).await;
    assert_eq!(scope, "");
    let reply = w.http.get(&w.bob, &image.manifest_path("v1")).await;
    assert_eq!(reply.status_and_code(), (403, Some("DENIED".into())));
    assert_eq!(w.http.get(&w.alice, &image.manifest_path("v1")).await.expect(200).text(), image.manifest);
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// Runs a command that must fail; returns its stderr, lowercased.
fn run_failing(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(!out.status.success(), "{cmd:?} succeeded but must fail:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).to_lowercase()
}

/// The `Docker-Content-Digest` of a manifest, as the admin sees it.
async fn manifest_digest(http: &Http, repo: &str, reference: &str) -> String {
    let reply = http
        .send(
            http.request(&Cred::admin(), Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
                .header("accept", format!("{OCI_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json")),
        )
        .await
        .expect(200);
    reply.header("docker-content-digest").expect("Docker-Content-Digest").to_owned()
}

async fn podman_skopeo_and_ctr_push_and_pull_as_a_robot_account(backend: Backend) {
    // PostgreSQL with S3, as the clients suite runs: ctr pulls from the bucket too.
    let reg = Registry::start_paired(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "apps", false).await;
    // Admin on the namespace: it creates the repositories it pushes to.
    let Cred::Basic(login, secret) =
        create_robot(&http, "acme", "builder", json!([{ "namespace": "apps", "role": "admin" }])).await
    else {
        unreachable!()
    };
    let Cred::Basic(reader, reader_secret) =
        create_robot(&http, "acme", "reader", json!([{ "namespace": "apps", "role": "viewer" }])).await
    else {
        unreachable!()
    };
    let creds = format!("{login}:{secret}");
    let ws = Workstation::new();
    let web = format!("{}/apps/web:1.0", reg.host);

    // podman: login, push, pull back.
    run(ws.podman().args(["login", "--tls-verify=false", "-u", &login, "-p", &secret, &reg.host]));
    run(ws
        .podman()
        .args(["import", "--quiet"])
        .arg(ws.rootfs_tar("rootfs", &[("srv/hello.txt".to_owned(), b"built by the robot\n".to_vec())]))
        .arg(&web));
    let id = run(ws.podman().args(["image", "inspect", "--format", "{{.Id}}", &web])).trim().to_owned();
    let digest_file = ws.path("pushed.digest");
    run(ws.podman().args(["push", "--quiet", "--tls-verify=false", "--digestfile"]).arg(&digest_file).arg(&web));
    let pushed = fs::read_to_string(&digest_file).expect("digest file").trim().to_owned();
    assert_eq!(manifest_digest(&http, "apps/web", "1.0").await, pushed);
    run(ws.podman().args(["rmi", &web]));
    run(ws.podman().args(["pull", "--quiet", "--tls-verify=false", &web]));
    assert_eq!(run(ws.podman().args(["image", "inspect", "--format", "{{.Id}}", &web])).trim(), id);
    run(ws.podman().args(["logout", &reg.host]));
    let refused = run_failing(ws.podman().args(["pull", "--quiet", "--tls-verify=false", &web]));
    assert!(refused.contains("unauthorized") || refused.contains("authentication required"), "{refused}");

    // skopeo with credentials on the command line: copy within the registry, inspect, copy out.
    let source = format!("docker://{web}");
    let copy = format!("docker://{}/apps/copy:1.0", reg.host);
    let skopeo_digest = ws.path("skopeo.digest");
    run(ws
        .skopeo()
        .args(["copy", "--quiet", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .args(["--src-creds", &creds, "--dest-creds", &creds, "--digestfile"])
        .arg(&skopeo_digest)
        .args([&source, &copy]));
    assert_eq!(fs::read_to_string(&skopeo_digest).expect("digest file").trim(), pushed);
    let inspected: Value =
        serde_json::from_str(&run(ws.skopeo().args(["inspect", "--tls-verify=false", "--creds", &creds, &copy])))
            .expect("JSON");
    assert_eq!(inspected["Digest"], pushed.as_str());
    let reader_creds = format!("{reader}:{reader_secret}");
    let layout = format!("oci:{}:pulled", ws.path("layout").display());
    run(ws.skopeo().args(["copy", "--quiet", "--src-tls-verify=false", "--src-creds", &reader_creds, &copy, &layout]));
    let refused = run_failing(
        ws.skopeo()
            .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", &reader_creds, &layout])
            .arg(format!("docker://{}/apps/by-reader:1.0", reg.host)),
    );
    assert!(refused.contains("denied") || refused.contains("unauthorized"), "a viewer robot cannot push: {refused}");

    // ctr, through its own containerd.
    let containerd = Containerd::start();
    let ctr_ref = format!("{}/apps/web:1.0", reg.host);
    let refused =
        run_failing(containerd.ctr().args(["images", "pull", "--plain-http", "--snapshotter", "native", &ctr_ref]));
    assert!(refused.contains("pull access denied"), "no credentials: {refused}");
    run(containerd.ctr().args([
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        "--user",
        &creds,
        &ctr_ref,
    ]));
    let listed = run(containerd.ctr().args(["images", "ls", "--quiet"]));
    assert_eq!(listed.lines().collect::<Vec<_>>(), [ctr_ref.as_str()]);
    let retagged = format!("{}/apps/from-ctr:1.0", reg.host);
    run(containerd.ctr().args(["images", "tag", &ctr_ref, &retagged]));
    run(containerd.ctr().args(["images", "push", "--plain-http", "--user", &creds, &retagged]));
    assert_eq!(manifest_digest(&http, "apps/from-ctr", "1.0").await, pushed, "ctr pushed the same manifest");
    // A viewer robot pushes nothing. (Pushing what is already there under the
    // same tag is no push at all: ctr finds it present and writes nothing.)
    let by_reader = format!("{}/apps/from-ctr:by-reader", reg.host);
    run(containerd.ctr().args(["images", "tag", &ctr_ref, &by_reader]));
    // The registry answers the manifest PUT with 401 insufficient_scope and
    // closes the connection before reading the body; ctr then reports either
    // that or "read/write on closed pipe", so only the outcome is checked.
    run_failing(containerd.ctr().args(["images", "push", "--plain-http", "--user", &reader_creds, &by_reader]));
    let tags = http.get(&Cred::admin(), "/v2/apps/from-ctr/tags/list").await.expect(200).json();
    assert_eq!(tags["tags"], json!(["1.0"]));
    let pushes = summary(&audit(&http, &[("action", "manifest.push")]).await);
    assert_eq!(
        pushes.iter().map(|(actor, _, object, ..)| (actor.as_str(), object.as_str())).collect::<Vec<_>>(),
        [(login.as_str(), "apps/web:1.0"), (login.as_str(), "apps/copy:1.0"), (login.as_str(), "apps/from-ctr:1.0"),]
    );
}

// ---------------------------------------------------------------------------
// The record
// ---------------------------------------------------------------------------

/// `(actor, action, object, tenant, outcome)` of each event, in order.
fn summary(events: &[Value]) -> Vec<(String, String, String, Option<String>, String)> {
    events
        .iter()
        .map(|e| {
            assert_eq!(e["source"], "127.0.0.1", "{e}");
            let s = |k: &str| e[k].as_str().unwrap_or_else(|| panic!("{k} in {e}")).to_owned();
            (s("actor"), s("action"), s("object"), e["tenant"].as_str().map(str::to_owned), s("outcome"))
        })
        .collect()
}

fn event(
    actor: &str,
    action: &str,
    object: &str,
    tenant: Option<&str>,
    outcome: &str,
) -> (String, String, String, Option<String>, String) {
    (actor.to_owned(), action.to_owned(), object.to_owned(), tenant.map(str::to_owned), outcome.to_owned())
}

async fn the_audit_log_records_logins_tokens_pushes_deletes_and_role_changes(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "team", false).await;
    create_user(&http, "dora", "dora-password").await;
    grant_role(&http, "acme", "user", "dora", None, "developer").await;
    grant_role(&http, "acme", "user", "dora", Some("team"), "admin").await;
    let robot = create_robot(&http, "acme", "ci", json!([{ "namespace": "team", "role": "developer" }])).await;
    let dora = Cred::basic("dora", "dora-password");

    let (token, _) = http.token(&dora, &["repository:team/app:pull,push"]).await;
    let bad = http.token_reply(&Cred::basic("dora", "wrong-password"), &[]).await;
    assert_eq!(bad.status, 401);
    let image = push_image(&http, &Cred::Bearer(token), "team/app", "audited").await;
    let (robot_token, _) = http.token(&robot, &["repository:team/app:pull"]).await;
    http.get(&Cred::Bearer(robot_token), &image.manifest_path("v1")).await.expect(200);
    let delete = |path: String| http.send(http.request(&dora, Method::DELETE, &path));
    delete(image.manifest_path("v1")).await.expect(202);
    delete(image.manifest_path(&image.referrer)).await.expect(202);
    delete(image.blob_path(&image.layer.digest)).await.expect(202);
    http.admin_api(Method::DELETE, "/api/v1/tenants/acme/members?kind=user&name=dora&namespace=team", Value::Null)
        .await;
    http.admin_api(Method::DELETE, "/api/v1/tenants/acme/robots/ci", Value::Null).await;
    http.admin_api(Method::PUT, "/api/v1/users/dora/password", json!({ "password": "dora-password-2" })).await;

    let tenant = Some("acme");
    let digest_object = |d: &str| format!("team/app@{d}");
    assert_eq!(
        summary(&audit(&http, &[("tenant", "acme")]).await),
        [
            event("admin", "tenant.create", "tenant/acme", tenant, "success"),
            event("admin", "namespace.create", "namespace/team", tenant, "success"),
            event("admin", "role.grant", "user/dora", tenant, "success"),
            event("admin", "role.grant", "user/dora", tenant, "success"),
            event("admin", "robot.create", "robot/robot$acme+ci", tenant, "success"),
            event("dora", "manifest.push", "team/app:v1", tenant, "success"),
            event("dora", "manifest.push", &digest_object(&image.referrer), tenant, "success"),
            event("dora", "tag.delete", "team/app:v1", tenant, "success"),
            event("dora", "manifest.delete", &digest_object(&image.referrer), tenant, "success"),
            event("dora", "blob.delete", &digest_object(&image.layer.digest), tenant, "success"),
            event("admin", "role.revoke", "user/dora", tenant, "success"),
            event("admin", "robot.revoke", "robot/robot$acme+ci", tenant, "success"),
        ]
    );
    let logins = summary(&audit(&http, &[("actor", "dora"), ("action", "login")]).await);
    assert_eq!(
        logins,
        [event("dora", "login", "dora", None, "success"), event("dora", "login", "dora", None, "denied")]
    );
    let tokens = audit(&http, &[("action", "token.issue")]).await;
    assert_eq!(
        summary(&tokens).into_iter().map(|(actor, action, ..)| (actor, action)).collect::<Vec<_>>(),
        [("dora".to_owned(), "token.issue".to_owned()), ("robot$acme+ci".to_owned(), "token.issue".to_owned())]
    );
    assert_eq!(
        tokens[0]["detail"],
        json!({ "requested": ["repository:team/app:pull,push"], "granted": ["repository:team/app:pull,push"] })
    );
    assert_eq!(
        summary(&audit(&http, &[("action", "user.password")]).await),
        [event("admin", "user.password", "user/dora", None, "success")]
    );
    assert_eq!(
        summary(&audit(&http, &[("action", "user.create")]).await),
        [event("admin", "user.create", "user/dora", None, "success")]
    );
}
