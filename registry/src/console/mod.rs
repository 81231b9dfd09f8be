//! The web console under `/console`: server-rendered pages (askama
//! templates in `web/templates`) with plain forms and POST-redirect-GET, so
//! it works without JavaScript.
//!
//! The console holds no permission rules of its own. Every page and action
//! acts as the signed-in user through `crate::services`, the same checks and
//! rules the management API goes through, so what the console allows is
//! exactly what the API allows, whatever the page shows or hides.
//!
//! A form the user can correct (a bad or taken name, something it names that
//! does not exist) comes back to its page with the reason and what they
//! typed in it; a refusal, or a failure of the registry, is a page of its
//! own with its status, since the page they came from may be closed to them
//! too, still framed with who is signed in. A change that is hard to undo
//! asks first, on a confirmation page that posts the form again.

mod audit;
mod clusters;
mod dashboard;
mod gc;
mod namespaces;
mod repositories;
mod robots;
mod session;
mod storage;
mod tenants;
mod users;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::metadata::Role;
use crate::services::access::Caller;
use crate::services::{self, Place, Thing};
use crate::state::AppState;
pub use session::SignedIn;

/// The console's stylesheet, compiled into the binary.
const STYLESHEET: &str = include_str!("../../../web/static/console.css");

/// Every console route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/tenants") }))
        .route("/console/", get(|| async { Redirect::to("/console/tenants") }))
        .route("/console/static/console.css", get(stylesheet))
        .route("/console/login", get(session::login_page).post(session::login))
        .route("/console/logout", post(session::logout))
        .route("/console/password", get(session::password_page).post(session::change_password))
        .route("/console/tenants", get(tenants::list).post(tenants::create))
        .route("/console/tenants/{tenant}", get(tenants::show))
        .route("/console/tenants/{tenant}/namespaces", post(namespaces::create))
        .route("/console/tenants/{tenant}/members", post(tenants::grant))
        .route("/console/tenants/{tenant}/members/revoke", post(tenants::revoke))
        .route("/console/tenants/{tenant}/robots", get(robots::list).post(robots::create))
        .route("/console/tenants/{tenant}/robots/{robot}/revoke", post(robots::revoke))
        .route("/console/tenants/{tenant}/robots/{robot}/rotate", post(robots::rotate))
        .route("/console/tenants/{tenant}/clusters", get(clusters::list).post(clusters::create))
        .route("/console/tenants/{tenant}/clusters/{cluster}/token", post(clusters::reissue_token))
        .route("/console/tenants/{tenant}/clusters/{cluster}/delete", post(clusters::delete))
        .route("/console/users", get(users::list).post(users::create))
        .route("/console/users/password", post(users::set_password))
        .route("/console/namespaces/{namespace}", get(namespaces::show).post(namespaces::update))
        .route("/console/namespaces/{namespace}/preheat", post(namespaces::preheat))
        .route("/console/repository", get(repositories::show))
        .route("/console/repository/delete-tag", post(repositories::delete_tag))
        .route("/console/repository/preheat", post(repositories::preheat))
        .route("/console/tenants/{tenant}/clusters/{cluster}/preheat/{job}", get(clusters::preheat_job))
        .route("/console/dashboard", get(dashboard::show))
        .route("/console/gc", get(gc::list).post(gc::start))
        .route("/console/gc/{id}", get(gc::show))
        .route("/console/namespaces/{namespace}/storage", get(storage::namespace))
        .route("/console/namespaces/{namespace}/storage/quota", post(storage::set_namespace_quota))
        .route("/console/namespaces/{namespace}/storage/policy", post(storage::set_policy))
        .route("/console/namespaces/{namespace}/storage/rules", post(storage::add_rule))
        .route("/console/namespaces/{namespace}/storage/rules/remove", post(storage::remove_rule))
        .route("/console/tenants/{tenant}/storage", get(storage::tenant))
        .route("/console/tenants/{tenant}/storage/quota", post(storage::set_tenant_quota))
        .route("/console/audit", get(audit::list))
        .route("/console/{*rest}", get(not_found))
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], STYLESHEET)
        .into_response()
}

async fn not_found() -> ConsoleError {
    ConsoleError::NoSuchPage
}

/// What every page shows around its content: who is signed in, the menu,
/// the form token, and a message left by the previous action.
pub struct Chrome {
    /// The signed-in user's name.
    pub user: String,
    /// Whether they are the system administrator (shows the admin entries; the handlers check again).
    pub system_admin: bool,
    /// Whether they administer a tenant (or the system): the menu shows the
    /// dashboard and the audit log only then, as only then may they open them.
    pub manages: bool,
    /// The CSRF token every form carries.
    pub csrf: String,
    /// The menu entry to highlight.
    pub section: &'static str,
    /// Left by the previous action.
    pub flash: Flash,
}

