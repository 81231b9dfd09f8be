//! The JSON management API under `/api/v1/` of a real `damselfly-registry`:
//! tenants, namespaces, members, robots, users, the audit log and signing
//! keys, with who may do what, on both metadata backends.
//!
//! Most scenarios start from the same cast (see [`cast`]): tenants `acme`
//! and `globex`, namespaces `acme/web`, `acme/data` and `globex/gx`, and one
//! user per role. Each scenario is an `async fn(Backend)`;
//! `on_both_backends!` turns it into `<scenario>::sqlite` and `<scenario>::postgres`.

use std::time::{SystemTime, UNIX_EPOCH};

use damselfly_tests::http::{Cred, Http};
use damselfly_tests::{on_both_backends, Backend, Registry, ADMIN_USER};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(
    requests_without_valid_credentials_get_401_with_a_basic_challenge,
    tenants_are_created_by_the_system_admin_and_shown_to_their_members,
    namespaces_are_created_by_tenant_admins_and_read_by_members,
    non_members_get_the_same_403_for_existing_and_missing_names,
    members_are_managed_by_tenant_admins_and_owner_is_reserved_to_owners,
    roles_are_looked_up_fresh_for_bearer_tokens,
    robot_token_is_shown_once_and_works_until_rotated_or_revoked,
    robot_scopes_limit_what_the_robot_may_do,
    users_are_created_by_the_system_admin_and_change_their_own_password,
    audit_log_records_every_write_with_actor_object_tenant_and_source,
    tenant_admins_read_only_their_tenants_audit_events,
    signing_key_rotation_keeps_old_tokens_valid_and_publishes_both_keys,
    openapi_document_lists_every_endpoint_with_its_schemas,
    repeated_failed_logins_are_throttled_with_retry_after,
    clusters_get_a_new_token_or_are_deleted_by_their_tenant_s_admins_only,
);

