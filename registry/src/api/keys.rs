//! `/api/v1/signing-keys`: rotating the key that signs access tokens.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::access::{Attempt, Caller};
use super::error::{ApiError, ApiResult, ErrorBody};
use crate::auth::keys::KeyError;
use crate::state::AppState;

/// The key that signs new tokens.
#[derive(Serialize, ToSchema)]
pub struct SigningKey {
    /// Its key id, as in token headers and `/auth/jwks.json`.
    pub kid: String,
}

/// Starts signing with a new key (system administrator only). Tokens signed
/// by the previous key keep verifying until they expire; both are in the JWKS meanwhile.
#[utoipa::path(
    post,
    path = "/api/v1/signing-keys/rotate",
    operation_id = "rotateSigningKey",
    tag = "signing-keys",
    responses(
        (status = 200, description = "The new key", body = SigningKey),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not the system administrator", body = ErrorBody),
    )
)]
pub async fn rotate(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<SigningKey>> {
    let attempt = Attempt { action: "signing_key.rotate", object: "signing_key" };
    caller.require_system_admin(&state, Some(attempt)).await?;
    let kid = state.auth.keys.rotate(&state.db).await.map_err(|e| match e {
        KeyError::Db(e) => ApiError::Database(e),
        other => ApiError::Internal(other.to_string()),
    })?;
    let object = format!("signing_key/{kid}");
    caller.record(&state, Attempt { action: "signing_key.rotate", object: &object }, None, None).await;
    Ok(Json(SigningKey { kid }))
}