impl Chrome {
    /// The fields of the form posted to `action`, when it came back with an
    /// error; nothing for any other form.
    pub fn kept(&self, action: &str) -> Kept<'_> {
        Kept(self.flash.form.as_ref().filter(|f| f.action == action).map(|f| f.fields.as_slice()))
    }
}

/// A form as it was posted, kept across the redirect back to its page so
/// that the user finds what they typed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeptForm {
    /// The path it was posted to, which names the form on its page.
    pub action: String,
    /// Its fields in order, without the CSRF token.
    pub fields: Vec<(String, String)>,
}

/// The fields of a kept form, as a template reads them.
#[derive(Clone, Copy)]
pub struct Kept<'a>(Option<&'a [(String, String)]>);

impl<'a> Kept<'a> {
    /// What the field held; `""` if nothing is kept.
    pub fn value(&self, field: &str) -> &'a str {
        self.0.and_then(|f| f.iter().find(|(k, _)| k == field)).map_or("", |(_, v)| v.as_str())
    }

    /// What the field held, or `default` when this form was not kept.
    pub fn or<'b>(&self, field: &str, default: &'b str) -> &'b str
    where
        'a: 'b,
    {
        if self.0.is_some() {
            self.value(field)
        } else {
            default
        }
    }

    /// Whether the field held `value` (a chosen option, a ticked box).
    pub fn has(&self, field: &str, value: &str) -> bool {
        self.0.is_some_and(|f| f.iter().any(|(k, v)| k == field && v == value))
    }

    /// The form only if its `key` field held `value`: the one row of a form
    /// repeated down a page.
    pub fn row(&self, key: &str, value: &str) -> Kept<'a> {
        Kept(self.0.filter(|_| self.has(key, value)))
    }
}

/// A message for the next page, kept in the session across a redirect.
#[derive(Default, Serialize, Deserialize)]
pub struct Flash {
    /// What was done.
    pub notice: Option<String>,
    /// What went wrong and what to do.
    pub error: Option<String>,
    /// A secret shown this once (a robot's or a cluster's token).
    pub secret: Option<Secret>,
    /// The form that came back with `error`, as the user filled it in.
    #[serde(default)]
    pub form: Option<KeptForm>,
}

/// A secret shown once, with what to do with it.
#[derive(Serialize, Deserialize)]
pub struct Secret {
    /// What it is, e.g. "Token of robot$acme+ci".
    pub label: String,
    /// The secret.
    pub value: String,
    /// What to do with the command, e.g. "Run this on each node of the cluster".
    pub command_label: String,
    /// A command that uses it, if any.
    pub command: Option<String>,
    /// What else to know about the command (what a client needs over plain HTTP).
    #[serde(default)]
    pub note: Option<String>,
}

/// Why a console request failed; rendered as a page with a sentence saying what to do.
#[derive(Debug)]
pub enum ConsoleError {
    /// Not signed in, or the session ended: go to the sign-in page.
    SignIn,
    /// A form without the session's CSRF token.
    Forgery,
    /// A URL under `/console` that is no page.
    NoSuchPage,
    /// What the registry's rules said.
    Service(services::Error),
}

impl From<services::Error> for ConsoleError {
    fn from(e: services::Error) -> Self {
        ConsoleError::Service(e)
    }
}

impl From<sqlx::Error> for ConsoleError {
    fn from(e: sqlx::Error) -> Self {
        ConsoleError::Service(e.into())
    }
}

/// Shorthand for console handler results.
pub type ConsoleResult<T> = Result<T, ConsoleError>;

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage {
    /// The page frame, when the user is signed in.
    chrome: Option<Chrome>,
    title: &'static str,
    message: String,
}

/// What an error page said, kept on its response so that [`frame_errors`]
/// can show it again inside the signed-in user's frame.
#[derive(Clone)]
struct Refused {
    title: &'static str,
    message: String,
}

/// An error page is rendered where no session is at hand; for a signed-in
/// user it is rendered again with the header they know (who is signed in,
/// the menu, signing out), so a refusal does not look like being thrown out.
pub async fn frame_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers().clone();
    let response = next.run(request).await;
    let Some(Refused { title, message }) = response.extensions().get::<Refused>().cloned() else {
        return response;
    };
    let mut probe = Request::new(());
    *probe.headers_mut() = headers;
    let (mut parts, ()) = probe.into_parts();
    let Ok(who) = SignedIn::from_request_parts(&mut parts, &state).await else {
        return response;
    };
    let chrome = who.chrome(&state, "").await;
    let mut framed = render(&ErrorPage { chrome: Some(chrome), title, message });
    *framed.status_mut() = response.status();
    framed
}

