//! The keys that sign access tokens: starting to sign with a new one.

use super::access::{Attempt, SystemAdmin};
use super::{Error, Result};
use crate::auth::keys::KeyError;
use crate::state::AppState;

/// The audit attempt of rotating the signing key.
pub fn rotating() -> Attempt {
    Attempt::new("signing_key.rotate", "signing_key")
}

/// Starts signing with a new key and returns its key id. Tokens signed by the
/// previous key keep verifying until they expire; both are in the JWKS meanwhile.
pub async fn rotate(state: &AppState, admin: &SystemAdmin) -> Result<String> {
    let kid = state.auth.keys.rotate(&state.db).await.map_err(|e| match e {
        KeyError::Db(e) => Error::Database(e),
        other => Error::Internal(other.to_string()),
    })?;
    admin.record_as(state, &Attempt::new("signing_key.rotate", format!("signing_key/{kid}"))).await;
    Ok(kid)
}
