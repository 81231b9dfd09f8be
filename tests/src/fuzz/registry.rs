//! What the registry reads from clients beyond names: manifests and
//! indexes, the token endpoint's query and form, `Authorization` headers,
//! and the JWTs (access tokens, refresh tokens, P2P tickets) it verifies.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use damselfly_core::p2p::{TicketClaims, TICKET_AUDIENCE};
use damselfly_core::ErrorCode;
use damselfly_registry::auth::token::{self, Access, Claims};
use damselfly_registry::auth::{Credentials, KeyRing};
use damselfly_registry::error::RegistryError;
use damselfly_registry::metadata::TargetKind;
use damselfly_registry::query;
use damselfly_registry::services::manifest::{self, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use reqwest::header::{self, HeaderMap, HeaderValue};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::split_field;

/// A manifest PUT: the first byte picks the `Content-Type`, the rest is the
/// body. What is accepted names only blobs (an image manifest) or only
/// manifests (an index); what is refused is `MANIFEST_INVALID`, never
/// anything else and never a panic.
pub fn manifest(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    let content_type = match pick % 8 {
        0 => None,
        1 => Some(OCI_MANIFEST),
        2 => Some(OCI_INDEX),
        3 => Some(DOCKER_MANIFEST),
        4 => Some(DOCKER_MANIFEST_LIST),
        5 => Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        6 => Some("text/plain"),
        _ => Some(""),
    };
    match manifest::parse(body, content_type) {
        Ok(m) => {
            let is_index = match m.media_type.as_str() {
                OCI_MANIFEST | DOCKER_MANIFEST => false,
                OCI_INDEX | DOCKER_MANIFEST_LIST => true,
                other => panic!("accepted a manifest of media type {other:?}"),
            };
            let expected = if is_index { TargetKind::Manifest } else { TargetKind::Blob };
            assert!(m.references.iter().all(|r| r.kind == expected), "{m:?}");
            assert!(m.references.iter().all(|r| r.size <= i64::MAX as u64), "{m:?}");
        }
        Err(e) => assert_eq!(RegistryError::from(e).code(), ErrorCode::ManifestInvalid),
    }
}

/// `GET /auth/token?…` and the `POST` form: pairs decode, every scope that
/// parses prints back to itself, and any `Authorization` value is read
/// without a panic.
pub fn token_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let pairs = query::pairs(&text);
    let map = query::map(&text);
    assert!(map.len() <= pairs.len());
    for (_, value) in pairs.iter().filter(|(k, _)| k == "scope") {
        for scope in value.split(' ') {
            if let Some(access) = Access::parse_scope(scope) {
                assert!(!access.kind.is_empty() && !access.name.is_empty(), "{scope:?} gave {access:?}");
                assert_eq!(Access::parse_scope(&access.scope()), Some(access.clone()), "{scope:?}");
            }
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value);
        match Credentials::from_headers(&headers) {
            Credentials::Bearer(t) => assert!(!t.is_empty()),
            Credentials::Basic(user, _) => assert!(!user.contains(':')),
            Credentials::None | Credentials::Malformed => {}
        }
    }
}

/// The key the fuzz target signs with (a P-256 test key, PKCS#8 DER, made
/// for this and used nowhere else).
const TEST_KEY_PKCS8: &str = "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420558315caf7349cf2\
bb1aee2b7cd4efe591792c2b5f52a4f33e8310b86305eb3fa144034200046233d0ee938c5e669d3b2a8405fef7324bf00273c6d8f05177ac122d71\
24fc8eda79f9ca2e829cdf7797ac3f478d88d379ebce34722d871a2ce1e0d32234d9e6";
const KID: &str = "fuzz";
const SERVICE: &str = "damselfly";
const ISSUER: &str = "http://registry.example.com";

struct Signer {
    ring: KeyRing,
    pair: EcdsaKeyPair,
}

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let pkcs8 = hex::decode(TEST_KEY_PKCS8).expect("hex");
        let rng = ring::rand::SystemRandom::new();
        Signer {
            ring: KeyRing::single(KID, &pkcs8).expect("the test key"),
            pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).expect("the test key"),
        }
    })
}

/// Bearer tokens and tickets. With a first byte of 0 the rest is a token as
/// a client sends it; otherwise it is a JOSE header and claims (split at
/// `0xff`), base64url-encoded and signed with the registry's key, so that
/// the claims checks are reached. Whatever verifies has the audience, the
/// issuer and the times the registry demands.
pub fn jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let s = signer();
    let token = if mode == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let (jose, claims) = split_field(rest);
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(jose), URL_SAFE_NO_PAD.encode(claims));
        let rng = ring::rand::SystemRandom::new();
        let signature = s.pair.sign(&rng, input.as_bytes()).expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    };
    // The registry allows 5 s of clock skew either way.
    let unix_now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let before = unix_now() as i64;
    let verified = token::verify(&s.ring, &token, SERVICE, ISSUER);
    let ticket = token::verify_as::<TicketClaims>(&s.ring, &token, TICKET_AUDIENCE, ISSUER);
    let after = unix_now() as i64;
    if let Ok(claims) = verified {
        let Claims { aud, iss, exp, nbf, .. } = &claims;
        assert_eq!((aud.as_str(), iss.as_str()), (SERVICE, ISSUER));
        assert!(*exp >= before - 5 && *nbf <= after + 5, "{claims:?} verified between {before} and {after}");
        for access in &claims.access {
            let _ = claims.grants(&access.name, "pull");
        }
    }
    if let Ok(ticket) = ticket {
        assert_eq!((ticket.aud.as_str(), ticket.iss.as_str()), (TICKET_AUDIENCE, ISSUER));
        assert!(ticket.exp >= before - 5 && ticket.nbf <= after + 5, "{ticket:?}");
    }
}