impl ConsoleError {
    fn status_title_message(self) -> (StatusCode, &'static str, String) {
        use services::Error as E;
        match self {
            ConsoleError::SignIn => (StatusCode::UNAUTHORIZED, "Sign in", "Sign in to continue.".to_owned()),
            ConsoleError::Forgery => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form was not sent from a current console page (its security token is missing or stale). Go \
                 back, reload the page and send the form again."
                    .to_owned(),
            ),
            ConsoleError::NoSuchPage => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such console page; pick one from the menu at the top.".to_owned(),
            ),
            ConsoleError::Service(e) => {
                let (status, title) = match &e {
                    E::Denied(_) => (StatusCode::FORBIDDEN, "Not allowed"),
                    E::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
                    E::Conflict(_) => (StatusCode::CONFLICT, "Already exists"),
                    E::Invalid(_) => (StatusCode::BAD_REQUEST, "Check the form"),
                    E::Database(_) | E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
                };
                (status, title, sentence(e))
            }
        }
    }
}

/// The error as one sentence for a person, its hint pointing at a console
/// page where there is one; internal detail goes to the log.
fn sentence(e: services::Error) -> String {
    use services::Error as E;
    let mut text = match e {
        E::Database(_) | E::Internal(_) => {
            tracing::error!(error = %e, "console request failed");
            return "The registry could not complete this. Try again in a moment; if it keeps failing, ask the \
                    operator to look at the registry's log."
                .to_owned();
        }
        E::Denied(message) => message,
        E::NotFound(p) | E::Conflict(p) | E::Invalid(p) => match &p.hint {
            Some(hint) => hint.join(&p.message, &page(&hint.at)),
            None => p.message,
        },
    };
    // The case is left as the rule wrote it: a message may begin with a
    // name (`alice has no role…`), and names are case-sensitive.
    if !text.ends_with('.') {
        text.push('.');
    }
    text
}

/// Where a hint is done, as the hint ends: " on the Tenants page". The
/// management API is named only for what no console page does.
fn page(place: &Place) -> String {
    match place {
        Place::Tenants => " on the Tenants page".to_owned(),
        Place::NewNamespace | Place::Namespaces { .. } | Place::Members { .. } => " on the tenant's page".to_owned(),
        Place::Robots { .. } | Place::NewRobot { .. } => " on the tenant's Robot accounts page".to_owned(),
        Place::Clusters { .. } => " on the tenant's Clusters page".to_owned(),
        Place::P2pSwitch { .. } => " on the namespace's page".to_owned(),
        Place::RotateRobot { .. } => " with its Rotate token button on the tenant's Robot accounts page".to_owned(),
        Place::Users | Place::NewUser => " on the Users page".to_owned(),
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        if matches!(self, ConsoleError::SignIn) {
            return Redirect::to("/console/login").into_response();
        }
        let (status, title, message) = self.status_title_message();
        let mut response =
            (status, render(&ErrorPage { chrome: None, title, message: message.clone() })).into_response();
        response.extensions_mut().insert(Refused { title, message });
        response
    }
}

/// Renders a template as an HTML response; a template that fails to render is logged
/// and replaced by a short page, never a blank one.
pub fn render<T: askama::Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::X_FRAME_OPTIONS, "DENY"),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "<!doctype html><title>Error</title><p>This page could not be shown. Go back to \
                 <a href=\"/console/tenants\">the console</a>; if it keeps happening, ask the operator to look at \
                 the registry's log.",
            )
                .into_response()
        }
    }
}

/// A form posted by a signed-in user whose CSRF token matched their session.
/// Every console POST but sign-in takes its fields through this extractor,
/// so no action can forget the check.
pub struct Posted<T> {
    /// Who sent it.
    pub who: SignedIn,
    /// Its fields.
    pub form: T,
    /// The form as posted, to send back with an error (passwords left out).
    pub kept: KeptForm,
    /// The user confirmed it on a confirmation page ([`confirm`]).
    pub confirmed: bool,
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirmed: String,
}

/// Fields a form sends that are not kept to be shown again: the CSRF token,
/// the confirmation, and secrets (any field named `…password`).
const NOT_KEPT: [&str; 2] = ["csrf", "confirmed"];

