//! The registry's signing keys (its JWKS), against which the agent checks
//! client access tokens and peers' tickets offline.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::{Error, Result};

/// How often at most an unknown key id makes the keys be fetched again.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(2);

/// One grant of an access token.
#[derive(Clone, Debug, Deserialize)]
pub struct Access {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name.
    pub name: String,
    /// Actions.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// The claims of an access token the agent looks at.
#[derive(Clone, Debug, Deserialize)]
pub struct AccessClaims {
    /// Grants.
    #[serde(default)]
    pub access: Vec<Access>,
    /// `access` or `refresh`; a refresh token opens nothing here.
    #[serde(default)]
    pub typ: Option<String>,
}

impl AccessClaims {
    /// True if the token lets its holder pull from `name`.
    pub fn may_pull(&self, name: &str) -> bool {
        self.typ.as_deref().unwrap_or("access") == "access"
            && self
                .access
                .iter()
                .any(|a| a.kind == "repository" && a.name == name && a.actions.iter().any(|x| x == "pull" || x == "*"))
    }
}

#[derive(Deserialize)]
struct Jwk {
    kid: String,
    x: String,
    y: String,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

/// The registry's public keys, by key id, fetched again when a token names
/// a key it has not seen (a rotation).
pub struct Jwks {
    url: String,
    keys: RwLock<HashMap<String, DecodingKey>>,
    fetched: Mutex<Option<Instant>>,
}

impl Jwks {
    /// The keys published at `<registry>/auth/jwks.json`; none until [`Jwks::refresh`].
    pub fn new(registry: &str) -> Jwks {
        Jwks { url: format!("{registry}/auth/jwks.json"), keys: RwLock::new(HashMap::new()), fetched: Mutex::new(None) }
    }

    /// Fetches the keys.
    pub async fn refresh(&self, http: &reqwest::Client) -> Result<()> {
        let r =
            http.get(&self.url).send().await.map_err(|source| Error::Unreachable { url: self.url.clone(), source })?;
        let set: JwkSet = r.json().await.map_err(|source| Error::BadAnswer { call: "JWKS request", source })?;
        let mut keys = HashMap::new();
        for k in set.keys {
            if let Ok(key) = DecodingKey::from_ec_components(&k.x, &k.y) {
                keys.insert(k.kid, key);
            }
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        *self.fetched.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(())
    }

    async fn key(&self, http: &reqwest::Client, kid: &str) -> Option<DecodingKey> {
        if let Some(k) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(kid) {
            return Some(k.clone());
        }
        // An unknown kid may be a freshly rotated key: refresh, but not too often.
        let recently =
            self.fetched.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() < REFRESH_AT_MOST_EVERY);
        if !recently {
            let _ = self.refresh(http).await;
        }
        self.keys.read().unwrap_or_else(|p| p.into_inner()).get(kid).cloned()
    }

    /// The claims of a JWT the registry (`issuer`) signed for `audience`, if it is valid now.
    pub async fn verify<T: serde::de::DeserializeOwned>(
        &self,
        http: &reqwest::Client,
        token: &str,
        audience: &str,
        issuer: &str,
    ) -> Option<T> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::ES256 {
            return None;
        }
        let key = self.key(http, &header.kid?).await?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.leeway = 5;
        validation.validate_nbf = true;
        jsonwebtoken::decode::<T>(token, &key, &validation).ok().map(|d| d.claims)
    }
}
