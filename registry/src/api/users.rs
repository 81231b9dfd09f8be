//! `/api/v1/users`: people who log in, and their passwords.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::access::{Attempt, Caller};
use super::error::{ApiError, ApiResult, ErrorBody, OnDuplicate};
use super::names::Name;
use super::{Body, PathParams};
use crate::auth::{password, Principal};
use crate::state::AppState;

const MIN_PASSWORD: usize = 8;
// Argon2 takes any length; the cap keeps one request from hashing megabytes.
const MAX_PASSWORD: usize = 1024;

/// A user.
#[derive(Serialize, ToSchema)]
pub struct User {
    /// Login name.
    pub username: String,
    /// May do everything, everywhere.
    pub system_admin: bool,
}

/// The body of `POST /api/v1/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// `[a-z0-9]+([._-][a-z0-9]+)*`, at most 64 characters.
    pub username: String,
    /// At least 8 characters.
    pub password: String,
    /// Make a system administrator.
    #[serde(default)]
    pub system_admin: bool,
}

/// The body of `PUT /api/v1/users/{username}/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// At least 8 characters.
    pub password: String,
}

fn check_password(password: &str) -> ApiResult<()> {
    let len = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
        return Err(ApiError::InvalidRequest(format!(
            "the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long"
        )));
    }
    Ok(())
}

async fn hash(password: &str) -> ApiResult<String> {
    password::hash(password.to_owned()).await.map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))
}

/// Every user (system administrator only).
#[utoipa::path(
    get,
    path = "/api/v1/users",
    operation_id = "listUsers",
    tag = "users",
    responses(
        (status = 200, description = "Users by name", body = Vec<User>),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not the system administrator", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<User>>> {
    caller.require_system_admin(&state, None).await?;
    let users = state.db.accounts().users().await?;
    Ok(Json(users.into_iter().map(|u| User { username: u.username, system_admin: u.system_admin }).collect()))
}

/// Creates a user (system administrator only). Roles are granted per tenant
/// with `PUT /api/v1/tenants/{tenant}/members`.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    operation_id = "createUser",
    tag = "users",
    request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = User),
        (status = 400, description = "Invalid username, password or body", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not the system administrator", body = ErrorBody),
        (status = 409, description = "The username is taken", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let object = format!("user/{}", body.username);
    let attempt = Attempt { action: "user.create", object: &object };
    caller.require_system_admin(&state, Some(attempt)).await?;
    let username = Name::user(&body.username)?;
    check_password(&body.password)?;
    let hash = hash(&body.password).await?;
    state
        .db
        .accounts()
        .create_user(username.as_str(), &hash, body.system_admin)
        .await
        .on_duplicate(|| format!("user {username} already exists; pick another name"))?;
    state.auth.invalidate();
    caller.record(&state, attempt, None, Some(json!({ "system_admin": body.system_admin }))).await;
    Ok((StatusCode::CREATED, Json(User { username: username.to_string(), system_admin: body.system_admin })))
}

/// Sets a user's password (the user themself, or the system administrator).
/// The old password and every token issued before stop working.
#[utoipa::path(
    put,
    path = "/api/v1/users/{username}/password",
    operation_id = "setPassword",
    tag = "users",
    params(("username" = String, Path, description = "Login name")),
    request_body = NewPassword,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Invalid password or body", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Neither that user nor the system administrator", body = ErrorBody),
        (status = 404, description = "No such user (system administrator only)", body = ErrorBody),
    )
)]
pub async fn set_password(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(username): PathParams<String>,
    Body(body): Body<NewPassword>,
) -> ApiResult<StatusCode> {
    let object = format!("user/{username}");
    let attempt = Attempt { action: "user.password", object: &object };
    let is_self = matches!(&caller.principal, Principal::User { name, .. } if *name == username);
    if !is_self && !caller.principal.is_system_admin() {
        let error = ApiError::Denied(format!(
            "{} may change only their own password; ask the system administrator to change {username}'s",
            caller.actor()
        ));
        return Err(caller.refused(&state, attempt, None, error).await);
    }
    let user = state.db.accounts().user_by_name(&username).await?.ok_or_else(|| {
        ApiError::NotFound(format!("user {username} does not exist; list users with GET /api/v1/users"))
    })?;
    check_password(&body.password)?;
    let hash = hash(&body.password).await?;
    state.db.accounts().set_password(user.id, &hash).await?;
    // Console sign-ins end with the old password (the credentials version check would end them too).
    state.db.console_sessions().delete_of_user(user.id).await?;
    state.auth.invalidate();
    caller.record(&state, attempt, None, None).await;
    Ok(StatusCode::NO_CONTENT)
}
