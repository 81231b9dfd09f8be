//! Tickets: short-lived ES256 JWTs that let one agent fetch the pieces of
//! one blob from its parents and from the seed. Peers verify them offline
//! against the registry's JWKS; a ticket for another blob opens nothing.
//! What a ticket says is part of the P2P contract, in `damselfly_core::p2p`.

use damselfly_core::p2p::{TicketClaims, TICKET_AUDIENCE};
use damselfly_core::Digest;

use crate::auth::token::{verify_as, TokenError};
use crate::auth::Auth;
use crate::metadata::{now, ClusterId};

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