fn kept_field(name: &str) -> bool {
    !NOT_KEPT.contains(&name) && !name.ends_with("password")
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Posted<T> {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &AppState) -> ConsoleResult<Self> {
        let (mut parts, body) = request.into_parts();
        let who =
            <SignedIn as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, 1024 * 1024)
            .await
            .map_err(|_| services::Error::invalid(Thing::Field, "the form is too large; send less than 1 MiB"))?;
        let token: CsrfField = parse_form(&bytes)?;
        if !session::same_secret(&token.csrf, &who.csrf) {
            return Err(ConsoleError::Forgery);
        }
        let form: T = parse_form(&bytes)?;
        let fields: Vec<(String, String)> = parse_form(&bytes)?;
        let fields = fields.into_iter().filter(|(k, _)| kept_field(k)).collect();
        let kept = KeptForm { action: parts.uri.path().to_owned(), fields };
        Ok(Posted { who, form, kept, confirmed: token.confirmed == "yes" })
    }
}

fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> ConsoleResult<T> {
    serde_urlencoded::from_bytes(bytes).map_err(|e| {
        ConsoleError::Service(services::Error::invalid(
            Thing::Field,
            format!("the form could not be read ({e}); reload the page and fill it in again"),
        ))
    })
}

/// After an action: leave `flash` for the next page and send the browser to `to` (POST-redirect-GET).
pub async fn done(state: &AppState, who: &SignedIn, to: &str, flash: Flash) -> Response {
    who.leave_flash(state, &flash).await;
    Redirect::to(to).into_response()
}

/// After an action that failed. A form the user can correct (a bad or taken
/// name, or one that names something that does not exist) sends them back
/// to its page `to` with the reason and what they typed; a refusal, or a
/// failure of the registry, is a page of its own with its status, since the
/// page they came from may be closed to them too.
pub async fn failed(state: &AppState, who: &SignedIn, to: &str, kept: KeptForm, error: ConsoleError) -> Response {
    use services::Error as E;
    match error {
        ConsoleError::Service(e @ (E::Invalid(_) | E::Conflict(_) | E::NotFound(_))) => {
            let flash = Flash { error: Some(sentence(e)), form: Some(kept), ..Flash::default() };
            done(state, who, to, flash).await
        }
        other => other.into_response(),
    }
}

/// After an action: `to` with the flash it left, or with the error, as
/// [`done`] and [`failed`] do.
pub async fn finish(
    state: &AppState,
    who: &SignedIn,
    to: &str,
    kept: KeptForm,
    outcome: Result<Flash, services::Error>,
) -> Response {
    match outcome {
        Ok(flash) => done(state, who, to, flash).await,
        Err(e) => failed(state, who, to, kept, e.into()).await,
    }
}

/// A notice for the next page.
pub fn notice(text: impl Into<String>) -> Flash {
    Flash { notice: Some(text.into()), ..Flash::default() }
}

/// What a confirmation page asks before a change that is hard to undo.
pub struct Confirm {
    /// The question, e.g. "Delete tag 1.0 of web/app?".
    pub title: String,
    /// What happens, and what cannot be undone.
    pub consequence: String,
    /// The button that does it, e.g. "Delete tag 1.0".
    pub button: String,
    /// Where Cancel goes: the page the form was on.
    pub cancel: String,
}

#[derive(askama::Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    confirm: Confirm,
    form: KeptForm,
}

/// The confirmation step of a destructive form, without JavaScript: the
/// form's first post shows this page, which posts the same fields again
/// with `confirmed=yes`. Nothing is changed until then.
pub async fn confirm(state: &AppState, who: &SignedIn, form: KeptForm, confirm: Confirm) -> Response {
    render(&ConfirmPage { chrome: who.chrome(state, "tenants").await, confirm, form })
}

/// Path-segment encoding for names put into links (names are validated, but a
/// name typed into a URL by hand is not).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How the OCI clients in the commands the console shows reach this
/// registry: over plain HTTP they need to be told, each its own way.
pub struct Clients {
    /// `host[:port]` of the registry, as image references name it.
    pub host: String,
    /// The public URL is `http://`.
    pub plain_http: bool,
}

impl Clients {
    /// This registry's.
    pub fn of(state: &AppState) -> Clients {
        Clients { host: state.config.registry_host(), plain_http: !state.config.behind_tls() }
    }

