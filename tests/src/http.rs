//! Talking HTTP to a registry under test: credentials ([`Cred`]), a whole
//! answer read at once ([`Reply`]), a client aimed at one registry ([`Http`])
//! with the token endpoint and the management API at hand, and the
//! management calls most scenarios start with, as the system administrator.

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

use crate::{Registry, ADMIN_PASSWORD, ADMIN_USER};

/// The token service every registry under test names in its challenges.
pub const SERVICE: &str = "damselfly";

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Cred {
    /// No `Authorization` header.
    Anonymous,
    /// `Authorization: Basic …`, straight to the endpoint.
    Basic(String, String),
    /// `Authorization: Bearer <token from /auth/token>`.
    Bearer(String),
}

impl Cred {
    /// The system administrator's Basic credentials.
    pub fn admin() -> Cred {
        Cred::basic(ADMIN_USER, ADMIN_PASSWORD)
    }

    /// Basic credentials.
    pub fn basic(user: &str, secret: &str) -> Cred {
        Cred::Basic(user.to_owned(), secret.to_owned())
    }

    /// Adds the `Authorization` header, if any.
    pub fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        match self {
            Cred::Anonymous => request,
            Cred::Basic(user, secret) => request.basic_auth(user, Some(secret)),
            Cred::Bearer(token) => request.bearer_auth(token),
        }
    }

    /// `anonymous`, `basic` or `bearer`, for failure messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Cred::Anonymous => "anonymous",
            Cred::Basic(..) => "basic",
            Cred::Bearer(_) => "bearer",
        }
    }
}

/// A whole response, read.
pub struct Reply {
    /// The request's method.
    pub method: Method,
    /// The request's URL.
    pub url: String,
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body's bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, which it must be.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} {}: body is not JSON ({e}): {}", self.method, self.url, self.text()))
    }

    /// The body as JSON, or null when it is empty.
    pub fn json_or_null(&self) -> Value {
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// `errors[0].code` of an OCI or management API error body.
    pub fn code(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body).ok()?["errors"][0]["code"].as_str().map(str::to_owned)
    }

    /// Fails with the request and the body unless the status is `status`.
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status, status, "{} {}: {}", self.method, self.url, self.text());
        self
    }

    /// `(status, errors[0].code)`, for exact comparisons.
    pub fn status_and_code(&self) -> (u16, Option<String>) {
        (self.status, self.code())
    }
}

/// An HTTP client aimed at one registry.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    /// `http://127.0.0.1:<port>`
    pub url: String,
}

impl Http {
    /// A client for `reg`.
    pub fn new(reg: &Registry) -> Http {
        Http::at(&reg.url)
    }

    /// A client for the registry at `url` (a load balancer in front of replicas, say).
    pub fn at(url: &str) -> Http {
        // A fresh connection per request: the registry closes connections
        // after refused writes, and a pooled one might be that one.
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("HTTP client");
        Http { client, url: url.to_owned() }
    }

