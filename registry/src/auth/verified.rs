//! Bearer tokens this process has verified, kept by the SHA-256 of the
//! token until they expire, so that a client sending the same token on
//! every request, as every client does, pays for its ES256 signature once.
//!
//! What is kept is what the signature proved and what cannot change: the
//! claims, the key that signed them, and which account they name. Whether
//! that account still holds the credentials and the grants the token was
//! issued under is not kept: [`super::Authenticator::bearer`] reads it from
//! the database on every request, so a revocation made through any replica
//! counts on the next request everywhere, whatever this cache holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::token::{Claims, LEEWAY_SECS};
use crate::metadata::TenantId;

/// The account a verified token names, as found when it was first verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// No account: an anonymous token.
    Anonymous,
    /// A user, by row id and name.
    User {
        /// Row id.
        id: i64,
        /// Login name.
        name: String,
    },
    /// A robot, by row id.
    Robot {
        /// Row id.
        id: i64,
        /// Its tenant.
        tenant_id: TenantId,
        /// `robot$<tenant>+<name>`.
        login: String,
    },
}

/// A token whose signature, audience, issuer, type and times checked out.
#[derive(Debug)]
pub struct Verified {
    /// Its claims.
    pub claims: Arc<Claims>,
    /// The key that signed it; while it is cached, that key must still be in force.
    pub kid: String,
    /// Whose it is.
    pub holder: Holder,
}

/// Verified tokens by the SHA-256 of the token, each until it expires.
pub struct VerifiedTokens {
    cap: usize,
    map: Mutex<HashMap<[u8; 32], Arc<Verified>>>,
}

impl VerifiedTokens {
    /// Room for `cap` tokens; past that, expired ones go, and if none has, all.
    pub fn new(cap: usize) -> VerifiedTokens {
        VerifiedTokens { cap, map: Mutex::new(HashMap::new()) }
    }

    /// The key a token is kept under.
    pub fn key(token: &str) -> [u8; 32] {
        *damselfly_core::Digest::of(token.as_bytes()).as_bytes()
    }

    /// The token kept under `key`, unless it has expired by `now` (Unix
    /// seconds, with the same leeway the first verification allowed).
    pub fn get(&self, key: &[u8; 32], now: i64) -> Option<Arc<Verified>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).filter(|v| now <= v.claims.exp.saturating_add(LEEWAY_SECS)).cloned()
    }

    /// Keeps a verified token.
    pub fn put(&self, key: [u8; 32], verified: Arc<Verified>, now: i64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.cap {
            map.retain(|_, v| now <= v.claims.exp.saturating_add(LEEWAY_SECS));
            if map.len() >= self.cap {
                map.clear();
            }
        }
        map.insert(key, verified);
    }

    /// Tokens kept now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(exp: i64) -> Arc<Verified> {
        let claims = Claims {
            iss: "iss".into(),
            sub: String::new(),
            aud: "aud".into(),
            exp,
            nbf: 0,
            iat: 0,
            jti: "jti".into(),
            access: Vec::new(),
            typ: "access".into(),
            cv: 0,
            gv: 0,
        };
        Arc::new(Verified { claims: Arc::new(claims), kid: "k".into(), holder: Holder::Anonymous })
    }

    #[test]
    fn a_token_is_kept_until_it_expires_with_the_leeway() {
        let cache = VerifiedTokens::new(10);
        let key = VerifiedTokens::key("a.b.c");
        cache.put(key, verified(100), 50);
        assert!(cache.get(&key, 100).is_some());
        assert!(cache.get(&key, 100 + LEEWAY_SECS).is_some(), "as long as the verification's leeway");
        assert!(cache.get(&key, 101 + LEEWAY_SECS).is_none(), "then never again");
        assert!(cache.get(&VerifiedTokens::key("a.b.d"), 50).is_none(), "another token is another key");
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first_and_everything_if_none_has() {
        let cache = VerifiedTokens::new(2);
        cache.put(VerifiedTokens::key("old"), verified(10), 0);
        cache.put(VerifiedTokens::key("live"), verified(1000), 0);
        cache.put(VerifiedTokens::key("new"), verified(1000), 500);
        assert_eq!(cache.len(), 2, "the expired one went");
        assert!(cache.get(&VerifiedTokens::key("live"), 500).is_some());
        cache.put(VerifiedTokens::key("newer"), verified(1000), 500);
        assert_eq!(cache.len(), 1, "none had expired: all went but the newest");
        assert!(cache.get(&VerifiedTokens::key("newer"), 500).is_some());
    }
}
