//! Bearer tokens: the JWT claims of the Docker/OCI token protocol and the
//! `scope` strings clients ask for.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

use super::KeyRing;

/// One grant in a token's `access` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name, or `catalog`.
    pub name: String,
    /// Granted actions: `pull`, `push`, `delete`, `*`.
    pub actions: Vec<String>,
}

impl Access {
    /// Parses `repository:<name>:<action>[,<action>…]`. The name may not contain ':'.
    pub fn parse_scope(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        // `repository(plugin)` is an old class syntax; the class carries no meaning here.
        let kind = kind.split('(').next().unwrap_or(kind);
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let actions = actions.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect();
        Some(Access { kind: kind.to_owned(), name: name.to_owned(), actions })
    }

    /// The scope string for a challenge.
    pub fn scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// What a token says. `typ` tells access tokens from refresh tokens, `cv`
/// is the holder's credentials version (a password change, a robot token
/// rotation or revocation bumps it, and every older token stops working),
/// and `gv` its grants version (a role removed or lessened bumps it, and
/// every older access token stops working).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the registry's public URL.
    pub iss: String,
    /// Subject: a username, `robot$<tenant>+<name>`, or empty for anonymous.
    pub sub: String,
    /// Audience: the registry's service name.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
    /// Grants.
    #[serde(default)]
    pub access: Vec<Access>,
    /// `access` or `refresh`.
    #[serde(default = "access_typ")]
    pub typ: String,
    /// Credentials version of the subject when the token was issued.
    #[serde(default)]
    pub cv: i64,
    /// Grants version of the subject when the token was issued.
    #[serde(default)]
    pub gv: i64,
}

fn access_typ() -> String {
    "access".into()
}

impl Claims {
    /// True if the token grants `action` on the repository `name`.
    pub fn grants(&self, name: &str, action: &str) -> bool {
        self.access
            .iter()
            .any(|a| a.kind == "repository" && a.name == name && a.actions.iter().any(|x| x == action || x == "*"))
    }
}

/// Why a presented token is refused. The message is safe to show.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT, or a header we do not accept (alg other than ES256, no kid).
    #[error("the bearer token is malformed or not signed with ES256")]
    Malformed,
    /// Signed by a key we do not know.
    #[error("the bearer token was signed by an unknown key")]
    UnknownKey,
    /// Signature, audience, issuer or time checks failed.
    #[error("the bearer token is invalid: {0}")]
    Invalid(String),
    /// Valid, but its holder's credentials changed or it was revoked.
    #[error("the bearer token was revoked: log in again")]
    Revoked,
}

/// Seconds of clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECS: i64 = 5;

/// Checks signature, algorithm, `kid`, audience, issuer and times of an access or refresh token.
pub fn verify(keys: &KeyRing, token: &str, service: &str, issuer: &str) -> Result<Claims, TokenError> {
    verify_as(keys, token, service, issuer)
}

/// Checks any JWT this registry signs (tokens, P2P tickets) and decodes its claims.
///
/// Only ES256 is accepted, and only with a `kid` naming one of the
/// registry's own keys in force: a key a token brings along or points at
/// (`jwk`, `jku`, `x5u`, `x5c` headers) is never looked at.
pub fn verify_as<T: serde::de::DeserializeOwned>(
    keys: &KeyRing,
    token: &str,
    audience: &str,
    issuer: &str,
) -> Result<T, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::ES256 {
        return Err(TokenError::Malformed);
    }
    let kid = header.kid.ok_or(TokenError::Malformed)?;
    let key = keys.decoding_key(&kid).ok_or(TokenError::UnknownKey)?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.leeway = LEEWAY_SECS as u64;
    validation.validate_nbf = true;
    validation.required_spec_claims =
        ["exp", "nbf", "iss", "aud", "sub"].into_iter().map(str::to_owned).collect::<HashSet<_>>();
    jsonwebtoken::decode::<T>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| TokenError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let a = Access::parse_scope("repository:team/app:pull,push").unwrap();
        assert_eq!(
            a,
            Access { kind: "repository".into(), name: "team/app".into(), actions: vec!["pull".into(), "push".into()] }
        );
        assert_eq!(a.scope(), "repository:team/app:pull,push");
        assert_eq!(Access::parse_scope("registry:catalog:*").unwrap().actions, ["*"]);
        assert_eq!(Access::parse_scope("repository(plugin):a/b:pull").unwrap().kind, "repository");
        assert!(Access::parse_scope("nonsense").is_none());
        assert!(Access::parse_scope("repository::pull").is_none());
    }
}
