//! ES256 signing keys: kept in the database so every replica signs and
//! verifies with the same set, published as a JWKS, and rotated without
//! breaking tokens already issued (a retired key verifies until the tokens
//! it signed have expired).

use std::collections::HashMap;
use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Serialize;

use crate::metadata::{now, Db};

struct LoadedKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    x: String,
    y: String,
    retired: bool,
}

/// The keys in force, refreshed from the database on rotation or an unknown `kid`.
pub struct KeyRing {
    keys: RwLock<HashMap<String, LoadedKey>>,
    active: RwLock<Option<String>>,
    /// Seconds a retired key keeps verifying: the longest token lifetime.
    verify_grace: i64,
}

/// Why keys could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Database failure.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A stored key is not a valid P-256 PKCS#8 key.
    #[error("signing key {0} in the database is not a valid ES256 key")]
    Invalid(String),
    /// The configured key file cannot be used.
    #[error(
        "cannot use the signing key file {path}: {problem}; give a P-256 private key in PKCS#8 PEM, \
         e.g. from `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`"
    )]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

/// One entry of the JWKS document.
#[derive(Serialize)]
pub struct Jwk {
    kty: &'static str,
    crv: &'static str,
    #[serde(rename = "use")]
    use_: &'static str,
    alg: &'static str,
    kid: String,
    x: String,
    y: String,
}

fn load(kid: &str, pkcs8: &[u8], retired: bool) -> Result<LoadedKey, KeyError> {
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
        .map_err(|_| KeyError::Invalid(kid.to_owned()))?;
    // Uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
    let point = pair.public_key().as_ref();
    if point.len() != 65 {
        return Err(KeyError::Invalid(kid.to_owned()));
    }
    let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
    let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|_| KeyError::Invalid(kid.to_owned()))?;
    Ok(LoadedKey { kid: kid.to_owned(), encoding: EncodingKey::from_ec_der(pkcs8), decoding, x, y, retired })
}

/// The key in a PKCS#8 PEM file, checked, with its id: the first 16 hex
/// digits of the SHA-256 of its public point.
async fn read_key_file(path: &std::path::Path) -> Result<(String, Vec<u8>), KeyError> {
    use base64::Engine as _;
    let problem = |problem: String| KeyError::File { path: path.display().to_string(), problem };
    let text = tokio::fs::read_to_string(path).await.map_err(|e| problem(e.to_string()))?;
    let body: String = text
        .lines()
        .skip_while(|l| l.trim() != "-----BEGIN PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| l.trim() != "-----END PRIVATE KEY-----")
        .collect();
    if body.is_empty() {
        return Err(problem("no `BEGIN PRIVATE KEY` block in it".into()));
    }
    let pkcs8 = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| problem(format!("its PEM is not base64: {e}")))?;
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
        .map_err(|_| problem("it is not a P-256 key in PKCS#8".into()))?;
    use ring::signature::KeyPair as _;
    use sha2::Digest as _;
    let kid = hex::encode(sha2::Sha256::digest(pair.public_key().as_ref()))[..16].to_owned();
    Ok((kid, pkcs8))
}

impl KeyRing {
    /// Loads the keys, creating the first one on a new database. A key from
    /// `key_file` becomes the active one the first time it is seen (and only
    /// then); its id comes from its public key, so every replica agrees on it.
    pub async fn open(db: &Db, verify_grace: i64, key_file: Option<&std::path::Path>) -> Result<KeyRing, KeyError> {
        let ring = KeyRing { keys: RwLock::new(HashMap::new()), active: RwLock::new(None), verify_grace };
        ring.reload(db).await?;
        if let Some(path) = key_file {
            let (kid, pkcs8) = read_key_file(path).await?;
            // A key seen before stays as the API left it: rotating through the
            // API, or to a new file, is never undone by a restart.
            if !db.signing_keys().contains(&kid).await? {
                // Another replica starting with the same file may have added it first.
                if let Err(e) = db.signing_keys().rotate_in(&kid, &pkcs8).await {
                    if !db.signing_keys().contains(&kid).await? {
                        return Err(e.into());
                    }
                }
                tracing::info!(kid, file = %path.display(), "signing with the key from the key file");
                ring.reload(db).await?;
            }
        }
        if ring.active.read().unwrap_or_else(|p| p.into_inner()).is_none() {
            ring.rotate(db).await?;
        }
        Ok(ring)
    }

    /// A ring of one active key (a P-256 key in PKCS#8 DER) and no database,
    /// for checking tokens where no registry runs: the fuzz target `jwt`
    /// verifies with the same code the registry does.
    pub fn single(kid: &str, pkcs8: &[u8]) -> Result<KeyRing, KeyError> {
        let key = load(kid, pkcs8, false)?;
        Ok(KeyRing {
            keys: RwLock::new(HashMap::from([(kid.to_owned(), key)])),
            active: RwLock::new(Some(kid.to_owned())),
            verify_grace: 0,
        })
    }

    /// Re-reads the keys from the database.
    pub async fn reload(&self, db: &Db) -> Result<(), KeyError> {
        let stored = db.signing_keys().usable(now() - self.verify_grace).await?;
        let mut keys = HashMap::new();
        let mut active = None;
        for k in &stored {
            let loaded = load(&k.kid, &k.private_pkcs8, k.retired_at.is_some())?;
            if !loaded.retired {
                active = Some(k.kid.clone());
            }
            keys.insert(k.kid.clone(), loaded);
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = active;
        Ok(())
    }

    /// Generates a new signing key; the previous one keeps verifying for the grace period.
    pub async fn rotate(&self, db: &Db) -> Result<String, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Invalid("new".into()))?;
        let kid = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        db.signing_keys().rotate_in(&kid, pkcs8.as_ref()).await?;
        self.reload(db).await?;
        Ok(kid)
    }

    /// Signs claims with the active key.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, jsonwebtoken::errors::Error> {
        let active = self.active.read().unwrap_or_else(|p| p.into_inner()).clone();
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let key = active.as_ref().and_then(|k| keys.get(k)).ok_or(jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey)?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &key.encoding)
    }

    /// The verification key for a `kid`, if known.
    pub fn decoding_key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).get(kid).map(|k| k.decoding.clone())
    }

    /// True while `kid` may verify a token.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).contains_key(kid)
    }

    /// Every key that may verify a token now, as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Jwk> = keys
            .values()
            .map(|k| Jwk {
                kty: "EC",
                crv: "P-256",
                use_: "sig",
                alg: "ES256",
                kid: k.kid.clone(),
                x: k.x.clone(),
                y: k.y.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.kid.cmp(&b.kid));
        serde_json::json!({ "keys": list })
    }

    /// The `kid` that signs new tokens.
    pub fn active_kid(&self) -> Option<String> {
        self.active.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How often every replica re-reads the keys, so a rotation made through
/// one of them is signed with and published everywhere within seconds.
const REFRESH_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Re-reads the signing keys every few seconds until the process stops.
pub async fn refresh_periodically(auth: std::sync::Arc<super::Auth>, db: Db) {
    let mut tick = tokio::time::interval(REFRESH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = auth.keys.reload(&db).await {
            tracing::warn!(error = %e, "could not re-read the token signing keys; will retry");
        }
    }
}
