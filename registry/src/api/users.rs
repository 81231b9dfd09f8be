//! `/api/v1/users`: people who log in, and their passwords.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::{Body, PathParams};
use crate::services::access::{self, Caller};
use crate::services::names::Name;
use crate::services::users;
use crate::state::AppState;

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
    #[schema(pattern = r"^[a-z0-9]+([._-][a-z0-9]+)*$", min_length = 1, max_length = 64)]
    pub username: String,
    /// 8 to 1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
    /// Make a system administrator.
    #[serde(default)]
    pub system_admin: bool,
}

/// The body of `PUT /api/v1/users/{username}/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// 8 to 1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
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
    let admin = access::system_admin(&state, &caller, None).await?;
    let users = users::list(&state, &admin).await?;
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
    let admin = access::system_admin(&state, &caller, Some(users::creating(&body.username))).await?;
    let username = Name::user(&body.username)?;
    users::create(&state, &admin, &username, &body.password, body.system_admin).await?;
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
    users::set_password(&state, &caller, &username, &body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}