    /// A request to a path, or to a full URL the registry sent (a `Location`).
    pub fn request(&self, cred: &Cred, method: Method, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.url) };
        cred.apply(self.client.request(method, url))
    }

    /// Sends a request and reads the whole answer; only a registry that does not answer fails here.
    pub async fn send(&self, request: RequestBuilder) -> Reply {
        let request = request.build().expect("a valid request");
        let (method, url) = (request.method().clone(), request.url().to_string());
        let resp = self.client.execute(request).await.unwrap_or_else(|e| panic!("{method} {url}: no answer: {e}"));
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Reply { method, url, status, headers, body }
    }

    /// `GET path`.
    pub async fn get(&self, cred: &Cred, path: &str) -> Reply {
        self.send(self.request(cred, Method::GET, path)).await
    }

    /// A management API call with a JSON body (or none for `Value::Null`).
    pub async fn api(&self, cred: &Cred, method: Method, path: &str, body: Value) -> Reply {
        let mut request = self.request(cred, method, path);
        if !body.is_null() {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// A management API call as the system administrator that must succeed; its JSON answer.
    pub async fn admin_api(&self, method: Method, path: &str, body: Value) -> Value {
        let reply = self.api(&Cred::admin(), method, path, body).await;
        assert!(
            (200..300).contains(&reply.status),
            "{} {}: {} {}",
            reply.method,
            reply.url,
            reply.status,
            reply.text()
        );
        reply.json_or_null()
    }

    /// `GET /auth/token?service=damselfly&scope=…` (one `scope` parameter per scope).
    pub async fn token_reply(&self, cred: &Cred, scopes: &[&str]) -> Reply {
        let mut query: Vec<(&str, &str)> = vec![("service", SERVICE)];
        query.extend(scopes.iter().map(|s| ("scope", *s)));
        self.send(self.request(cred, Method::GET, "/auth/token").query(&query)).await
    }

    /// A token for `scopes`, which the endpoint must issue; returns it and the granted `scope`.
    pub async fn token(&self, cred: &Cred, scopes: &[&str]) -> (String, String) {
        let body = self.token_reply(cred, scopes).await.expect(200).json();
        let token = body["token"].as_str().expect("token").to_owned();
        (token, body["scope"].as_str().expect("scope").to_owned())
    }

    /// `POST /auth/token` with a form.
    pub async fn oauth(&self, form: &[(&str, &str)]) -> Reply {
        self.send(self.request(&Cred::Anonymous, Method::POST, "/auth/token").form(form)).await
    }
}

/// The `WWW-Authenticate` challenge `reg` must send.
pub fn challenge(reg: &Registry, scope: Option<&str>, error: Option<&str>) -> String {
    let mut v = format!("Bearer realm=\"{}/auth/token\",service=\"{SERVICE}\"", reg.url);
    if let Some(s) = scope {
        v.push_str(&format!(",scope=\"{s}\""));
    }
    if let Some(e) = error {
        v.push_str(&format!(",error=\"{e}\""));
    }
    v
}

// --- The management API, as the system administrator -----------------------

/// Creates tenant `name`.
pub async fn create_tenant(http: &Http, name: &str) {
    http.admin_api(Method::POST, "/api/v1/tenants", json!({ "name": name })).await;
}

/// Creates namespace `name` in `tenant`.
pub async fn create_namespace(http: &Http, tenant: &str, name: &str, public: bool) {
    let path = format!("/api/v1/tenants/{tenant}/namespaces");
    http.admin_api(Method::POST, &path, json!({ "name": name, "public": public })).await;
}

/// Creates a user.
pub async fn create_user(http: &Http, username: &str, password: &str) {
    http.admin_api(Method::POST, "/api/v1/users", json!({ "username": username, "password": password })).await;
}

/// Grants `role` to a user or robot (`kind`) on `tenant`, or on one of its namespaces.
pub async fn grant_role(http: &Http, tenant: &str, kind: &str, name: &str, namespace: Option<&str>, role: &str) {
    let path = format!("/api/v1/tenants/{tenant}/members");
    let mut body = json!({ "kind": kind, "name": name, "role": role });
    if let Some(ns) = namespace {
        body["namespace"] = json!(ns);
    }
    http.admin_api(Method::PUT, &path, body).await;
}

/// Creates a robot; returns its credentials (`robot$<tenant>+<name>` and its token).
pub async fn create_robot(http: &Http, tenant: &str, name: &str, scopes: Value) -> Cred {
    let path = format!("/api/v1/tenants/{tenant}/robots");
    let reply = http.api(&Cred::admin(), Method::POST, &path, json!({ "name": name, "scopes": scopes })).await;
    let body = reply.expect(201).json();
    assert_eq!(body["login"], format!("robot${tenant}+{name}"), "{body}");
    Cred::basic(body["login"].as_str().expect("login"), body["token"].as_str().expect("token"))
}

/// Audit events matching `query`, oldest first.
pub async fn audit(http: &Http, query: &[(&str, &str)]) -> Vec<Value> {
    let reply = http.send(http.request(&Cred::admin(), Method::GET, "/api/v1/audit").query(query)).await;
    reply.expect(200).json()["events"].as_array().expect("events").clone()
}

/// Checks the management API answers, so that a scenario needing it fails on that first.
pub async fn management_api_is_up(http: &Http) {
    let reply = http.api(&Cred::admin(), Method::GET, "/api/v1/tenants", Value::Null).await;
    assert_eq!(reply.status, 200, "the management API is not there: {}", reply.text());
}

/// `(actor, action, object, tenant, outcome)` of each audit event, in order;
/// every one of them came from this machine.
pub fn summary(events: &[Value]) -> Vec<(String, String, String, Option<String>, String)> {
    events
        .iter()
        .map(|e| {
            assert_eq!(e["source"], "127.0.0.1", "{e}");
            let s = |k: &str| e[k].as_str().unwrap_or_else(|| panic!("{k} in {e}")).to_owned();
            (s("actor"), s("action"), s("object"), e["tenant"].as_str().map(str::to_owned), s("outcome"))
        })
        .collect()
}
