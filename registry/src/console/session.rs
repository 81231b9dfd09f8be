//! Signing in and out of the console.
//!
//! A session is a row in `console_sessions` found by the SHA-256 of a random
//! secret kept in an `HttpOnly`, `SameSite=Lax` cookie (`Secure` when the
//! public URL is https). Sign-out deletes the row, so a copied cookie stops
//! working at once; a password change ends every session of the user.
//!
//! The sign-in form is protected against login CSRF with a double-submit
//! token (a short-lived cookie that must match the form field), since there
//! is no session yet to hold one. Failed sign-ins count against the same
//! rate limiter as the token endpoint.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{failed, render, Chrome, ConsoleError, ConsoleResult, Flash, Posted};
use crate::auth::password::{random_secret, token_sha256};
use crate::auth::{LoginError, Principal};
use crate::metadata::{now, ConsoleSession};
use crate::services::audit::{self, Event};
use crate::services::{users, Error, Thing};
use crate::state::AppState;

const SESSION_COOKIE: &str = "damselfly_session";
const LOGIN_COOKIE: &str = "damselfly_login";

/// A signed-in user, established from the session cookie on every request.
pub struct SignedIn {
    /// The user, read fresh: a removed admin flag counts at once.
    pub principal: Principal,
    /// Client address, for the audit log.
    pub source: String,
    /// The session's form token.
    pub csrf: String,
    session: String,
}

/// Constant-time comparison of two secrets.
pub fn same_secret(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn source_of(parts: &Parts) -> String {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip().to_string()).unwrap_or_default()
}

fn set_cookie(state: &AppState, name: &str, value: &str, max_age: u64) -> String {
    let secure = if state.config.behind_tls() { "; Secure" } else { "" };
    format!("{name}={value}; Path=/console; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ConsoleResult<SignedIn> {
        let secret = cookie(&parts.headers, SESSION_COOKIE).ok_or(ConsoleError::SignIn)?;
        let id = token_sha256(secret);
        let session = state.db.console_sessions().find(&id).await?.ok_or(ConsoleError::SignIn)?;
        let user = state.db.accounts().user(session.user_id).await?.ok_or(ConsoleError::SignIn)?;
        if user.credentials_version != session.credentials_version {
            // The password changed since this sign-in.
            state.db.console_sessions().delete(&id).await?;
            return Err(ConsoleError::SignIn);
        }
        Ok(SignedIn {
            principal: Principal::User {
                id: user.id,
                name: user.username,
                system_admin: user.system_admin,
                cv: user.credentials_version,
                gv: user.grants_version,
            },
            source: source_of(parts),
            csrf: session.csrf_token,
            session: id,
        })
    }
}

impl SignedIn {
    /// The page frame for this user, with the message the previous action left.
    pub async fn chrome(&self, state: &AppState, section: &'static str) -> Chrome {
        let flash = match state.db.console_sessions().take_flash(&self.session).await {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_default(),
            Ok(None) => Flash::default(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the console message for this page");
                Flash::default()
            }
        };
        // Exactly who may read the audit log: the system administrator, and tenant admins and owners.
        let manages = crate::services::access::audit_log(state, &self.caller(), None).await.is_ok();
        Chrome {
            user: self.principal.actor().to_owned(),
            system_admin: self.principal.is_system_admin(),
            manages,
            csrf: self.csrf.clone(),
            section,
            flash,
        }
    }

