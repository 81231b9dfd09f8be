//! Tickets: short-lived ES256 JWTs the registry signs to let one agent fetch
//! the pieces of one blob from its parents and from the seed. The registry
//! issues and checks them; agents check them offline against its JWKS.

use serde::{Deserialize, Serialize};

use crate::Digest;

/// The audience every ticket carries, so that no ticket passes as an access
/// token and no access token as a ticket.
pub const TICKET_AUDIENCE: &str = "damselfly-p2p";

/// What a ticket says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
