//! Looking inside the registry's tokens: a JWT's parts decoded without
//! verification, and put together again as given, to forge and tamper; and
//! a signing key a test holds, which a registry started with it signs with
//! too, so that a test can sign any header and claims the registry would.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

/// The header and the claims of a JWT, decoded without verification.
pub fn jwt(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS in compact form: {token}");
    let decode =
        |p: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON") };
    (decode(parts[0]), decode(parts[1]))
}

/// A JWT put together from a header, claims and a signature part as given.
pub fn assemble(header: &Value, claims: &Value, signature: &str) -> String {
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{signature}", encode(header), encode(claims))
}

/// The signature part of a JWT.
pub fn signature_of(token: &str) -> &str {
    token.rsplit('.').next().expect("signature")
}

/// Seconds since the Unix epoch, as tokens count time.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// A P-256 key a test holds. A registry started with [`SigningKey::env`]
/// signs and verifies with it, so the test can sign tokens and tickets with
/// any header and claims the registry's own key would.
pub struct SigningKey {
    pkcs8: Vec<u8>,
    file: tempfile::NamedTempFile,
}

impl SigningKey {
    /// A new key, written to a PEM file.
    pub fn generate() -> SigningKey {
        use std::io::Write as _;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .expect("generate a P-256 key")
                .as_ref()
                .to_vec();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&pkcs8);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
        let mut file = tempfile::NamedTempFile::new().expect("key file");
        write!(file, "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
            .expect("write key");
        SigningKey { pkcs8, file }
    }

    /// The setting that makes a registry sign with this key.
    pub fn env(&self) -> (&'static str, String) {
        ("DAMSELFLY_SIGNING_KEY_FILE", self.file.path().display().to_string())
    }

    /// A compact JWS of `header` and `claims` signed ES256 with this key, whatever the header says.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        sign_es256(&self.pkcs8, header, claims)
    }
}

/// A compact JWS of `header` and `claims`, signed ES256 with the P-256 key in `pkcs8` (DER), whatever the header says.
pub fn sign_es256(pkcs8: &[u8], header: &Value, claims: &Value) -> String {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng).expect("a P-256 PKCS#8 key");
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!("{}.{}", encode(header), encode(claims));
    let signature = pair.sign(&rng, input.as_bytes()).expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// The public point of a P-256 key (PKCS#8 DER) as a JWK, to embed in a header.
pub fn public_jwk(pkcs8: &[u8], kid: &str) -> Value {
    use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng).expect("a P-256 PKCS#8 key");
    let point = pair.public_key().as_ref();
    serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    })
}
