use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// The tag as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable name pointing at a manifest.
    Tag(Tag),
    /// The manifest's content digest.
    Digest(Digest),
}

/// Why a string is neither a tag nor a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// Not a digest (no ':') and breaks the tag grammar.
    #[error("tag {0:?} is invalid: use up to 128 characters from [A-Za-z0-9_.-], not starting with '.' or '-'")]
    Tag(String),
    /// Contains ':' but is not a valid digest.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

impl FromStr for Tag {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let head_ok = b.first().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !head_ok || !rest_ok || b.len() > 128 {
            return Err(ReferenceError::Tag(s.to_owned()));
        }
        Ok(Tag(s.to_owned()))
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_digests() {
        assert!(matches!("latest".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert!(matches!("_v1.2-rc".parse::<Reference>(), Ok(Reference::Tag(_))));
        let d = Digest::of(b"x").to_string();
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        for bad in ["", ".x", "-x", "a/b", "<script>", &"a".repeat(129)] {
            assert!(matches!(bad.parse::<Reference>(), Err(ReferenceError::Tag(_))), "{bad}");
        }
        assert!(matches!("sha256:zz".parse::<Reference>(), Err(ReferenceError::Digest(_))));
    }
}
