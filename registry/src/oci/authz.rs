//! Authorization of every `/v2` request: which action the endpoint needs,
//! who is asking, and the challenge that tells a client where to get a token.

use axum::http::{header, HeaderMap, Method};
use damselfly_core::{ErrorCode, RepositoryName};

use super::path::OciPath;
use crate::auth::{AuthFailure, Claims, Principal};
use crate::error::{RegistryError, Result};
use crate::services::{access, namespaces};
use crate::state::AppState;

/// Who made a request, as established by [`authorize`].
pub(crate) struct Caller {
    /// The principal.
    pub principal: Principal,
    /// The bearer token's claims, when one was presented.
    pub claims: Option<std::sync::Arc<Claims>>,
    /// Client address.
    pub source: String,
}

impl Caller {
    /// May the caller pull from `name`? Used where one request touches a second repository (mount).
    pub async fn may_pull(&self, state: &AppState, name: &RepositoryName) -> Result<bool> {
        Ok(match &self.claims {
            Some(c) => c.grants(name.as_str(), "pull"),
            None => state.auth.policy.repository_actions(&state.db, &self.principal, name).await?.pull,
        })
    }
}

enum Need<'a> {
    Login,
    Catalog,
    Repository(&'a RepositoryName, &'static str),
}

fn need<'a>(path: &'a OciPath, method: &Method) -> Need<'a> {
    let write = !matches!(*method, Method::GET | Method::HEAD);
    match path {
        OciPath::Base => Need::Login,
        OciPath::Catalog => Need::Catalog,
        OciPath::Tags(n) | OciPath::Referrers(n, _) => Need::Repository(n, "pull"),
        OciPath::Manifest(n, _) | OciPath::Blob(n, _) if *method == Method::DELETE => Need::Repository(n, "delete"),
        OciPath::Manifest(n, _) | OciPath::Blob(n, _) => Need::Repository(n, if write { "push" } else { "pull" }),
        OciPath::UploadStart(n) | OciPath::Upload(n, _) => Need::Repository(n, "push"),
    }
}

fn challenge_scope(need: &Need<'_>) -> Option<String> {
    match need {
        Need::Login => None,
        Need::Catalog => Some("registry:catalog:*".into()),
        Need::Repository(n, "push") => Some(format!("repository:{n}:pull,push")),
        Need::Repository(n, action) => Some(format!("repository:{n}:{action}")),
    }
}

fn unauthorized(state: &AppState, need: &Need<'_>, error: Option<&str>, message: &str) -> RegistryError {
    let scope = challenge_scope(need);
    RegistryError::oci(ErrorCode::Unauthorized, message)
        .with_header(header::WWW_AUTHENTICATE, state.auth.challenge(scope.as_deref(), error))
}

/// Establishes the caller and checks it may do what the endpoint needs.
/// Nothing about a repository is revealed to a caller who may not see it:
/// the answer is the same whether it exists or not.
pub(crate) async fn authorize(
    state: &AppState,
    path: &OciPath,
    method: &Method,
    headers: &HeaderMap,
    source: String,
) -> Result<Caller> {
    let need = need(path, method);
    let (principal, claims) = match state.auth.authenticate(&state.db, headers, &source).await {
        Ok(a) => (a.principal, a.claims),
        Err(AuthFailure::Malformed) => {
            return Err(unauthorized(state, &need, Some("invalid_request"), "the Authorization header is malformed"))
        }
        Err(AuthFailure::BadCredentials) => {
            return Err(unauthorized(state, &need, None, "invalid username or password"))
        }
        Err(AuthFailure::Throttled(wait)) => {
            let secs = wait.as_secs().max(1);
            return Err(RegistryError::oci(
                ErrorCode::TooManyRequests,
                format!("too many failed logins; wait {secs} s"),
            )
            .with_header(header::RETRY_AFTER, secs.to_string()));
        }
        Err(AuthFailure::Token(e)) => return Err(unauthorized(state, &need, Some("invalid_token"), &e.to_string())),
        Err(AuthFailure::Db(e)) => return Err(e.into()),
    };
    let anonymous = principal == Principal::Anonymous;
    let caller = Caller { principal, claims, source };
    match need {
        Need::Login if anonymous && caller.claims.is_none() => {
            Err(unauthorized(state, &need, None, "authentication required: log in to this registry"))
        }
        Need::Login => Ok(caller),
        Need::Catalog if anonymous => Err(unauthorized(state, &need, None, "log in to list repositories")),
        Need::Catalog => Ok(caller),
        Need::Repository(name, action) => {
            let allowed = match &caller.claims {
                Some(c) => c.grants(name.as_str(), action),
                None => state.auth.policy.repository_actions(&state.db, &caller.principal, name).await?.allows(action),
            };
            if !allowed {
                if anonymous || caller.claims.is_some() {
                    let error = caller.claims.as_ref().map(|_| "insufficient_scope");
                    return Err(unauthorized(
                        state,
                        &need,
                        error,
                        &format!("{action} access to {name} requires a token that grants it"),
                    ));
                }
                return Err(RegistryError::oci(
                    ErrorCode::Denied,
                    format!(
                        "{} may not {action} {name}; ask an admin of its namespace for a role",
                        caller.principal.actor()
                    ),
                ));
            }
            if action == "push" {
                ensure_namespace(state, &caller, name).await?;
            }
            Ok(caller)
        }
    }
}

/// The system administrator's first push to a new namespace creates it.
async fn ensure_namespace(state: &AppState, caller: &Caller, name: &RepositoryName) -> Result<()> {
    let Some((ns, _)) = name.as_str().split_once('/') else { return Ok(()) };
    let who = access::Caller { principal: caller.principal.clone(), source: caller.source.clone() };
    Ok(namespaces::create_on_first_push(state, &who, ns).await?)
}
