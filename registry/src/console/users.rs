//! People who sign in: the system administrator lists them, creates them
//! and sets a user's password (one they forgot), as with the API. Roles are
//! granted on each tenant's page; users change their own password on the
//! Password page.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{finish, notice, render, Chrome, ConsoleResult, Kept, Posted, SignedIn};
use crate::services::access;
use crate::services::names::Name;
use crate::services::users;
use crate::state::AppState;

/// A user as listed.
struct UserRow {
    username: String,
    system_admin: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
}

impl UsersPage {
    fn new_user(&self) -> Kept<'_> {
        self.chrome.kept("/console/users")
    }

    fn set_password(&self) -> Kept<'_> {
        self.chrome.kept("/console/users/password")
    }
}

/// `GET /console/users` (system administrator only).
pub async fn list(State(state): State<AppState>, who: SignedIn) -> ConsoleResult<Response> {
    let admin = access::system_admin(&state, &who.caller(), None).await?;
    let users = users::list(&state, &admin)
        .await?
        .into_iter()
        .map(|u| UserRow { username: u.username, system_admin: u.system_admin })
        .collect();
    Ok(render(&UsersPage { chrome: who.chrome(&state, "users").await, users }))
}

/// The new-user form.
#[derive(Deserialize)]
pub struct UserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    system_admin: bool,
}

/// `POST /console/users`: creates a user (system administrator only). The
/// password is never sent back to the page, even when the form comes back.
pub async fn create(State(state): State<AppState>, posted: Posted<UserForm>) -> Response {
    let Posted { who, form, kept, .. } = posted;
    let username = form.username.trim();
    let created = async {
        let admin = access::system_admin(&state, &who.caller(), Some(users::creating(username))).await?;
        users::create(&state, &admin, &Name::user(username)?, &form.password, form.system_admin).await
    };
    let what = if form.system_admin { "System administrator" } else { "User" };
    let outcome = created.await.map(|()| {
        notice(format!(
            "{what} {username} created. They sign in with the password you gave; grant them roles on a tenant's page."
        ))
    });
    finish(&state, &who, "/console/users", kept, outcome).await
}

/// The set-a-password form.
#[derive(Deserialize)]
pub struct SetPasswordForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// `POST /console/users/password`: the system administrator sets a user's
/// password. As any password change, it ends every session and token of
/// that user; the administrator's own, when they set theirs here.
pub async fn set_password(State(state): State<AppState>, posted: Posted<SetPasswordForm>) -> Response {
    let Posted { who, form, kept, .. } = posted;
    let username = form.username.trim();
    let set = async {
        // Here only the system administrator: a user setting their own would skip giving the current one.
        access::system_admin(&state, &who.caller(), Some(users::setting_password(username))).await?;
        users::set_password(&state, &who.caller(), username, &form.password).await
    };
    let outcome = set.await.map(|()| {
        notice(format!(
            "Password of {username} set: their sessions and tokens have ended, and they sign in with the new password."
        ))
    });
    if outcome.is_ok() && who.principal.actor() == username {
        return axum::response::Redirect::to("/console/login?error=password").into_response();
    }
    finish(&state, &who, "/console/users", kept, outcome).await
}
