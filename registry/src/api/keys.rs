//! `/api/v1/signing-keys`: rotating the key that signs access tokens.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use crate::services::access::{self, Caller};
use crate::services::signing_keys;
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
    let admin = access::system_admin(&state, &caller, Some(signing_keys::rotating())).await?;
    let kid = signing_keys::rotate(&state, &admin).await?;
    Ok(Json(SigningKey { kid }))
}
