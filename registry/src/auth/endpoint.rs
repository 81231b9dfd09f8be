//! The token endpoint (`/auth/token`, GET with Basic auth and the OAuth2
//! POST) and the JWKS (`/auth/jwks.json`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use damselfly_core::{ErrorCode, RepositoryName};
use serde_json::json;

use super::token::{self, Access};
use super::{Credentials, LoginError, Principal};
use crate::error::RegistryError;
use crate::services::audit::{self, Event};
use crate::state::AppState;

/// `GET /auth/jwks.json`: the public keys tokens are signed with.
pub async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "max-age=60")],
        state.auth.keys.jwks().to_string(),
    )
        .into_response()
}

/// `GET /auth/token?service=…&scope=…`: the Docker token protocol.
pub async fn get_token(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let pairs = request.uri().query().map(crate::query::pairs).unwrap_or_default();
    let param = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let scopes: Vec<String> =
        pairs.iter().filter(|(k, _)| k == "scope").flat_map(|(_, v)| v.split(' ')).map(str::to_owned).collect();
    let source = addr.ip().to_string();
    if let Some(service) = param("service") {
        if service != state.auth.service {
            return oci_error(
                ErrorCode::Denied,
                StatusCode::BAD_REQUEST,
                format!("this token service is {:?}, not {service:?}", state.auth.service),
            );
        }
    }
    let principal = match Credentials::from_headers(request.headers()) {
        Credentials::None => Principal::Anonymous,
        Credentials::Basic(user, secret) => match login(&state, &user, &secret, &source, false).await {
            Ok(p) => p,
            Err(r) => return r,
        },
        Credentials::Bearer(_) | Credentials::Malformed => {
            return oci_error(
                ErrorCode::Unauthorized,
                StatusCode::UNAUTHORIZED,
                "send Basic credentials to get a token".into(),
            )
        }
    };
    let offline = param("offline_token").as_deref() == Some("true");
    respond(&state, &principal, &scopes, offline, &source, false).await
}

/// `POST /auth/token`: OAuth2 `password` and `refresh_token` grants (form encoded).
pub async fn post_token(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let _ = headers;
    let form = crate::query::map(&body);
    let source = addr.ip().to_string();
    let scopes: Vec<String> = form
        .get("scope")
        .map(|s| s.split(' ').filter(|x| !x.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    if let Some(service) = form.get("service") {
        if *service != state.auth.service {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &format!("unknown service {service:?}"));
        }
    }
    let principal = match form.get("grant_type").map(String::as_str) {
        Some("password") => {
            let (Some(user), Some(secret)) = (form.get("username"), form.get("password")) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "username and password are required");
            };
            match login(&state, user, secret, &source, true).await {
                Ok(p) => p,
                Err(r) => return r,
            }
        }
        Some("refresh_token") => {
            let Some(refresh) = form.get("refresh_token") else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "refresh_token is required");
            };
            match refresh_principal(&state, refresh).await {
                Ok(p) => p,
                Err(msg) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &msg),
            }
        }
        other => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type {other:?} is not supported: use password or refresh_token"),
            )
        }
    };
    let offline = form.get("access_type").map(String::as_str) == Some("offline");
    respond(&state, &principal, &scopes, offline, &source, true).await
}

async fn refresh_principal(state: &AppState, refresh: &str) -> Result<Principal, String> {
    let claims =
        token::verify(&state.auth.keys, refresh, &state.auth.service, &state.auth.issuer).map_err(|e| e.to_string())?;
    if claims.typ != "refresh" || claims.sub.is_empty() {
        return Err("not a refresh token".into());
    }
    let principal = state
        .auth
        .authenticator
        .lookup(&state.db, &claims.sub)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the account no longer exists or was revoked")?;
    if principal.credentials_version() != claims.cv {
        return Err("the credentials changed since this refresh token was issued: log in again".into());
    }
    Ok(principal)
}

