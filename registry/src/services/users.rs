//! People who log in, and their passwords.

use serde_json::json;

use super::access::{Attempt, Caller, SystemAdmin};
use super::names::Name;
use super::{Error, OnDuplicate, Place, Result, Thing};
use crate::auth::{password, Principal};
use crate::metadata::User;
use crate::state::AppState;

const MIN_PASSWORD: usize = 8;
// Argon2 takes any length; the cap keeps one request from hashing megabytes.
const MAX_PASSWORD: usize = 1024;

fn check_password(password: &str) -> Result<()> {
    let len = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
        return Err(Error::invalid(
            Thing::Password,
            format!("the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long"),
        ));
    }
    Ok(())
}

async fn hash(password: &str) -> Result<String> {
    password::hash(password.to_owned()).await.map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

/// Every user, by name.
pub async fn list(state: &AppState, _admin: &SystemAdmin) -> Result<Vec<User>> {
    Ok(state.db.accounts().users().await?)
}

/// The audit attempt of creating user `username`, as requested.
pub fn creating(username: &str) -> Attempt {
    Attempt::new("user.create", format!("user/{username}"))
}

/// The audit attempt of setting user `username`'s password, as requested.
pub fn setting_password(username: &str) -> Attempt {
    Attempt::new("user.password", format!("user/{username}"))
}

/// Creates a user; the check was made for [`creating`]. Roles are granted per tenant.
pub async fn create(
    state: &AppState,
    admin: &SystemAdmin,
    username: &Name,
    password: &str,
    system_admin: bool,
) -> Result<()> {
    check_password(password)?;
    let hash = hash(password).await?;
    state
        .db
        .accounts()
        .create_user(username.as_str(), &hash, system_admin)
        .await
        .on_duplicate(|| Error::conflict(Thing::User, format!("user {username} already exists; pick another name")))?;
    state.auth.invalidate();
    admin.record(state, None, Some(json!({ "system_admin": system_admin }))).await;
    Ok(())
}

/// Sets `username`'s password, as that user or the system administrator.
/// The old password, every token issued before and every console sign-in stop working.
pub async fn set_password(state: &AppState, caller: &Caller, username: &str, password: &str) -> Result<()> {
    let attempt = setting_password(username);
    let is_self = matches!(&caller.principal, Principal::User { name, .. } if *name == username);
    if !is_self && !caller.principal.is_system_admin() {
        let error = Error::Denied(format!(
            "{} may change only their own password; ask the system administrator to change {username}'s",
            caller.actor()
        ));
        return Err(caller.refused(state, Some(&attempt), None, error).await);
    }
    let user = state.db.accounts().user_by_name(username).await?.ok_or_else(|| {
        Error::not_found(Thing::User, format!("user {username} does not exist")).then("list users", Place::Users)
    })?;
    check_password(password)?;
    let hash = hash(password).await?;
    state.db.accounts().set_password(user.id, &hash).await?;
    // Console sign-ins end with the old password (the credentials version check would end them too).
    state.db.console_sessions().delete_of_user(user.id).await?;
    state.auth.invalidate();
    caller.record(state, &attempt, None, None).await;
    Ok(())
}
