//! Tickets: short-lived ES256 JWTs that let one agent fetch the pieces of
//! one blob from its parents and from the seed. Peers verify them offline
//! against the registry's JWKS; a ticket for another blob opens nothing.

use damselfly_core::Digest;
use serde::{Deserialize, Serialize};

use crate::auth::token::{verify_as, TokenError};
use crate::auth::Auth;
use crate::metadata::{now, ClusterId};

/// The audience every ticket carries, so no ticket passes as an access token and no access token as a ticket.
pub const TICKET_AUDIENCE: &str = "damselfly-p2p";

/// What a ticket says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TicketClaims {
    /// The registry.
    pub iss: String,
    /// [`TICKET_AUDIENCE`].
    pub aud: String,
    /// The agent the ticket was issued to.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// The blob it opens.
    pub blob: Digest,
    /// The cluster of the agent.
    pub cluster: i64,
}

/// Signs a ticket for `agent` to fetch pieces of `blob`.
pub fn issue(auth: &Auth, agent: &str, cluster: ClusterId, blob: Digest, ttl_secs: i64) -> Result<String, String> {
    let at = now();
    let claims = TicketClaims {
        iss: auth.issuer.clone(),
        aud: TICKET_AUDIENCE.to_owned(),
        sub: agent.to_owned(),
        exp: at + ttl_secs,
        nbf: at,
        iat: at,
        blob,
        cluster: cluster.0,
    };
    auth.keys.sign(&claims).map_err(|e| e.to_string())
}

/// Checks a ticket and that it opens `blob`.
pub fn verify(auth: &Auth, ticket: &str, blob: &Digest) -> Result<TicketClaims, TokenError> {
    let claims: TicketClaims = verify_as(&auth.keys, ticket, TICKET_AUDIENCE, &auth.issuer)?;
    if claims.blob != *blob {
        return Err(TokenError::Invalid(format!("the ticket opens {}, not {blob}", claims.blob)));
    }
    Ok(claims)
}
