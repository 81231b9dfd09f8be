//! Who is calling the management API: Basic credentials (a user, or a robot
//! as `robot$<tenant>+<name>` with its token) or a Bearer token from
//! `/auth/token`. What they may do is `services::access`'s to decide.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::error::{ApiError, ApiResult};
use crate::auth::{AuthFailure, Principal};
use crate::services::access::Caller;
use crate::state::AppState;

const LOG_IN: &str = "log in: send Basic credentials (a username and password, or robot$<tenant>+<name> and its \
                      token) or a Bearer token from /auth/token";

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string())
            .unwrap_or_default();
        let principal =
            match state.auth.authenticate(&state.db, &parts.headers, &source).await {
                Ok(a) => a.principal,
                Err(AuthFailure::Malformed) => {
                    return Err(ApiError::Unauthorized(format!("the Authorization header is malformed; {LOG_IN}")))
                }
                Err(AuthFailure::BadCredentials) => return Err(ApiError::Unauthorized(
                    "invalid username or password (robot accounts log in as robot$<tenant>+<name> with their token)"
                        .to_owned(),
                )),
                Err(AuthFailure::Throttled(wait)) => return Err(ApiError::TooManyRequests(wait.as_secs().max(1))),
                Err(AuthFailure::Token(e)) => {
                    return Err(ApiError::Unauthorized(format!(
                        "the bearer token was refused ({e}); get a new one from /auth/token"
                    )))
                }
                Err(AuthFailure::Db(e)) => return Err(e.into()),
            };
        if principal == Principal::Anonymous {
            // An anonymous token from /auth/token names nobody who could hold a role.
            return Err(ApiError::Unauthorized(LOG_IN.to_owned()));
        }
        Ok(Caller { principal, source })
    }
}
