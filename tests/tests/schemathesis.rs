//! The management API against its own OpenAPI document, with schemathesis
//! (PyPI, in the venv `scripts/test.sh` makes under target/pyenv): every
//! phase (coverage, fuzzing, and the stateful phase that follows the
//! document's links from a new tenant to its namespaces, robots, clusters
//! and members), every check (no 5xx, every answer in its documented schema
//! and status, schema-valid bodies accepted, invalid ones refused), first as
//! the system administrator and then as a viewer of one tenant.
//!
//! Then every documented error status must have been seen: from the two
//! runs (kept as HAR files), and from sweeps over every operation that a
//! bounded run may not reach by chance: no credentials (401), a locked-out
//! login (429), a caller with no role (403), the administrator naming what
//! does not exist (404), and the conflicts (409).
//!
//! CI runs a bounded number of examples per operation (10, about a minute
//! here); `scripts/schemathesis.sh` runs the long form.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use damselfly_tests::http::{Cred, Http};
use damselfly_tests::kubernetes::pyenv_bin;
use damselfly_tests::{Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};
use reqwest::Method;
use serde_json::{json, Value};

/// A user whose password the runs may change (never the one they log in as).
const VICTIM: &str = "st-victim";
/// A user who is a viewer of the `default` tenant and nothing else.
const VIEWER: &str = "st-viewer";
const VIEWER_PASSWORD: &str = "st-viewer-password";
/// What the sweeps name where a path wants an object: nothing has this name.
const NONE_SUCH: &str = "none-such";

/// Examples per operation: `DAMSELFLY_SCHEMATHESIS_EXAMPLES`, 10 by default.
fn examples() -> u32 {
    std::env::var("DAMSELFLY_SCHEMATHESIS_EXAMPLES").ok().and_then(|n| n.parse().ok()).unwrap_or(10)
}

/// One operation of the document.
struct Operation {
    method: Method,
    path: String,
    id: String,
    /// Documented statuses.
    statuses: BTreeSet<u16>,
}

impl Operation {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Whether a request path is this operation's path template.
    fn matches(&self, method: &str, path: &str) -> bool {
        let (template, actual): (Vec<&str>, Vec<&str>) = (self.path.split('/').collect(), path.split('/').collect());
        self.method.as_str() == method
            && template.len() == actual.len()
            && template.iter().zip(&actual).all(|(t, a)| (t.starts_with('{') && !a.is_empty()) || t == a)
    }

    /// The path with every parameter named `value`.
    fn path_with(&self, value: &str) -> String {
        self.path.split('/').map(|s| if s.starts_with('{') { value } else { s }).collect::<Vec<_>>().join("/")
    }

    /// A body (and query) the operation's schema accepts, so that a sweep's
    /// request is refused for who sends it, not for what it says.
    fn valid_request(&self, path: &str) -> (String, Value) {
        let body = match self.id.as_str() {
            // What the administrator's sweep creates is not what the others name.
            "createTenant" => json!({ "name": "made-by-a-sweep" }),
            "createNamespace" | "createRobot" | "createCluster" => json!({ "name": NONE_SUCH }),
            "updateNamespace" | "setTenantQuota" | "setNamespaceQuota" | "setNamespaceLifecycle" => json!({}),
            "grantRole" => json!({ "kind": "user", "name": NONE_SUCH, "role": "viewer" }),
            "startPreheat" => json!({ "repository": format!("{NONE_SUCH}/app"), "tag": "1" }),
            "createUser" => json!({ "username": "made-by-a-sweep", "password": "a-long-password" }),
            "setPassword" => json!({ "password": "a-long-password" }),
            _ => Value::Null,
        };
        let query = match self.id.as_str() {
            "revokeRole" => format!("?kind=user&name={NONE_SUCH}"),
            "listAuditEvents" => format!("?tenant={NONE_SUCH}"),
            _ => String::new(),
        };
        (format!("{path}{query}"), body)
    }
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            let statuses = op["responses"].as_object().expect("responses").keys().map(|s| s.parse().expect("a status"));
            out.push(Operation {
                method: method.to_uppercase().parse().expect("a method"),
                path: path.clone(),
                id: op["operationId"].as_str().expect("an operationId").to_owned(),
                statuses: statuses.collect(),
            });
        }
    }
    out
}