/// Checks credentials and records the login. `oauth` shapes a refusal as
/// RFC 6749 asks (`400 invalid_grant`) instead of the Docker protocol's `401`.
async fn login(state: &AppState, user: &str, secret: &str, source: &str, oauth: bool) -> Result<Principal, Response> {
    match state.auth.login(&state.db, user, secret, source).await {
        Ok(p) => {
            audit::record(
                state,
                Event {
                    actor: p.actor(),
                    action: "login",
                    object: p.actor(),
                    tenant: None,
                    source,
                    outcome: "success",
                    detail: None,
                },
            )
            .await;
            Ok(p)
        }
        Err(LoginError::Throttled(wait)) => {
            let secs = wait.as_secs().max(1);
            let mut r = oci_error(
                ErrorCode::TooManyRequests,
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed logins; wait {secs} s before trying again"),
            );
            if let Ok(v) = secs.to_string().parse() {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Err(r)
        }
        Err(LoginError::Denied) => {
            audit::record(
                state,
                Event {
                    actor: user,
                    action: "login",
                    object: user,
                    tenant: None,
                    source,
                    outcome: "denied",
                    detail: None,
                },
            )
            .await;
            let message = "invalid username or password (robot accounts log in as robot$<tenant>+<name>)";
            Err(if oauth {
                oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", message)
            } else {
                oci_error(ErrorCode::Unauthorized, StatusCode::UNAUTHORIZED, message.into())
            })
        }
        Err(LoginError::Db(e)) => Err(RegistryError::Database(e).into_response()),
    }
}

/// Grants the intersection of what was asked and what the principal holds.
pub(crate) async fn grant(
    state: &AppState,
    principal: &Principal,
    scopes: &[String],
) -> Result<Vec<Access>, sqlx::Error> {
    let mut granted: Vec<Access> = Vec::new();
    for scope in scopes {
        let Some(asked) = Access::parse_scope(scope) else { continue };
        let actions = match asked.kind.as_str() {
            "repository" => match asked.name.parse::<RepositoryName>() {
                Ok(name) => state
                    .auth
                    .policy
                    .repository_actions_now(&state.db, principal, &name)
                    .await?
                    .intersect(&asked.actions),
                Err(_) => Vec::new(),
            },
            "registry" if asked.name == "catalog" && principal != &Principal::Anonymous => {
                asked.actions.iter().filter(|a| *a == "*").cloned().collect()
            }
            _ => Vec::new(),
        };
        if actions.is_empty() {
            continue;
        }
        match granted.iter_mut().find(|g| g.kind == asked.kind && g.name == asked.name) {
            Some(g) => {
                for a in actions {
                    if !g.actions.contains(&a) {
                        g.actions.push(a);
                    }
                }
            }
            None => granted.push(Access { kind: asked.kind, name: asked.name, actions }),
        }
    }
    Ok(granted)
}

/// `principal` with its grants version as the database holds it now, read
/// before its grants are. Credentials are checked on caches that another
/// replica's change reaches within two seconds; a grants version from there
/// would put a narrowing made a moment ago through another replica under an
/// older version than the grants read after it, and the new token would be
/// refused on its first use. The credentials version stays the one the
/// credentials were checked under, so a token never outlives the password
/// that got it.
async fn current_grants_version(state: &AppState, principal: &Principal) -> Result<Principal, sqlx::Error> {
    let Some(who) = principal.reference() else { return Ok(principal.clone()) };
    Ok(match state.db.accounts().token_holder(who).await? {
        Some(now) => principal.clone().with_grants_version(now.grants_version),
        // Gone since its credentials were checked: its token is refused on first use.
        None => principal.clone(),
    })
}

async fn respond(
    state: &AppState,
    principal: &Principal,
    scopes: &[String],
    offline: bool,
    source: &str,
    oauth: bool,
) -> Response {
    let principal = &match current_grants_version(state, principal).await {
        Ok(p) => p,
        Err(e) => return RegistryError::Database(e).into_response(),
    };
    let access = match grant(state, principal, scopes).await {
        Ok(a) => a,
        Err(e) => return RegistryError::Database(e).into_response(),
    };
    let (token, claims) = match state.auth.issue(principal, access, "access") {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = e, "could not sign a token");
            return oci_error(
                ErrorCode::InternalError,
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not sign a token".into(),
            );
        }
    };
    if principal != &Principal::Anonymous {
        let granted: Vec<String> = claims.access.iter().map(Access::scope).collect();
        audit::record(
            state,
            Event {
                actor: principal.actor(),
                action: "token.issue",
                object: &claims.jti,
                tenant: None,
                source,
                outcome: "success",
                detail: Some(json!({ "requested": scopes, "granted": granted })),
            },
        )
        .await;
    }
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": state.auth.token_ttl,
        "scope": claims.access.iter().map(Access::scope).collect::<Vec<_>>().join(" "),
    });
    if oauth {
        body["token_type"] = "Bearer".into();
    }
    if offline && principal != &Principal::Anonymous {
        match state.auth.issue(principal, Vec::new(), "refresh") {
            Ok((refresh, _)) => body["refresh_token"] = refresh.into(),
            Err(e) => tracing::error!(error = e, "could not sign a refresh token"),
        }
    }
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body.to_string())
        .into_response()
}

fn oci_error(code: ErrorCode, status: StatusCode, message: String) -> Response {
    RegistryError::oci(code, message).with_status(status).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": error, "error_description": description }).to_string(),
    )
        .into_response()
}