    /// The flag podman and skopeo need: ` --tls-verify=false` over plain HTTP.
    pub fn podman_flag(&self) -> &'static str {
        if self.plain_http {
            " --tls-verify=false"
        } else {
            ""
        }
    }

    /// What Docker needs over plain HTTP, which no flag can say. Docker
    /// speaks plain HTTP to a loopback address (127.0.0.0/8, `localhost`)
    /// by itself, and to any other host only once `daemon.json` lists it.
    pub fn docker_note(&self) -> Option<String> {
        if !self.plain_http {
            return None;
        }
        if self.loopback() {
            return Some(format!(
                "This registry is served over plain HTTP at a loopback address: Docker accepts that for {} by \
                 itself, on this machine only; podman needs --tls-verify=false, as shown.",
                self.host
            ));
        }
        Some(format!(
            "This registry is served over plain HTTP: Docker pulls from it only once /etc/docker/daemon.json lists \
             it, as \"insecure-registries\": [\"{}\"], and Docker is restarted; podman needs --tls-verify=false, \
             as shown.",
            self.host
        ))
    }

    /// The registry's host is this machine's loopback: `127.x.y.z` or `localhost`, with any port.
    fn loopback(&self) -> bool {
        let name = self.host.rsplit_once(':').map_or(self.host.as_str(), |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                self.host.as_str()
            }
        });
        name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Working login commands for `login`: interactive ones that ask for
    /// the token, and one for scripts that reads it from a variable.
    pub fn login_commands(&self, login: &str) -> String {
        let host = &self.host;
        let flag = self.podman_flag();
        format!(
            "docker login {host} -u '{login}'\n\
             podman login{flag} {host} -u '{login}'\n\
             printf '%s' \"$TOKEN\" | docker login {host} -u '{login}' --password-stdin"
        )
    }
}

/// A role as people read it.
pub fn role_name(r: Role) -> &'static str {
    r.as_str()
}

/// `1.5 GiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `2026-11-26 12:00:00 UTC` from Unix seconds.
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl SignedIn {
    /// The signed-in user as the services know a caller.
    pub fn caller(&self) -> Caller {
        Caller { principal: self.principal.clone(), source: self.source.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_sizes_read_as_people_write_them() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_764_158_400), "2025-11-26 12:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(segment("a b/<c>"), "a%20b%2F%3Cc%3E");
    }

    #[test]
    fn docker_is_told_of_insecure_registries_only_where_it_needs_them() {
        let at = |host: &str, plain_http| Clients { host: host.to_owned(), plain_http };
        let remote = at("registry.example.test:5000", true).docker_note().expect("a note over plain HTTP");
        assert!(remote.contains("\"insecure-registries\": [\"registry.example.test:5000\"]"), "{remote}");
        for host in ["127.0.0.1:5000", "localhost:5000", "127.0.0.1"] {
            let local = at(host, true).docker_note().expect("a note over plain HTTP");
            assert!(!local.contains("insecure-registries"), "{local}");
            assert!(local.contains("Docker accepts that for"), "{local}");
        }
        assert!(!at("10.0.0.5:5000", true).docker_note().expect("note").contains("Docker accepts"));
        assert_eq!(at("registry.example.test", false).docker_note(), None);
    }

    #[test]
    fn a_message_keeps_the_case_of_the_name_it_begins_with() {
        let denied = services::Error::Denied("alice has no role in tenant acme; ask one of its owners for one".into());
        assert_eq!(sentence(denied), "alice has no role in tenant acme; ask one of its owners for one.");
        let robot = services::Error::not_found(Thing::Role, "robot$acme+ci holds no role on tenant acme");
        assert_eq!(sentence(robot), "robot$acme+ci holds no role on tenant acme.");
    }

    #[test]
    fn hints_point_at_console_pages_and_at_the_api_only_where_no_page_does_it() {
        let console_hint = |e: services::Error| match e {
            services::Error::NotFound(p) => p.hint.as_ref().map(|h| h.join(&p.message, &page(&h.at))).unwrap(),
            _ => unreachable!(),
        };
        let not_found = |m: &str| services::Error::not_found(Thing::Tenant, m);
        assert_eq!(
            console_hint(not_found("tenant x does not exist").then("list tenants", Place::Tenants)),
            "tenant x does not exist; list tenants on the Tenants page"
        );
        assert_eq!(
            console_hint(
                not_found("ana holds no role on tenant t").then("list roles", Place::Members { tenant: "t".into() })
            ),
            "ana holds no role on tenant t; list roles on the tenant's page"
        );
        let users = "user u does not exist; the system administrator creates users on the Users page";
        assert_eq!(
            console_hint(
                not_found("user u does not exist").then("the system administrator creates users", Place::NewUser)
            ),
            users
        );
    }
}