/// Statuses seen, by operation name, and where each was first seen.
#[derive(Default)]
struct Seen(BTreeMap<(String, u16), String>);

impl Seen {
    fn record(&mut self, ops: &[Operation], method: &str, path: &str, status: u16, source: &str) {
        let op = ops.iter().find(|o| o.matches(method, path));
        let op = op.unwrap_or_else(|| panic!("{method} {path} ({source}) is no operation of the document"));
        self.record_for(op, method, path, status, source);
    }

    fn record_for(&mut self, op: &Operation, method: &str, path: &str, status: u16, source: &str) {
        assert!(
            op.statuses.contains(&status),
            "{method} {path} answered {status}, which {} does not document ({source})",
            op.name()
        );
        self.0.entry((op.name(), status)).or_insert_with(|| source.to_owned());
    }

    fn sources(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for source in self.0.values() {
            *counts.entry(source.as_str()).or_default() += 1;
        }
        counts
    }
}

/// Runs `st run` against `reg` as `user`; panics with its output unless every check passed.
fn schemathesis(reg: &Registry, user: &str, password: &str, examples: u32, report_dir: &Path) {
    let st = pyenv_bin("st");
    assert!(
        st.exists(),
        "{} not found: scripts/test.sh installs schemathesis into target/pyenv \
         (or: target/pyenv/bin/pip install schemathesis)",
        st.display()
    );
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis.toml");
    let started = std::time::Instant::now();
    std::fs::create_dir_all(report_dir).expect("the report directory");
    let out = Command::new(&st)
        // Its cache (.schemathesis/) goes with the reports, not into the source tree.
        .current_dir(report_dir)
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .args(["run", &format!("{}/api/v1/openapi.json", reg.url)])
        .args(["--max-examples", &examples.to_string(), "--seed", "21", "--report", "har", "--report-dir", "."])
        .env("DAMSELFLY_ST_USER", user)
        .env("DAMSELFLY_ST_PASSWORD", password)
        .env("DAMSELFLY_ST_VICTIM", VICTIM)
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis as {user} found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().filter(|l| l.contains(" generated, ")).map(str::trim).collect::<Vec<_>>();
    eprintln!(
        "schemathesis as {user}, {examples} examples per operation, {:.0?}: {}",
        started.elapsed(),
        summary.join("")
    );
}

