//! The tenants rows of the security matrix, on a real `damselfly-registry`:
//! every route of `/v2`, `/api/v1`, `/console` and `/p2p/v1`, asked about
//! tenant `alpha`'s things by four kinds of caller who must not have them:
//!
//! | class     | who                                                          |
//! |-----------|--------------------------------------------------------------|
//! | other     | bob, owner of tenant `beta`; on `/p2p/v1`, beta's cluster     |
//! | viewer    | vera, viewer on the whole of `alpha`                         |
//! | robot     | `robot$alpha+builder`, developer on namespace `alpha-other` only  |
//! | anonymous | no credentials                                               |
//!
//! each with every credential it has (Basic and a bearer token; a console
//! sign-in; a cluster token and a ticket). For every refusal the answer is
//! the one `matrix()` says, it names no secret of alpha's, and it is the
//! same, word for word once the names asked for are set aside, whether what
//! was asked about exists or not: an existing repository, one that does not
//! exist in an existing namespace, and one in a namespace nobody created;
//! likewise tenants, robots, users, clusters, jobs, agents and digests. (The
//! viewer belongs to alpha and may see its tenant, namespaces and
//! repositories, and the robot its tenant and namespaces: for them only
//! what lies in repositories the robot may not pull is compared.) Where the
//! Distribution spec lets a refusal be a 404 it still is not: a 404 would
//! say that something does not exist.
//!
//! `the_matrix_lists_every_route_of_the_routers` reads the routers' source
//! and fails when a route exists that the matrix does not list (or the
//! other way round), so a new route cannot be forgotten.
//!
//! `refusals_take_as_long_whether_the_target_exists_or_not` times each
//! refusal of the other tenant, for an existing target and an absent one,
//! in back-to-back pairs: the median of the pairs' ratios of answer times
//! must be within a factor of [`TIMING_FACTOR`] either way. Pairing cancels
//! much of the load other processes put on a shared machine; a route fails
//! only when three measurements in a row are past the bound on the same side.
//! Being a measurement of time, it is ignored in the suite and run by
//! `scripts/security-timing.sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use damselfly_tests::http::{
    create_namespace, create_robot, create_tenant, create_user, grant_role, management_api_is_up, Cred, Http,
};
use damselfly_tests::image::{push_image, Image, OCI_MANIFEST};
use damselfly_tests::{on_both_backends, sha256_digest, Backend, Registry};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(every_route_refuses_other_tenants_viewers_robots_outside_their_scope_and_anonymous_alike);

/// The timing rows measure answer times, which on a loaded machine say as
/// much about the other processes as about the registry: they are a
/// campaign, run by `scripts/security-timing.sh`, not part of the suite.
mod refusals_take_as_long_whether_the_target_exists_or_not {
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "timing campaign: scripts/security-timing.sh"]
    async fn sqlite() {
        super::refusals_take_as_long_whether_the_target_exists_or_not(damselfly_tests::Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "timing campaign: scripts/security-timing.sh"]
    async fn postgres() {
        super::refusals_take_as_long_whether_the_target_exists_or_not(damselfly_tests::Backend::Postgres).await
    }
}

/// How far from 1 the median ratio of a refusal's answer times, for an
/// existing target over an absent one, may be: a factor, either way. On
/// this 2-core machine under the load of other builds, identical work on
/// both sides gave ratios from ×0.6 to ×1.9 at 31 pairs: a difference much
/// smaller than the answer itself (one query more) is below what this can
/// tell apart; work the size of a password check or a blob read is not.
const TIMING_FACTOR: f64 = 1.5;
/// Back-to-back pairs per route in the timing test.
const TIMING_SAMPLES: usize = 31;

/// Who asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Other,
    Viewer,
    Robot,
    Anonymous,
}

const CLASSES: [Class; 4] = [Class::Other, Class::Viewer, Class::Robot, Class::Anonymous];

/// Which part of the registry a route belongs to: it decides how a refusal looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V2,
    Api,
    Console,
    P2p,
    Public,
}

/// What a class gets from a route.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// It may: anything but a server error.
    Allow,
    /// The family's refusal for that credential.
    Deny,
    /// Exactly this status and error code, for every credential of the class.
    Is(u16, Option<&'static str>),
}

use Outcome::{Allow, Deny, Is};

/// What a request is about. `alpha`'s real things, or names of things that do not exist.
#[derive(Clone, Debug)]
struct Target {
    tenant: String,
    ns: String,
    repo: String,
    /// A blob of the repository.
    blob: String,
    /// A manifest of the repository.
    manifest: String,
    upload: String,
    robot: String,
    user: String,
    cluster: String,
    job: String,
    agent: String,
}

/// One request, as built for a target.
#[derive(Clone, Debug)]
struct Req {
    method: Method,
    path: String,
    body: Body,
}

