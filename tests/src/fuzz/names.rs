//! Digests, references, repository names and the byte-range headers: what
//! every `/v2/` request path and blob GET carries.

use std::sync::OnceLock;

use damselfly_core::range::{parse_content_range, parse_range, ByteRange};
use damselfly_core::{Digest, Reference, RepositoryName, Tag};
use regex::Regex;

use super::text;

/// The grammars as the OCI Distribution Specification writes them, compiled
/// by the regex crate: the hand-written parsers must agree with them.
struct SpecGrammar {
    name: Regex,
    tag: Regex,
    digest: Regex,
}

fn spec() -> &'static SpecGrammar {
    static SPEC: OnceLock<SpecGrammar> = OnceLock::new();
    SPEC.get_or_init(|| SpecGrammar {
        name: Regex::new(r"\A[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*\z")
            .expect("the spec's name grammar"),
        tag: Regex::new(r"\A[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\z").expect("the spec's tag grammar"),
        // The registry verifies SHA-256 only, in its canonical lowercase form.
        digest: Regex::new(r"\Asha256:[a-f0-9]{64}\z").expect("the digest grammar"),
    })
}

/// `Digest` accepts exactly `sha256:<64 lowercase hex>`, prints what it read,
/// and reads the same from JSON.
pub fn digest(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let parsed = s.parse::<Digest>();
    assert_eq!(parsed.is_ok(), spec().digest.is_match(s), "Digest and the grammar disagree on {s:?}");
    match &parsed {
        Ok(d) => assert_eq!(d.to_string(), s),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    let from_json = serde_json::from_value::<Digest>(serde_json::Value::String(s.to_owned()));
    assert_eq!(from_json.ok(), parsed.ok());
}

/// A reference is a tag (the spec's grammar) or, when it has a ':', a digest.
pub fn reference(data: &[u8]) {
    let Some(s) = text(data) else { return };
    match s.parse::<Reference>() {
        Ok(Reference::Tag(t)) => {
            assert_eq!(t.as_str(), s);
            assert!(spec().tag.is_match(s), "tag {s:?} is outside the grammar");
        }
        Ok(Reference::Digest(d)) => assert_eq!(d.to_string(), s),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(s.contains(':') || !spec().tag.is_match(s), "tag {s:?} is in the grammar but refused");
        }
    }
    assert_eq!(s.parse::<Tag>().is_ok(), spec().tag.is_match(s), "Tag and the grammar disagree on {s:?}");
}

/// A repository name matches the spec's grammar, is at most 255 bytes, and
/// its namespace is its first segment.
pub fn repository_name(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let in_grammar = s.len() <= 255 && spec().name.is_match(s);
    match s.parse::<RepositoryName>() {
        Ok(n) => {
            assert!(in_grammar, "name {s:?} is outside the grammar");
            assert_eq!(n.as_str(), s);
            assert_eq!(Some(n.namespace()), s.split('/').next());
        }
        Err(e) => {
            assert!(!in_grammar, "name {s:?} is in the grammar but refused: {e}");
        }
    }
}

/// `Range` on a blob GET and `Content-Range` on a chunk: the first eight
/// bytes are the blob's size, the rest the header. A partial range always
/// lies inside the blob.
pub fn range(data: &[u8]) {
    let (size, header) = match data.split_first_chunk::<8>() {
        Some((size, rest)) => (u64::from_le_bytes(*size), rest),
        None => (0, data),
    };
    let header = String::from_utf8_lossy(header);
    match parse_range(Some(&header), size) {
        ByteRange::Partial(start, end) => {
            assert!(start <= end && end < size, "range {header:?} of {size} bytes gave {start}-{end}");
        }
        ByteRange::Full | ByteRange::Unsatisfiable => {}
    }
    if let Some((start, end)) = parse_content_range(&header) {
        assert!(start <= end, "Content-Range {header:?} gave {start}-{end}");
    }
}