/// Every request and answer in the HAR files under `dir`.
fn har_entries(dir: &Path) -> Vec<(String, String, u16)> {
    let mut out = Vec::new();
    for file in std::fs::read_dir(dir)
        .expect("the report directory")
        .flatten()
        .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
    {
        let har: Value = serde_json::from_slice(&std::fs::read(file.path()).expect("read the HAR")).expect("HAR JSON");
        for entry in har["log"]["entries"].as_array().expect("entries") {
            let url = reqwest::Url::parse(entry["request"]["url"].as_str().expect("a URL")).expect("a URL");
            let method = entry["request"]["method"].as_str().expect("a method").to_owned();
            let status = entry["response"]["status"].as_u64().expect("a status") as u16;
            out.push((method, url.path().to_owned(), status));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_management_api_answers_as_its_openapi_document_says() {
    // Wrong credentials are sent on purpose; with the default limit they would lock the runs out.
    let reg = Registry::start_with(Backend::Sqlite, &[("DAMSELFLY_LOGIN_FAILURES_PER_MINUTE", "1000000")]);
    let http = Http::new(&reg);
    for user in [VICTIM, VIEWER] {
        http.admin_api(Method::POST, "/api/v1/users", json!({ "username": user, "password": VIEWER_PASSWORD })).await;
    }
    let grant = json!({ "kind": "user", "name": VIEWER, "role": "viewer" });
    http.admin_api(Method::PUT, "/api/v1/tenants/default/members", grant).await;
    let doc = http.get(&Cred::Anonymous, "/api/v1/openapi.json").await.expect(200).json();
    let ops = operations(&doc);
    let reports = tempfile::tempdir().expect("temp dir");
    let mut seen = Seen::default();

    for (user, password, examples) in
        [(ADMIN_USER, ADMIN_PASSWORD, examples()), (VIEWER, VIEWER_PASSWORD, examples() / 2)]
    {
        let dir = reports.path().join(user);
        tokio::task::block_in_place(|| schemathesis(&reg, user, password, examples.max(1), &dir));
        // Requests with methods the document does not list (schemathesis checks those get 405) are no operation's.
        for (method, path, status) in har_entries(&dir) {
            if let Some(op) = ops.iter().find(|o| o.matches(&method, &path)) {
                seen.record_for(op, &method, &path, status, &format!("schemathesis as {user}"));
            }
        }
    }

    // Sweeps: each sends every operation a request its schema accepts.
    let viewer = Cred::basic(VIEWER, VIEWER_PASSWORD);
    for op in &ops {
        let (path, body) = op.valid_request(&op.path_with(NONE_SUCH));
        for (cred, source) in
            [(Cred::Anonymous, "no credentials"), (viewer.clone(), "a viewer"), (Cred::admin(), "the administrator")]
        {
            let reply = http.api(&cred, op.method.clone(), &path, body.clone()).await;
            assert!(reply.status < 500, "{} {path} as {source}: {} {}", op.method, reply.status, reply.text());
            seen.record(&ops, op.method.as_str(), &op.path_with(NONE_SUCH), reply.status, source);
        }
    }
    conflicts(&http, &ops, &mut seen).await;
    locked_out(&ops, &mut seen).await;

    let missing: Vec<String> = ops
        .iter()
        .flat_map(|op| op.statuses.iter().filter(|s| **s >= 400).map(move |s| (op.name(), *s)))
        .filter(|key| !seen.0.contains_key(key))
        .map(|(name, status)| format!("{name}: {status}"))
        .collect();
    eprintln!("documented statuses seen, by the source that saw each first: {:?}", seen.sources());
    assert!(missing.is_empty(), "documented errors no request reached:\n{}", missing.join("\n"));
}

/// The conflicts: a name taken, a robot revoked, P2P off.
async fn conflicts(http: &Http, ops: &[Operation], seen: &mut Seen) {
    http.admin_api(Method::POST, "/api/v1/tenants", json!({ "name": "taken" })).await;
    for what in ["namespaces", "clusters", "robots"] {
        http.admin_api(Method::POST, &format!("/api/v1/tenants/taken/{what}"), json!({ "name": "taken" })).await;
    }
    http.admin_api(Method::DELETE, "/api/v1/tenants/taken/robots/taken", Value::Null).await;
    let taken = json!({ "name": "taken" });
    let cases = [
        (Method::POST, "/api/v1/tenants", taken.clone()),
        (Method::POST, "/api/v1/tenants/default/namespaces", taken.clone()),
        (Method::POST, "/api/v1/tenants/taken/clusters", taken.clone()),
        (Method::POST, "/api/v1/tenants/taken/robots", taken),
        (Method::POST, "/api/v1/tenants/taken/robots/taken/rotate", Value::Null),
        (Method::POST, "/api/v1/users", json!({ "username": VIEWER, "password": "a-long-password" })),
        // The namespace `taken` has P2P off.
        (
            Method::POST,
            "/api/v1/tenants/taken/clusters/taken/preheat",
            json!({ "repository": "taken/app", "tag": "1" }),
        ),
    ];
    for (method, path, body) in cases {
        let reply = http.api(&Cred::admin(), method.clone(), path, body).await;
        assert_eq!(reply.status, 409, "{method} {path}: {}", reply.text());
        seen.record(ops, method.as_str(), path, 409, "the conflicts");
    }
}

/// A registry with the default login limit, locked out for the address
/// after ten failed logins: every operation that takes credentials answers 429.
async fn locked_out(ops: &[Operation], seen: &mut Seen) {
    let reg = Registry::start(Backend::Sqlite);
    let http = Http::new(&reg);
    let intruder = Cred::basic("intruder", "wrong");
    for _ in 0..10 {
        assert_eq!(http.get(&intruder, "/api/v1/tenants").await.status, 401);
    }
    for op in ops.iter().filter(|op| op.statuses.contains(&429)) {
        let (path, body) = op.valid_request(&op.path_with(NONE_SUCH));
        let reply = http.api(&intruder, op.method.clone(), &path, body).await;
        assert_eq!(reply.status, 429, "{} {path}: {}", op.method, reply.text());
        assert!(reply.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)));
        assert_eq!(reply.code().as_deref(), Some("TOOMANYREQUESTS"));
        seen.record(ops, op.method.as_str(), &op.path_with(NONE_SUCH), 429, "a locked-out login");
    }
}
