//! Who is calling: parsing `Authorization`, checking passwords, robot
//! tokens and bearer tokens, and noticing revoked credentials.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use base64::Engine;

use super::cache::TtlCache;
use super::holders::HolderReads;
use super::password;
use super::token::{self, Claims, TokenError};
use super::verified::{Holder, Verified, VerifiedTokens};
use super::KeyRing;
use crate::metadata::{now, Db, PrincipalRef, TenantId, TokenHolder};

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// A person.
    User {
        /// Row id.
        id: i64,
        /// Login name.
        name: String,
        /// May do everything.
        system_admin: bool,
        /// Current credentials version.
        cv: i64,
        /// Current grants version.
        gv: i64,
    },
    /// A robot account of one tenant.
    Robot {
        /// Row id.
        id: i64,
        /// Its tenant.
        tenant_id: TenantId,
        /// `robot$<tenant>+<name>`.
        login: String,
        /// Current credentials version.
        cv: i64,
        /// Current grants version.
        gv: i64,
    },
}

impl Principal {
    /// The name written in tokens and the audit log.
    pub fn actor(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User { name, .. } => name,
            Principal::Robot { login, .. } => login,
        }
    }

    /// The subject claim (empty for anonymous, as the token spec has it).
    pub fn subject(&self) -> &str {
        match self {
            Principal::Anonymous => "",
            other => other.actor(),
        }
    }

    /// The key of its role bindings.
    pub fn reference(&self) -> Option<PrincipalRef> {
        match self {
            Principal::Anonymous => None,
            Principal::User { id, .. } => Some(PrincipalRef::User(*id)),
            Principal::Robot { id, .. } => Some(PrincipalRef::Robot(*id)),
        }
    }

    /// True for the system administrator.
    pub fn is_system_admin(&self) -> bool {
        matches!(self, Principal::User { system_admin: true, .. })
    }

    /// Credentials version, 0 for anonymous.
    pub fn credentials_version(&self) -> i64 {
        match self {
            Principal::Anonymous => 0,
            Principal::User { cv, .. } | Principal::Robot { cv, .. } => *cv,
        }
    }

    /// Grants version, 0 for anonymous.
    pub fn grants_version(&self) -> i64 {
        match self {
            Principal::Anonymous => 0,
            Principal::User { gv, .. } | Principal::Robot { gv, .. } => *gv,
        }
    }

    /// The same principal under grants version `version` (anonymous has none).
    pub fn with_grants_version(mut self, version: i64) -> Principal {
        if let Principal::User { gv, .. } | Principal::Robot { gv, .. } = &mut self {
            *gv = version;
        }
        self
    }
}

/// What the `Authorization` header carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing.
    None,
    /// `Basic user:secret`.
    Basic(String, String),
    /// `Bearer <jwt>`.
    Bearer(String),
    /// Something unreadable.
    Malformed,
}

impl Credentials {
    /// Reads the `Authorization` header.
    pub fn from_headers(headers: &HeaderMap) -> Credentials {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Credentials::None;
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" if !rest.trim().is_empty() => Credentials::Bearer(rest.trim().to_owned()),
            "basic" => base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|s| s.split_once(':').map(|(u, p)| Credentials::Basic(u.to_owned(), p.to_owned())))
                .unwrap_or(Credentials::Malformed),
            _ => Credentials::Malformed,
        }
    }
}

/// Why credentials were refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong name, password or robot token, or an expired or revoked robot.
    #[error("invalid username or password")]
    BadCredentials,
    /// A bearer token that does not verify.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Checks credentials, caching what is expensive to re-check: an argon2
/// verification costs tens of milliseconds, and clients sending Basic auth
/// on every request would otherwise pay it each time; an ES256 signature
/// costs tens of microseconds, and clients send the same bearer token on
/// every request.
pub struct Authenticator {
    verified_basic: TtlCache<[u8; 32], i64>,
    principals: TtlCache<String, Option<Principal>>,
    tokens: VerifiedTokens,
    holders: HolderReads,
}

/// Verified bearer tokens kept at most; a client holds one per repository it works on.
const VERIFIED_TOKENS: usize = 100_000;

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator {
            verified_basic: TtlCache::new(Duration::from_secs(60), 10_000),
            principals: TtlCache::new(Duration::from_secs(2), 10_000),
            tokens: VerifiedTokens::new(VERIFIED_TOKENS),
            holders: HolderReads::default(),
        }
    }
}

