//! Argon2id password hashing, off the async runtime (a hash takes tens of milliseconds by design).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Hashes a password into a PHC string.
pub async fn hash(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// True if `password` matches the PHC string.
pub async fn verify(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// A new random secret (32 bytes, URL-safe base64): generated passwords and robot tokens.
pub fn random_secret() -> String {
    use base64::Engine;
    let mut raw = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).expect("the OS random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Hex SHA-256 of a robot token, as stored.
pub fn token_sha256(token: &str) -> String {
    damselfly_core::Digest::of(token.as_bytes()).hex()
}
