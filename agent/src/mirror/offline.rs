//! What the mirror can still serve while the registry cannot be reached
//! (down, restarting, partitioned away, or answering 502, 503 or 504): content a
//! client already pulled through this agent, to clients the registry's own
//! keys say may pull it.
//!
//! Two memories, both of this process only (a restarted agent starts with
//! none, so it never serves offline what no registry confirmed in its
//! lifetime):
//!
//! - the (repository, blob) pairs the scheduler admitted a client to: a
//!   cached blob is served offline only through a repository the registry
//!   said holds it, never through another repository that happens to name
//!   the same digest;
//! - the manifests the registry answered `200` to a `GET`, under the
//!   reference asked for and under their digest, up to [`MAX_MANIFESTS`]
//!   of at most [`MAX_MANIFEST_BYTES`] each, the least recently stored
//!   dropped first. A tag served offline is the one last seen: it may have
//!   moved on the registry meanwhile, as a pull during an outage must
//!   accept.
//!
//! Every offline answer still needs the client's bearer token to verify
//! against the registry's keys (fetched earlier) and grant pull on the
//! repository.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use damselfly_core::Digest;

/// Manifests remembered at most.
pub const MAX_MANIFESTS: usize = 1024;
/// Larger manifests are relayed but not remembered.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// A manifest as the registry served it.
#[derive(Clone)]
pub struct StoredManifest {
    /// Its `Content-Type`.
    pub content_type: String,
    /// Its `Docker-Content-Digest`, if the registry sent one.
    pub digest: Option<String>,
    /// Its bytes.
    pub body: Bytes,
    stamp: u64,
}

/// See the module's header.
#[derive(Default)]
pub struct Offline {
    admitted: Mutex<HashSet<(String, Digest)>>,
    manifests: Mutex<HashMap<(String, String), StoredManifest>>,
    clock: AtomicU64,
}

impl Offline {
    /// Records that the registry admitted a client of `repository` to `digest`.
    pub fn admit(&self, repository: &str, digest: Digest) {
        self.admitted.lock().unwrap_or_else(|p| p.into_inner()).insert((repository.to_owned(), digest));
    }

    /// Whether the registry admitted a client of `repository` to `digest` in this process's life.
    pub fn was_admitted(&self, repository: &str, digest: &Digest) -> bool {
        self.admitted.lock().unwrap_or_else(|p| p.into_inner()).contains(&(repository.to_owned(), *digest))
    }

    /// Remembers a manifest the registry served for `reference` of `repository`.
    pub fn keep_manifest(
        &self,
        repository: &str,
        reference: &str,
        content_type: &str,
        digest: Option<&str>,
        body: Bytes,
    ) {
        let stamp = self.clock.fetch_add(1, Ordering::Relaxed);
        let stored =
            StoredManifest { content_type: content_type.to_owned(), digest: digest.map(str::to_owned), body, stamp };
        let mut manifests = self.manifests.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = vec![reference.to_owned()];
        keys.extend(digest.filter(|d| *d != reference).map(str::to_owned));
        for key in keys {
            while manifests.len() >= MAX_MANIFESTS && !manifests.contains_key(&(repository.to_owned(), key.clone())) {
                let oldest = manifests.iter().min_by_key(|(_, m)| m.stamp).map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => manifests.remove(&k),
                    None => break,
                };
            }
            manifests.insert((repository.to_owned(), key), stored.clone());
        }
    }

    /// The manifest last served for `reference` of `repository`, if its media
    /// type is one the client accepts (`accept` absent accepts any).
    pub fn manifest(&self, repository: &str, reference: &str, accept: Option<&str>) -> Option<StoredManifest> {
        let manifests = self.manifests.lock().unwrap_or_else(|p| p.into_inner());
        let stored = manifests.get(&(repository.to_owned(), reference.to_owned()))?;
        let accepted = accept.is_none_or(|a| {
            a.split(',')
                .map(|t| t.split(';').next().unwrap_or("").trim())
                .any(|t| t == stored.content_type || t == "*/*")
        });
        accepted.then(|| stored.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_is_found_by_reference_and_digest_for_clients_that_accept_its_type() {
        let o = Offline::default();
        let d = "sha256:".to_owned() + &"a".repeat(64);
        o.keep_manifest("ns/app", "1.0", "application/vnd.oci.image.manifest.v1+json", Some(&d), Bytes::from("{}"));
        assert!(o.manifest("ns/app", "1.0", None).is_some());
        assert!(o.manifest("ns/app", &d, Some("application/vnd.oci.image.manifest.v1+json, */*;q=0.1")).is_some());
        assert!(o.manifest("ns/app", "1.0", Some("application/vnd.oci.image.index.v1+json")).is_none());
        assert!(o.manifest("ns/other", "1.0", None).is_none(), "another repository");
    }

    #[test]
    fn the_least_recently_stored_manifest_goes_first() {
        let o = Offline::default();
        for i in 0..=MAX_MANIFESTS {
            o.keep_manifest("ns/app", &format!("t{i}"), "x", None, Bytes::new());
        }
        assert!(o.manifest("ns/app", "t0", None).is_none());
        assert!(o.manifest("ns/app", &format!("t{MAX_MANIFESTS}"), None).is_some());
    }

    #[test]
    fn a_blob_is_admitted_per_repository() {
        let o = Offline::default();
        let d = Digest::of(b"x");
        o.admit("ns/app", d);
        assert!(o.was_admitted("ns/app", &d));
        assert!(!o.was_admitted("ns/other", &d));
    }
}