#[derive(Clone, Debug)]
enum Body {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
    Bytes(&'static str, Vec<u8>),
}

/// One row of the matrix: a route, how to ask it about a target, and what each class gets.
struct Case {
    family: Family,
    /// The route as the inventory names it: `(method, pattern)`.
    route: (&'static str, &'static str),
    build: Box<dyn Fn(&World, &Target) -> Req + Send + Sync>,
    outcomes: [Outcome; 4],
    /// False for routes that name no target: nothing to compare across targets.
    targeted: bool,
}

fn req(method: Method, path: String, body: Body) -> Req {
    Req { method, path, body }
}

/// Everything the matrix asks about, and everyone who asks.
struct World {
    reg: Registry,
    http: Http,
    alpha: Target,
    /// Absent targets: nothing of these names exists.
    absent: Vec<Target>,
    image: Image,
    bob: Cred,
    vera: Cred,
    robot: Cred,
    beta_cluster: String,
    beta_agent: String,
    beta_ticket: String,
    sessions: BTreeMap<Class, (String, String)>,
    /// Strings of alpha's that no refusal may contain.
    secrets: Vec<String>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

async fn register_agent(http: &Http, cluster_token: &str, node: &str) -> String {
    let request = http
        .request(&Cred::Anonymous, Method::POST, "/p2p/v1/agents")
        .header("authorization", format!("Cluster {cluster_token}"))
        .json(&json!({ "node": node, "ip": "127.0.0.1", "peer_port": 9 }));
    http.send(request).await.expect(200).json()["agent_id"].as_str().expect("agent id").to_owned()
}

async fn cluster(http: &Http, tenant: &str, name: &str) -> String {
    let path = format!("/api/v1/tenants/{tenant}/clusters");
    http.admin_api(Method::POST, &path, json!({ "name": name })).await["token"].as_str().expect("token").to_owned()
}

/// Signs in to the console as a browser would; the session cookie and the form token.
async fn console_session(reg: &Registry, user: &str, password: &str) -> (String, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let form = client.get(format!("{}/console/login", reg.url)).send().await.expect("login page");
    let login_cookie = cookie(form.headers(), "damselfly_login");
    let csrf = csrf_of(&form.text().await.expect("page"));
    let r = client
        .post(format!("{}/console/login", reg.url))
        .header("cookie", login_cookie)
        .form(&[("username", user), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), 303, "{user} signs in");
    let session = cookie(r.headers(), "damselfly_session");
    let page = client
        .get(format!("{}/console/tenants", reg.url))
        .header("cookie", &session)
        .send()
        .await
        .expect("tenants page")
        .text()
        .await
        .expect("page");
    (session, csrf_of(&page))
}

fn cookie(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .to_owned()
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap_or_else(|| panic!("no CSRF field in:\n{html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("closing quote")].to_owned()
}

impl World {
    async fn build(backend: Backend) -> World {
        let reg = Registry::start(backend);
        let http = Http::new(&reg);
        management_api_is_up(&http).await;
        let admin = Cred::admin();
        for (tenant, namespaces) in [("alpha", &["alpha-apps", "alpha-other"][..]), ("beta", &["beta-apps"][..])] {
            create_tenant(&http, tenant).await;
            for ns in namespaces {
                create_namespace(&http, tenant, ns, false).await;
                let path = format!("/api/v1/namespaces/{ns}");
                http.admin_api(Method::PATCH, &path, json!({ "p2p_enabled": true })).await;
            }
        }
        create_user(&http, "olive", "olive-password").await;
        grant_role(&http, "alpha", "user", "olive", None, "owner").await;
        create_user(&http, "vera", "vera-password").await;
        grant_role(&http, "alpha", "user", "vera", None, "viewer").await;
        create_user(&http, "bob", "bob-password").await;
        grant_role(&http, "beta", "user", "bob", None, "owner").await;
        let body = json!({ "name": "builder", "description": "alpha-secret-marker robot",
            "scopes": [{ "namespace": "alpha-other", "role": "developer" }] });
        let made = http.api(&admin, Method::POST, "/api/v1/tenants/alpha/robots", body).await.expect(201).json();
        let robot = Cred::basic(made["login"].as_str().expect("login"), made["token"].as_str().expect("token"));
        let image = push_image(&http, &admin, "alpha-apps/app", "alpha-secret-marker").await;
        push_image(&http, &admin, "alpha-other/app", "alpha other").await;
        let beta_image = push_image(&http, &admin, "beta-apps/app", "beta").await;
        let started =
            http.send(http.request(&admin, Method::POST, "/v2/alpha-apps/app/blobs/uploads/")).await.expect(202);
        let upload = started.header("docker-upload-uuid").expect("upload id").to_owned();

        let alpha_cluster = cluster(&http, "alpha", "alpha-edge").await;
        let beta_cluster = cluster(&http, "beta", "beta-edge").await;
        let alpha_agent = register_agent(&http, &alpha_cluster, "alpha-node").await;
        let beta_agent = register_agent(&http, &beta_cluster, "beta-node").await;
        let job = http
            .admin_api(
                Method::POST,
                "/api/v1/tenants/alpha/clusters/alpha-edge/preheat",
                json!({ "repository": "alpha-apps/app", "tag": "v1" }),
            )
            .await["id"]
            .as_str()
            .expect("job id")
            .to_owned();
        // Beta's ticket, for beta's own blob, from beta's cluster.
        let beta_robot = create_robot(&http, "beta", "puller", json!([{ "role": "viewer" }])).await;
        let (beta_token, _) = http.token(&beta_robot, &["repository:beta-apps/app:pull"]).await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let join = json!({ "agent_id": beta_agent, "repository": "beta-apps/app",
            "digest": beta_image.layer.digest, "client_token": beta_token });
        let request = http
            .request(&Cred::Anonymous, Method::POST, "/p2p/v1/swarms/join")
            .header("authorization", format!("Cluster {beta_cluster}"))
            .json(&join);
        let beta_ticket = http.send(request).await.expect(200).json()["ticket"].as_str().expect("ticket").to_owned();
        assert!(!beta_ticket.is_empty(), "beta's namespace is accelerated for beta's cluster");

        // The stand-in agents stay known while the matrix runs.
        let keep = http.clone();
        let beats = [(alpha_cluster.clone(), alpha_agent.clone()), (beta_cluster.clone(), beta_agent.clone())];
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                for (token, agent) in &beats {
                    let path = format!("/p2p/v1/agents/{agent}/heartbeat");
                    let request = keep
                        .request(&Cred::Anonymous, Method::POST, &path)
                        .header("authorization", format!("Cluster {token}"));
                    keep.send(request).await;
                }
            }
        });

        let mut sessions = BTreeMap::new();
        sessions.insert(Class::Other, console_session(&reg, "bob", "bob-password").await);
        sessions.insert(Class::Viewer, console_session(&reg, "vera", "vera-password").await);

        let alpha = Target {
            tenant: "alpha".into(),
            ns: "alpha-apps".into(),
            repo: "alpha-apps/app".into(),
            blob: image.layer.digest.clone(),
            manifest: image.digest.clone(),
            upload,
            robot: "builder".into(),
            user: "olive".into(),
            cluster: "alpha-edge".into(),
            job,
            agent: alpha_agent,
        };
        let nothing = sha256_digest(b"nothing of that name exists");
        let half = Target {
            repo: "alpha-apps/nosuch".into(),
            blob: nothing.clone(),
            manifest: sha256_digest(b"no such manifest"),
            upload: "00000000-0000-4000-8000-000000000000".into(),
            robot: "nosuch-robot".into(),
            user: "nosuch-user".into(),
            cluster: "nosuch-cluster".into(),
            job: "nosuch-job".into(),
            agent: "nosuch-agent".into(),
            ..alpha.clone()
        };
        let none = Target {
            tenant: "nosuch-tenant".into(),
            ns: "nosuch-ns".into(),
            repo: "nosuch-ns/app".into(),
            ..half.clone()
        };
        let secrets = vec![
            "alpha-secret-marker".to_owned(),
            image.manifest.clone(),
            made["token"].as_str().expect("token").to_owned(),
        ];
        World {
            reg,
            http,
            alpha,
            absent: vec![half, none],
            image,
            bob: Cred::basic("bob", "bob-password"),
            vera: Cred::basic("vera", "vera-password"),
            robot,
            beta_cluster,
            beta_agent,
            beta_ticket,
            sessions,
            secrets,
            heartbeat,
        }
    }

    /// What a class sends on a family's routes, about `target`: each credential it has, by name.
    /// On `/p2p/v1`, the other tenant's cluster sends its cluster token, and
    /// its ticket to the seed (`pattern` tells which route).
    async fn credentials(
        &self,
        family: Family,
        pattern: &str,
        class: Class,
        target: &Target,
    ) -> Vec<(&'static str, Credential)> {
        let basic = match class {
            Class::Other => Some(&self.bob),
            Class::Viewer => Some(&self.vera),
            Class::Robot => Some(&self.robot),
            Class::Anonymous => None,
        };
        let bearer = |scopes: Vec<String>| async move {
            let basic = basic?;
            let asked: Vec<&str> = scopes.iter().map(String::as_str).collect();
            Some(self.http.token(basic, &asked).await.0)
        };
        match (family, class) {
            (Family::Console, c) => match self.sessions.get(&c) {
                Some((cookie, csrf)) => vec![("console sign-in", Credential::Session(cookie.clone(), csrf.clone()))],
                None => match basic {
                    // A robot cannot sign in to the console; its Basic credentials open nothing there.
                    Some(b) => vec![("basic", Credential::Plain(b.clone()))],
                    None => vec![("none", Credential::Plain(Cred::Anonymous))],
                },
            },
            (Family::P2p, Class::Other) if pattern.starts_with("/p2p/v1/seed/") => {
                vec![("ticket", Credential::Header(format!("Ticket {}", self.beta_ticket)))]
            }
            (Family::P2p, Class::Other) => {
                vec![("cluster token", Credential::Header(format!("Cluster {}", self.beta_cluster)))]
            }
            (_, Class::Anonymous) => vec![("none", Credential::Plain(Cred::Anonymous))],
            (family, _) => {
                let scopes = match family {
                    Family::V2 => {
                        vec![format!("repository:{}:pull,push,delete", target.repo), "registry:catalog:*".into()]
                    }
                    _ => Vec::new(),
                };
                let token = bearer(scopes).await.expect("a bearer token");
                vec![
                    ("basic", Credential::Plain(basic.expect("basic").clone())),
                    ("bearer", Credential::Plain(Cred::Bearer(token))),
                ]
            }
        }
    }