fn robot_login(login: &str) -> Option<(&str, &str)> {
    login.strip_prefix("robot$")?.split_once('+')
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    /// The current state of a user or robot by login name (cached for two seconds).
    pub async fn lookup(&self, db: &Db, login: &str) -> Result<Option<Principal>, sqlx::Error> {
        if let Some(p) = self.principals.get(&login.to_owned()) {
            return Ok(p);
        }
        let found = if let Some((tenant, name)) = robot_login(login) {
            db.accounts().robot_by_name(tenant, name).await?.filter(|r| r.is_active(now())).map(|r| Principal::Robot {
                id: r.id,
                tenant_id: r.tenant_id,
                login: r.login(),
                cv: r.credentials_version,
                gv: r.grants_version,
            })
        } else {
            db.accounts().user_by_name(login).await?.map(|u| Principal::User {
                id: u.id,
                name: u.username,
                system_admin: u.system_admin,
                cv: u.credentials_version,
                gv: u.grants_version,
            })
        };
        self.principals.put(login.to_owned(), found.clone());
        Ok(found)
    }

    /// Forgets cached state after a credentials change made here.
    pub fn invalidate(&self) {
        self.principals.clear();
        self.verified_basic.clear();
    }

    /// Checks a username and password, or a robot login and token.
    pub async fn basic(&self, db: &Db, login: &str, secret: &str) -> Result<Principal, AuthError> {
        if let Some((tenant, name)) = robot_login(login) {
            let robot = db.accounts().robot_by_name(tenant, name).await?.ok_or(AuthError::BadCredentials)?;
            let presented = password::token_sha256(secret);
            if !robot.is_active(now()) || !constant_time_eq(presented.as_bytes(), robot.token_sha256.as_bytes()) {
                return Err(AuthError::BadCredentials);
            }
            return Ok(Principal::Robot {
                id: robot.id,
                tenant_id: robot.tenant_id,
                login: robot.login(),
                cv: robot.credentials_version,
                gv: robot.grants_version,
            });
        }
        let key = *damselfly_core::Digest::of(format!("{login}\0{secret}").as_bytes()).as_bytes();
        let principal = self.lookup(db, login).await?.ok_or(AuthError::BadCredentials)?;
        if self.verified_basic.get(&key) == Some(principal.credentials_version()) {
            return Ok(principal);
        }
        let user = db.accounts().user_by_name(login).await?.ok_or(AuthError::BadCredentials)?;
        if !password::verify(secret.to_owned(), user.password_hash.clone()).await {
            return Err(AuthError::BadCredentials);
        }
        self.verified_basic.put(key, user.credentials_version);
        Ok(Principal::User {
            id: user.id,
            name: user.username,
            system_admin: user.system_admin,
            cv: user.credentials_version,
            gv: user.grants_version,
        })
    }

    /// Verifies a bearer token and that its subject still holds the
    /// credentials and the grants it was issued under.
    ///
    /// The signature and claims are checked once per token and kept (see
    /// [`VerifiedTokens`]); the subject's versions are read from the
    /// database for every call, one row by its key, by a read that began
    /// after the call did (see [`HolderReads`]), so a password change, a
    /// robot revoked or rotated, or a role removed or lessened, made through
    /// any replica, ends the token on its next use here.
    pub async fn bearer(
        &self,
        db: &Db,
        keys: &KeyRing,
        token: &str,
        service: &str,
        issuer: &str,
    ) -> Result<(Principal, Arc<Claims>), AuthError> {
        let key = VerifiedTokens::key(token);
        let at = now();
        let verified = match self.tokens.get(&key, at).filter(|v| keys.knows(&v.kid)) {
            Some(v) => v,
            None => {
                let verified = Arc::new(self.verify_fresh(db, keys, token, service, issuer).await?);
                // Kept only once it checked out; a refused token is checked in full each time.
                let principal = self.current(db, &verified).await?;
                self.tokens.put(key, verified.clone(), at);
                return Ok((principal, verified.claims.clone()));
            }
        };
        let principal = self.current(db, &verified).await?;
        Ok((principal, verified.claims.clone()))
    }

    /// Checks a token's signature, key, audience, issuer, times and type,
    /// and finds the account it names.
    async fn verify_fresh(
        &self,
        db: &Db,
        keys: &KeyRing,
        token: &str,
        service: &str,
        issuer: &str,
    ) -> Result<Verified, AuthError> {
        let claims = match token::verify(keys, token, service, issuer) {
            Err(TokenError::UnknownKey) => {
                // Another replica may have rotated the key: look once more.
                let _ = keys.reload(db).await;
                token::verify(keys, token, service, issuer)?
            }
            other => other?,
        };
        if claims.typ != "access" {
            return Err(TokenError::Invalid("a refresh token cannot be used as an access token".into()).into());
        }
        let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid).ok_or(TokenError::Malformed)?;
        let holder = if claims.sub.is_empty() {
            Holder::Anonymous
        } else if let Some((tenant, name)) = robot_login(&claims.sub) {
            let robot = db.accounts().robot_by_name(tenant, name).await?.ok_or(TokenError::Revoked)?;
            Holder::Robot { id: robot.id, tenant_id: robot.tenant_id, login: robot.login() }
        } else {
            let user = db.accounts().user_by_name(&claims.sub).await?.ok_or(TokenError::Revoked)?;
            Holder::User { id: user.id, name: user.username }
        };
        Ok(Verified { claims: Arc::new(claims), kid, holder })
    }

    /// The principal a verified token names, as the database has it now; a
    /// refusal if its credentials or grants changed since the token was issued.
    async fn current(&self, db: &Db, verified: &Verified) -> Result<Principal, AuthError> {
        let claims = &verified.claims;
        let who = match &verified.holder {
            Holder::Anonymous => return Ok(Principal::Anonymous),
            Holder::User { id, .. } => PrincipalRef::User(*id),
            Holder::Robot { id, .. } => PrincipalRef::Robot(*id),
        };
        let state: TokenHolder = self.holders.read(db, who).await?.ok_or(TokenError::Revoked)?;
        let active = !state.revoked && state.expires_at.is_none_or(|e| now() < e);
        if !active || state.credentials_version != claims.cv || state.grants_version != claims.gv {
            return Err(TokenError::Revoked.into());
        }
        Ok(match &verified.holder {
            Holder::Anonymous => Principal::Anonymous,
            Holder::User { id, name } => Principal::User {
                id: *id,
                name: name.clone(),
                system_admin: state.system_admin,
                cv: state.credentials_version,
                gv: state.grants_version,
            },
            Holder::Robot { id, tenant_id, login } => Principal::Robot {
                id: *id,
                tenant_id: *tenant_id,
                login: login.clone(),
                cv: state.credentials_version,
                gv: state.grants_version,
            },
        })
    }
}