    /// Leaves a message for the next page of this session.
    pub async fn leave_flash(&self, state: &AppState, flash: &Flash) {
        let text = serde_json::to_string(flash).unwrap_or_default();
        if let Err(e) = state.db.console_sessions().set_flash(&self.session, &text).await {
            tracing::warn!(error = %e, "could not keep the console message for the next page");
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    username: String,
    /// Why the form is shown again, or why signing in is needed.
    error: Option<String>,
    /// Good news from before, such as a changed password.
    notice: Option<String>,
}

/// Where to go after signing in.
#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    error: Option<String>,
}

fn login_form(state: &AppState, status: StatusCode, username: String, error: Option<String>) -> Response {
    login_page_with(state, status, LoginPage { csrf: random_secret(), username, error, notice: None })
}

fn login_page_with(state: &AppState, status: StatusCode, page: LoginPage) -> Response {
    let cookie = set_cookie(state, LOGIN_COOKIE, &page.csrf, 600);
    let mut response = render(&page);
    *response.status_mut() = status;
    if let Ok(v) = cookie.parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// `GET /console/login`: the sign-in form.
pub async fn login_page(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let (error, notice) = match q.error.as_deref() {
        None => (None, None),
        Some("ended") => (Some("Your session ended. Sign in again."), None),
        Some("password") => {
            (None, Some("Your password has changed, and every session you had has ended. Sign in with the new one."))
        }
        Some(_) => (Some("Sign in to continue."), None),
    };
    let page = LoginPage {
        csrf: random_secret(),
        username: String::new(),
        error: error.map(str::to_owned),
        notice: notice.map(str::to_owned),
    };
    login_page_with(&state, StatusCode::OK, page)
}

/// The sign-in form's fields.
#[derive(Deserialize)]
pub struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /console/login`: checks the password (rate-limited) and starts a session.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form: Credentials = match super::parse_form(&body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let source = addr.ip().to_string();
    if !cookie(&headers, LOGIN_COOKIE).is_some_and(|c| same_secret(c, &form.csrf)) {
        let message = "The sign-in form had expired. Enter your username and password again.";
        return login_form(&state, StatusCode::FORBIDDEN, form.username, Some(message.to_owned()));
    }
    let username = form.username.trim().to_owned();
    if username.starts_with("robot$") {
        let message = "Robot accounts cannot sign in to the console. Sign in with your own username and password.";
        return login_form(&state, StatusCode::UNAUTHORIZED, username, Some(message.to_owned()));
    }
    let principal = match state.auth.login(&state.db, &username, &form.password, &source).await {
        Ok(p) => p,
        Err(LoginError::Throttled(wait)) => {
            let message = format!(
                "Too many failed sign-ins for this name or address. Wait {} seconds and try again.",
                wait.as_secs().max(1)
            );
            return login_form(&state, StatusCode::TOO_MANY_REQUESTS, username, Some(message));
        }
        Err(LoginError::Denied) => {
            record_login(&state, &username, &source, "denied").await;
            let message = "Wrong username or password. Check them and try again.";
            return login_form(&state, StatusCode::UNAUTHORIZED, username, Some(message.to_owned()));
        }
        Err(LoginError::Db(e)) => return ConsoleError::from(e).into_response(),
    };
    let Principal::User { id, cv, .. } = &principal else {
        let message = "Only people sign in to the console. Sign in with your own username and password.";
        return login_form(&state, StatusCode::UNAUTHORIZED, username, Some(message.to_owned()));
    };
    let secret = random_secret();
    let hours = state.config.console_session_hours;
    let session = ConsoleSession {
        id_sha256: token_sha256(&secret),
        user_id: *id,
        credentials_version: *cv,
        csrf_token: random_secret(),
        expires_at: now() + (hours * 3600) as i64,
    };
    if let Err(e) = state.db.console_sessions().create(&session).await {
        return ConsoleError::from(e).into_response();
    }
    // Housekeeping on sign-in keeps the table small without a timer.
    if let Err(e) = state.db.console_sessions().delete_expired().await {
        tracing::warn!(error = %e, "could not forget expired console sessions");
    }
    record_login(&state, principal.actor(), &source, "success").await;
    let mut response = Redirect::to("/console/tenants").into_response();
    for c in [set_cookie(&state, SESSION_COOKIE, &secret, hours * 3600), set_cookie(&state, LOGIN_COOKIE, "", 0)] {
        if let Ok(v) = c.parse() {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

async fn record_login(state: &AppState, actor: &str, source: &str, outcome: &str) {
    let event = Event {
        actor,
        action: "login",
        object: actor,
        tenant: None,
        source,
        outcome,
        detail: Some(serde_json::json!({ "via": "console" })),
    };
    audit::record(state, event).await;
}

/// The sign-out form's fields: only the CSRF token.
#[derive(Deserialize)]
pub struct NoFields {}

/// `POST /console/logout`: ends the session for good.
pub async fn logout(State(state): State<AppState>, posted: Posted<NoFields>) -> ConsoleResult<Response> {
    state.db.console_sessions().delete(&posted.who.session).await?;
    let mut response = Redirect::to("/console/login").into_response();
    if let Ok(v) = set_cookie(&state, SESSION_COOKIE, "", 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    chrome: Chrome,
}

/// `GET /console/password`: the signed-in user's own password.
pub async fn password_page(State(state): State<AppState>, who: SignedIn) -> Response {
    render(&PasswordPage { chrome: who.chrome(&state, "password").await })
}

/// The password form's fields; none of them is ever sent back to the page.
#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    repeat_password: String,
}

/// `POST /console/password`: changes the user's own password, once the
/// current one is given (checked against the sign-in rate limit, so a left
/// open session is no way to guess it). As through the API, every session
/// of the user ends, this one too: they sign in again with the new password.
pub async fn change_password(State(state): State<AppState>, posted: Posted<PasswordForm>) -> Response {
    let Posted { who, form, kept, .. } = posted;
    const BACK: &str = "/console/password";
    let Principal::User { name, .. } = &who.principal else {
        return ConsoleError::SignIn.into_response();
    };
    let name = name.clone();
    if form.new_password != form.repeat_password {
        let e = Error::invalid(Thing::Password, "the new password and its repetition differ; type the same one twice");
        return failed(&state, &who, BACK, kept, e.into()).await;
    }
    match state.auth.login(&state.db, &name, &form.current_password, &who.source).await {
        Ok(_) => {}
        Err(LoginError::Throttled(wait)) => {
            let e = Error::invalid(
                Thing::Password,
                format!("too many wrong passwords for {name}; wait {} seconds and try again", wait.as_secs().max(1)),
            );
            return failed(&state, &who, BACK, kept, e.into()).await;
        }
        Err(LoginError::Denied) => {
            let object = format!("user/{name}");
            let event = Event {
                actor: &name,
                action: "user.password",
                object: &object,
                tenant: None,
                source: &who.source,
                outcome: "denied",
                detail: Some(serde_json::json!({ "via": "console", "reason": "wrong current password" })),
            };
            audit::record(&state, event).await;
            let e = Error::invalid(Thing::Password, "the current password is wrong; nothing was changed");
            return failed(&state, &who, BACK, kept, e.into()).await;
        }
        Err(LoginError::Db(e)) => return ConsoleError::from(e).into_response(),
    }
    if let Err(e) = users::set_password(&state, &who.caller(), &name, &form.new_password).await {
        return failed(&state, &who, BACK, kept, e.into()).await;
    }
    let mut response = Redirect::to("/console/login?error=password").into_response();
    if let Ok(v) = set_cookie(&state, SESSION_COOKIE, "", 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}