    /// Sends a request with a credential on a fresh connection; the answer, read whole.
    async fn send(&self, r: &Req, credential: &Credential) -> Answer {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        self.send_with(&client, r, credential).await
    }

    /// Sends a request with a credential through `client`; the answer, read whole.
    async fn send_with(&self, client: &reqwest::Client, r: &Req, credential: &Credential) -> Answer {
        let url = format!("{}{}", self.reg.url, r.path);
        let mut request = client.request(r.method.clone(), url);
        let mut form = match &r.body {
            Body::Form(fields) => Some(fields.clone()),
            _ => None,
        };
        match credential {
            Credential::Plain(cred) => request = cred.apply(request),
            Credential::Header(value) => request = request.header("authorization", value),
            Credential::Session(cookie, csrf) => {
                request = request.header("cookie", cookie);
                if let Some(f) = form.as_mut() {
                    // Confirmed, as the confirmation page posts it: the request that acts is the one to refuse.
                    f.push(("csrf".into(), csrf.clone()));
                    f.push(("confirmed".into(), "yes".into()));
                }
            }
        }
        request = match (&r.body, form) {
            (_, Some(fields)) => request.form(&fields),
            (Body::Json(v), _) => request.json(v),
            (Body::Bytes(ctype, bytes), _) => request.header("content-type", *ctype).body(bytes.clone()),
            _ => request,
        };
        let started = Instant::now();
        let resp = request.send().await.unwrap_or_else(|e| panic!("{} {}: no answer: {e}", r.method, r.path));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        let elapsed = started.elapsed();
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Answer {
            status,
            code: serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned)),
            challenge: header("www-authenticate"),
            location: header("location"),
            body: String::from_utf8_lossy(&body).into_owned(),
            elapsed,
        }
    }
}

#[derive(Clone, Debug)]
enum Credential {
    /// Basic, Bearer or nothing.
    Plain(Cred),
    /// An `Authorization` header as it is (a cluster token, a ticket).
    Header(String),
    /// A console session cookie and its form token.
    Session(String, String),
}

#[derive(Debug)]
struct Answer {
    status: u16,
    code: Option<String>,
    challenge: Option<String>,
    location: Option<String>,
    body: String,
    elapsed: Duration,
}

/// The answer with the names of what was asked about set aside.
fn normalized(answer: &Answer, target: &Target) -> (u16, Option<String>, Option<String>, Option<String>, String) {
    let mut names = vec![
        (&target.repo, "<repo>"),
        (&target.blob, "<blob>"),
        (&target.manifest, "<manifest>"),
        (&target.upload, "<upload>"),
        (&target.job, "<job>"),
        (&target.agent, "<agent>"),
        (&target.cluster, "<cluster>"),
        (&target.tenant, "<tenant>"),
        (&target.ns, "<ns>"),
        (&target.robot, "<robot>"),
        (&target.user, "<user>"),
    ];
    names.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    let set_aside = |text: &str| {
        // Who asked is named in refusals too, and the robot's login holds its tenant's name.
        let mut text = text.replace("robot$alpha+builder", "<caller>");
        for (name, placeholder) in &names {
            text = text.replace(name.as_str(), placeholder);
        }
        text
    };
    (
        answer.status,
        answer.code.clone(),
        answer.challenge.as_deref().map(set_aside),
        answer.location.as_deref().map(set_aside),
        set_aside(&answer.body),
    )
}

/// What the family's refusal looks like for a credential: status and code.
fn refusal(family: Family, credential: &Credential, method: &Method) -> (u16, Option<&'static str>) {
    let head = *method == Method::HEAD;
    let code = |c: &'static str| if head { None } else { Some(c) };
    match (family, credential) {
        (Family::V2, Credential::Plain(Cred::Basic(..))) => (403, code("DENIED")),
        (Family::V2, _) => (401, code("UNAUTHORIZED")),
        (Family::Api, Credential::Plain(Cred::Anonymous)) => (401, code("UNAUTHORIZED")),
        (Family::Api, _) => (403, code("DENIED")),
        (Family::Console, Credential::Session(..)) => (403, None),
        // Not signed in: to the sign-in page.
        (Family::Console, _) => (303, None),
        (f, c) => panic!("no default refusal for {f:?} with {c:?}: give the outcome explicitly"),
    }
}