/// Who sends a request.
#[derive(Clone, Copy)]
enum Who<'a> {
    /// No `Authorization` header.
    Nobody,
    /// The system administrator.
    Admin,
    /// A user of the cast, with the password [`password`] gives them.
    User(&'a str),
    /// Any Basic credentials.
    Basic(&'a str, &'a str),
    /// A bearer token.
    Bearer(&'a str),
    /// A raw `Authorization` header value.
    Header(&'a str),
}

fn password(user: &str) -> String {
    format!("{user}-password")
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    /// The `code` of the one error in the body.
    fn code(&self) -> &str {
        self.body["errors"][0]["code"].as_str().unwrap_or_else(|| panic!("no error code in {}", self.body))
    }

    /// The `message` of the one error in the body.
    fn message(&self) -> &str {
        self.body["errors"][0]["message"].as_str().unwrap_or_else(|| panic!("no error message in {}", self.body))
    }

    /// Asserts an error status and code, with the body in the failure message.
    fn assert_error(&self, status: u16, code: &str, what: &str) {
        assert_eq!((self.status, self.code()), (status, code), "{what}: {}", self.body);
        assert_eq!(self.body["errors"].as_array().map(Vec::len), Some(1), "{what}: {}", self.body);
    }
}

struct Api {
    /// Kept for as long as the scenario talks to it.
    _registry: Registry,
    http: Http,
}

impl Api {
    fn start(backend: Backend) -> Api {
        let registry = Registry::start(backend);
        let http = Http::new(&registry);
        Api { _registry: registry, http }
    }

    async fn send(&self, method: Method, path: &str, who: Who<'_>, body: Option<Value>) -> Reply {
        let cred = match who {
            Who::Nobody | Who::Header(_) => Cred::Anonymous,
            Who::Admin => Cred::admin(),
            Who::User(name) => Cred::basic(name, &password(name)),
            Who::Basic(login, secret) => Cred::basic(login, secret),
            Who::Bearer(token) => Cred::Bearer(token.to_owned()),
        };
        let mut request = self.http.request(&cred, method, path);
        if let Who::Header(value) = who {
            request = request.header("authorization", value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = self.http.send(request).await;
        Reply { status: reply.status, body: reply.json_or_null(), headers: reply.headers }
    }

    async fn get(&self, path: &str, who: Who<'_>) -> Reply {
        self.send(Method::GET, path, who, None).await
    }

    async fn post(&self, path: &str, who: Who<'_>, body: Value) -> Reply {
        self.send(Method::POST, path, who, Some(body)).await
    }

    async fn put(&self, path: &str, who: Who<'_>, body: Value) -> Reply {
        self.send(Method::PUT, path, who, Some(body)).await
    }

    async fn patch(&self, path: &str, who: Who<'_>, body: Value) -> Reply {
        self.send(Method::PATCH, path, who, Some(body)).await
    }

    async fn delete(&self, path: &str, who: Who<'_>) -> Reply {
        self.send(Method::DELETE, path, who, None).await
    }

    /// `GET /auth/token` with Basic credentials and optional scopes.
    async fn token(&self, login: &str, secret: &str, scope: Option<&str>) -> Reply {
        let path = match scope {
            Some(s) => format!("/auth/token?service=damselfly&scope={s}"),
            None => "/auth/token?service=damselfly".to_owned(),
        };
        self.get(&path, Who::Basic(login, secret)).await
    }

    /// An access token for a user of the cast.
    async fn access_token(&self, user: &str) -> String {
        let r = self.token(user, &password(user), None).await;
        assert_eq!(r.status, 200, "token for {user}: {}", r.body);
        r.body["token"].as_str().expect("token").to_owned()
    }

    /// Audit events as seen by `who`, with a query string.
    async fn audit(&self, who: Who<'_>, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/api/v1/audit?{query}"), who).await;
        assert_eq!(r.status, 200, "audit {query}: {}", r.body);
        r.body["events"].as_array().expect("events").clone()
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs() as i64
}

/// A timestamp from a response, checked to be from this test run.
fn recent(v: &Value) -> Value {
    let t = v.as_i64().unwrap_or_else(|| panic!("timestamp expected, got {v}"));
    assert!((now() - 600..=now() + 5).contains(&t), "timestamp {t} is not recent");
    v.clone()
}

/// An audit event without the fields that vary between runs.
fn event_fields(e: &Value) -> Value {
    let mut e = e.clone();
    let map = e.as_object_mut().expect("event object");
    map.remove("id");
    map.remove("at");
    e
}

/// Who holds which role in the cast: (user, tenant, namespace, role).
const PEOPLE: [(&str, &str, Option<&str>, &str); 7] = [
    ("owner1", "acme", None, "owner"),
    ("admin1", "acme", None, "admin"),
    ("dev1", "acme", None, "developer"),
    ("viewer1", "acme", None, "viewer"),
    ("webadmin", "acme", Some("web"), "admin"),
    ("dataviewer", "acme", Some("data"), "viewer"),
    ("outsider", "globex", None, "owner"),
];

/// What the cast's creation answered, for exact comparisons later.
struct Cast {
    acme: Value,
    web: Value,
    data: Value,
}

/// Creates the tenants, namespaces and users of [`PEOPLE`] as the system administrator.
async fn cast(api: &Api) -> Cast {
    let acme = api.post("/api/v1/tenants", Who::Admin, json!({"name": "acme"})).await;
    assert_eq!(acme.status, 201, "{}", acme.body);
    let globex = api.post("/api/v1/tenants", Who::Admin, json!({"name": "globex"})).await;
    assert_eq!(globex.status, 201, "{}", globex.body);
    let mut made = Vec::new();
    for (tenant, ns) in [("acme", "web"), ("acme", "data"), ("globex", "gx")] {
        let r = api.post(&format!("/api/v1/tenants/{tenant}/namespaces"), Who::Admin, json!({"name": ns})).await;
        assert_eq!(r.status, 201, "namespace {ns}: {}", r.body);
        made.push(r.body);
    }
    for (user, tenant, namespace, role) in PEOPLE {
        let r = api.post("/api/v1/users", Who::Admin, json!({"username": user, "password": password(user)})).await;
        assert_eq!(r.status, 201, "user {user}: {}", r.body);
        let mut grant = json!({"kind": "user", "name": user, "role": role});
        if let Some(ns) = namespace {
            grant["namespace"] = ns.into();
        }
        let r = api.put(&format!("/api/v1/tenants/{tenant}/members"), Who::Admin, grant).await;
        assert_eq!(r.status, 200, "grant {user}: {}", r.body);
    }
    Cast { acme: acme.body, web: made[0].clone(), data: made[1].clone() }
}

fn namespace_json(name: &str, tenant: &str, public: bool, p2p: bool, created_at: &Value) -> Value {
    json!({"name": name, "tenant": tenant, "public": public, "p2p_enabled": p2p, "preheat_on_push": [], "created_at": created_at})
}

/// Every authenticated endpoint, with a body where one is needed.
fn endpoints(tenant: &str, namespace: &str) -> Vec<(Method, String, Option<Value>)> {
    let t = tenant;
    vec![
        (Method::GET, "/api/v1/tenants".into(), None),
        (Method::POST, "/api/v1/tenants".into(), Some(json!({"name": "new"}))),
        (Method::GET, format!("/api/v1/tenants/{t}"), None),
        (Method::GET, format!("/api/v1/tenants/{t}/namespaces"), None),
        (Method::POST, format!("/api/v1/tenants/{t}/namespaces"), Some(json!({"name": "fresh"}))),
        (Method::GET, format!("/api/v1/namespaces/{namespace}"), None),
        (Method::PATCH, format!("/api/v1/namespaces/{namespace}"), Some(json!({"public": true}))),
        (Method::GET, format!("/api/v1/tenants/{t}/members"), None),
        (
            Method::PUT,
            format!("/api/v1/tenants/{t}/members"),
            Some(json!({"kind": "user", "name": "outsider", "role": "owner"})),
        ),
        (Method::DELETE, format!("/api/v1/tenants/{t}/members?kind=user&name=owner1"), None),
        (Method::GET, format!("/api/v1/tenants/{t}/robots"), None),
        (Method::POST, format!("/api/v1/tenants/{t}/robots"), Some(json!({"name": "spy", "scopes": []}))),
        (Method::POST, format!("/api/v1/tenants/{t}/robots/ci/rotate"), None),
        (Method::DELETE, format!("/api/v1/tenants/{t}/robots/ci"), None),
        (Method::POST, format!("/api/v1/tenants/{t}/clusters/edge/token"), None),
        (Method::DELETE, format!("/api/v1/tenants/{t}/clusters/edge"), None),
        (Method::GET, "/api/v1/users".into(), None),
        (Method::POST, "/api/v1/users".into(), Some(json!({"username": "x", "password": "long-enough"}))),
        (Method::PUT, "/api/v1/users/owner1/password".into(), Some(json!({"password": "long-enough"}))),
        (Method::GET, format!("/api/v1/audit?tenant={t}"), None),
        (Method::POST, "/api/v1/signing-keys/rotate".into(), None),
    ]
}

async fn requests_without_valid_credentials_get_401_with_a_basic_challenge(backend: Backend) {
    let api = Api::start(backend);
    cast(&api).await;
    for (method, path, body) in endpoints("acme", "web") {
        let r = api.send(method.clone(), &path, Who::Nobody, body.clone()).await;
        r.assert_error(401, "UNAUTHORIZED", &format!("{method} {path} without credentials"));
        assert_eq!(
            r.headers.get("www-authenticate").and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"damselfly\""),
            "{method} {path}"
        );
        let r = api.send(method.clone(), &path, Who::Bearer("not.a.jwt"), body).await;
        r.assert_error(401, "UNAUTHORIZED", &format!("{method} {path} with a bad bearer token"));
    }
    let r = api.get("/api/v1/tenants", Who::Basic(ADMIN_USER, "wrong-password")).await;
    r.assert_error(401, "UNAUTHORIZED", "wrong password");
    assert!(r.headers.contains_key("www-authenticate"));
    let r = api.get("/api/v1/tenants", Who::Basic("nobody-at-all", "wrong-password")).await;
    r.assert_error(401, "UNAUTHORIZED", "unknown user");
    let r = api.get("/api/v1/tenants", Who::Header("Basic %%%not-base64")).await;
    r.assert_error(401, "UNAUTHORIZED", "malformed header");
    let r = api.get("/api/v1/tenants", Who::Header("Digest abc")).await;
    r.assert_error(401, "UNAUTHORIZED", "unknown scheme");

    // An anonymous token names nobody who could hold a role.
    let anonymous = api.get("/auth/token", Who::Nobody).await;
    assert_eq!(anonymous.status, 200, "{}", anonymous.body);
    let token = anonymous.body["token"].as_str().expect("token").to_owned();
    api.get("/api/v1/tenants", Who::Bearer(&token)).await.assert_error(401, "UNAUTHORIZED", "anonymous token");

    // The document itself needs no credentials.
    assert_eq!(api.get("/api/v1/openapi.json", Who::Nobody).await.status, 200);
    api.get("/api/v1/no-such-thing", Who::Admin).await.assert_error(404, "NOT_FOUND", "unknown endpoint");
}

async fn tenants_are_created_by_the_system_admin_and_shown_to_their_members(backend: Backend) {
    let api = Api::start(backend);
    let c = cast(&api).await;
    assert_eq!(c.acme, json!({"name": "acme", "created_at": recent(&c.acme["created_at"])}));

    let all = api.get("/api/v1/tenants", Who::Admin).await;
    assert_eq!(all.status, 200);
    let names: Vec<&str> = all.body.as_array().expect("array").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["acme", "default", "globex"]);
    assert_eq!(all.body[0], c.acme);

    // Members see the tenants they hold any role in, namespace roles included.
    for user in ["owner1", "dev1", "viewer1", "dataviewer"] {
        let r = api.get("/api/v1/tenants", Who::User(user)).await;
        assert_eq!((r.status, &r.body), (200, &json!([c.acme])), "{user}");
    }
    let r = api.get("/api/v1/tenants", Who::User("outsider")).await;
    assert_eq!(r.body.as_array().map(|a| a.iter().map(|t| t["name"].clone()).collect()), Some(vec![json!("globex")]));
    api.post("/api/v1/users", Who::Admin, json!({"username": "nobody", "password": "nobody-password"})).await;
    let r = api.get("/api/v1/tenants", Who::User("nobody")).await;
    assert_eq!((r.status, r.body), (200, json!([])));

    // A tenant with every namespace for tenant-wide roles, only theirs for namespace roles.
    let full = json!({
        "name": "acme",
        "created_at": c.acme["created_at"],
        "namespaces": [c.data, c.web],
    });
    for user in ["owner1", "admin1", "dev1", "viewer1"] {
        let r = api.get("/api/v1/tenants/acme", Who::User(user)).await;
        assert_eq!((r.status, &r.body), (200, &full), "{user}");
    }
    let r = api.get("/api/v1/tenants/acme", Who::Admin).await;
    assert_eq!((r.status, &r.body), (200, &full));
    let r = api.get("/api/v1/tenants/acme", Who::User("dataviewer")).await;
    assert_eq!(r.body, json!({"name": "acme", "created_at": c.acme["created_at"], "namespaces": [c.data]}));
    assert_eq!(c.data, namespace_json("data", "acme", false, false, &recent(&c.data["created_at"])));

    // Only the system administrator creates tenants.
    for user in ["owner1", "outsider"] {
        let r = api.post("/api/v1/tenants", Who::User(user), json!({"name": "mine"})).await;
        r.assert_error(403, "DENIED", user);
    }
    api.post("/api/v1/tenants", Who::Admin, json!({"name": "acme"})).await.assert_error(409, "CONFLICT", "duplicate");
    let too_long = "a".repeat(65);
    for bad in ["Acme", "a..b", "-a", "a-", "a/b", "a b", "", "ümlaut", "a$b", too_long.as_str()] {
        let r = api.post("/api/v1/tenants", Who::Admin, json!({"name": bad})).await;
        r.assert_error(400, "INVALID_REQUEST", bad);
    }
    let longest = "a".repeat(64);
    let r = api.post("/api/v1/tenants", Who::Admin, json!({"name": longest})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.post("/api/v1/tenants", Who::Admin, json!({"nom": "x"})).await;
    r.assert_error(400, "INVALID_REQUEST", "unknown field");
    let r = api.send(Method::POST, "/api/v1/tenants", Who::Admin, None).await;
    r.assert_error(400, "INVALID_REQUEST", "no body");

    api.get("/api/v1/tenants/nosuch", Who::Admin).await.assert_error(404, "NOT_FOUND", "admin, missing tenant");
}

async fn namespaces_are_created_by_tenant_admins_and_read_by_members(backend: Backend) {
    let api = Api::start(backend);
    let c = cast(&api).await;

    // Tenant admins and owners create namespaces; nobody else in the tenant does.
    let r = api.post("/api/v1/tenants/acme/namespaces", Who::User("admin1"), json!({"name": "api"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let api_ns = r.body.clone();
    assert_eq!(api_ns, namespace_json("api", "acme", false, false, &recent(&api_ns["created_at"])));
    let r =
        api.post("/api/v1/tenants/acme/namespaces", Who::User("owner1"), json!({"name": "docs", "public": true})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let docs = r.body.clone();
    assert_eq!(docs, namespace_json("docs", "acme", true, false, &recent(&docs["created_at"])));
    for user in ["dev1", "viewer1", "webadmin", "dataviewer"] {
        let r = api.post("/api/v1/tenants/acme/namespaces", Who::User(user), json!({"name": "nope"})).await;
        r.assert_error(403, "DENIED", user);
    }

    // Names are unique across tenants and follow the grammar.
    for (tenant, name) in [("acme", "web"), ("acme", "gx")] {
        let r = api.post(&format!("/api/v1/tenants/{tenant}/namespaces"), Who::Admin, json!({"name": name})).await;
        r.assert_error(409, "CONFLICT", name);
    }
    for bad in ["Web", "we__b", "a/b", ".a", "a.", "a b", ""] {
        let r = api.post("/api/v1/tenants/acme/namespaces", Who::User("admin1"), json!({"name": bad})).await;
        r.assert_error(400, "INVALID_REQUEST", bad);
    }
    let r =
        api.post("/api/v1/tenants/acme/namespaces", Who::User("admin1"), json!({"name": "x", "public": "yes"})).await;
    r.assert_error(400, "INVALID_REQUEST", "public as a string");

    // Listing: all of them with a tenant-wide role, only their own with a namespace role.
    let every = json!([api_ns, c.data, docs, c.web]);
    for user in ["owner1", "admin1", "dev1", "viewer1"] {
        let r = api.get("/api/v1/tenants/acme/namespaces", Who::User(user)).await;
        assert_eq!((r.status, &r.body), (200, &every), "{user}");
    }
    let r = api.get("/api/v1/tenants/acme/namespaces", Who::User("dataviewer")).await;
    assert_eq!((r.status, r.body), (200, json!([c.data])));
    let r = api.get("/api/v1/tenants/acme/namespaces", Who::User("webadmin")).await;
    assert_eq!((r.status, r.body), (200, json!([c.web])));

    // Reading one: any role on it or its tenant; anyone logged in for a public one.
    for user in ["owner1", "admin1", "dev1", "viewer1", "webadmin"] {
        let r = api.get("/api/v1/namespaces/web", Who::User(user)).await;
        assert_eq!((r.status, &r.body), (200, &c.web), "{user}");
    }
    for user in ["dataviewer", "outsider"] {
        api.get("/api/v1/namespaces/web", Who::User(user)).await.assert_error(403, "DENIED", user);
    }
    let r = api.get("/api/v1/namespaces/docs", Who::User("outsider")).await;
    assert_eq!((r.status, &r.body), (200, &docs));
    api.get("/api/v1/namespaces/docs", Who::Nobody).await.assert_error(401, "UNAUTHORIZED", "public, anonymous");

    // Changing one: admin or owner on it or its tenant.
    let r = api.patch("/api/v1/namespaces/web", Who::User("webadmin"), json!({"public": true})).await;
    assert_eq!((r.status, &r.body), (200, &namespace_json("web", "acme", true, false, &c.web["created_at"])));
    let r = api.patch("/api/v1/namespaces/web", Who::User("admin1"), json!({"p2p_enabled": true})).await;
    assert_eq!((r.status, &r.body), (200, &namespace_json("web", "acme", true, true, &c.web["created_at"])));
    let r =
        api.patch("/api/v1/namespaces/web", Who::User("owner1"), json!({"public": false, "p2p_enabled": false})).await;
    assert_eq!((r.status, &r.body), (200, &c.web));
    let r = api.patch("/api/v1/namespaces/web", Who::User("owner1"), json!({})).await;
    assert_eq!((r.status, &r.body), (200, &c.web));
    for user in ["dev1", "viewer1", "dataviewer", "outsider"] {
        let r = api.patch("/api/v1/namespaces/web", Who::User(user), json!({"public": true})).await;
        r.assert_error(403, "DENIED", user);
    }
    // A namespace admin administers that namespace only.
    let r = api.patch("/api/v1/namespaces/data", Who::User("webadmin"), json!({"public": true})).await;
    r.assert_error(403, "DENIED", "webadmin on data");
    let r = api.patch("/api/v1/namespaces/web", Who::User("owner1"), json!({"p2p": true})).await;
    r.assert_error(400, "INVALID_REQUEST", "unknown field");
    api.get("/api/v1/namespaces/nosuch", Who::Admin).await.assert_error(404, "NOT_FOUND", "admin, missing");
    let r = api.patch("/api/v1/namespaces/nosuch", Who::Admin, json!({"public": true})).await;
    r.assert_error(404, "NOT_FOUND", "admin, missing");
    let r = api.post("/api/v1/tenants/nosuch/namespaces", Who::Admin, json!({"name": "fine"})).await;
    r.assert_error(404, "NOT_FOUND", "admin, missing tenant");
}

async fn non_members_get_the_same_403_for_existing_and_missing_names(backend: Backend) {
    let api = Api::start(backend);
    cast(&api).await;
    let r = api
        .post("/api/v1/tenants/acme/robots", Who::User("admin1"), json!({"name": "ci", "scopes": [{"role": "viewer"}]}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // `outsider` owns globex and has no role in acme; `nosuch` and `gone` do not exist.
    let system_admin_only = ["/api/v1/users", "/api/v1/signing-keys/rotate", "/api/v1/tenants"];
    let existing = endpoints("acme", "web");
    let missing = endpoints("nosuch", "gone");
    for ((method, path, body), (_, missing_path, missing_body)) in existing.into_iter().zip(missing) {
        let r = api.send(method.clone(), &path, Who::User("outsider"), body).await;
        if method == Method::GET && path == "/api/v1/tenants" {
            assert_eq!(r.status, 200);
            continue;
        }
        if path == "/api/v1/users/owner1/password" || system_admin_only.contains(&path.as_str()) {
            r.assert_error(403, "DENIED", &format!("{method} {path}"));
            continue;
        }
        r.assert_error(403, "DENIED", &format!("outsider {method} {path}"));
        let m = api.send(method.clone(), &missing_path, Who::User("outsider"), missing_body).await;
        m.assert_error(403, "DENIED", &format!("outsider {method} {missing_path}"));
        assert_eq!(
            r.message().replace("acme", "T").replace("web", "N"),
            m.message().replace("nosuch", "T").replace("gone", "N"),
            "{method} {path} tells an existing name from a missing one"
        );
    }
    // A user who does not exist and one who does get the same answer.
    let a = api.put("/api/v1/users/owner1/password", Who::User("outsider"), json!({"password": "long-enough"})).await;
    let b = api.put("/api/v1/users/ghost/password", Who::User("outsider"), json!({"password": "long-enough"})).await;
    a.assert_error(403, "DENIED", "other user's password");
    b.assert_error(403, "DENIED", "missing user's password");
    assert_eq!(a.message().replace("owner1", "U"), b.message().replace("ghost", "U"));

    // Robots of one tenant are outsiders everywhere else.
    let robot = api
        .post(
            "/api/v1/tenants/globex/robots",
            Who::User("outsider"),
            json!({"name": "bot", "scopes": [{"role": "admin"}]}),
        )
        .await;
    assert_eq!(robot.status, 201, "{}", robot.body);
    let token = robot.body["token"].as_str().expect("token").to_owned();
    let bot = Who::Basic("robot$globex+bot", &token);
    for path in ["/api/v1/tenants/acme", "/api/v1/tenants/acme/members", "/api/v1/namespaces/web"] {
        api.get(path, bot).await.assert_error(403, "DENIED", path);
    }

    // The system administrator may know what does not exist.
    for path in ["/api/v1/tenants/nosuch", "/api/v1/tenants/nosuch/members", "/api/v1/namespaces/gone"] {
        api.get(path, Who::Admin).await.assert_error(404, "NOT_FOUND", path);
    }
    api.get("/api/v1/audit?tenant=nosuch", Who::Admin).await.assert_error(404, "NOT_FOUND", "audit");
}

async fn members_are_managed_by_tenant_admins_and_owner_is_reserved_to_owners(backend: Backend) {
    let api = Api::start(backend);
    cast(&api).await;
    let members = "/api/v1/tenants/acme/members";
    let listed = json!([
        {"kind": "user", "name": "admin1", "namespace": null, "role": "admin"},
        {"kind": "user", "name": "dataviewer", "namespace": "data", "role": "viewer"},
        {"kind": "user", "name": "dev1", "namespace": null, "role": "developer"},
        {"kind": "user", "name": "owner1", "namespace": null, "role": "owner"},
        {"kind": "user", "name": "viewer1", "namespace": null, "role": "viewer"},
        {"kind": "user", "name": "webadmin", "namespace": "web", "role": "admin"},
    ]);
    for user in ["owner1", "admin1"] {
        let r = api.get(members, Who::User(user)).await;
        assert_eq!((r.status, &r.body), (200, &listed), "{user}");
    }
    for user in ["dev1", "viewer1", "webadmin", "dataviewer"] {
        api.get(members, Who::User(user)).await.assert_error(403, "DENIED", user);
    }

    // A namespace role reaches that namespace only; a tenant role reaches all of them.
    let grant = json!({"kind": "user", "name": "dev1", "namespace": "web", "role": "admin"});
    let r = api.put(members, Who::User("admin1"), grant.clone()).await;
    assert_eq!((r.status, &r.body), (200, &grant));
    let r = api.patch("/api/v1/namespaces/web", Who::User("dev1"), json!({"public": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.patch("/api/v1/namespaces/data", Who::User("dev1"), json!({"public": true})).await;
    r.assert_error(403, "DENIED", "dev1 on data");
    api.get(members, Who::User("dev1")).await.assert_error(403, "DENIED", "namespace admin lists members");
    // Granting again replaces the role held on the same scope.
    let downgrade = json!({"kind": "user", "name": "dev1", "namespace": "web", "role": "viewer"});
    let r = api.put(members, Who::User("admin1"), downgrade.clone()).await;
    assert_eq!((r.status, &r.body), (200, &downgrade));
    let r = api.patch("/api/v1/namespaces/web", Who::User("dev1"), json!({"public": false})).await;
    r.assert_error(403, "DENIED", "after downgrade");
    let r = api.delete(&format!("{members}?kind=user&name=dev1&namespace=web"), Who::User("admin1")).await;
    assert_eq!((r.status, r.body), (204, Value::Null));
    let r = api.delete(&format!("{members}?kind=user&name=dev1&namespace=web"), Who::User("admin1")).await;
    r.assert_error(404, "NOT_FOUND", "already removed");

    // Only owners make or unmake owners.
    let owner = json!({"kind": "user", "name": "viewer1", "role": "owner"});
    api.put(members, Who::User("admin1"), owner.clone()).await.assert_error(403, "DENIED", "admin grants owner");
    let r = api.put(members, Who::User("owner1"), owner.clone()).await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"kind": "user", "name": "viewer1", "namespace": null, "role": "owner"}))
    );
    let demote = json!({"kind": "user", "name": "viewer1", "role": "viewer"});
    api.put(members, Who::User("admin1"), demote.clone()).await.assert_error(403, "DENIED", "admin demotes owner");
    let r = api.delete(&format!("{members}?kind=user&name=viewer1"), Who::User("admin1")).await;
    r.assert_error(403, "DENIED", "admin removes owner");
    let r = api.delete(&format!("{members}?kind=user&name=viewer1"), Who::User("owner1")).await;
    assert_eq!(r.status, 204, "{}", r.body);
    // A removed role stops counting at once.
    api.get("/api/v1/tenants/acme", Who::User("viewer1")).await.assert_error(403, "DENIED", "after removal");

    // Developers and viewers do not manage members.
    for user in ["dev1", "webadmin"] {
        let r = api.put(members, Who::User(user), json!({"kind": "user", "name": "viewer1", "role": "viewer"})).await;
        r.assert_error(403, "DENIED", user);
    }

    // What cannot be granted.
    let bad_requests = [
        (json!({"kind": "user", "name": "dev1", "namespace": "web", "role": "owner"}), "namespace owner"),
        (json!({"kind": "robot", "name": "ci", "role": "owner"}), "robot owner"),
        (json!({"kind": "robot", "name": "robot$globex+bot", "role": "viewer"}), "robot of another tenant"),
        (json!({"kind": "user", "name": "dev1", "role": "boss"}), "unknown role"),
        (json!({"kind": "group", "name": "dev1", "role": "viewer"}), "unknown kind"),
        (json!({"kind": "user", "role": "viewer"}), "no name"),
    ];
    for (body, what) in bad_requests {
        api.put(members, Who::User("owner1"), body).await.assert_error(400, "INVALID_REQUEST", what);
    }
    let not_found = [
        (json!({"kind": "user", "name": "ghost", "role": "viewer"}), "unknown user"),
        (json!({"kind": "robot", "name": "ghost", "role": "viewer"}), "unknown robot"),
        (json!({"kind": "user", "name": "dev1", "namespace": "gx", "role": "viewer"}), "namespace of another tenant"),
        (json!({"kind": "user", "name": "dev1", "namespace": "gone", "role": "viewer"}), "missing namespace"),
    ];
    for (body, what) in not_found {
        api.put(members, Who::User("owner1"), body).await.assert_error(404, "NOT_FOUND", what);
    }

    // Robots are named by their short name or their full login.
    let r = api.post("/api/v1/tenants/acme/robots", Who::User("admin1"), json!({"name": "ci"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.put(members, Who::User("admin1"), json!({"kind": "robot", "name": "ci", "role": "viewer"})).await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"kind": "robot", "name": "robot$acme+ci", "namespace": null, "role": "viewer"}))
    );
    let by_login = json!({"kind": "robot", "name": "robot$acme+ci", "namespace": "web", "role": "developer"});
    let r = api.put(members, Who::User("admin1"), by_login.clone()).await;
    assert_eq!((r.status, &r.body), (200, &by_login));
    let r = api.get(members, Who::User("admin1")).await;
    assert_eq!(
        r.body,
        json!([
            {"kind": "user", "name": "admin1", "namespace": null, "role": "admin"},
            {"kind": "user", "name": "dataviewer", "namespace": "data", "role": "viewer"},
            {"kind": "user", "name": "dev1", "namespace": null, "role": "developer"},
            {"kind": "user", "name": "owner1", "namespace": null, "role": "owner"},
            {"kind": "robot", "name": "robot$acme+ci", "namespace": null, "role": "viewer"},
            {"kind": "robot", "name": "robot$acme+ci", "namespace": "web", "role": "developer"},
            {"kind": "user", "name": "webadmin", "namespace": "web", "role": "admin"},
        ])
    );
    let r = api.delete(&format!("{members}?kind=robot&name=ci&namespace=web"), Who::User("admin1")).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = api.delete(&format!("{members}?kind=user"), Who::User("admin1")).await;
    r.assert_error(400, "INVALID_REQUEST", "delete without a name");
}

async fn roles_are_looked_up_fresh_for_bearer_tokens(backend: Backend) {
    let api = Api::start(backend);
    cast(&api).await;
    // The token grants no repository access at all: authority comes from roles.
    let token = api.access_token("dev1").await;
    let r = api.get("/api/v1/tenants", Who::Bearer(&token)).await;
    assert_eq!((r.status, r.body[0]["name"].clone()), (200, json!("acme")));
    let members = "/api/v1/tenants/acme/members";
    api.get(members, Who::Bearer(&token)).await.assert_error(403, "DENIED", "developer");
    let r = api.put(members, Who::User("owner1"), json!({"kind": "user", "name": "dev1", "role": "admin"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.get(members, Who::Bearer(&token)).await;
    assert_eq!(r.status, 200, "the same token after a promotion: {}", r.body);
    let r = api.delete(&format!("{members}?kind=user&name=dev1"), Who::User("owner1")).await;
    assert_eq!(r.status, 204, "{}", r.body);
    // A narrowed grant ends the holder's tokens at once; a new token sees what is left.
    let r = api.get("/api/v1/tenants/acme", Who::Bearer(&token)).await;
    r.assert_error(401, "UNAUTHORIZED", "after removal");
    assert!(r.message().contains("log in again"), "{}", r.body);
    let token = api.access_token("dev1").await;
    api.get("/api/v1/tenants/acme", Who::Bearer(&token)).await.assert_error(403, "DENIED", "a new token after removal");
    let r = api.get("/api/v1/tenants", Who::Bearer(&token)).await;
    assert_eq!((r.status, r.body), (200, json!([])));
}

async fn robot_token_is_shown_once_and_works_until_rotated_or_revoked(backend: Backend) {
    let api = Api::start(backend);
    cast(&api).await;
    let robots = "/api/v1/tenants/acme/robots";
    let new_robot = json!({
        "name": "ci",
        "description": "builds the web images",
        "scopes": [{"namespace": "web", "role": "developer"}, {"role": "viewer"}],
    });
    let r = api.post(robots, Who::User("admin1"), new_robot.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.body["token"].as_str().expect("token").to_owned();
    assert_eq!(token.len(), 43, "32 random bytes, base64url: {token}");
    let robot = json!({
        "name": "ci",
        "login": "robot$acme+ci",
        "description": "builds the web images",
        "expires_at": null,
        "revoked_at": null,
        "created_at": recent(&r.body["created_at"]),
        "scopes": [{"namespace": null, "role": "viewer"}, {"namespace": "web", "role": "developer"}],
    });
    let mut created = robot.clone();
    created["token"] = token.clone().into();
    assert_eq!(r.body, created);

    // Listed without its token.
    let r = api.get(robots, Who::User("owner1")).await;
    assert_eq!((r.status, &r.body), (200, &json!([robot])));
    for user in ["dev1", "viewer1", "webadmin"] {
        api.get(robots, Who::User(user)).await.assert_error(403, "DENIED", user);
        api.post(robots, Who::User(user), json!({"name": "mine"})).await.assert_error(403, "DENIED", user);
    }

    // The token logs in at the token endpoint and on the API.
    let login = "robot$acme+ci";
    let r = api.token(login, &token, Some("repository:web/app:pull")).await;
    assert_eq!((r.status, r.body["scope"].clone()), (200, json!("repository:web/app:pull")), "{}", r.body);
    let jwt = r.body["token"].as_str().expect("jwt").to_owned();
    let r = api.get("/api/v1/tenants", Who::Basic(login, &token)).await;
    assert_eq!((r.status, r.body.as_array().map(Vec::len)), (200, Some(1)), "{}", r.body);
    assert_eq!(r.body[0]["name"], "acme");
    let r = api.get("/api/v1/tenants/acme/namespaces", Who::Bearer(&jwt)).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Rotation: a new token; the old one and its JWTs stop at once.
    let r = api.post(&format!("{robots}/ci/rotate"), Who::User("admin1"), json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rotated = r.body["token"].as_str().expect("token").to_owned();
    assert_eq!(r.body, json!({"login": login, "token": rotated}));
    assert_ne!(rotated, token);
    api.token(login, &token, None).await.assert_error(401, "UNAUTHORIZED", "old robot token");
    api.get("/api/v1/tenants", Who::Bearer(&jwt)).await.assert_error(401, "UNAUTHORIZED", "JWT of the old token");
    assert_eq!(api.get("/v2/", Who::Bearer(&jwt)).await.status, 401, "the old JWT on /v2/");
    let r = api.token(login, &rotated, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new_jwt = r.body["token"].as_str().expect("jwt").to_owned();

    // Revocation: for good, and listed as such.
    let r = api.delete(&format!("{robots}/ci"), Who::User("admin1")).await;
    assert_eq!((r.status, r.body), (204, Value::Null));
    api.token(login, &rotated, None).await.assert_error(401, "UNAUTHORIZED", "revoked robot");
    api.get("/api/v1/tenants", Who::Bearer(&new_jwt)).await.assert_error(401, "UNAUTHORIZED", "JWT of a revoked robot");
    let r = api.get(robots, Who::User("admin1")).await;
    let revoked_at = recent(&r.body[0]["revoked_at"]);
    let mut revoked = robot.clone();
    revoked["revoked_at"] = revoked_at;
    assert_eq!(r.body, json!([revoked]));
    let r = api.post(&format!("{robots}/ci/rotate"), Who::User("admin1"), json!(null)).await;
    r.assert_error(409, "CONFLICT", "rotating a revoked robot");
    assert_eq!(api.delete(&format!("{robots}/ci"), Who::User("admin1")).await.status, 204, "revoking twice");
    api.delete(&format!("{robots}/ghost"), Who::User("admin1")).await.assert_error(404, "NOT_FOUND", "missing robot");
    let r = api.post(&format!("{robots}/ghost/rotate"), Who::User("admin1"), json!(null)).await;
    r.assert_error(404, "NOT_FOUND", "rotating a missing robot");

    // Names stay taken; names and scopes are checked before anything is made.
    api.post(robots, Who::User("admin1"), new_robot).await.assert_error(409, "CONFLICT", "duplicate robot");
    let bad = [
        (json!({"name": "CI"}), 400, "INVALID_REQUEST"),
        (json!({"name": "a+b"}), 400, "INVALID_REQUEST"),
        (json!({"name": "boss", "scopes": [{"role": "owner"}]}), 400, "INVALID_REQUEST"),
        (json!({"name": "twice", "scopes": [{"role": "viewer"}, {"role": "admin"}]}), 400, "INVALID_REQUEST"),
        (json!({"name": "past", "expires_in_secs": 0}), 400, "INVALID_REQUEST"),
        (json!({"name": "spy", "scopes": [{"namespace": "gx", "role": "viewer"}]}), 404, "NOT_FOUND"),
    ];
    for (body, status, code) in bad {
        let name = body["name"].as_str().unwrap_or_default().to_owned();
        api.post(robots, Who::User("admin1"), body).await.assert_error(status, code, &name);
        let r = api.post(&format!("{robots}/{name}/rotate"), Who::User("admin1"), json!(null)).await;
        r.assert_error(404, "NOT_FOUND", &format!("{name} was not made"));
    }

    // An expiring robot.
    let r = api.post(robots, Who::User("owner1"), json!({"name": "temp", "expires_in_secs": 3600})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let expires_at = r.body["expires_at"].as_i64().expect("expires_at");
    assert!((now() + 3590..=now() + 3600).contains(&expires_at), "{expires_at}");
    assert_eq!(r.body["scopes"], json!([]));
    assert_eq!(r.body["description"], json!(""));
}

async fn robot_scopes_limit_what_the_robot_may_do(backend: Backend) {
    let api = Api::start(backend);
    cast(&api).await;
    let robots = "/api/v1/tenants/acme/robots";
    let make = |name: &'static str, scopes: Value| {
        let api = &api;
        async move {
            let r = api.post(robots, Who::User("admin1"), json!({"name": name, "scopes": scopes})).await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["token"].as_str().expect("token").to_owned()
        }
    };
    let pusher_token = make("pusher", json!([{"namespace": "web", "role": "developer"}])).await;
    let manager_token = make("manager", json!([{"role": "admin"}])).await;
    let pusher = Who::Basic("robot$acme+pusher", &pusher_token);
    let manager = Who::Basic("robot$acme+manager", &manager_token);

    // Pull on its namespace, nothing on the others, nothing in other tenants.
    for (repository, granted) in [("web/app", "repository:web/app:pull"), ("data/app", ""), ("gx/app", "")] {
        let r = api.token("robot$acme+pusher", &pusher_token, Some(&format!("repository:{repository}:pull"))).await;
        assert_eq!((r.status, &r.body["scope"]), (200, &json!(granted)), "{repository}: {}", r.body);
    }

    // On the API: a developer robot reads what its scope reaches and manages nothing.
    let r = api.get("/api/v1/tenants/acme/namespaces", pusher).await;
    assert_eq!(r.body.as_array().map(|a| a.iter().map(|n| n["name"].clone()).collect()), Some(vec![json!("web")]));
    api.get("/api/v1/namespaces/data", pusher).await.assert_error(403, "DENIED", "pusher reads data");
    api.get("/api/v1/tenants/acme/members", pusher).await.assert_error(403, "DENIED", "pusher lists members");
    let r = api.patch("/api/v1/namespaces/web", pusher, json!({"public": true})).await;
    r.assert_error(403, "DENIED", "pusher changes web");

    // An admin robot manages the tenant, but makes no owners.
    assert_eq!(api.get("/api/v1/tenants/acme/members", manager).await.status, 200);
    let r = api.post("/api/v1/tenants/acme/namespaces", manager, json!({"name": "made-by-robot"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api
        .put("/api/v1/tenants/acme/members", manager, json!({"kind": "user", "name": "dev1", "role": "owner"}))
        .await;
    r.assert_error(403, "DENIED", "robot grants owner");
    api.get("/api/v1/users", manager).await.assert_error(403, "DENIED", "robot lists users");
    api.get("/api/v1/tenants/globex", manager).await.assert_error(403, "DENIED", "robot reads another tenant");
    let r = api.get("/api/v1/audit", manager).await;
    assert_eq!(r.status, 200, "an admin robot reads its tenant's audit log: {}", r.body);
}

async fn users_are_created_by_the_system_admin_and_change_their_own_password(backend: Backend) {
    let api = Api::start(backend);
    cast(&api).await;
    let r = api.post("/api/v1/users", Who::Admin, json!({"username": "carol", "password": "carol-password"})).await;
    assert_eq!((r.status, &r.body), (201, &json!({"username": "carol", "system_admin": false})));
    let r = api
        .post(
            "/api/v1/users",
            Who::Admin,
            json!({"username": "root2", "password": "root2-password", "system_admin": true}),
        )
        .await;
    assert_eq!((r.status, &r.body), (201, &json!({"username": "root2", "system_admin": true})));
    let r = api.get("/api/v1/users", Who::User("root2")).await;
    let mut expected: Vec<Value> = ["admin", "carol", "root2"]
        .iter()
        .chain(PEOPLE.iter().map(|(u, ..)| u))
        .map(|u| json!({"username": u, "system_admin": *u == "admin" || *u == "root2"}))
        .collect();
    expected.sort_by_key(|u| u["username"].as_str().unwrap_or_default().to_owned());
    assert_eq!((r.status, r.body), (200, Value::Array(expected)));

    for user in ["owner1", "carol"] {
        api.get("/api/v1/users", Who::User(user)).await.assert_error(403, "DENIED", user);
        let r = api.post("/api/v1/users", Who::User(user), json!({"username": "x1", "password": "x1-password"})).await;
        r.assert_error(403, "DENIED", user);
    }
    let r = api.post("/api/v1/users", Who::Admin, json!({"username": "carol", "password": "another-one"})).await;
    r.assert_error(409, "CONFLICT", "duplicate user");
    for (username, pw) in
        [("robot$acme+x", "long-enough"), ("Carol", "long-enough"), ("a b", "long-enough"), ("dave", "short")]
    {
        let r = api.post("/api/v1/users", Who::Admin, json!({"username": username, "password": pw})).await;
        r.assert_error(400, "INVALID_REQUEST", username);
    }

    // A password change ends the old password and every token issued before.
    let before = api.access_token("carol").await;
    assert_eq!(api.get("/v2/", Who::Bearer(&before)).await.status, 200);
    let r =
        api.put("/api/v1/users/carol/password", Who::User("carol"), json!({"password": "carol-new-password"})).await;
    assert_eq!((r.status, r.body), (204, Value::Null));
    api.get("/api/v1/tenants", Who::User("carol")).await.assert_error(401, "UNAUTHORIZED", "old password");
    api.token("carol", &password("carol"), None).await.assert_error(401, "UNAUTHORIZED", "old password for a token");
    api.get("/api/v1/tenants", Who::Bearer(&before)).await.assert_error(401, "UNAUTHORIZED", "token from before");
    assert_eq!(api.get("/v2/", Who::Bearer(&before)).await.status, 401, "token from before on /v2/");
    assert_eq!(api.get("/api/v1/tenants", Who::Basic("carol", "carol-new-password")).await.status, 200);
    assert_eq!(api.token("carol", "carol-new-password", None).await.status, 200);

    // Only oneself or the system administrator.
    let r = api.put("/api/v1/users/carol/password", Who::User("owner1"), json!({"password": "stolen-password"})).await;
    r.assert_error(403, "DENIED", "someone else's password");
    let r = api.put("/api/v1/users/carol/password", Who::Admin, json!({"password": "reset-by-admin"})).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(api.get("/api/v1/tenants", Who::Basic("carol", "reset-by-admin")).await.status, 200);
    let r = api
        .put("/api/v1/users/carol/password", Who::Basic("carol", "reset-by-admin"), json!({"password": "short"}))
        .await;
    r.assert_error(400, "INVALID_REQUEST", "short password");
    let r = api.put("/api/v1/users/ghost/password", Who::Admin, json!({"password": "long-enough"})).await;
    r.assert_error(404, "NOT_FOUND", "admin, missing user");
}

async fn audit_log_records_every_write_with_actor_object_tenant_and_source(backend: Backend) {
    let api = Api::start(backend);
    cast(&api).await;
    let ok = |r: Reply, status: u16| assert_eq!(r.status, status, "{}", r.body);
    ok(api.post("/api/v1/tenants/acme/namespaces", Who::User("admin1"), json!({"name": "api"})).await, 201);
    ok(api.patch("/api/v1/namespaces/api", Who::User("owner1"), json!({"p2p_enabled": true})).await, 200);
    let members = "/api/v1/tenants/acme/members";
    ok(
        api.put(
            members,
            Who::User("admin1"),
            json!({"kind": "user", "name": "dev1", "namespace": "api", "role": "admin"}),
        )
        .await,
        200,
    );
    ok(api.delete(&format!("{members}?kind=user&name=dev1&namespace=api"), Who::User("admin1")).await, 204);
    let robots = "/api/v1/tenants/acme/robots";
    ok(api.post(robots, Who::User("admin1"), json!({"name": "ci", "scopes": [{"role": "viewer"}]})).await, 201);
    ok(api.post(&format!("{robots}/ci/rotate"), Who::User("admin1"), json!(null)).await, 200);
    ok(api.delete(&format!("{robots}/ci"), Who::User("owner1")).await, 204);
    ok(api.put("/api/v1/users/dev1/password", Who::User("dev1"), json!({"password": "dev1-new-password"})).await, 204);
    let r = api.post("/api/v1/signing-keys/rotate", Who::Admin, json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let kid = r.body["kid"].as_str().expect("kid").to_owned();
    // Refused writes are recorded too.
    let r = api.post("/api/v1/tenants/acme/namespaces", Who::User("viewer1"), json!({"name": "sneaky"})).await;
    r.assert_error(403, "DENIED", "viewer creates a namespace");
    let r = api.put(members, Who::User("admin1"), json!({"kind": "user", "name": "dev1", "role": "owner"})).await;
    r.assert_error(403, "DENIED", "admin grants owner");
    api.post("/api/v1/tenants", Who::User("outsider"), json!({"name": "mine"})).await.assert_error(403, "DENIED", "");

    let events = api.audit(Who::Admin, "limit=1000").await;
    let expected = [
        json!({"actor": "admin", "action": "tenant.create", "object": "tenant/acme", "tenant": "acme", "detail": null}),
        json!({"actor": "admin", "action": "namespace.create", "object": "namespace/web", "tenant": "acme", "detail": {"public": false}}),
        json!({"actor": "admin", "action": "user.create", "object": "user/owner1", "tenant": null, "detail": {"system_admin": false}}),
        json!({"actor": "admin", "action": "role.grant", "object": "user/owner1", "tenant": "acme", "detail": {"role": "owner", "namespace": null, "previous": null}}),
        json!({"actor": "admin1", "action": "namespace.create", "object": "namespace/api", "tenant": "acme", "detail": {"public": false}}),
        json!({"actor": "owner1", "action": "namespace.update", "object": "namespace/api", "tenant": "acme", "detail": {"p2p_enabled": true}}),
        json!({"actor": "admin1", "action": "role.grant", "object": "user/dev1", "tenant": "acme", "detail": {"role": "admin", "namespace": "api", "previous": null}}),
        json!({"actor": "admin1", "action": "role.revoke", "object": "user/dev1", "tenant": "acme", "detail": {"role": "admin", "namespace": "api"}}),
        json!({"actor": "admin1", "action": "robot.create", "object": "robot/robot$acme+ci", "tenant": "acme", "detail": {"scopes": [{"namespace": null, "role": "viewer"}], "expires_at": null}}),
        json!({"actor": "admin1", "action": "robot.rotate", "object": "robot/robot$acme+ci", "tenant": "acme", "detail": null}),
        json!({"actor": "owner1", "action": "robot.revoke", "object": "robot/robot$acme+ci", "tenant": "acme", "detail": null}),
        json!({"actor": "dev1", "action": "user.password", "object": "user/dev1", "tenant": null, "detail": null}),
        json!({"actor": "admin", "action": "signing_key.rotate", "object": format!("signing_key/{kid}"), "tenant": null, "detail": null}),
    ];
    let mut last_id = 0;
    for want in expected {
        let mut want = want;
        want["source"] = "127.0.0.1".into();
        want["outcome"] = "success".into();
        let found = events.iter().find(|e| event_fields(e) == want);
        let found = found.unwrap_or_else(|| panic!("no event {want} in {}", Value::Array(events.clone())));
        recent(&found["at"]);
        let id = found["id"].as_i64().expect("id");
        assert!(id > last_id, "events are oldest first: {want}");
        last_id = id;
    }
    let denied: Vec<Value> = events.iter().filter(|e| e["outcome"] == "denied").map(event_fields).collect();
    assert_eq!(
        denied,
        [
            json!({"actor": "viewer1", "action": "namespace.create", "object": "namespace/sneaky", "tenant": "acme", "source": "127.0.0.1", "outcome": "denied", "detail": null}),
            json!({"actor": "admin1", "action": "role.grant", "object": "user/dev1", "tenant": "acme", "source": "127.0.0.1", "outcome": "denied", "detail": null}),
            json!({"actor": "outsider", "action": "tenant.create", "object": "tenant/mine", "tenant": null, "source": "127.0.0.1", "outcome": "denied", "detail": null}),
        ]
    );

    // Filters and paging.
    let r = api.audit(Who::Admin, "actor=admin1&action=robot.rotate").await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["object"], "robot/robot$acme+ci");
    // An action matches whole, or by one of its dotted parts; what is typed holds no wildcards.
    let actions = |events: Vec<Value>| {
        let mut names: Vec<String> = events.iter().filter_map(|e| e["action"].as_str().map(str::to_owned)).collect();
        names.sort();
        names.dedup();
        names
    };
    assert_eq!(
        actions(api.audit(Who::Admin, "action=robot&limit=1000").await),
        ["robot.create", "robot.revoke", "robot.rotate"]
    );
    assert_eq!(
        actions(api.audit(Who::Admin, "action=rotate&limit=1000").await),
        ["robot.rotate", "signing_key.rotate"]
    );
    assert_eq!(actions(api.audit(Who::Admin, "action=signing_key&limit=1000").await), ["signing_key.rotate"]);
    for literal in ["signing_ke_", "%25", "robot.%25", "obot"] {
        assert_eq!(api.audit(Who::Admin, &format!("action={literal}")).await, Vec::<Value>::new(), "{literal}");
    }
    let first = api.audit(Who::Admin, "limit=2").await;
    assert_eq!(first, events[..2]);
    let next = api.audit(Who::Admin, &format!("limit=3&after={}", first[1]["id"])).await;
    assert_eq!(next, events[2..5]);
    let since = events[0]["at"].as_i64().expect("at");
    assert_eq!(api.audit(Who::Admin, &format!("since={since}&limit=1000")).await, events);
    assert_eq!(api.audit(Who::Admin, &format!("since={}", now() + 100)).await, Vec::<Value>::new());
    let r = api.audit(Who::Admin, "tenant=globex").await;
    assert!(r.iter().all(|e| e["tenant"] == "globex") && !r.is_empty(), "{r:?}");
    for bad in ["limit=0", "limit=-3", "limit=many", "since=yesterday", "after=x"] {
        api.get(&format!("/api/v1/audit?{bad}"), Who::Admin).await.assert_error(400, "INVALID_REQUEST", bad);
    }
    assert_eq!(api.audit(Who::Admin, "limit=5000").await, events, "the limit is capped, not refused");
}

async fn tenant_admins_read_only_their_tenants_audit_events(backend: Backend) {
    let api = Api::start(backend);
    cast(&api).await;
    let r = api.post("/api/v1/tenants/globex/robots", Who::User("outsider"), json!({"name": "bot"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.post("/api/v1/tenants/acme/robots", Who::User("admin1"), json!({"name": "bot"})).await;
    assert_eq!(r.status, 201, "{}", r.body);

    let all = api.audit(Who::Admin, "limit=1000").await;
    let acme: Vec<Value> = all.iter().filter(|e| e["tenant"] == "acme").cloned().collect();
    let globex: Vec<Value> = all.iter().filter(|e| e["tenant"] == "globex").cloned().collect();
    assert!(acme.iter().any(|e| e["action"] == "robot.create"));
    assert!(globex.iter().any(|e| e["action"] == "robot.create"));
    for user in ["owner1", "admin1"] {
        assert_eq!(api.audit(Who::User(user), "limit=1000").await, acme, "{user}");
        assert_eq!(api.audit(Who::User(user), "tenant=acme&limit=1000").await, acme, "{user}");
        let a = api.get("/api/v1/audit?tenant=globex", Who::User(user)).await;
        let b = api.get("/api/v1/audit?tenant=nosuch", Who::User(user)).await;
        a.assert_error(403, "DENIED", "another tenant's events");
        b.assert_error(403, "DENIED", "a missing tenant's events");
        assert_eq!(a.message().replace("globex", "T"), b.message().replace("nosuch", "T"));
    }
    assert_eq!(api.audit(Who::User("outsider"), "limit=1000").await, globex);
    for user in ["dev1", "viewer1", "webadmin", "dataviewer"] {
        api.get("/api/v1/audit", Who::User(user)).await.assert_error(403, "DENIED", user);
        api.get("/api/v1/audit?tenant=acme", Who::User(user)).await.assert_error(403, "DENIED", user);
    }
}

async fn signing_key_rotation_keeps_old_tokens_valid_and_publishes_both_keys(backend: Backend) {
    let api = Api::start(backend);
    cast(&api).await;
    let jwks = api.get("/auth/jwks.json", Who::Nobody).await;
    let old_kids: Vec<Value> = jwks.body["keys"].as_array().expect("keys").iter().map(|k| k["kid"].clone()).collect();
    assert_eq!(old_kids.len(), 1, "{}", jwks.body);
    let old_token = api.access_token("owner1").await;

    for user in ["owner1", "outsider"] {
        let r = api.post("/api/v1/signing-keys/rotate", Who::User(user), json!(null)).await;
        r.assert_error(403, "DENIED", user);
    }
    let r = api.post("/api/v1/signing-keys/rotate", Who::Admin, json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let kid = r.body["kid"].clone();
    assert_eq!(r.body, json!({"kid": kid}));
    assert!(kid.as_str().is_some_and(|k| !k.is_empty()));
    assert!(!old_kids.contains(&kid));

    let jwks = api.get("/auth/jwks.json", Who::Nobody).await;
    let mut kids: Vec<Value> = jwks.body["keys"].as_array().expect("keys").iter().map(|k| k["kid"].clone()).collect();
    kids.sort_by_key(|k| k.as_str().unwrap_or_default().to_owned());
    let mut want = vec![old_kids[0].clone(), kid.clone()];
    want.sort_by_key(|k| k.as_str().unwrap_or_default().to_owned());
    assert_eq!(kids, want);

    // Tokens signed by the old key keep working; new ones are signed by the new key.
    assert_eq!(api.get("/v2/", Who::Bearer(&old_token)).await.status, 200);
    assert_eq!(api.get("/api/v1/tenants/acme", Who::Bearer(&old_token)).await.status, 200);
    let new_token = api.access_token("owner1").await;
    assert_eq!(api.get("/v2/", Who::Bearer(&new_token)).await.status, 200);
    assert!(jwt_header(&new_token).contains(&format!("\"kid\":{kid}")), "{}", jwt_header(&new_token));
    assert!(jwt_header(&old_token).contains(&format!("\"kid\":{}", old_kids[0])));
}

/// The decoded header of a JWT.
fn jwt_header(token: &str) -> String {
    let header = token.split('.').next().unwrap_or_default();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in header.bytes() {
        let Some(v) = alphabet.iter().position(|a| *a == c) else { break };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn openapi_document_lists_every_endpoint_with_its_schemas(backend: Backend) {
    let api = Api::start(backend);
    let r = api.get("/api/v1/openapi.json", Who::Nobody).await;
    assert_eq!(r.status, 200);
    let doc = r.body;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string());
    let mut listed: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            listed.push(format!("{} {path}", method.to_uppercase()));
            assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
            assert!(operation["operationId"].is_string(), "{method} {path}");
        }
    }
    listed.sort();
    let mut expected = vec![
        "GET /api/v1/openapi.json",
        "GET /api/v1/tenants",
        "POST /api/v1/tenants",
        "POST /api/v1/tenants/{tenant}/clusters",
        "GET /api/v1/tenants/{tenant}",
        "GET /api/v1/tenants/{tenant}/clusters",
        "POST /api/v1/tenants/{tenant}/clusters/{cluster}/preheat",
        "POST /api/v1/tenants/{tenant}/clusters/{cluster}/token",
        "DELETE /api/v1/tenants/{tenant}/clusters/{cluster}",
        "GET /api/v1/tenants/{tenant}/clusters/{cluster}/preheat",
        "GET /api/v1/tenants/{tenant}/clusters/{cluster}/preheat/{job}",
        "GET /api/v1/tenants/{tenant}/namespaces",
        "POST /api/v1/tenants/{tenant}/namespaces",
        "GET /api/v1/namespaces/{namespace}",
        "PATCH /api/v1/namespaces/{namespace}",
        "GET /api/v1/tenants/{tenant}/members",
        "PUT /api/v1/tenants/{tenant}/members",
        "DELETE /api/v1/tenants/{tenant}/members",
        "GET /api/v1/tenants/{tenant}/robots",
        "POST /api/v1/tenants/{tenant}/robots",
        "POST /api/v1/tenants/{tenant}/robots/{robot}/rotate",
        "DELETE /api/v1/tenants/{tenant}/robots/{robot}",
        "GET /api/v1/users",
        "POST /api/v1/users",
        "PUT /api/v1/users/{username}/password",
        "GET /api/v1/audit",
        "POST /api/v1/signing-keys/rotate",
        "POST /api/v1/gc",
        "GET /api/v1/gc/runs",
        "GET /api/v1/gc/runs/{id}",
        "GET /api/v1/tenants/{tenant}/quota",
        "PUT /api/v1/tenants/{tenant}/quota",
        "GET /api/v1/namespaces/{namespace}/quota",
        "PUT /api/v1/namespaces/{namespace}/quota",
        "GET /api/v1/namespaces/{namespace}/lifecycle",
        "PUT /api/v1/namespaces/{namespace}/lifecycle",
        "GET /api/v1/namespaces/{namespace}/lifecycle/preview",
    ];
    expected.sort();
    assert_eq!(listed, expected);
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(_, i)| i.as_object().into_iter().flatten())
        .filter_map(|(_, o)| o["operationId"].as_str())
        .collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "operation ids are unique");

    // Request and response bodies are described by schemas in the document.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "Tenant",
        "TenantDetail",
        "NewTenant",
        "Namespace",
        "NewNamespace",
        "NamespaceChange",
        "Member",
        "Grant",
        "Role",
        "MemberKind",
        "Robot",
        "NewRobot",
        "CreatedRobot",
        "RotatedToken",
        "Scope",
        "User",
        "NewUser",
        "NewPassword",
        "AuditEvent",
        "AuditPage",
        "SigningKey",
        "NewPreheat",
        "PreheatJob",
        "PreheatNode",
        "PreheatState",
        "ErrorBody",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert_eq!(doc["components"]["schemas"]["Role"]["enum"], json!(["owner", "admin", "developer", "viewer"]));
    let create_robot = &doc["paths"]["/api/v1/tenants/{tenant}/robots"]["post"];
    assert_eq!(
        create_robot["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/NewRobot"
    );
    assert_eq!(
        create_robot["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreatedRobot"
    );
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    assert_eq!(schemes["basic"]["scheme"], "basic");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
}

async fn repeated_failed_logins_are_throttled_with_retry_after(backend: Backend) {
    let api = Api::start(backend);
    let mut last = None;
    for _ in 0..30 {
        let r = api.get("/api/v1/tenants", Who::Basic(ADMIN_USER, "wrong-password")).await;
        if r.status == 429 {
            last = Some(r);
            break;
        }
        r.assert_error(401, "UNAUTHORIZED", "wrong password");
    }
    let r = last.expect("throttled within 30 failures");
    r.assert_error(429, "TOOMANYREQUESTS", "throttled");
    let retry: u64 = r.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Even the right password waits while the name is blocked.
    let r = api.get("/api/v1/tenants", Who::Admin).await;
    r.assert_error(429, "TOOMANYREQUESTS", "right password while blocked");
}

/// A tenant's admins and owners give a cluster a new token, which ends the old one at once,
/// or delete it, which also ends every namespace's preheating into it; nobody else may.
async fn clusters_get_a_new_token_or_are_deleted_by_their_tenant_s_admins_only(backend: Backend) {
    let api = Api::start(backend);
    cast(&api).await;
    let r = api.post("/api/v1/tenants/acme/clusters", Who::User("admin1"), json!({"name": "edge"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let first = r.body["token"].as_str().expect("token").to_owned();
    let r = api
        .patch("/api/v1/namespaces/web", Who::User("admin1"), json!({"preheat_on_push": [{"cluster": "edge"}]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(setup_status(&api, &first).await, 200);

    let token = "/api/v1/tenants/acme/clusters/edge/token";
    let cluster = "/api/v1/tenants/acme/clusters/edge";
    for who in ["dev1", "viewer1", "webadmin", "outsider"] {
        api.post(token, Who::User(who), json!(null)).await.assert_error(403, "DENIED", who);
        api.delete(cluster, Who::User(who)).await.assert_error(403, "DENIED", who);
    }
    // Another tenant's owner gets the same words for a cluster that exists and one that does not.
    let there = api.delete(cluster, Who::User("outsider")).await;
    let nowhere = api.delete("/api/v1/tenants/acme/clusters/nosuch", Who::User("outsider")).await;
    assert_eq!(there.message(), nowhere.message());
    let r = api.post("/api/v1/tenants/acme/clusters/nosuch/token", Who::User("admin1"), json!(null)).await;
    r.assert_error(404, "NOT_FOUND", "an unknown cluster");
    assert_eq!(setup_status(&api, &first).await, 200, "refusals change nothing");

    let r = api.post(token, Who::User("owner1"), json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"], "edge");
    let second = r.body["token"].as_str().expect("token").to_owned();
    assert!(second.starts_with("dfc_") && second != first, "{second}");
    assert_eq!(setup_status(&api, &first).await, 401, "the old token stops working at once");
    assert_eq!(setup_status(&api, &second).await, 200);

    assert_eq!(api.delete(cluster, Who::User("admin1")).await.status, 204);
    assert_eq!(api.get("/api/v1/tenants/acme/clusters", Who::User("admin1")).await.body, json!([]));
    let web = api.get("/api/v1/namespaces/web", Who::User("admin1")).await;
    assert_eq!(web.body["preheat_on_push"], json!([]), "no namespace preheats into a deleted cluster");
    assert_eq!(setup_status(&api, &second).await, 401);
    api.delete(cluster, Who::User("admin1")).await.assert_error(404, "NOT_FOUND", "deleted twice");

    let done: Vec<(String, String, String)> = api
        .audit(Who::Admin, "action=cluster&limit=1000")
        .await
        .iter()
        .filter(|e| e["outcome"] == "success")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("actor"), s("action"), s("object"))
        })
        .collect();
    let object = "cluster/acme/edge".to_owned();
    assert_eq!(
        done,
        [
            ("admin1".to_owned(), "cluster.create".to_owned(), object.clone()),
            ("owner1".to_owned(), "cluster.token".to_owned(), object.clone()),
            ("admin1".to_owned(), "cluster.delete".to_owned(), object),
        ]
    );
}

/// The status of `GET /p2p/v1/install.sh` with cluster token `token`.
async fn setup_status(api: &Api, token: &str) -> u16 {
    let request = api.http.request(&Cred::Anonymous, Method::GET, "/p2p/v1/install.sh");
    api.http.send(request.header("authorization", format!("Cluster {token}"))).await.status
}
