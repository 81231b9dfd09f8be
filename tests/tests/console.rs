//! The web console of a real `damselfly-registry`, driven two ways:
//!
//! - in a real browser (Debian's Chromium through chromedriver, headless),
//!   for the flows a person goes through: sign in, create a tenant, a
//!   namespace and a robot account, switch P2P acceleration on, register a
//!   cluster and start an agent with the command the page shows, sign out,
//!   and a viewer who types admin URLs by hand. Screenshots of the main
//!   pages go to `target/console-screenshots/`;
//! - with plain HTTP requests, for what a browser would hide: forms posted
//!   without their CSRF token, HTML in names, sessions that must end, role
//!   checks on every action, and the login rate limit.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use damselfly_tests::http::{Cred, Http};
use damselfly_tests::image;
use damselfly_tests::{free_port, on_both_backends, run, Agent, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{json, Value};

on_both_backends!(
    form_post_without_the_csrf_token_is_rejected_and_changes_nothing,
    html_in_names_and_descriptions_is_shown_as_text,
    sign_out_and_a_password_change_end_the_session,
    viewer_cannot_act_through_admin_forms_posted_by_hand,
    repository_page_lists_tags_with_pull_commands_and_deletes_a_tag,
    failed_sign_ins_go_through_the_login_rate_limit,
    a_form_with_an_error_comes_back_with_the_reason_and_what_was_typed,
);

// ---------------------------------------------------------------------------
// Plain HTTP against the registry.

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// A management API call as the system administrator; returns status and JSON body.
async fn api(reg: &Registry, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    api_as(reg, ADMIN_USER, ADMIN_PASSWORD, method, path, body).await
}

async fn api_as(
    reg: &Registry,
    user: &str,
    password: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let reply = Http::new(reg).api(&Cred::basic(user, password), method, path, body.unwrap_or(Value::Null)).await;
    (reply.status, serde_json::from_slice(&reply.body).unwrap_or(Value::Null))
}

/// Tenant `acme` with namespace `web`, and a user `vera` who is a viewer on the whole tenant.
async fn cast(reg: &Registry) {
    use reqwest::Method;
    let (s, b) = api(reg, Method::POST, "/api/v1/tenants", Some(json!({ "name": "acme" }))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api(reg, Method::POST, "/api/v1/tenants/acme/namespaces", Some(json!({ "name": "web" }))).await;
    assert_eq!(s, 201, "{b}");
    let user = json!({ "username": "vera", "password": "vera-password" });
    let (s, b) = api(reg, Method::POST, "/api/v1/users", Some(user)).await;
    assert_eq!(s, 201, "{b}");
    let grant = json!({ "kind": "user", "name": "vera", "role": "viewer" });
    let (s, b) = api(reg, Method::PUT, "/api/v1/tenants/acme/members", Some(grant)).await;
    assert_eq!(s, 200, "{b}");
}

fn cookie_from(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The value of the first `name="csrf"` field on a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap_or_else(|| panic!("no CSRF field in:\n{html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("closing quote")].to_owned()
}

/// A signed-in console session, as a browser would hold it.
struct Session {
    base: String,
    cookie: String,
    csrf: String,
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

async fn page_of(r: reqwest::Response) -> Page {
    let status = r.status().as_u16();
    let location = r.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Page { status, location, body: r.text().await.unwrap_or_default() }
}

/// Posts the sign-in form the way a browser does (login cookie and its token); the raw answer.
async fn post_sign_in(reg: &Registry, user: &str, password: &str) -> (Page, HeaderMap) {
    let form = http().get(format!("{}/console/login", reg.url)).send().await.expect("login page");
    assert_eq!(form.status(), 200);
    let login_cookie = cookie_from(form.headers(), "damselfly_login").expect("login cookie");
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Lax"), "{login_cookie}");
    let pair = login_cookie.split(';').next().unwrap_or_default().to_owned();
    let csrf = csrf_of(&form.text().await.unwrap_or_default());
    let r = http()
        .post(format!("{}/console/login", reg.url))
        .header(COOKIE, pair)
        .form(&[("username", user), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .expect("sign in");
    let headers = r.headers().clone();
    (page_of(r).await, headers)
}

async fn sign_in(reg: &Registry, user: &str, password: &str) -> Session {
    let (page, headers) = post_sign_in(reg, user, password).await;
    assert_eq!((page.status, page.location.as_deref()), (303, Some("/console/tenants")), "{}", page.body);
    let set = cookie_from(&headers, "damselfly_session").expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/console"] {
        assert!(set.contains(attribute), "session cookie lacks {attribute}: {set}");
    }
    assert!(!set.contains("Secure"), "plain-HTTP registry set a Secure cookie the browser would drop: {set}");
    let cookie = set.split(';').next().unwrap_or_default().to_owned();
    let mut session = Session { base: reg.url.clone(), cookie, csrf: String::new() };
    let tenants = session.get("/console/tenants").await;
    assert_eq!(tenants.status, 200, "{}", tenants.body);
    session.csrf = csrf_of(&tenants.body);
    session
}

impl Session {
    async fn get(&self, path: &str) -> Page {
        let r = http().get(format!("{}{path}", self.base)).header(COOKIE, &self.cookie).send().await.expect("GET");
        page_of(r).await
    }

    /// Posts a form with the session's CSRF token.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        all.push(("csrf", &self.csrf));
        self.post_raw(path, &all).await
    }

    /// Posts exactly these fields.
    async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let r = http()
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(fields)
            .send()
            .await
            .expect("POST");
        page_of(r).await
    }

    /// Follows a POST's redirect and returns the page it lands on.
    async fn post_and_follow(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let posted = self.post(path, fields).await;
        assert_eq!(posted.status, 303, "POST {path} answered {}: {}", posted.status, posted.body);
        self.get(posted.location.as_deref().expect("Location")).await
    }
}

async fn form_post_without_the_csrf_token_is_rejected_and_changes_nothing(backend: Backend) {
    let reg = Registry::start(backend);
    let admin = sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;

    let missing = admin.post_raw("/console/tenants", &[("name", "forged")]).await;
    assert_eq!(missing.status, 403, "{}", missing.body);
    assert!(missing.body.contains("reload the page and send the form again"), "{}", missing.body);
    let wrong = admin.post_raw("/console/tenants", &[("name", "forged"), ("csrf", "not-the-token")]).await;
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    let (status, _) = api(&reg, reqwest::Method::GET, "/api/v1/tenants/forged", None).await;
    assert_eq!(status, 404, "a forged form created the tenant");

    // Signing out is a form too: without the token the session survives.
    assert_eq!(admin.post_raw("/console/logout", &[]).await.status, 403);
    assert_eq!(admin.get("/console/tenants").await.status, 200);

    // Pages that do not exist say so, and what to do, in a page.
    let nowhere = admin.get("/console/nowhere").await;
    assert_eq!(nowhere.status, 404);
    assert!(
        nowhere.body.contains("There is no such console page; pick one from the menu at the top."),
        "{}",
        nowhere.body
    );
    let no_tenant = admin.get("/console/tenants/forged").await;
    assert_eq!(no_tenant.status, 404);
    let sentence = "tenant forged does not exist; list tenants on the Tenants page.";
    assert!(no_tenant.body.contains(sentence), "{}", no_tenant.body);

    let done = admin.post("/console/tenants", &[("name", "genuine")]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/console/tenants/genuine")));
    let (status, _) = api(&reg, reqwest::Method::GET, "/api/v1/tenants/genuine", None).await;
    assert_eq!(status, 200);
}

async fn a_form_with_an_error_comes_back_with_the_reason_and_what_was_typed(backend: Backend) {
    let reg = Registry::start(backend);
    cast(&reg).await;
    let admin = sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let signed_in = "Signed in as <strong>admin</strong>";

    // A role for a user who does not exist: the tenant's page, not a bare 404 page.
    let grant = [("kind", "user"), ("name", "ghost"), ("namespace", "web"), ("role", "admin")];
    let page = admin.post_and_follow("/console/tenants/acme/members", &grant).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(signed_in), "{}", page.body);
    let reason = "user ghost does not exist; the system administrator creates users on the Users page.";
    assert!(page.body.contains(reason), "{}", page.body);
    for kept in [r#"id="member-name" required value="ghost""#, r#"<option value="web" selected>namespace web</option>"#]
    {
        assert!(page.body.contains(kept), "{kept} missing:\n{}", page.body);
    }
    assert!(page.body.contains(r#"<option value="admin" selected>"#), "{}", page.body);
    // What was typed comes back once: the next visit shows an empty form.
    let again = admin.get("/console/tenants/acme").await;
    assert!(again.body.contains(r#"id="member-name" required value="""#), "{}", again.body);
    assert!(!again.body.contains(reason), "{}", again.body);

    // A robot with a scope on a namespace the tenant does not have: nothing is made, the form is as typed.
    let robot = [
        ("name", "ci"),
        ("description", "builds & tests"),
        ("expires_in_days", "7"),
        ("scope1_namespace", "nowhere"),
        ("scope1_role", "developer"),
        ("scope2_namespace", ""),
        ("scope2_role", "none"),
    ];
    // (A scope's namespace is chosen from the tenant's; a name sent by hand comes back as sent.)
    let page = admin.post_and_follow("/console/tenants/acme/robots", &robot).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(signed_in), "{}", page.body);
    let reason = "namespace nowhere is not in tenant acme; list its namespaces on the tenant&#39;s page.";
    assert!(page.body.contains(reason) || unescape(&page.body).contains(&unescape(reason)), "{}", page.body);
    for kept in [
        r#"value="ci" aria-describedby="robot-name-help""#,
        r#"id="robot-description" maxlength="1024" value="builds &#38; tests""#,
        r#"id="robot-expiry" min="1" max="3650" value="7""#,
        r#"<option value="nowhere" selected>nowhere (not in this tenant)</option>"#,
        r#"<option value="developer" selected>"#,
    ] {
        assert!(unescape(&page.body).contains(&unescape(kept)), "{kept} missing:\n{}", page.body);
    }
    let (_, robots) = api(&reg, reqwest::Method::GET, "/api/v1/tenants/acme/robots", None).await;
    assert_eq!(robots, json!([]));

    // A taken name comes back the same way, the box still ticked.
    let page = admin.post_and_follow("/console/tenants/acme/namespaces", &[("name", "web"), ("public", "true")]).await;
    assert!(page.body.contains("namespace web already exists"), "{}", page.body);
    assert!(page.body.contains(r#"value="web" aria-describedby="namespace-name-help""#), "{}", page.body);
    assert!(page.body.contains(r#"id="namespace-public" checked"#), "{}", page.body);

    // A robot that would outlive ten years, or whose expiry was left unsaid, is not made.
    for (days, reason) in [
        ("99999999999", "\"99999999999\" is not a number of days from 1 to 3650"),
        ("3651", "\"3651\" is not a number of days from 1 to 3650"),
        ("", "no expiry was chosen: give the days until the robot expires (1 to 3650), or tick Never expires"),
    ] {
        let fields = [("name", "forever"), ("expires_in_days", days), ("scope1_role", "viewer")];
        let page = admin.post_and_follow("/console/tenants/acme/robots", &fields).await;
        assert!(unescape(&page.body).contains(reason), "{days:?}: {}", page.body);
    }
    let (_, robots) = api(&reg, reqwest::Method::GET, "/api/v1/tenants/acme/robots", None).await;
    assert_eq!(robots, json!([]));
    // The API holds the same bound; never is said by leaving the expiry out.
    let forever = json!({ "name": "forever", "expires_in_secs": 99_999_999_999i64 * 86_400 });
    let (s, b) = api(&reg, reqwest::Method::POST, "/api/v1/tenants/acme/robots", Some(forever)).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("ten years"), "{b}");
    let never = [("name", "forever"), ("expires_in_days", "90"), ("never_expires", "true"), ("scope1_role", "viewer")];
    let page = admin.post_and_follow("/console/tenants/acme/robots", &never).await;
    assert!(page.body.contains("<td class=\"when\">never</td>"), "{}", page.body);
    let tenyears = [("name", "decade"), ("expires_in_days", "3650"), ("scope1_role", "viewer")];
    let page = admin.post_and_follow("/console/tenants/acme/robots", &tenyears).await;
    assert!(page.body.contains("Robot robot$acme+decade created."), "{}", page.body);
}

/// Text as the browser shows it: the character references a template writes, decoded.
fn unescape(html: &str) -> String {
    [("&#60;", "<"), ("&lt;", "<"), ("&#62;", ">"), ("&gt;", ">"), ("&#34;", "\""), ("&quot;", "\""), ("&#39;", "'")]
        .iter()
        .fold(html.to_owned(), |text, (entity, c)| text.replace(entity, c))
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

async fn html_in_names_and_descriptions_is_shown_as_text(backend: Backend) {
    let reg = Registry::start(backend);
    cast(&reg).await;
    let admin = sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let evil = "<img src=x onerror=alert(1)>";

    // A namespace name with HTML is refused, and the refusal quotes it as text.
    let page = admin.post_and_follow("/console/tenants/acme/namespaces", &[("name", evil)]).await;
    assert!(!page.body.contains("<img src=x"), "raw HTML in the page:\n{}", page.body);
    assert!(
        unescape(&page.body).contains("namespace name \"<img src=x onerror=alert(1)>\" is invalid"),
        "{}",
        page.body
    );
    assert!(page.body.contains("class=\"error\""), "{}", page.body);

    // A robot's description is free text: it is shown, escaped.
    let fields = [
        ("name", "ci"),
        ("description", "<b>builds</b> & <script>x()</script>"),
        ("never_expires", "true"),
        ("scope1_role", "none"),
    ];
    let page = admin.post_and_follow("/console/tenants/acme/robots", &fields).await;
    assert!(page.body.contains("Robot robot$acme+ci created."), "{}", page.body);
    assert!(!page.body.contains("<b>builds</b>") && !page.body.contains("<script>x()"), "{}", page.body);
    assert!(unescape(&page.body).contains("<td><b>builds</b> & <script>x()</script></td>"), "{}", page.body);

    // A tag reference typed into the URL comes back as text as well.
    let page = admin.get("/console/repository?name=%3Cb%3Ehi%3C%2Fb%3E").await;
    assert_eq!(page.status, 400);
    assert!(!page.body.contains("<b>hi</b>"), "{}", page.body);
    assert!(unescape(&page.body).contains("\"<b>hi</b>\" is not a repository name"), "{}", page.body);
}

async fn sign_out_and_a_password_change_end_the_session(backend: Backend) {
    let reg = Registry::start(backend);
    cast(&reg).await;
    let admin = sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let out = admin.post("/console/logout", &[]).await;
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/console/login")));
    // The same cookie, replayed after sign-out, no longer opens anything.
    let replay = admin.get("/console/tenants").await;
    assert_eq!((replay.status, replay.location.as_deref()), (303, Some("/console/login")));

    let vera = sign_in(&reg, "vera", "vera-password").await;
    assert_eq!(vera.get("/console/tenants/acme").await.status, 200);
    let change = json!({ "password": "a-new-password" });
    let (s, b) = api(&reg, reqwest::Method::PUT, "/api/v1/users/vera/password", Some(change)).await;
    assert_eq!(s, 204, "{b}");
    let after = vera.get("/console/tenants/acme").await;
    assert_eq!((after.status, after.location.as_deref()), (303, Some("/console/login")));

    // Vera changes it herself on the console's Password page, linked from every page: the current
    // password first, the new one twice. A mistake comes back with the reason, nothing typed kept.
    let vera = sign_in(&reg, "vera", "a-new-password").await;
    let form = vera.get("/console/password").await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains(r#"<a href="/console/password" id="password-link" aria-current="page">"#));
    let change =
        |current, new, repeat| [("current_password", current), ("new_password", new), ("repeat_password", repeat)];
    for (fields, reason) in [
        (
            change("not-my-password", "third-password", "third-password"),
            "the current password is wrong; nothing was changed.",
        ),
        (
            change("a-new-password", "third-password", "third-passw0rd"),
            "the new password and its repetition differ; type the same one twice.",
        ),
        (change("a-new-password", "short", "short"), "the password must be 8 to 1024 characters long."),
    ] {
        let page = vera.post_and_follow("/console/password", &fields).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains(reason), "{reason}:\n{}", page.body);
        for typed in ["not-my-password", "third-password", "third-passw0rd", "a-new-password"] {
            assert!(!page.body.contains(typed), "{typed} sent back:\n{}", page.body);
        }
    }
    let (s, _) = api_as(&reg, "vera", "a-new-password", reqwest::Method::GET, "/api/v1/tenants", None).await;
    assert_eq!(s, 200, "a refused change changed the password");
    let (_, audit) = api(&reg, reqwest::Method::GET, "/api/v1/audit?actor=vera&action=user.password", None).await;
    let outcomes: Vec<&str> =
        audit["events"].as_array().expect("events").iter().filter_map(|e| e["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["denied"], "a wrong current password is in the audit log: {audit}");
    let changed = vera.post("/console/password", &change("a-new-password", "third-password", "third-password")).await;
    assert_eq!((changed.status, changed.location.as_deref()), (303, Some("/console/login?error=password")));
    let login = http().get(format!("{}/console/login?error=password", reg.url)).send().await.expect("login page");
    let login = login.text().await.unwrap_or_default();
    assert!(login.contains("Your password has changed, and every session you had has ended."), "{login}");
    let ended = vera.get("/console/tenants").await;
    assert_eq!((ended.status, ended.location.as_deref()), (303, Some("/console/login")));
    let (s, _) = api_as(&reg, "vera", "a-new-password", reqwest::Method::GET, "/api/v1/tenants", None).await;
    assert_eq!(s, 401, "the old password still works");
    let (_, audit) = api(&reg, reqwest::Method::GET, "/api/v1/audit?actor=vera&action=user.password", None).await;
    let outcomes: Vec<&str> =
        audit["events"].as_array().expect("events").iter().filter_map(|e| e["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["denied", "success"], "{audit}");
    let vera = sign_in(&reg, "vera", "third-password").await;

    // She forgets it: the system administrator sets another on the Users page. Vera may not.
    let refused = vera.post("/console/users/password", &[("username", "vera"), ("password", "self-set-pass")]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let admin = sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let short = admin.post_and_follow("/console/users/password", &[("username", "vera"), ("password", "short")]).await;
    assert!(short.body.contains("the password must be 8 to 1024 characters long."), "{}", short.body);
    assert!(short.body.contains(r#"<option value="vera" selected>vera</option>"#), "{}", short.body);
    let set =
        admin.post_and_follow("/console/users/password", &[("username", "vera"), ("password", "from-the-admin")]).await;
    assert!(set.body.contains("Password of vera set: their sessions and tokens have ended"), "{}", set.body);
    assert!(!set.body.contains("from-the-admin"), "{}", set.body);
    let ended = vera.get("/console/tenants").await;
    assert_eq!((ended.status, ended.location.as_deref()), (303, Some("/console/login")));
    sign_in(&reg, "vera", "from-the-admin").await;
}

async fn viewer_cannot_act_through_admin_forms_posted_by_hand(backend: Backend) {
    let reg = Registry::start(backend);
    cast(&reg).await;
    let vera = sign_in(&reg, "vera", "vera-password").await;

    for path in ["/console/tenants/acme/robots", "/console/tenants/acme/clusters", "/console/audit", "/console/users"] {
        let page = vera.get(path).await;
        assert_eq!(page.status, 403, "{path}: {}", page.body);
        assert!(page.body.contains("Not allowed") && page.body.contains("vera"), "{path}: {}", page.body);
        // Refused, she is still signed in, and the page says so.
        assert!(page.body.contains("Signed in as <strong>vera</strong>"), "{path}: {}", page.body);
    }
    // The pages she may read do not offer what she may not do.
    let ns = vera.get("/console/namespaces/web").await;
    assert_eq!(ns.status, 200);
    assert!(!ns.body.contains("p2p-switch"), "{}", ns.body);
    let tenants = vera.get("/console/tenants").await;
    assert!(!tenants.body.contains("Create a tenant"), "{}", tenants.body);
    assert!(!tenants.body.contains("/console/tenants/acme/robots"), "{}", tenants.body);
    // Nor does the menu offer pages she may not open.
    for closed in ["/console/dashboard", "/console/audit", "/console/users"] {
        assert!(!tenants.body.contains(&format!("href=\"{closed}\"")), "{closed} offered:\n{}", tenants.body);
    }
    // An admin of the namespace only may choose the clusters its new tags are preheated into, but
    // not open the tenant's Clusters page: the page does not send her there.
    let nadia = json!({ "username": "nadia", "password": "nadia-password" });
    assert_eq!(api(&reg, reqwest::Method::POST, "/api/v1/users", Some(nadia)).await.0, 201);
    let grant = json!({ "kind": "user", "name": "nadia", "namespace": "web", "role": "admin" });
    let (s, b) = api(&reg, reqwest::Method::PUT, "/api/v1/tenants/acme/members", Some(grant)).await;
    assert_eq!(s, 200, "{b}");
    let nadia = sign_in(&reg, "nadia", "nadia-password").await;
    let ns = nadia.get("/console/namespaces/web").await;
    assert!(ns.body.contains("Preheat new tags") && ns.body.contains("p2p-switch"), "{}", ns.body);
    assert!(!ns.body.contains("/console/tenants/acme/clusters"), "{}", ns.body);
    assert!(ns.body.contains("An admin of tenant acme registers one on its Clusters page"), "{}", ns.body);
    assert_eq!(nadia.get("/console/tenants/acme/clusters").await.status, 403);
    let as_admin = sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let ns = as_admin.get("/console/namespaces/web").await;
    assert!(ns.body.contains(r#"<a href="/console/tenants/acme/clusters">Clusters page</a>"#), "{}", ns.body);

    let admin = as_admin.get("/console/tenants").await;
    for open in ["/console/dashboard", "/console/audit", "/console/users"] {
        assert!(admin.body.contains(&format!("href=\"{open}\"")), "{open} not offered:\n{}", admin.body);
    }

    // Posting the forms anyway changes nothing, and says why.
    let actions: [(&str, &[(&str, &str)]); 7] = [
        ("/console/tenants", &[("name", "sneaky")]),
        ("/console/tenants/acme/namespaces", &[("name", "sneaky")]),
        ("/console/namespaces/web", &[("p2p_enabled", "true")]),
        ("/console/namespaces/web", &[("public", "true"), ("confirmed", "yes")]),
        ("/console/tenants/acme/robots", &[("name", "sneaky"), ("scope1_role", "none")]),
        ("/console/tenants/acme/clusters", &[("name", "sneaky")]),
        ("/console/users", &[("username", "sneaky"), ("password", "sneaky-password")]),
    ];
    for (path, fields) in actions {
        let page = vera.post(path, fields).await;
        assert_eq!(page.status, 403, "{path}: {}", page.body);
        assert!(page.body.contains("Not allowed") && page.body.contains("vera"), "{path}: {}", page.body);
    }
    let (_, ns) = api(&reg, reqwest::Method::GET, "/api/v1/namespaces/web", None).await;
    assert_eq!(ns["p2p_enabled"], false);
    let (_, tenants) = api(&reg, reqwest::Method::GET, "/api/v1/tenants", None).await;
    assert_eq!(tenants.as_array().map(Vec::len), Some(2), "{tenants}");
    let (_, namespaces) = api(&reg, reqwest::Method::GET, "/api/v1/tenants/acme/namespaces", None).await;
    assert_eq!(namespaces.as_array().map(Vec::len), Some(1), "{namespaces}");
    let (_, robots) = api(&reg, reqwest::Method::GET, "/api/v1/tenants/acme/robots", None).await;
    assert_eq!(robots, json!([]));
    let (_, clusters) = api(&reg, reqwest::Method::GET, "/api/v1/tenants/acme/clusters", None).await;
    assert_eq!(clusters, json!([]));
    // Each refusal is in the audit log.
    let (_, audit) = api(&reg, reqwest::Method::GET, "/api/v1/audit?actor=vera&limit=100", None).await;
    let denied: Vec<&str> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in
        ["tenant.create", "namespace.create", "namespace.update", "robot.create", "cluster.create", "user.create"]
    {
        assert!(denied.contains(&action), "no denied {action} in {denied:?}");
    }
}

/// Pushes a blob as the system administrator.
async fn push_blob(reg: &Registry, repo: &str, bytes: &[u8]) -> String {
    reg.push_blob(repo, bytes).await.to_string()
}

async fn push_manifest(reg: &Registry, repo: &str, tag: &str, media_type: &str, body: &str) {
    image::push_manifest(&Http::new(reg), &Cred::admin(), repo, tag, media_type, body).await.expect(201);
}

const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image `web/app:1.0` (one 3000-byte layer) and an index `web/app:multi` for two platforms;
/// the image's digest and its size (config and layer: what a pull fetches).
async fn push_app(reg: &Registry) -> (String, usize) {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = damselfly_tests::pseudo_random(3000, 7);
    let config_digest = push_blob(reg, "web/app", config).await;
    let layer_digest = push_blob(reg, "web/app", &layer).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }],
    })
    .to_string();
    push_manifest(reg, "web/app", "1.0", IMAGE, &manifest).await;
    let image_digest = damselfly_tests::sha256_digest(manifest.as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            { "mediaType": IMAGE, "digest": image_digest, "size": manifest.len(), "platform": { "os": "linux", "architecture": "amd64" } },
            { "mediaType": IMAGE, "digest": image_digest, "size": manifest.len(), "platform": { "os": "linux", "architecture": "arm64", "variant": "v8" } },
        ],
    })
    .to_string();
    push_manifest(reg, "web/app", "multi", INDEX, &index).await;
    (image_digest, config.len() + layer.len())
}

async fn repository_page_lists_tags_with_pull_commands_and_deletes_a_tag(backend: Backend) {
    let reg = Registry::start_with(backend, &[("DAMSELFLY_ACCELERATION_HOST", "p2p.example.test:65001")]);
    cast(&reg).await;
    let (image_digest, image_size) = push_app(&reg).await;
    let admin = sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;

    // The namespace lists each repository with its tags, what it stores and its last push.
    let ns = admin.get("/console/namespaces/web").await;
    let listed = format!(
        "<tr><td><a href=\"/console/repository?name=web%2Fapp\">web/app</a></td><td>2</td><td>{:.1} KiB</td><td class=\"when\">",
        image_size as f64 / 1024.0
    );
    assert!(ns.body.contains(&listed), "{listed} missing:\n{}", ns.body);
    let page = admin.get("/console/repository?name=web%2Fapp").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let size = format!("{:.1} KiB", image_size as f64 / 1024.0);
    for expected in [
        format!("<code>{image_digest}</code>"),
        format!("<code>{IMAGE}</code>"),
        format!("<code>{INDEX}</code>"),
        // A tag card is headed by the whole reference; sizes are the config and layers, per platform for an index.
        "<h2>web/app:1.0</h2>".to_owned(),
        "<h2>web/app:multi</h2>".to_owned(),
        format!("<dt>Size</dt><dd>{size}</dd>"),
        format!("<li>linux/amd64: {size}</li><li>linux/arm64/v8: {size}</li>"),
        // Over plain HTTP, every client is told what it needs.
        format!("docker pull {}/web/app:1.0", reg.host),
        format!("podman pull --tls-verify=false {}/web/app:1.0", reg.host),
        // Docker speaks plain HTTP to a loopback address by itself: no daemon.json to edit.
        format!("Docker accepts that for {} by itself", reg.host),
        "docker pull p2p.example.test:65001/web/app:1.0".to_owned(),
        "podman pull p2p.example.test:65001/web/app:multi".to_owned(),
        "podman pull --tls-verify=false 127.0.0.1:65001/web/app:1.0".to_owned(),
        "a name for the nodes: it resolves on a node once a cluster&#39;s setup command has written its hosts entry"
            .to_owned(),
        "href=\"/console/tenants/acme/clusters\" id=\"clusters-link\"".to_owned(),
    ] {
        assert!(
            page.body.contains(&expected) || unescape(&page.body).contains(&unescape(&expected)),
            "repository page lacks {expected}:\n{}",
            page.body
        );
    }

    // A viewer sees the tags but is offered no delete, and a hand-made delete is refused.
    let vera = sign_in(&reg, "vera", "vera-password").await;
    let seen = vera.get("/console/repository?name=web%2Fapp").await;
    assert_eq!(seen.status, 200);
    assert!(!seen.body.contains("Delete tag"), "{}", seen.body);
    assert!(!seen.body.contains("clusters-link"), "a viewer is not sent to a page closed to her:\n{}", seen.body);
    let delete = [("repository", "web/app"), ("tag", "1.0")];
    let refused = vera.post("/console/repository/delete-tag", &[&delete[..], &[("confirmed", "yes")]].concat()).await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    // Deleting asks first: the first post only shows what it would do.
    let asked = admin.post("/console/repository/delete-tag", &delete).await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    assert!(asked.body.contains("Delete tag 1.0 of web/app?"), "{}", asked.body);
    assert!(asked.body.contains(r#"<input type="hidden" name="confirmed" value="yes">"#), "{}", asked.body);
    assert!(asked.body.contains(r#"<a href="/console/repository?name=web%2Fapp" id="cancel">Cancel</a>"#));
    assert_eq!(admin.get("/console/repository?name=web%2Fapp").await.body.matches("<h2>web/app:").count(), 2);
    let after =
        admin.post_and_follow("/console/repository/delete-tag", &[&delete[..], &[("confirmed", "yes")]].concat()).await;
    assert!(after.body.contains("Tag 1.0 deleted from web/app."), "{}", after.body);
    let r = http()
        .get(format!("{}/v2/web/app/manifests/1.0", reg.url))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .header("accept", IMAGE)
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(r.status(), 404, "the tag still resolves");
    let (_, audit) = api(&reg, reqwest::Method::GET, "/api/v1/audit?action=tag.delete", None).await;
    let outcomes: Vec<(&str, &str)> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["actor"].as_str().unwrap_or(""), e["outcome"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(outcomes, vec![("vera", "denied"), ("admin", "success")]);
}

/// A tenant admin preheats a tag from its repository page into a cluster and follows the job
/// node by node; a viewer is offered no preheat.
#[tokio::test(flavor = "multi_thread")]
async fn repository_page_preheats_a_tag_into_a_cluster_and_shows_each_node() {
    use reqwest::Method;
    let reg = Registry::start(Backend::Sqlite);
    cast(&reg).await;
    push_app(&reg).await;
    let (s, b) = api(&reg, Method::PATCH, "/api/v1/namespaces/web", Some(json!({"p2p_enabled": true}))).await;
    assert_eq!(s, 200, "{b}");
    let (s, cluster) = api(&reg, Method::POST, "/api/v1/tenants/acme/clusters", Some(json!({"name": "edge"}))).await;
    assert_eq!(s, 201, "{cluster}");
    let agent = Agent::start(&reg.url, cluster["token"].as_str().expect("token"), &[]);
    let node = format!("node-{}", agent.peer_url.rsplit(':').next().expect("port"));
    // The registry caches namespaces for two seconds.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    let vera = sign_in(&reg, "vera", "vera-password").await;
    let seen = vera.get("/console/repository?name=web%2Fapp").await;
    assert!(!seen.body.contains("Preheat 1.0"), "{}", seen.body);

    let admin = sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let page = admin.get("/console/repository?name=web%2Fapp").await;
    assert!(page.body.contains("<option value=\"edge\">edge</option>"), "{}", page.body);
    assert!(page.body.contains("Preheat 1.0"), "{}", page.body);
    let form = [("repository", "web/app"), ("tag", "1.0"), ("cluster", "edge")];
    let refused =
        admin.post_and_follow("/console/repository/preheat", &[&form[..], &[("percent", "0")]].concat()).await;
    assert!(refused.body.contains("percent 0 is out of range: give 1 to 100"), "{}", refused.body);

    let posted = admin.post("/console/repository/preheat", &[&form[..], &[("percent", "100")]].concat()).await;
    assert_eq!(posted.status, 303, "{}", posted.body);
    let job_page = posted.location.expect("Location");
    assert!(job_page.starts_with("/console/tenants/acme/clusters/edge/preheat/"), "{job_page}");
    let first = admin.get(&job_page).await;
    assert!(first.body.contains("Preheat of web/app:1.0 into cluster edge started."), "{}", first.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = admin.get(&job_page).await;
        assert_eq!(page.status, 200, "{}", page.body);
        if page.body.contains("<strong id=\"preheat-state\">done</strong>") {
            let platform = damselfly_core::p2p::this_platform();
            let row = format!("<tr><td>{node}</td><td>{platform}</td><td>done</td><td></td></tr>");
            assert!(page.body.contains(&row), "{}", page.body);
            assert!(page.body.contains("by the console: 2 blob(s)."), "{}", page.body);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the job is not done after 30 s:\n{}", page.body);
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let clusters = admin.get("/console/tenants/acme/clusters").await;
    assert!(clusters.body.contains(">web/app:1.0</a></td><td>the console</td>"), "{}", clusters.body);
    // Through the console too, a viewer of the tenant may not follow (or start) a preheat.
    assert_eq!(vera.get(&job_page).await.status, 403);
    let refused = vera.post("/console/repository/preheat", &[&form[..], &[("percent", "100")]].concat()).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
}

/// A namespace admin chooses on the namespace page which clusters new tags are preheated
/// into; a push then starts a job that the cluster page lists. A viewer sees no such form.
#[tokio::test(flavor = "multi_thread")]
async fn namespace_page_preheats_new_tags_into_chosen_clusters() {
    use reqwest::Method;
    let reg = Registry::start(Backend::Sqlite);
    cast(&reg).await;
    let (s, b) = api(&reg, Method::PATCH, "/api/v1/namespaces/web", Some(json!({"p2p_enabled": true}))).await;
    assert_eq!(s, 200, "{b}");
    let (s, cluster) = api(&reg, Method::POST, "/api/v1/tenants/acme/clusters", Some(json!({"name": "edge"}))).await;
    assert_eq!(s, 201, "{cluster}");
    let _agent = Agent::start(&reg.url, cluster["token"].as_str().expect("token"), &[]);

    let vera = sign_in(&reg, "vera", "vera-password").await;
    assert!(!vera.get("/console/namespaces/web").await.body.contains("Preheat new tags"));
    let refused = vera.post("/console/namespaces/web/preheat", &[("cluster", "edge"), ("percent", "100")]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    let admin = sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let page = admin.get("/console/namespaces/web").await;
    assert!(page.body.contains("<tr><td>edge</td><td>not preheated</td>"), "{}", page.body);
    // A cluster the tenant does not have: back to the namespace's page with the reason (a bare 404 page before).
    let unknown =
        admin.post_and_follow("/console/namespaces/web/preheat", &[("cluster", "nowhere"), ("percent", "50")]).await;
    assert_eq!(unknown.status, 200, "{}", unknown.body);
    assert!(unknown.body.contains("Signed in as <strong>admin</strong>"), "{}", unknown.body);
    assert!(unknown.body.contains("cluster nowhere does not exist in tenant acme"), "{}", unknown.body);
    let set = admin.post_and_follow("/console/namespaces/web/preheat", &[("cluster", "edge"), ("percent", "50")]).await;
    assert!(
        set.body.contains("New tags of web are preheated into cluster edge (50% of its online agents)."),
        "{}",
        set.body
    );
    assert!(set.body.contains("<tr><td>edge</td><td>50% of the online agents</td>"), "{}", set.body);
    let (_, ns) = api(&reg, Method::GET, "/api/v1/namespaces/web", None).await;
    assert_eq!(ns["preheat_on_push"], json!([{"cluster": "edge", "percent": 50}]));

    // A push starts a job at once.
    push_app(&reg).await;
    let clusters = admin.get("/console/tenants/acme/clusters").await;
    assert!(clusters.body.contains("Preheat jobs of the last hour"), "{}", clusters.body);
    assert!(clusters.body.contains(">web/app:1.0</a></td><td>a push</td>"), "{}", clusters.body);

    let stopped =
        admin.post_and_follow("/console/namespaces/web/preheat", &[("cluster", "edge"), ("percent", "0")]).await;
    assert!(stopped.body.contains("New tags of web are no longer preheated into cluster edge."), "{}", stopped.body);
    let (_, ns) = api(&reg, Method::GET, "/api/v1/namespaces/web", None).await;
    assert_eq!(ns["preheat_on_push"], json!([]));
}

async fn failed_sign_ins_go_through_the_login_rate_limit(backend: Backend) {
    let reg = Registry::start_with(backend, &[("DAMSELFLY_LOGIN_FAILURES_PER_MINUTE", "2")]);
    for _ in 0..2 {
        let (page, _) = post_sign_in(&reg, ADMIN_USER, "wrong-password").await;
        assert_eq!(page.status, 401, "{}", page.body);
        assert!(page.body.contains("Wrong username or password"), "{}", page.body);
    }
    // Now even the right password waits, as at the token endpoint.
    let (page, headers) = post_sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(page.body.contains("Too many failed sign-ins"), "{}", page.body);
    assert!(cookie_from(&headers, "damselfly_session").is_none());
    let r = http()
        .get(format!("{}/auth/token?service=damselfly", reg.url))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 429, "the console and the token endpoint share one limiter");
}

#[tokio::test(flavor = "multi_thread")]
async fn cookies_are_secure_behind_https_and_sign_in_needs_its_form_token() {
    let reg = Registry::start_with(Backend::Sqlite, &[("DAMSELFLY_PUBLIC_URL", "https://registry.example.test")]);
    // Without the login form's cookie and token, the password is not even checked.
    let r = http()
        .post(format!("{}/console/login", reg.url))
        .form(&[("username", ADMIN_USER), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), 403);
    assert!(cookie_from(r.headers(), "damselfly_session").is_none());
    assert!(r.text().await.unwrap_or_default().contains("The sign-in form had expired"));

    let (page, headers) = post_sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let session = cookie_from(&headers, "damselfly_session").expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(session.contains(attribute), "session cookie lacks {attribute}: {session}");
    }
}

/// The number in the first `value="…"` after `marker`.
fn number_after(html: &str, marker: &str) -> u64 {
    let at = html.find(marker).unwrap_or_else(|| panic!("no {marker} in:\n{html}"));
    let rest = &html[at..];
    let v = &rest[rest.find("value=\"").expect("a value") + 7..];
    v[..v.find('"').expect("closing quote")].parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_counts_bytes_from_peers_and_the_seed_per_tenant_and_clusters_show_heartbeats() {
    use reqwest::Method;
    let reg = Registry::start_with(
        Backend::Sqlite,
        &[("DAMSELFLY_PIECE_SIZE", "65536"), ("DAMSELFLY_TRAFFIC_SAMPLE_SECS", "1")],
    );
    cast(&reg).await;
    let (s, b) = api(&reg, Method::PATCH, "/api/v1/namespaces/web", Some(json!({ "p2p_enabled": true }))).await;
    assert_eq!(s, 200, "{b}");
    let (s, cluster) = api(&reg, Method::POST, "/api/v1/tenants/acme/clusters", Some(json!({ "name": "edge" }))).await;
    assert_eq!(s, 201, "{cluster}");
    let cluster_token = cluster["token"].as_str().expect("cluster token");
    // A second tenant with its own admin, who must see none of acme's traffic.
    let (s, b) = api(&reg, Method::POST, "/api/v1/tenants", Some(json!({ "name": "globex" }))).await;
    assert_eq!(s, 201, "{b}");
    let gina = json!({ "username": "gina", "password": "gina-password" });
    assert_eq!(api(&reg, Method::POST, "/api/v1/users", Some(gina)).await.0, 201);
    let grant = json!({ "kind": "user", "name": "gina", "role": "admin" });
    assert_eq!(api(&reg, Method::PUT, "/api/v1/tenants/globex/members", Some(grant)).await.0, 200);

    let blob = damselfly_tests::pseudo_random(1024 * 1024, 11);
    let digest = push_blob(&reg, "web/app", &blob).await;
    let token: Value = http()
        .get(format!("{}/auth/token?service=damselfly&scope=repository:web/app:pull", reg.url))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token JSON");
    let token = token["token"].as_str().expect("token");
    let first = Agent::start(&reg.url, cluster_token, &[]);
    let second = Agent::start(&reg.url, cluster_token, &[]);
    for agent in [&first, &second] {
        let r = http()
            .get(format!("{}/v2/web/app/blobs/{digest}", agent.mirror_url))
            .bearer_auth(token)
            .send()
            .await
            .expect("pull through the agent");
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.expect("blob").len(), blob.len());
    }

    // Each agent's bytes are counted once: the first's from the seed, most of the second's from the first.
    let admin = sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = admin.get("/console/dashboard?tenant=acme").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let counted = number_after(&page.body, "id=\"total-peers\"") + number_after(&page.body, "id=\"total-seed\"");
        if counted == 2 * blob.len() as u64 && page.body.contains("<polyline") {
            break page;
        }
        assert!(Instant::now() < deadline, "counted {counted} bytes, want {}:\n{}", 2 * blob.len(), page.body);
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let peers = number_after(&page.body, "id=\"total-peers\"");
    let seed = number_after(&page.body, "id=\"total-seed\"");
    assert!(peers > 0 && seed >= blob.len() as u64, "peers {peers}, seed {seed}");
    assert_eq!(number_after(&page.body, "<td>web</td>"), peers, "per namespace");
    assert_eq!(number_after(&page.body, "<td>edge</td>"), peers, "per cluster");
    let saved = format!("{:.1} %", peers as f64 * 100.0 / (peers + seed) as f64);
    assert!(page.body.contains(&format!("<strong id=\"total-saved\">{saved}</strong>")), "{saved}:\n{}", page.body);
    assert!(page.body.contains("points every 1 s") || page.body.contains(" per 1 s</text>"), "{}", page.body);
    assert!(page.body.contains("Each point is the bytes agents received in 1 s"), "{}", page.body);
    // Both pulls are over: the swarm stops counting as active once the agents hold every piece,
    // within seconds, not minutes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = admin.get("/console/dashboard?tenant=acme").await;
        if page.body.contains("<strong id=\"active-swarms\">0</strong>") {
            break;
        }
        assert!(Instant::now() < deadline, "a swarm still counts as active after every pull ended:\n{}", page.body);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let gina = sign_in(&reg, "gina", "gina-password").await;
    let own = gina.get("/console/dashboard").await;
    assert_eq!(number_after(&own.body, "id=\"total-peers\""), 0, "{}", own.body);
    assert_eq!(number_after(&own.body, "id=\"total-seed\""), 0, "{}", own.body);
    assert!(!own.body.contains("<td>web</td>") && !own.body.contains("<td>edge</td>"), "{}", own.body);
    assert_eq!(gina.get("/console/dashboard?tenant=acme").await.status, 403);
    let browser = Browser::start().await;
    browser.sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    browser.goto(&format!("{}/console/dashboard?tenant=acme", reg.url)).await;
    browser.screenshot("dashboard-traffic").await;
    browser.quit().await;

    // The agents' heartbeats (every 10 s) bring cache use and bytes served to the clusters page.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let page = admin.get("/console/tenants/acme/clusters").await;
        assert!(page.body.contains("2 agent(s) online"), "{}", page.body);
        if !page.body.contains("not reported") {
            assert!(page.body.contains("1.0 MiB"), "cache use of 1 MiB missing:\n{}", page.body);
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeat reported cache use:\n{}", page.body);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------
// A real browser.

/// A chromedriver on a free loopback port and a headless Chromium session
/// through it. [`Browser::quit`] ends the session (Chromium exits); if a test
/// fails first, drop kills chromedriver's whole process group, Chromium
/// included, so no browser outlives its test.
struct Browser {
    client: Option<Client>,
    driver: Child,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run chromedriver (apt package chromium-driver; scripts/test.sh installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http().get(format!("{url}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer on {url} within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::Builder::new().prefix("damselfly-chromium-").tempdir().expect("profile directory");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                // Root in a container: no sandbox; a small /dev/shm: use /tmp.
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("start a Chromium session through chromedriver");
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        Browser { client: Some(client), driver, shots, _profile: profile }
    }

    /// Ends the browser session; chromedriver then closes Chromium.
    async fn quit(mut self) {
        if let Some(client) = self.client.take() {
            client.close().await.expect("end the browser session");
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("browser session")
    }

    async fn goto(&self, url: &str) {
        self.c().goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.c().find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"));
        field.clear().await.unwrap_or_else(|e| panic!("clear {css}: {e}"));
        field.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    async fn select(&self, css: &str, value: &str) {
        let field = self.c().find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"));
        field.select_by_value(value).await.unwrap_or_else(|e| panic!("select {value} in {css}: {e}"));
    }

    /// Clicks and waits for the next page to show `then`.
    async fn click(&self, css: &str, then: &str) {
        // Mark this page, so that `then` is looked for on the next one and not found on this one.
        self.c().execute("document.body.dataset.left = 'yes'", vec![]).await.expect("mark the page");
        let button = self.c().find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"));
        button.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let still_here =
                self.c().execute("return document.body && document.body.dataset.left === 'yes'", vec![]).await;
            if matches!(still_here, Ok(Value::Bool(false))) {
                break;
            }
            assert!(Instant::now() < deadline, "clicking {css} did not lead to another page");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.c()
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(then))
            .await
            .unwrap_or_else(|e| panic!("after clicking {css}, {then} did not appear: {e}"));
    }

    /// Clicks the element at `xpath` and waits for the next page to show `then`.
    async fn click_xpath(&self, xpath: &str, then: &str) {
        let id = format!("picked-{}", xpath.len());
        let el = self.c().find(Locator::XPath(xpath)).await.unwrap_or_else(|e| panic!("find {xpath}: {e}"));
        // Give it an id, so that `click` finds it the way it finds any other.
        self.c()
            .execute("arguments[0].id = arguments[1]", vec![serde_json::to_value(&el).expect("element"), json!(id)])
            .await
            .expect("mark the element");
        self.click(&format!("#{id}"), then).await;
    }

    /// A form field's current value.
    async fn value(&self, css: &str) -> String {
        let el = self.c().find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"));
        el.prop("value").await.unwrap_or_else(|e| panic!("value of {css}: {e}")).unwrap_or_default()
    }

    async fn text(&self, css: &str) -> String {
        let el = self.c().find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"));
        el.text().await.unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    async fn path(&self) -> String {
        self.c().current_url().await.expect("current URL").path().to_owned()
    }

    /// A screenshot of the whole page, taken in a window tall enough for it.
    async fn full_screenshot(&self, name: &str) {
        self.c().set_window_size(1280, 2400).await.expect("a tall window");
        self.screenshot(name).await;
        self.c().set_window_size(1280, 900).await.expect("laptop-sized window");
    }

    async fn screenshot(&self, name: &str) {
        let png = self.c().screenshot().await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write screenshot");
    }

    async fn sign_in(&self, reg: &Registry, user: &str, password: &str) {
        self.goto(&format!("{}/console/login", reg.url)).await;
        self.fill("#username", user).await;
        self.fill("#password", password).await;
        self.click("#sign-in", "header.top .who").await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        drop(self.client.take());
        // chromedriver leads its own process group; Chromium and its helpers are in it.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.driver.id())]).status();
        let _ = self.driver.wait();
    }
}

/// Runs a login line as pasted into a terminal, typing `password` when it asks: `script`
/// gives the command a terminal, as podman reads a password only from one.
fn login_on_a_terminal(ws: &damselfly_tests::workstation::Workstation, line: &str, password: &str) {
    use std::io::Write as _;
    let mut child = ws
        .command("script")
        .args(["-qec", line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    // The terminal keeps what is typed until podman reads its password.
    child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("type the password");
    let out = child.wait_with_output().expect("login");
    assert!(
        out.status.success(),
        "{line}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_sets_up_tenant_namespace_robot_p2p_and_cluster_in_a_browser() {
    let reg = Registry::start(Backend::Sqlite);
    let browser = Browser::start().await;

    // Sign in: the registry's root leads to the console, which asks who you are first.
    browser.goto(&format!("{}/", reg.url)).await;
    assert_eq!(browser.path().await, "/console/login", "the console asks who you are first");
    browser.screenshot("login").await;
    browser.sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(browser.path().await, "/console/tenants");
    assert!(browser.text("header.top .who").await.contains("Signed in as admin"));

    // A tenant.
    browser.fill("#tenant-name", "acme").await;
    browser.click("#create-tenant", "#namespace-name").await;
    assert_eq!(browser.path().await, "/console/tenants/acme");
    assert_eq!(browser.text(".notice").await, "Tenant acme created. Add namespaces and members below.");

    // A namespace.
    browser.fill("#namespace-name", "web").await;
    browser.click("#create-namespace", "#namespaces").await;
    assert!(browser.text("#namespaces").await.contains("web"));
    browser.fill("#member-name", ADMIN_USER).await;
    browser.select("#member-role", "owner").await;
    browser.click("#grant-role", "#members").await;
    browser.screenshot("tenant").await;

    // P2P acceleration on, as the API sees it.
    browser.goto(&format!("{}/console/namespaces/web", reg.url)).await;
    assert!(browser.text("#p2p-state").await.starts_with("off"));
    browser.click("#p2p-switch", ".notice").await;
    assert!(browser.text("#p2p-state").await.starts_with("on"));
    let (_, ns) = api(&reg, reqwest::Method::GET, "/api/v1/namespaces/web", None).await;
    assert_eq!(ns["p2p_enabled"], true, "{ns}");
    browser.screenshot("namespace").await;

    // A robot account with a scope and an expiry; its token, shown once, works.
    browser.goto(&format!("{}/console/tenants/acme/robots", reg.url)).await;
    browser.fill("#robot-name", "ci").await;
    browser.fill("#robot-description", "CI pushes").await;
    browser.fill("#robot-expiry", "30").await;
    browser.select("#robot-scope1-namespace", "web").await;
    browser.select("#robot-scope1-role", "developer").await;
    browser.click("#create-robot", "#secret-value").await;
    let token = browser.text("#secret-value").await;
    browser.screenshot("robots").await;
    // The login lines shown with it work as pasted: podman asks for the password, and the token is it.
    let logins = browser.text("#secret-command").await;
    let podman_line = format!("podman login --tls-verify=false {} -u 'robot$acme+ci'", reg.host);
    assert_eq!(
        logins.lines().collect::<Vec<_>>(),
        [
            format!("docker login {} -u 'robot$acme+ci'", reg.host),
            podman_line.clone(),
            format!("printf '%s' \"$TOKEN\" | docker login {} -u 'robot$acme+ci' --password-stdin", reg.host),
        ]
    );
    assert!(!browser.text(".secret").await.contains("paste the token when asked"), "--password-stdin never asks");
    let ws = damselfly_tests::workstation::Workstation::new();
    login_on_a_terminal(&ws, &podman_line, &token);
    let auth = std::fs::read_to_string(ws.path("auth.json")).expect("auth.json");
    assert!(auth.contains(&reg.host), "podman did not log in with the line shown: {auth}");
    assert!(browser.text("#robots").await.contains("developer on web"));
    let (status, body) =
        api_as(&reg, "robot$acme+ci", &token, reqwest::Method::GET, "/api/v1/tenants/acme", None).await;
    assert_eq!(status, 200, "the robot's token from the page does not log in: {body}");
    browser.goto(&format!("{}/console/tenants/acme/robots", reg.url)).await;
    assert!(browser.c().find(Locator::Css("#secret-value")).await.is_err(), "the token was shown twice");
    // Revoked, after a confirmation, the same token no longer logs in.
    browser.click("#robots button.danger", "#confirm").await;
    assert!(browser.text("#consequence").await.contains("stops working at once"));
    browser.screenshot("confirm-revoke").await;
    browser.click("#confirm", ".notice").await;
    assert!(browser.text("#robots").await.contains("revoked"));
    let (status, _) = api_as(&reg, "robot$acme+ci", &token, reqwest::Method::GET, "/api/v1/tenants/acme", None).await;
    assert_eq!(status, 401, "a revoked robot's token still works");

    // A cluster; an agent started with the command on the page shows up on it.
    browser.goto(&format!("{}/console/tenants/acme/clusters", reg.url)).await;
    browser.fill("#cluster-name", "edge").await;
    browser.click("#register-cluster", "#secret-command").await;
    let command = browser.text("#secret-command").await;
    browser.screenshot("cluster-registered").await;
    let expected_tail = format!("' {}/p2p/v1/install.sh | sh", reg.url);
    let token = command
        .strip_prefix("curl -sSL -H 'Authorization: Cluster ")
        .and_then(|rest| rest.strip_suffix(&expected_tail))
        .unwrap_or_else(|| panic!("unexpected setup command: {command}"));
    // The command's own fetch, without the pipe, gets the setup script for this cluster.
    let fetch = command.strip_suffix(" | sh").expect("piped to sh");
    let script = run(Command::new("sh").args(["-c", fetch]));
    assert!(script.starts_with("#!/bin/sh") && script.contains("damselfly-system"), "{script}");
    // The same command with a token mistyped stops with the registry's reason and status 1.
    let mistyped = command.replace(token, &format!("{token}x"));
    let out = Command::new("sh").args(["-c", &mistyped]).output().expect("sh");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("damselfly setup: the registry does not know this cluster token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent = Agent::start(&reg.url, token, &[]);
    let node = agent.peer_url.rsplit(':').next().map(|p| format!("node-{p}")).expect("peer port");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        browser.goto(&format!("{}/console/tenants/acme/clusters", reg.url)).await;
        if browser.text(".cluster").await.contains(&node) {
            break;
        }
        assert!(Instant::now() < deadline, "agent {node} never appeared on the clusters page");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(browser.text(".cluster").await.contains("1 agent(s) online"));
    browser.screenshot("clusters").await;

    // The other main pages render, on a laptop and on a phone.
    for (name, path) in
        [("tenants", "/console/tenants"), ("dashboard", "/console/dashboard"), ("audit", "/console/audit")]
    {
        browser.goto(&format!("{}{path}", reg.url)).await;
        assert!(browser.c().find(Locator::Css("main h1")).await.is_ok(), "{path} has no heading");
        browser.screenshot(name).await;
    }
    // The audit log, filtered to one action chosen from those recorded.
    browser.select("#audit-action", "namespace.update").await;
    browser.click("#audit-filter", "#audit").await;
    let actions = browser.c().find_all(Locator::Css("#audit tbody td:nth-child(3)")).await.expect("audit rows");
    assert_eq!(actions.len(), 1, "one P2P switch was made");
    assert_eq!(actions[0].text().await.expect("text"), "namespace.update");
    assert!(browser.text("#audit").await.contains("p2p enabled: yes"), "{}", browser.text("#audit").await);
    browser.screenshot("audit-filtered").await;
    browser.c().set_window_size(390, 844).await.expect("phone-sized window");
    browser.goto(&format!("{}/console/namespaces/web", reg.url)).await;
    browser.screenshot("namespace-phone").await;
    browser.c().set_window_size(1280, 900).await.expect("laptop-sized window");

    // Sign out: the console is closed again.
    browser.click("header.top .who button", "#username").await;
    assert_eq!(browser.path().await, "/console/login");
    browser.goto(&format!("{}/console/tenants/acme", reg.url)).await;
    assert_eq!(browser.path().await, "/console/login");
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn viewer_cannot_reach_admin_pages_by_url_in_a_browser() {
    let reg = Registry::start(Backend::Sqlite);
    cast(&reg).await;
    let browser = Browser::start().await;
    browser.sign_in(&reg, "vera", "vera-password").await;
    assert!(browser.text("#tenants").await.contains("acme"));
    assert!(browser.c().find(Locator::Css("#tenant-name")).await.is_err(), "a viewer is offered tenant creation");

    for path in ["/console/tenants/acme/robots", "/console/tenants/acme/clusters", "/console/audit"] {
        browser.goto(&format!("{}{path}", reg.url)).await;
        let title = browser.text("main h1").await;
        assert_eq!(title, "Not allowed", "{path}");
        let message = browser.text("#error-message").await;
        assert!(message.contains("vera") && message.ends_with('.'), "{path}: {message}");
    }
    browser.goto(&format!("{}/console/tenants/acme/robots", reg.url)).await;
    browser.screenshot("viewer-refused").await;
    browser.goto(&format!("{}/console/dashboard", reg.url)).await;
    assert!(browser.text("main").await.contains("you manage none"));
    browser.quit().await;
}

/// An artifact pushed with `oci-client` (an artifact type, a title per file, as
/// `oras push` writes them) is listed like an image, with its type and files,
/// and `damselfly-agent get` takes one file of it back by name.
#[tokio::test(flavor = "multi_thread")]
async fn an_artifact_pushed_with_oci_client_is_listed_with_its_files_and_fetched_by_name() {
    use oci_client::client::{ClientConfig, ClientProtocol, Config as OciConfig, ImageLayer};
    use oci_client::manifest::OciImageManifest;
    use std::collections::BTreeMap;

    let reg = Registry::start(Backend::Sqlite);
    let title = |name: &str| Some(BTreeMap::from([("org.opencontainers.image.title".to_owned(), name.to_owned())]));
    let model = damselfly_tests::pseudo_random(3 * 1024 * 1024 + 17, 5);
    let layers = vec![
        ImageLayer::new(b"weights and biases\n".to_vec(), "text/plain".to_owned(), title("README.txt")),
        ImageLayer::new(model.clone(), "application/vnd.example.model.layer.v1".to_owned(), title("model.bin")),
    ];
    let config = OciConfig::new(b"{}".to_vec(), "application/vnd.oci.empty.v1+json".to_owned(), None);
    let annotations = BTreeMap::from([("org.opencontainers.image.description".to_owned(), "a model".to_owned())]);
    let mut manifest = OciImageManifest::build(&layers, &config, Some(annotations));
    manifest.artifact_type = Some("application/vnd.example.model.v1".to_owned());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() });
    let reference: oci_client::Reference = format!("{}/files/model:v1", reg.host).parse().expect("reference");
    let auth = oci_client::secrets::RegistryAuth::Basic(ADMIN_USER.into(), ADMIN_PASSWORD.into());
    client.push(&reference, &layers, config, &auth, Some(manifest)).await.expect("oci-client push");

    let admin = sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let page = admin.get("/console/repository?name=files%2Fmodel").await;
    assert_eq!(page.status, 200, "{}", page.body);
    for expected in ["<code>application/vnd.example.model.v1</code>", "README.txt, model.bin", "podman pull"] {
        assert!(page.body.contains(expected), "repository page lacks {expected}:\n{}", page.body);
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("model.bin");
    let got = Command::new(damselfly_tests::binary("damselfly-agent"))
        .args(["get", "files/model:v1", "--file", "model.bin", "--registry", &reg.url, "--username", ADMIN_USER])
        .args(["--agent", &format!("127.0.0.1:{}", free_port()), "-o"])
        .arg(&out)
        .env_clear()
        .env("DAMSELFLY_AGENT_PASSWORD", ADMIN_PASSWORD)
        .output()
        .expect("damselfly-agent get");
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert!(std::fs::read(&out).expect("the file") == model, "the file arrives intact");
}

/// A tenant admin (here the system administrator) finishes the job in the console: a user,
/// roles, robots' and clusters' tokens; every destructive step asks first on a page of its
/// own; a mistake comes back to the form it was made in; long names stay in their cards.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_finishes_the_job_and_asks_before_it_destroys() {
    use reqwest::Method;
    let reg = Registry::start(Backend::Sqlite);
    cast(&reg).await;
    push_app(&reg).await;
    let browser = Browser::start().await;
    browser.sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let page = |path: &str| format!("{}{path}", reg.url);

    // A user, created by the system administrator, who can then sign in.
    browser.goto(&page("/console/users")).await;
    browser.fill("#user-name", "dana").await;
    browser.fill("#user-password", "dana-password").await;
    browser.click("#create-user", ".notice").await;
    assert!(browser.text("#users").await.contains("dana"));
    assert!(!browser.c().source().await.expect("source").contains("dana-password"), "the password is not echoed");
    browser.screenshot("users").await;
    assert_eq!(api_as(&reg, "dana", "dana-password", Method::GET, "/api/v1/tenants", None).await.0, 200);

    // A role for a user who does not exist: back on the form, still signed in, the input kept.
    browser.goto(&page("/console/tenants/acme")).await;
    browser.fill("#member-name", "ghost").await;
    browser.select("#member-namespace", "web").await;
    browser.select("#member-role", "developer").await;
    browser.click("#grant-role", ".error").await;
    assert_eq!(browser.path().await, "/console/tenants/acme");
    assert_eq!(
        browser.text(".error").await,
        "user ghost does not exist; the system administrator creates users on the Users page."
    );
    assert!(browser.text("header.top .who").await.contains("Signed in as admin"));
    assert_eq!(browser.value("#member-name").await, "ghost");
    assert_eq!(browser.value("#member-namespace").await, "web");
    assert_eq!(browser.value("#member-role").await, "developer");
    browser.screenshot("form-error").await;
    // Granted to dana; removing it asks first, and Cancel changes nothing.
    browser.fill("#member-name", "dana").await;
    browser.click("#grant-role", ".notice").await;
    let remove_dana = "//table[@id='members']//tr[td[2]='dana']//button";
    browser.click_xpath(remove_dana, "#confirm").await;
    assert!(browser.text("#consequence").await.contains("dana no longer gets what the role on namespace web allows"));
    browser.click("#cancel", "#members").await;
    assert!(browser.text("#members").await.contains("dana"), "Cancel removed the role");
    browser.click_xpath(remove_dana, "#confirm").await;
    browser.screenshot("confirm-remove-member").await;
    browser.click("#confirm", ".notice").await;
    assert!(!browser.text("#members").await.contains("dana"));

    // The namespace's switches: P2P on at once; off, and public, only once confirmed.
    browser.goto(&page("/console/namespaces/web")).await;
    browser.click("#p2p-switch", ".notice").await;
    assert!(browser.text("#p2p-state").await.starts_with("on"));
    browser.click("#p2p-switch", "#confirm").await;
    assert_eq!(browser.text("main h1").await, "Turn P2P acceleration off for web?");
    browser.screenshot("confirm-p2p-off").await;
    browser.click("#confirm", ".notice").await;
    assert!(browser.text("#p2p-state").await.starts_with("off"));
    browser.click("#visibility-switch", "#confirm").await;
    assert_eq!(browser.text("main h1").await, "Make namespace web public?");
    browser.click("#confirm", ".notice").await;
    assert!(browser.text("#visibility").await.starts_with("public"));
    browser.click("#visibility-switch", ".notice").await;
    assert!(browser.text("#visibility").await.starts_with("private"), "making it private needs no confirmation");

    // A robot's token, rotated once confirmed: the old one stops working, the new one works.
    browser.goto(&page("/console/tenants/acme/robots")).await;
    browser.fill("#robot-name", "ci").await;
    browser.select("#robot-scope1-role", "viewer").await;
    browser.click("#create-robot", "#secret-value").await;
    let first = browser.text("#secret-value").await;
    assert!(browser.text("#robots").await.contains(&utc_year_in(90)), "the default expiry is 90 days");
    browser.click("#robots button.secondary", "#confirm").await;
    assert_eq!(browser.text("main h1").await, "Rotate the token of robot ci?");
    browser.click("#confirm", "#secret-value").await;
    let second = browser.text("#secret-value").await;
    assert_ne!(first, second);
    let robot = "robot$acme+ci";
    assert_eq!(api_as(&reg, robot, &first, Method::GET, "/api/v1/tenants/acme", None).await.0, 401);
    assert_eq!(api_as(&reg, robot, &second, Method::GET, "/api/v1/tenants/acme", None).await.0, 200);
    browser.goto(&page("/console/tenants/acme/robots")).await;
    browser.full_screenshot("robots-form").await;
    browser.goto(&page("/console/tenants/acme")).await;
    browser.full_screenshot("tenant-form").await;

    // A cluster's token, re-issued once confirmed: the old command stops with the reason, the new one works.
    browser.goto(&page("/console/tenants/acme/clusters")).await;
    browser.fill("#cluster-name", "edge").await;
    browser.click("#register-cluster", "#secret-command").await;
    let old = browser.text("#secret-command").await;
    assert_words_whole(&browser, "#secret-command").await;
    browser.screenshot("cluster-registered-once").await;
    browser.click(".cluster button.secondary", "#confirm").await;
    assert_eq!(browser.text("main h1").await, "Give cluster edge a new token?");
    browser.click("#confirm", "#secret-command").await;
    let new = browser.text("#secret-command").await;
    assert_ne!(old, new);
    let out = Command::new("sh").args(["-c", &old]).output().expect("sh");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the registry does not know this cluster token"));
    let script = run(Command::new("sh").args(["-c", new.strip_suffix(" | sh").expect("piped to sh")]));
    assert!(script.starts_with("#!/bin/sh\n# Damselfly setup for cluster acme/edge"), "{script}");
    // Deleted once confirmed.
    browser.click(".cluster button.danger", "#confirm").await;
    assert!(browser.text("#consequence").await.contains("What the setup command installed stays on the nodes"));
    browser.screenshot("confirm-delete-cluster").await;
    browser.click("#confirm", ".notice").await;
    assert_eq!(browser.text(".notice").await, "Cluster edge deleted.");
    assert_eq!(api(&reg, Method::GET, "/api/v1/tenants/acme/clusters", None).await.1, json!([]));

    // The namespace lists its repositories; a repository shows sizes per platform (a tall window
    // takes the whole page into the screenshot). A tag, deleted once confirmed.
    browser.goto(&page("/console/namespaces/web")).await;
    browser.screenshot("namespace-repositories").await;
    browser.goto(&page("/console/repository?name=web%2Fapp")).await;
    browser.full_screenshot("repository").await;
    browser
        .click_xpath("//form[input[@name='tag' and @value='1.0']]/button[contains(@class, 'danger')]", "#confirm")
        .await;
    browser.screenshot("confirm-delete-tag").await;
    browser.click("#confirm", ".notice").await;
    assert_eq!(browser.text(".notice").await, "Tag 1.0 deleted from web/app.");

    // A name of 300 characters in an error stays inside its card (typed past the form's limits).
    browser.goto(&page("/console/tenants/acme")).await;
    let long = "n".repeat(300);
    browser
        .c()
        .execute("const f = document.getElementById('namespace-name'); f.removeAttribute('maxlength'); f.removeAttribute('pattern');", vec![])
        .await
        .expect("lift the form's limits");
    browser.fill("#namespace-name", &long).await;
    browser.click("#create-namespace", ".error").await;
    assert!(browser.text(".error").await.contains(&long));
    browser.screenshot("long-name-error").await;
    assert_inside_main(&browser, ".error").await;
    browser.goto(&page(&format!("/console/audit?tenant={long}"))).await;
    assert_eq!(browser.text("main h1").await, "Not found");
    assert!(browser.text("header.top .who").await.contains("Signed in as admin"), "refused, but still signed in");
    assert_inside_main(&browser, "#error-message").await;

    // The audit log offers its actions: every manifest action finds the pushes; times take one line;
    // a token is named by what it grants, not by its random id.
    let r = http()
        .get(format!("{}/auth/token?service=damselfly&scope=repository:web/app:pull", reg.url))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 200);
    browser.goto(&page("/console/audit")).await;
    browser.select("#audit-action", "manifest").await;
    browser.click("#audit-filter", "#audit").await;
    let actions = browser.c().find_all(Locator::Css("#audit tbody td:nth-child(3)")).await.expect("audit rows");
    assert!(!actions.is_empty());
    for a in actions {
        assert!(a.text().await.expect("text").starts_with("manifest."));
    }
    browser.select("#audit-action", "").await;
    browser.click("#audit-filter", "#audit").await;
    assert!(
        browser.text("#audit").await.contains("access token for repository:web/app:"),
        "token.issue reads as words"
    );
    let one_line = browser
        .c()
        .execute(
            "return Array.from(document.querySelectorAll('td.when')).every(td => { \
               const r = document.createRange(); r.selectNodeContents(td); return r.getClientRects().length === 1; })",
            vec![],
        )
        .await
        .expect("measure");
    assert_eq!(one_line, Value::Bool(true), "a When cell wraps at 1280 px");
    browser.screenshot("audit").await;

    // Dana, created above with a password the administrator chose, changes it herself.
    browser.click("header.top .who button", "#sign-in").await;
    browser.sign_in(&reg, "dana", "dana-password").await;
    browser.click("#password-link", "#change-password").await;
    browser.fill("#current-password", "dana-password").await;
    browser.fill("#new-password", "dana-own-secret").await;
    browser.fill("#repeat-password", "dana-own-secret").await;
    browser.screenshot("password").await;
    browser.click("#change-password", "#sign-in").await;
    assert!(browser.text(".notice").await.starts_with("Your password has changed"));
    browser.sign_in(&reg, "dana", "dana-own-secret").await;
    assert!(browser.text("header.top .who").await.contains("Signed in as dana"));
    browser.quit().await;
}

/// The year, in UTC, `days` from now: what an expiry that far off shows.
fn utc_year_in(days: u64) -> String {
    let at = std::time::SystemTime::now() + Duration::from_secs(days * 86_400);
    let secs = at.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
    // Days since 1970 to a civil year (accurate to the day, which is all this needs).
    let mut year = 1970;
    let mut left = secs / 86_400;
    loop {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let length = if leap { 366 } else { 365 };
        if left < length {
            return format!("{year}-");
        }
        left -= length;
        year += 1;
    }
}

/// The element's box ends within `main`'s, and nothing in it is wider than it.
async fn assert_inside_main(browser: &Browser, css: &str) {
    let fits = browser
        .c()
        .execute(
            "const e = document.querySelector(arguments[0]); const m = document.querySelector('main'); \
             return e.scrollWidth <= e.clientWidth && e.getBoundingClientRect().right <= m.getBoundingClientRect().right;",
            vec![Value::String(css.to_owned())],
        )
        .await
        .expect("measure");
    assert_eq!(fits, Value::Bool(true), "{css} overflows");
}

/// The element's text wraps only between words: no word longer than a line
/// is split in two (`| sh` read as `| s` and `h`).
async fn assert_words_whole(browser: &Browser, css: &str) {
    let split = browser
        .c()
        .execute(
            "const e = document.querySelector(arguments[0]); const text = e.firstChild; const split = []; \
             const width = e.clientWidth; let at = 0; \
             for (const word of text.data.split(/(\\s+)/)) { \
               if (word.trim() !== '') { const r = document.createRange(); r.setStart(text, at); r.setEnd(text, at + word.length); \
                 const rects = Array.from(r.getClientRects()).filter(b => b.width > 0); \
                 if (rects.length > 1 && rects.reduce((w, b) => w + b.width, 0) < width / 2) split.push(word); } \
               at += word.length; } \
             return split;",
            vec![Value::String(css.to_owned())],
        )
        .await
        .expect("measure");
    assert_eq!(split, json!([]), "words of {css} split across lines");
}