fn form(fields: &[(&str, &str)]) -> Body {
    Body::Form(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// Every route, and what each class gets from it. Classes: [other, viewer, robot, anonymous].
fn matrix() -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |family,
                   route: (&'static str, &'static str),
                   outcomes: [Outcome; 4],
                   targeted: bool,
                   build: Box<dyn Fn(&World, &Target) -> Req + Send + Sync>| {
        cases.push(Case { family, route, build, outcomes, targeted });
    };
    let m = |s: &str| Method::from_bytes(s.as_bytes()).expect("method");
    macro_rules! case {
        ($family:expr, $method:literal, $pattern:literal, $outcomes:expr, |$w:ident, $t:ident| $path:expr) => {
            add(
                $family,
                ($method, $pattern),
                $outcomes,
                true,
                Box::new(move |$w: &World, $t: &Target| {
                    let _ = &$w;
                    req(m($method), $path, Body::None)
                }),
            )
        };
        ($family:expr, $method:literal, $pattern:literal, $outcomes:expr, |$w:ident, $t:ident| $path:expr, $body:expr) => {
            add(
                $family,
                ($method, $pattern),
                $outcomes,
                true,
                Box::new(move |$w: &World, $t: &Target| {
                    let _ = &$w;
                    req(m($method), $path, $body)
                }),
            )
        };
    }
    macro_rules! fixed {
        ($family:expr, $method:literal, $pattern:literal, $outcomes:expr, $path:expr) => {
            add(
                $family,
                ($method, $pattern),
                $outcomes,
                false,
                Box::new(move |_: &World, _: &Target| req(m($method), $path.to_string(), Body::None)),
            )
        };
        ($family:expr, $method:literal, $pattern:literal, $outcomes:expr, $path:expr, $body:expr) => {
            add(
                $family,
                ($method, $pattern),
                $outcomes,
                false,
                Box::new(move |_: &World, _: &Target| req(m($method), $path.to_string(), $body)),
            )
        };
    }
    use Family::{Api, Console, P2p, Public, V2};
    let read = [Deny, Allow, Deny, Deny];
    let none = [Deny, Deny, Deny, Deny];
    let member_read = [Deny, Allow, Allow, Deny];
    let unauthenticated = Is(401, Some("UNAUTHORIZED"));

    // ----- /v2: the OCI dispatcher's routes, as `oci::handle` names them.
    fixed!(V2, "GET", "v2:Base", [Allow, Allow, Allow, unauthenticated], "/v2/");
    fixed!(V2, "HEAD", "v2:Base", [Allow, Allow, Allow, Is(401, None)], "/v2/");
    fixed!(V2, "GET", "v2:Catalog", [Allow, Allow, Allow, unauthenticated], "/v2/_catalog");
    case!(V2, "GET", "v2:Tags", read, |w, t| format!("/v2/{}/tags/list", t.repo));
    case!(V2, "GET", "v2:Manifest", read, |w, t| format!("/v2/{}/manifests/v1", t.repo));
    case!(V2, "HEAD", "v2:Manifest", read, |w, t| format!("/v2/{}/manifests/{}", t.repo, t.manifest));
    case!(
        V2,
        "PUT",
        "v2:Manifest",
        none,
        |w, t| format!("/v2/{}/manifests/intruder", t.repo),
        Body::Bytes(OCI_MANIFEST, w.image.manifest.clone().into_bytes())
    );
    case!(V2, "DELETE", "v2:Manifest", none, |w, t| format!("/v2/{}/manifests/{}", t.repo, t.manifest));
    case!(V2, "GET", "v2:Blob", read, |w, t| format!("/v2/{}/blobs/{}", t.repo, t.blob));
    case!(V2, "HEAD", "v2:Blob", read, |w, t| format!("/v2/{}/blobs/{}", t.repo, t.blob));
    case!(V2, "DELETE", "v2:Blob", none, |w, t| format!("/v2/{}/blobs/{}", t.repo, t.blob));
    case!(V2, "POST", "v2:UploadStart", none, |w, t| format!(
        "/v2/{}/blobs/uploads/?mount={}&from={}",
        t.repo, t.blob, t.repo
    ));
    case!(V2, "GET", "v2:Upload", none, |w, t| format!("/v2/{}/blobs/uploads/{}", t.repo, t.upload));
    case!(
        V2,
        "PATCH",
        "v2:Upload",
        none,
        |w, t| format!("/v2/{}/blobs/uploads/{}", t.repo, t.upload),
        Body::Bytes("application/octet-stream", b"intruder".to_vec())
    );
    case!(V2, "PUT", "v2:Upload", none, |w, t| format!(
        "/v2/{}/blobs/uploads/{}?digest={}",
        t.repo,
        t.upload,
        sha256_digest(b"abc")
    ));
    case!(V2, "DELETE", "v2:Upload", none, |w, t| format!("/v2/{}/blobs/uploads/{}", t.repo, t.upload));
    case!(V2, "GET", "v2:Referrers", read, |w, t| format!("/v2/{}/referrers/{}", t.repo, t.manifest));

    // ----- /api/v1
    fixed!(Api, "GET", "/api/v1/openapi.json", [Allow; 4], "/api/v1/openapi.json");
    fixed!(Api, "GET", "/api/v1/tenants", [Allow, Allow, Allow, Deny], "/api/v1/tenants");
    fixed!(Api, "POST", "/api/v1/tenants", none, "/api/v1/tenants", Body::Json(json!({ "name": "intruder" })));
    case!(Api, "GET", "/api/v1/tenants/{tenant}", member_read, |w, t| format!("/api/v1/tenants/{}", t.tenant));
    case!(Api, "GET", "/api/v1/tenants/{tenant}/namespaces", member_read, |w, t| format!(
        "/api/v1/tenants/{}/namespaces",
        t.tenant
    ));
    case!(
        Api,
        "POST",
        "/api/v1/tenants/{tenant}/namespaces",
        none,
        |w, t| format!("/api/v1/tenants/{}/namespaces", t.tenant),
        Body::Json(json!({ "name": "intruder-ns" }))
    );
    case!(Api, "GET", "/api/v1/namespaces/{namespace}", read, |w, t| format!("/api/v1/namespaces/{}", t.ns));
    case!(
        Api,
        "PATCH",
        "/api/v1/namespaces/{namespace}",
        none,
        |w, t| format!("/api/v1/namespaces/{}", t.ns),
        Body::Json(json!({ "public": true }))
    );
    case!(Api, "GET", "/api/v1/tenants/{tenant}/members", none, |w, t| format!("/api/v1/tenants/{}/members", t.tenant));
    case!(
        Api,
        "PUT",
        "/api/v1/tenants/{tenant}/members",
        none,
        |w, t| format!("/api/v1/tenants/{}/members", t.tenant),
        Body::Json(json!({ "kind": "user", "name": "bob", "role": "owner" }))
    );
    case!(Api, "DELETE", "/api/v1/tenants/{tenant}/members", none, |w, t| format!(
        "/api/v1/tenants/{}/members?kind=user&name={}",
        t.tenant, t.user
    ));
    case!(Api, "GET", "/api/v1/tenants/{tenant}/robots", none, |w, t| format!("/api/v1/tenants/{}/robots", t.tenant));
    case!(
        Api,
        "POST",
        "/api/v1/tenants/{tenant}/robots",
        none,
        |w, t| format!("/api/v1/tenants/{}/robots", t.tenant),
        Body::Json(json!({ "name": "intruder", "scopes": [{ "role": "admin" }] }))
    );
    case!(Api, "DELETE", "/api/v1/tenants/{tenant}/robots/{robot}", none, |w, t| format!(
        "/api/v1/tenants/{}/robots/{}",
        t.tenant, t.robot
    ));
    case!(Api, "POST", "/api/v1/tenants/{tenant}/robots/{robot}/rotate", none, |w, t| format!(
        "/api/v1/tenants/{}/robots/{}/rotate",
        t.tenant, t.robot
    ));
    case!(Api, "GET", "/api/v1/tenants/{tenant}/clusters", none, |w, t| format!(
        "/api/v1/tenants/{}/clusters",
        t.tenant
    ));
    case!(
        Api,
        "POST",
        "/api/v1/tenants/{tenant}/clusters",
        none,
        |w, t| format!("/api/v1/tenants/{}/clusters", t.tenant),
        Body::Json(json!({ "name": "intruder" }))
    );
    case!(Api, "DELETE", "/api/v1/tenants/{tenant}/clusters/{cluster}", none, |w, t| format!(
        "/api/v1/tenants/{}/clusters/{}",
        t.tenant, t.cluster
    ));
    case!(Api, "POST", "/api/v1/tenants/{tenant}/clusters/{cluster}/token", none, |w, t| format!(
        "/api/v1/tenants/{}/clusters/{}/token",
        t.tenant, t.cluster
    ));
    case!(Api, "GET", "/api/v1/tenants/{tenant}/clusters/{cluster}/preheat", none, |w, t| format!(
        "/api/v1/tenants/{}/clusters/{}/preheat",
        t.tenant, t.cluster
    ));
    case!(
        Api,
        "POST",
        "/api/v1/tenants/{tenant}/clusters/{cluster}/preheat",
        none,
        |w, t| format!("/api/v1/tenants/{}/clusters/{}/preheat", t.tenant, t.cluster),
        Body::Json(json!({ "repository": t.repo, "tag": "v1" }))
    );
    case!(Api, "GET", "/api/v1/tenants/{tenant}/clusters/{cluster}/preheat/{job}", none, |w, t| format!(
        "/api/v1/tenants/{}/clusters/{}/preheat/{}",
        t.tenant, t.cluster, t.job
    ));
    fixed!(Api, "GET", "/api/v1/users", none, "/api/v1/users");
    fixed!(
        Api,
        "POST",
        "/api/v1/users",
        none,
        "/api/v1/users",
        Body::Json(json!({ "username": "intruder", "password": "intruder-password" }))
    );
    case!(
        Api,
        "PUT",
        "/api/v1/users/{username}/password",
        none,
        |w, t| format!("/api/v1/users/{}/password", t.user),
        Body::Json(json!({ "password": "taken-over-password" }))
    );
    case!(Api, "GET", "/api/v1/audit", none, |w, t| format!("/api/v1/audit?tenant={}", t.tenant));
    fixed!(Api, "POST", "/api/v1/signing-keys/rotate", none, "/api/v1/signing-keys/rotate");
    let unknown_api = Is(404, Some("NOT_FOUND"));
    // Storage lifecycle: quotas (the tenant's read by any member, set by the system administrator), a
    // namespace's lifecycle policy (read with the namespace, changed by its admins), garbage collection
    // (the system administrator's alone).
    case!(Api, "GET", "/api/v1/tenants/{tenant}/quota", member_read, |w, t| format!(
        "/api/v1/tenants/{}/quota",
        t.tenant
    ));
    case!(
        Api,
        "PUT",
        "/api/v1/tenants/{tenant}/quota",
        none,
        |w, t| format!("/api/v1/tenants/{}/quota", t.tenant),
        Body::Json(json!({ "limit_bytes": 1 }))
    );
    case!(Api, "GET", "/api/v1/namespaces/{namespace}/quota", read, |w, t| format!(
        "/api/v1/namespaces/{}/quota",
        t.ns
    ));
    case!(
        Api,
        "PUT",
        "/api/v1/namespaces/{namespace}/quota",
        none,
        |w, t| format!("/api/v1/namespaces/{}/quota", t.ns),
        Body::Json(json!({ "limit_bytes": 1 }))
    );
    case!(Api, "GET", "/api/v1/namespaces/{namespace}/lifecycle", read, |w, t| format!(
        "/api/v1/namespaces/{}/lifecycle",
        t.ns
    ));
    case!(
        Api,
        "PUT",
        "/api/v1/namespaces/{namespace}/lifecycle",
        none,
        |w, t| format!("/api/v1/namespaces/{}/lifecycle", t.ns),
        Body::Json(json!({ "immutable_tags": ["*"] }))
    );
    case!(Api, "GET", "/api/v1/namespaces/{namespace}/lifecycle/preview", read, |w, t| format!(
        "/api/v1/namespaces/{}/lifecycle/preview",
        t.ns
    ));
    fixed!(Api, "POST", "/api/v1/gc", none, "/api/v1/gc", Body::Json(json!({ "dry_run": true })));
    fixed!(Api, "GET", "/api/v1/gc/runs", none, "/api/v1/gc/runs");
    fixed!(Api, "GET", "/api/v1/gc/runs/{id}", none, "/api/v1/gc/runs/1");
    fixed!(Api, "GET", "/api/v1", [unknown_api; 4], "/api/v1");
    fixed!(Api, "GET", "/api/v1/", [unknown_api; 4], "/api/v1/");
    case!(Api, "ANY", "/api/v1/{*rest}", [unknown_api; 4], |w, t| format!("/api/v1/tenants/{}/secrets", t.tenant));

    // ----- /console: signed-in users are refused with 403, everyone else sent to sign in.
    let to_sign_in = Is(303, None);
    // To the tenants page, which sends those not signed in on to sign in.
    fixed!(Console, "GET", "/console", [Allow; 4], "/console");
    fixed!(Console, "GET", "/console/", [Allow; 4], "/console/");
    fixed!(Console, "GET", "/console/static/console.css", [Allow; 4], "/console/static/console.css");
    fixed!(Console, "GET", "/console/login", [Allow; 4], "/console/login");
    // Without the sign-in page's cookie a sign-in form is a forgery, whoever sends it.
    fixed!(
        Console,
        "POST",
        "/console/login",
        [Is(403, None); 4],
        "/console/login",
        form(&[("username", "olive"), ("password", "olive-password")])
    );
    // Signing out without the form token is refused; not signed in, there is nothing to sign out of.
    fixed!(
        Console,
        "POST",
        "/console/logout",
        [Is(403, None), Is(403, None), to_sign_in, to_sign_in],
        "/console/logout",
        Body::Bytes("application/x-www-form-urlencoded", Vec::new())
    );
    fixed!(Console, "GET", "/console/tenants", [Allow, Allow, Deny, Deny], "/console/tenants");
    fixed!(Console, "POST", "/console/tenants", none, "/console/tenants", form(&[("name", "intruder")]));
    case!(Console, "GET", "/console/tenants/{tenant}", [Deny, Allow, Deny, Deny], |w, t| format!(
        "/console/tenants/{}",
        t.tenant
    ));
    case!(
        Console,
        "POST",
        "/console/tenants/{tenant}/namespaces",
        none,
        |w, t| format!("/console/tenants/{}/namespaces", t.tenant),
        form(&[("name", "intruder-ns")])
    );
    case!(
        Console,
        "POST",
        "/console/tenants/{tenant}/members",
        none,
        |w, t| format!("/console/tenants/{}/members", t.tenant),
        form(&[("kind", "user"), ("name", "bob"), ("namespace", ""), ("role", "owner")])
    );
    case!(
        Console,
        "POST",
        "/console/tenants/{tenant}/members/revoke",
        none,
        |w, t| format!("/console/tenants/{}/members/revoke", t.tenant),
        Body::Form(vec![
            ("kind".into(), "user".into()),
            ("name".into(), t.user.clone()),
            ("namespace".into(), String::new())
        ])
    );
    case!(Console, "GET", "/console/tenants/{tenant}/robots", none, |w, t| format!(
        "/console/tenants/{}/robots",
        t.tenant
    ));
    case!(
        Console,
        "POST",
        "/console/tenants/{tenant}/robots",
        none,
        |w, t| format!("/console/tenants/{}/robots", t.tenant),
        form(&[("name", "intruder"), ("description", ""), ("expires_in_days", "")])
    );
    case!(
        Console,
        "POST",
        "/console/tenants/{tenant}/robots/{robot}/revoke",
        none,
        |w, t| format!("/console/tenants/{}/robots/{}/revoke", t.tenant, t.robot),
        Body::Form(Vec::new())
    );
    case!(
        Console,
        "POST",
        "/console/tenants/{tenant}/robots/{robot}/rotate",
        none,
        |w, t| format!("/console/tenants/{}/robots/{}/rotate", t.tenant, t.robot),
        Body::Form(Vec::new())
    );
    case!(
        Console,
        "POST",
        "/console/tenants/{tenant}/clusters/{cluster}/delete",
        none,
        |w, t| format!("/console/tenants/{}/clusters/{}/delete", t.tenant, t.cluster),
        Body::Form(Vec::new())
    );
    case!(
        Console,
        "POST",
        "/console/tenants/{tenant}/clusters/{cluster}/token",
        none,
        |w, t| format!("/console/tenants/{}/clusters/{}/token", t.tenant, t.cluster),
        Body::Form(Vec::new())
    );
    case!(Console, "GET", "/console/tenants/{tenant}/clusters", none, |w, t| format!(
        "/console/tenants/{}/clusters",
        t.tenant
    ));
    case!(
        Console,
        "POST",
        "/console/tenants/{tenant}/clusters",
        none,
        |w, t| format!("/console/tenants/{}/clusters", t.tenant),
        form(&[("name", "intruder")])
    );
    case!(Console, "GET", "/console/namespaces/{namespace}/storage", [Deny, Allow, Deny, Deny], |w, t| format!(
        "/console/namespaces/{}/storage",
        t.ns
    ));
    case!(
        Console,
        "POST",
        "/console/namespaces/{namespace}/storage/quota",
        none,
        |w, t| format!("/console/namespaces/{}/storage/quota", t.ns),
        form(&[("limit_bytes", "1")])
    );
    case!(
        Console,
        "POST",
        "/console/namespaces/{namespace}/storage/policy",
        none,
        |w, t| format!("/console/namespaces/{}/storage/policy", t.ns),
        form(&[("untagged_days", "1")])
    );
    case!(
        Console,
        "POST",
        "/console/namespaces/{namespace}/storage/rules",
        none,
        |w, t| format!("/console/namespaces/{}/storage/rules", t.ns),
        form(&[("tags", "*"), ("keep_newest", "1")])
    );
    case!(
        Console,
        "POST",
        "/console/namespaces/{namespace}/storage/rules/remove",
        none,
        |w, t| format!("/console/namespaces/{}/storage/rules/remove", t.ns),
        form(&[("index", "0")])
    );
    case!(Console, "GET", "/console/tenants/{tenant}/storage", [Deny, Allow, Deny, Deny], |w, t| format!(
        "/console/tenants/{}/storage",
        t.tenant
    ));
    case!(
        Console,
        "POST",
        "/console/tenants/{tenant}/storage/quota",
        none,
        |w, t| format!("/console/tenants/{}/storage/quota", t.tenant),
        form(&[("limit_bytes", "1")])
    );
    fixed!(Console, "GET", "/console/gc", none, "/console/gc");
    fixed!(Console, "POST", "/console/gc", none, "/console/gc", form(&[("dry_run", "true")]));
    fixed!(Console, "GET", "/console/gc/{id}", none, "/console/gc/1");
    case!(Console, "GET", "/console/namespaces/{namespace}", [Deny, Allow, Deny, Deny], |w, t| format!(
        "/console/namespaces/{}",
        t.ns
    ));
    case!(
        Console,
        "POST",
        "/console/namespaces/{namespace}",
        none,
        |w, t| format!("/console/namespaces/{}", t.ns),
        form(&[("public", "true")])
    );
    case!(
        Console,
        "POST",
        "/console/namespaces/{namespace}/preheat",
        none,
        |w, t| format!("/console/namespaces/{}/preheat", t.ns),
        Body::Form(vec![("cluster".into(), t.cluster.clone()), ("percent".into(), "100".into())])
    );
    case!(Console, "GET", "/console/repository", [Deny, Allow, Deny, Deny], |w, t| format!(
        "/console/repository?name={}",
        t.repo
    ));
    case!(
        Console,
        "POST",
        "/console/repository/delete-tag",
        none,
        |w, t| "/console/repository/delete-tag".to_owned(),
        Body::Form(vec![("repository".into(), t.repo.clone()), ("tag".into(), "v1".into())])
    );
    case!(
        Console,
        "POST",
        "/console/repository/preheat",
        none,
        |w, t| "/console/repository/preheat".to_owned(),
        Body::Form(vec![
            ("repository".into(), t.repo.clone()),
            ("tag".into(), "v1".into()),
            ("cluster".into(), t.cluster.clone()),
            ("percent".into(), "100".into()),
        ])
    );
    case!(Console, "GET", "/console/tenants/{tenant}/clusters/{cluster}/preheat/{job}", none, |w, t| format!(
        "/console/tenants/{}/clusters/{}/preheat/{}",
        t.tenant, t.cluster, t.job
    ));
    // The system administrator's: nobody of the matrix may see or add users.
    fixed!(Console, "GET", "/console/users", none, "/console/users");
    fixed!(
        Console,
        "POST",
        "/console/users",
        none,
        "/console/users",
        form(&[("username", "intruder"), ("password", "intruder-password")])
    );
    case!(
        Console,
        "POST",
        "/console/users/password",
        none,
        |w, t| "/console/users/password".to_owned(),
        Body::Form(vec![("username".into(), t.user.clone()), ("password".into(), "taken-over-password".into())])
    );
    // Everyone's own password, given the current one (a wrong one here): nothing of alpha's.
    fixed!(Console, "GET", "/console/password", [Allow, Allow, Deny, Deny], "/console/password");
    fixed!(
        Console,
        "POST",
        "/console/password",
        [Allow, Allow, Deny, Deny],
        "/console/password",
        form(&[
            ("current_password", "not-the-password"),
            ("new_password", "taken-over-password"),
            ("repeat_password", "taken-over-password")
        ])
    );
    case!(Console, "GET", "/console/dashboard", none, |w, t| format!("/console/dashboard?tenant={}", t.tenant));
    case!(Console, "GET", "/console/audit", none, |w, t| format!("/console/audit?tenant={}", t.tenant));
    case!(Console, "GET", "/console/{*rest}", [Is(404, None); 4], |w, t| format!("/console/{}/secrets", t.tenant));

    // ----- /p2p/v1: clusters authenticate with their token, peers with a ticket; people not at all.
    let p2p = |other: Outcome| [other, unauthenticated, unauthenticated, unauthenticated];
    let agent_unknown = Is(404, Some("AGENT_UNKNOWN"));
    fixed!(
        P2p,
        "POST",
        "/p2p/v1/agents",
        [Allow, unauthenticated, unauthenticated, unauthenticated],
        "/p2p/v1/agents",
        Body::Json(json!({ "node": "intruder", "ip": "127.0.0.1", "peer_port": 9 }))
    );
    case!(P2p, "DELETE", "/p2p/v1/agents/{agent}", p2p(agent_unknown), |w, t| format!("/p2p/v1/agents/{}", t.agent));
    case!(P2p, "POST", "/p2p/v1/agents/{agent}/heartbeat", p2p(agent_unknown), |w, t| format!(
        "/p2p/v1/agents/{}/heartbeat",
        t.agent
    ));
    case!(
        P2p,
        "POST",
        "/p2p/v1/swarms/join",
        p2p(Is(403, Some("DENIED"))),
        |w, t| "/p2p/v1/swarms/join".to_owned(),
        Body::Json(json!({ "agent_id": w.beta_agent, "repository": t.repo, "digest": t.blob, "client_token": null }))
    );
    case!(
        P2p,
        "POST",
        "/p2p/v1/swarms/report",
        p2p(agent_unknown),
        |w, t| "/p2p/v1/swarms/report".to_owned(),
        Body::Json(json!({ "agent_id": t.agent, "digest": t.blob, "have": [0] }))
    );
    case!(
        P2p,
        "POST",
        "/p2p/v1/preheat/{job}/report",
        p2p(Is(404, Some("NAME_UNKNOWN"))),
        |w, t| format!("/p2p/v1/preheat/{}/report", t.job),
        Body::Json(json!({ "agent_id": w.beta_agent, "ok": true }))
    );
    case!(P2p, "GET", "/p2p/v1/seed/{digest}/pieces/{index}", p2p(Is(403, Some("DENIED"))), |w, t| format!(
        "/p2p/v1/seed/{}/pieces/0",
        t.blob
    ));
    case!(P2p, "GET", "/p2p/v1/seed/{digest}/pieces", p2p(Is(403, Some("DENIED"))), |w, t| format!(
        "/p2p/v1/seed/{}/pieces?pieces=0",
        t.blob
    ));
    case!(
        P2p,
        "GET",
        "/p2p/v1/namespaces/{namespace}/acceleration",
        p2p(Is(404, Some("NAME_UNKNOWN"))),
        |w, t| format!("/p2p/v1/namespaces/{}/acceleration", t.ns)
    );
    // Read by `sh`: a refusal is a script that says why and exits 1, or a sentence of text.
    let no_cluster = Is(401, None);
    fixed!(P2p, "GET", "/p2p/v1/install.sh", [Allow, no_cluster, no_cluster, no_cluster], "/p2p/v1/install.sh");
    // Another tenant's cluster is told the same for alpha's private image as for one that does not exist.
    case!(P2p, "GET", "/p2p/v1/agent.tar", [Is(404, None), no_cluster, no_cluster, no_cluster], |w, t| format!(
        "/p2p/v1/agent.tar?image={}/{}:v1&arch=amd64",
        w.reg.url.trim_start_matches("http://"),
        t.repo
    ));
    let unknown_p2p = Is(404, Some("UNSUPPORTED"));
    fixed!(P2p, "ANY", "/p2p/v1", [unknown_p2p; 4], "/p2p/v1");
    fixed!(P2p, "ANY", "/p2p/v1/", [unknown_p2p; 4], "/p2p/v1/");
    case!(P2p, "ANY", "/p2p/v1/{*rest}", [unknown_p2p; 4], |w, t| format!("/p2p/v1/tenants/{}/secrets", t.tenant));

    // ----- Public by design: tokens, keys, health and metrics.
    case!(Public, "GET", "/auth/token", [Allow; 4], |w, t| format!(
        "/auth/token?service=damselfly&scope=repository:{}:pull",
        t.repo
    ));
    fixed!(
        Public,
        "POST",
        "/auth/token",
        [Allow; 4],
        "/auth/token",
        form(&[("grant_type", "password"), ("username", "nosuch-user"), ("password", "wrong")])
    );
    fixed!(Public, "GET", "/auth/jwks.json", [Allow; 4], "/auth/jwks.json");
    fixed!(Public, "GET", "/.well-known/jwks.json", [Allow; 4], "/.well-known/jwks.json");
    fixed!(Public, "GET", "/metrics", [Allow; 4], "/metrics");
    fixed!(Public, "GET", "/healthz", [Allow; 4], "/healthz");
    fixed!(Public, "GET", "/readyz", [Allow; 4], "/readyz");
    // To the console, which sends those not signed in on to sign in.
    fixed!(Public, "GET", "/", [Allow; 4], "/");
    cases
}

/// Routes of the OCI dispatcher and the axum routes that lead to it: listed
/// in the inventory, asked through the `v2:*` rows.
const DISPATCHER: [(&str, &str); 3] = [("ANY", "/v2"), ("ANY", "/v2/"), ("ANY", "/v2/{*path}")];

async fn every_route_refuses_other_tenants_viewers_robots_outside_their_scope_and_anonymous_alike(backend: Backend) {
    let w = World::build(backend).await;
    let before = state_of(&w).await;
    let mut checked = 0;
    // Every way the registry strays from the matrix, reported together.
    let mut strays: Vec<String> = Vec::new();
    for case in matrix() {
        let targets: Vec<&Target> =
            if case.targeted { std::iter::once(&w.alpha).chain(w.absent.iter()).collect() } else { vec![&w.alpha] };
        for (class, outcome) in CLASSES.iter().zip(case.outcomes) {
            let credentials = w.credentials(case.family, case.route.1, *class, &w.alpha).await;
            for (i, (kind, _)) in credentials.iter().enumerate() {
                let context = format!("{class:?} ({kind}): {} {}", case.route.0, case.route.1);
                let mut seen: Vec<(String, _)> = Vec::new();
                for target in &targets {
                    // A bearer token is asked for what the target names.
                    let credential = w.credentials(case.family, case.route.1, *class, target).await.swap_remove(i).1;
                    let r = (case.build)(&w, target);
                    let answer = w.send(&r, &credential).await;
                    let context = format!("{context} as {} {}", r.method, r.path);
                    assert!(answer.status < 500, "{context}: a server error: {}", answer.body);
                    let expected = match outcome {
                        Allow => continue,
                        Deny => refusal(case.family, &credential, &r.method),
                        Is(status, code) => (status, code),
                    };
                    if (answer.status, answer.code.as_deref()) != expected {
                        let said = answer.body.chars().take(400).collect::<String>();
                        strays
                            .push(format!("{context}: {} {:?}, not {expected:?}: {said}", answer.status, answer.code));
                    }
                    if expected.0 == 303 && answer.location.as_deref() != Some("/console/login") {
                        strays.push(format!("{context}: to {:?}, not to the sign-in page", answer.location));
                    }
                    for secret in &w.secrets {
                        if answer.body.contains(secret.as_str()) {
                            strays.push(format!("{context}: the answer holds {secret:?}"));
                        }
                    }
                    if answer.body.len() >= 16 * 1024 {
                        strays.push(format!("{context}: {} bytes: data, not a refusal", answer.body.len()));
                    }
                    seen.push((r.path.clone(), normalized(&answer, target)));
                    checked += 1;
                }
                // The same answer whether what was asked about exists or not. The
                // viewer belongs to alpha and may see its tenant, namespaces and
                // repositories, and the robot its tenant and namespaces: existence
                // is no secret to them there, only what lies in repositories the
                // robot may not pull.
                let compared = match class {
                    Class::Viewer => &seen[..seen.len().min(1)],
                    Class::Robot if case.family != Family::V2 => &seen[..seen.len().min(1)],
                    _ => &seen[..],
                };
                for pair in compared.windows(2) {
                    if pair[0].1 != pair[1].1 {
                        strays.push(format!(
                            "{context}: {} and {} are told apart:\n  {:?}\n  {:?}",
                            pair[0].0, pair[1].0, pair[0].1, pair[1].1
                        ));
                    }
                }
            }
        }
    }
    assert!(strays.is_empty(), "{} answers stray from the matrix:\n{}", strays.len(), strays.join("\n"));
    assert!(checked > 500, "{checked} refusals checked");

    // What the allowed lists show the others holds nothing of alpha's.
    for cred in [w.bob.clone(), w.robot.clone()] {
        let catalog = w.http.get(&cred, "/v2/_catalog").await.expect(200).json();
        assert!(!catalog.to_string().contains("alpha-apps"), "{cred:?}: {catalog}");
    }
    let tenants = w.http.get(&w.bob, "/api/v1/tenants").await.expect(200).text();
    assert!(!tenants.contains("alpha"), "{tenants}");
    let (_, scope) = w.http.token(&w.bob, &["repository:alpha-apps/app:pull"]).await;
    assert_eq!(scope, "", "the token endpoint grants the other tenant nothing");
    let metrics = w.http.get(&Cred::Anonymous, "/metrics").await.expect(200).text();
    for name in ["alpha", "olive", "vera"] {
        assert!(!metrics.contains(name), "the metrics name no tenant, user or repository: {name}");
    }
    // And nothing the refused requests asked for happened.
    assert_eq!(state_of(&w).await, before, "the refused requests changed nothing");
}

/// Everything of alpha's the administrator sees, to compare before and after.
async fn state_of(w: &World) -> Vec<String> {
    let admin = Cred::admin();
    let mut out = Vec::new();
    for path in [
        "/v2/alpha-apps/app/tags/list".to_owned(),
        w.image.manifest_path("v1"),
        format!("/v2/alpha-apps/app/blobs/uploads/{}", w.alpha.upload),
        "/api/v1/tenants/alpha/members".to_owned(),
        "/api/v1/tenants/alpha/robots".to_owned(),
        "/api/v1/tenants/alpha/namespaces".to_owned(),
        "/api/v1/tenants".to_owned(),
        "/api/v1/users".to_owned(),
    ] {
        let reply = w.http.get(&admin, &path).await;
        out.push(format!("{path}: {} {}", reply.status, reply.text()));
    }
    let clusters = w.http.get(&admin, "/api/v1/tenants/alpha/clusters").await.expect(200).json();
    let names: Vec<&str> = clusters.as_array().expect("clusters").iter().filter_map(|c| c["name"].as_str()).collect();
    out.push(format!("clusters: {names:?}"));
    out
}

async fn refusals_take_as_long_whether_the_target_exists_or_not(backend: Backend) {
    let w = World::build(backend).await;
    let absent = &w.absent[1];
    let mut report = Vec::new();
    let mut strays = Vec::new();
    for case in matrix().into_iter().filter(|c| c.targeted && matches!(c.outcomes[0], Deny | Is(..))) {
        let context = format!("{} {}", case.route.0, case.route.1);
        let credentials = [
            w.credentials(case.family, case.route.1, Class::Other, &w.alpha).await.swap_remove(0).1,
            w.credentials(case.family, case.route.1, Class::Other, absent).await.swap_remove(0).1,
        ];
        let requests = [(case.build)(&w, &w.alpha), (case.build)(&w, absent)];
        // Warm both paths first.
        for (r, c) in requests.iter().zip(&credentials) {
            let answer = w.send(r, c).await;
            assert!(answer.status >= 300, "{context}: the other tenant is refused: {}", answer.status);
        }
        // Load from other processes pushes a route's ratio past the bound now
        // and then, either way. A route strays only if three measurements in a
        // row are past it on the same side: a real difference is on the same
        // side every time, noise is not.
        let mut seen = Vec::new();
        let mut strayed = true;
        for attempt in 1..=3 {
            let (ratio, existing, missing) = paired_ratio(&w, &requests, &credentials, TIMING_SAMPLES).await;
            report.push(format!(
                "{context}{}: existing {:.2} ms, absent {:.2} ms, paired ratio ×{ratio:.2}",
                if attempt > 1 { format!(" (measured again, {attempt})") } else { String::new() },
                existing * 1e3,
                missing * 1e3
            ));
            seen.push(ratio);
            let same_side = seen.iter().all(|r| *r > TIMING_FACTOR) || seen.iter().all(|r| *r < 1.0 / TIMING_FACTOR);
            if within(ratio) || !same_side {
                strayed = false;
                break;
            }
        }
        if strayed {
            strays.push(format!("{context}: {seen:.2?}"));
        }
    }
    println!(
        "refusal times of the other tenant (medians; paired ratio = median of existing/absent over back-to-back \
         pairs):\n{}",
        report.join("\n")
    );
    assert!(report.len() > 40, "{} routes timed", report.len());
    assert!(
        strays.is_empty(),
        "refusals whose time tells an existing target from an absent one (bound ×{TIMING_FACTOR}): {strays:?}\n{}",
        report.join("\n")
    );
}

/// Whether a ratio of answer times is within [`TIMING_FACTOR`] either way.
fn within(ratio: f64) -> bool {
    (1.0 / TIMING_FACTOR..=TIMING_FACTOR).contains(&ratio)
}

/// Times `samples` back-to-back pairs of the two requests (the order within
/// a pair alternating): the median of each pair's ratio of answer times
/// (existing over absent), which load common to both cancels out of, and
/// the median time of each.
async fn paired_ratio(
    w: &World,
    requests: &[Req; 2],
    credentials: &[Credential; 2],
    samples: usize,
) -> (f64, f64, f64) {
    // One client, whose connections stay open where the registry keeps them,
    // so that connecting adds no noise of its own.
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let mut ratios = Vec::with_capacity(samples);
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..samples {
        let mut pair = [0.0; 2];
        for k in [round % 2, 1 - round % 2] {
            pair[k] = w.send_with(&client, &requests[k], &credentials[k]).await.elapsed.as_secs_f64();
            times[k].push(pair[k]);
        }
        ratios.push(pair[0] / pair[1]);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut ratios), median(&mut times[0]), median(&mut times[1]))
}

