//! Authentication and authorization: passwords and robot tokens, ES256
//! tokens in the Docker/OCI token protocol, the JWKS other components use
//! to verify them offline, and the policy that decides who may do what.

pub mod bootstrap;
mod cache;
pub mod endpoint;
mod holders;
pub mod keys;
pub mod password;
pub mod policy;
pub mod principal;
pub mod rate_limit;
pub mod token;
mod verified;

use std::time::Duration;

pub use keys::KeyRing;
pub use policy::{Actions, Policy};
pub use principal::{AuthError, Authenticator, Credentials, Principal};
pub use token::{Access, Claims};

use crate::config::Config;
use crate::metadata::{now, Db};
use rate_limit::LoginLimiter;

/// Everything the registry needs to authenticate and authorize.
pub struct Auth {
    /// Signing and verification keys.
    pub keys: KeyRing,
    /// Credential checks.
    pub authenticator: Authenticator,
    /// Permission decisions.
    pub policy: Policy,
    /// Brute-force protection.
    pub limiter: LoginLimiter,
    /// Token audience and challenge `service`.
    pub service: String,
    /// Token issuer: the public URL.
    pub issuer: String,
    /// Challenge `realm`: the token endpoint's URL.
    pub realm: String,
    /// Access token lifetime.
    pub token_ttl: i64,
    /// Refresh token lifetime.
    pub refresh_ttl: i64,
}

/// Why a login was refused.
pub enum LoginError {
    /// Too many failures; retry after this long.
    Throttled(Duration),
    /// Wrong credentials.
    Denied,
    /// Database failure.
    Db(sqlx::Error),
}

/// A caller whose credentials checked out (or who sent none).
pub struct Authenticated {
    /// Who.
    pub principal: Principal,
    /// The bearer token's claims, when one was presented.
    pub claims: Option<std::sync::Arc<Claims>>,
}

/// Why presented credentials were refused.
#[derive(Debug)]
pub enum AuthFailure {
    /// The `Authorization` header could not be read.
    Malformed,
    /// Wrong name, password or robot token.
    BadCredentials,
    /// Too many failed logins; retry after this long.
    Throttled(Duration),
    /// The bearer token does not verify or was revoked.
    Token(token::TokenError),
    /// Database failure.
    Db(sqlx::Error),
}

impl Auth {
    /// Establishes the caller from the `Authorization` header: Basic (a user
    /// or a robot, rate-limited), Bearer (verified and checked for
    /// revocation), or nothing (anonymous). Every API authenticates here.
    pub async fn authenticate(
        &self,
        db: &Db,
        headers: &axum::http::HeaderMap,
        source: &str,
    ) -> Result<Authenticated, AuthFailure> {
        match Credentials::from_headers(headers) {
            Credentials::None => Ok(Authenticated { principal: Principal::Anonymous, claims: None }),
            Credentials::Malformed => Err(AuthFailure::Malformed),
            Credentials::Basic(login, secret) => match self.login(db, &login, &secret, source).await {
                Ok(principal) => Ok(Authenticated { principal, claims: None }),
                Err(LoginError::Throttled(wait)) => Err(AuthFailure::Throttled(wait)),
                Err(LoginError::Denied) => Err(AuthFailure::BadCredentials),
                Err(LoginError::Db(e)) => Err(AuthFailure::Db(e)),
            },
            Credentials::Bearer(token) => {
                match self.authenticator.bearer(db, &self.keys, &token, &self.service, &self.issuer).await {
                    Ok((principal, claims)) => Ok(Authenticated { principal, claims: Some(claims) }),
                    Err(AuthError::Db(e)) => Err(AuthFailure::Db(e)),
                    Err(AuthError::Token(e)) => Err(AuthFailure::Token(e)),
                    Err(AuthError::BadCredentials) => Err(AuthFailure::BadCredentials),
                }
            }
        }
    }

    /// Loads the signing keys (creating the first one) and applies the settings.
    pub async fn open(db: &Db, config: &Config) -> Result<Auth, keys::KeyError> {
        let token_ttl = config.token_ttl_secs as i64;
        let refresh_ttl = config.refresh_token_ttl_secs as i64;
        let public = config.public_url();
        Ok(Auth {
            keys: KeyRing::open(db, token_ttl.max(refresh_ttl) + 60, config.signing_key_file.as_deref()).await?,
            authenticator: Authenticator::default(),
            policy: Policy::default(),
            limiter: LoginLimiter::new(config.login_failures_per_minute.max(1), Duration::from_secs(60)),
            service: config.token_service.clone(),
            realm: format!("{public}/auth/token"),
            issuer: public,
            token_ttl,
            refresh_ttl,
        })
    }

    /// Checks Basic credentials with brute-force protection per login name
    /// and per address, counted in the database for every replica together.
    pub async fn login(&self, db: &Db, login: &str, secret: &str, source: &str) -> Result<Principal, LoginError> {
        let keys = [format!("user:{login}"), format!("addr:{source}")];
        let key_refs = [keys[0].as_str(), keys[1].as_str()];
        let standing = self.limiter.standing(db, &key_refs).await.map_err(LoginError::Db)?;
        if let Some(wait) = standing.blocked {
            return Err(LoginError::Throttled(wait));
        }
        match self.authenticator.basic(db, login, secret).await {
            Ok(p) => {
                // Only a login that failed lately has a counter to clear: no write for every other.
                if standing.failures {
                    self.limiter.succeeded(db, &keys[0]).await.map_err(LoginError::Db)?;
                }
                Ok(p)
            }
            Err(AuthError::Db(e)) => Err(LoginError::Db(e)),
            Err(_) => {
                self.limiter.failed(db, &key_refs).await.map_err(LoginError::Db)?;
                Err(LoginError::Denied)
            }
        }
    }

    /// Signs a token for `principal`. `typ` is `access` or `refresh`.
    pub fn issue(&self, principal: &Principal, access: Vec<Access>, typ: &str) -> Result<(String, Claims), String> {
        let at = now();
        let ttl = if typ == "refresh" { self.refresh_ttl } else { self.token_ttl };
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: principal.subject().to_owned(),
            aud: self.service.clone(),
            exp: at + ttl,
            nbf: at,
            iat: at,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
            typ: typ.to_owned(),
            cv: principal.credentials_version(),
            gv: principal.grants_version(),
        };
        self.keys.sign(&claims).map(|t| (t, claims)).map_err(|e| e.to_string())
    }

    /// A `WWW-Authenticate` value for a challenge.
    pub fn challenge(&self, scope: Option<&str>, error: Option<&str>) -> String {
        let mut v = format!("Bearer realm=\"{}\",service=\"{}\"", self.realm, self.service);
        if let Some(s) = scope {
            v.push_str(&format!(",scope=\"{s}\""));
        }
        if let Some(e) = error {
            v.push_str(&format!(",error=\"{e}\""));
        }
        v
    }

    /// Forgets cached credentials and permissions after a change made here.
    pub fn invalidate(&self) {
        self.authenticator.invalidate();
        self.policy.invalidate();
    }
}