// ---------------------------------------------------------------------------
// The inventory: every route the routers have, read from their source.
// ---------------------------------------------------------------------------

/// `(method, pattern)` of every `.route(…)` under `registry/src`, and of
/// every arm of the OCI dispatcher (`oci::handle`), as `v2:<variant>`.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry/src");
    let mut files = Vec::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("registry/src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut routes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        for other in [".nest(", ".route_service(", ".nest_service("] {
            assert!(
                !text.contains(other),
                "{}: routes added with {other} are not read by this inventory; teach it, and list them",
                file.display()
            );
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            let call = &rest[at + ".route(".len()..];
            let args = balanced(call);
            rest = &call[args.len()..];
            if args.trim().is_empty() {
                // Some other type's `route()`, not a router's.
                continue;
            }
            let (pattern, handlers) =
                args.trim_start().strip_prefix('"').and_then(|s| s.split_once('"')).unwrap_or_else(|| {
                    panic!("{}: a .route( whose path is not a string literal: {args}", file.display())
                });
            for method in top_level_calls(handlers) {
                routes.insert((method, pattern.to_owned()));
            }
        }
        if file.ends_with("oci/mod.rs") {
            for line in text.lines().map(str::trim).filter(|l| l.starts_with("(P::")) {
                let (arm, _) = line.split_once("=>").expect("a match arm");
                let variant = arm["(P::".len()..].split(|c: char| !c.is_alphanumeric()).next().expect("variant");
                let methods = arm.rsplit_once(',').expect("(path, methods)").1;
                for method in
                    methods.split('|').map(|m| m.trim().trim_end_matches(')').trim_start_matches("M::").trim())
                {
                    routes.insert((method.to_owned(), format!("v2:{variant}")));
                }
            }
        }
    }
    routes
}

/// The text up to the parenthesis that closes the one just opened.
fn balanced(text: &str) -> &str {
    let (mut depth, mut in_string) = (1usize, false);
    let mut prev = ' ';
    for (i, c) in text.char_indices() {
        match c {
            '"' if prev != '\\' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
        prev = c;
    }
    panic!("unbalanced parentheses after .route(: {text}")
}

/// The HTTP methods a route's handler expression names at its top level:
/// `get(a).post(b)` gives GET and POST, `axum::routing::delete(x)` DELETE, `any(x)` ANY.
fn top_level_calls(handlers: &str) -> Vec<String> {
    let mut methods = Vec::new();
    let (mut depth, mut word) = (0usize, String::new());
    let mut in_string = false;
    for c in handlers.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '(' => {
                if depth == 0 {
                    let name = word.rsplit("::").next().unwrap_or_default().to_ascii_uppercase();
                    if ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"].contains(&name.as_str()) {
                        methods.push(name);
                    } else {
                        panic!("a route handler the inventory does not read: {handlers}");
                    }
                }
                depth += 1;
                word.clear();
            }
            ')' => {
                depth -= 1;
                word.clear();
            }
            c if depth == 0 && (c.is_alphanumeric() || c == '_' || c == ':') => word.push(c),
            _ => {
                if depth == 0 {
                    word.clear();
                }
            }
        }
    }
    methods
}

#[test]
fn the_matrix_lists_every_route_of_the_routers() {
    let in_source = routes_in_source();
    let mut listed: BTreeSet<(String, String)> =
        matrix().iter().map(|c| (c.route.0.to_owned(), c.route.1.to_owned())).collect();
    listed.extend(DISPATCHER.iter().map(|(m, p)| (m.to_string(), p.to_string())));
    // HEAD rows ask a GET route the way clients do; the route is GET's.
    let listed: BTreeSet<(String, String)> = listed
        .into_iter()
        .map(|(m, p)| if m == "HEAD" && !p.starts_with("v2:") { ("GET".to_owned(), p) } else { (m, p) })
        .collect();
    let missing: Vec<_> = in_source.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&in_source).collect();
    assert!(
        missing.is_empty(),
        "routes the security matrix does not list: {missing:?}; add a row for each to matrix() in \
         tests/tests/security_tenants.rs, saying what another tenant, a viewer, a robot outside its scope and \
         anonymous get"
    );
    assert!(stale.is_empty(), "the security matrix lists routes that no longer exist: {stale:?}");
    assert!(in_source.len() > 80, "{} routes read: the inventory reads the routers", in_source.len());
}
