//! Parsing of `/v2/…` paths.
//!
//! Repository names may contain any number of `/` segments, and a segment
//! may itself be called `blobs` or `manifests`, so no route pattern can
//! match them. The path is read from its end, where the grammar is fixed.

use damselfly_core::{ErrorCode, RepositoryName};

use crate::error::RegistryError;
use crate::observe::RouteLabel;

/// One of the Distribution API endpoints, with its repository name parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum OciPath {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepositoryName),
    /// `/v2/<name>/manifests/<reference>` (reference not yet parsed)
    Manifest(RepositoryName, String),
    /// `/v2/<name>/blobs/<digest>` (digest not yet parsed)
    Blob(RepositoryName, String),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepositoryName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepositoryName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepositoryName, String),
}

impl OciPath {
    /// The metric label for this endpoint.
    pub fn route(&self) -> RouteLabel {
        match self {
            OciPath::Base => RouteLabel::Base,
            OciPath::Catalog => RouteLabel::Catalog,
            OciPath::Tags(_) => RouteLabel::Tags,
            OciPath::Manifest(..) => RouteLabel::Manifest,
            OciPath::Blob(..) => RouteLabel::Blob,
            OciPath::UploadStart(_) | OciPath::Upload(..) => RouteLabel::Upload,
            OciPath::Referrers(..) => RouteLabel::Referrers,
        }
    }

    /// Parses a request path; `Ok(None)` when it is no Distribution endpoint.
    pub fn parse(path: &str) -> Result<Option<OciPath>, RegistryError> {
        let Some(rest) = path.strip_prefix("/v2") else {
            return Ok(None);
        };
        if rest.is_empty() || rest == "/" {
            return Ok(Some(OciPath::Base));
        }
        let Some(rest) = rest.strip_prefix('/') else {
            return Ok(None);
        };
        if rest == "_catalog" {
            return Ok(Some(OciPath::Catalog));
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let n = segments.len();
        let tail = |k: usize| segments[n - k..].to_vec();
        let head = |k: usize| segments[..n - k].join("/");

        let parsed = if n >= 3 && tail(2) == ["tags", "list"] {
            Some((head(2), Kind::Tags, String::new()))
        } else if n >= 4 && tail(3)[..2] == ["blobs", "uploads"] {
            if segments[n - 1].is_empty() {
                Some((head(3), Kind::UploadStart, String::new()))
            } else {
                Some((head(3), Kind::Upload, segments[n - 1].to_owned()))
            }
        } else if n >= 3 && tail(2) == ["blobs", "uploads"] {
            Some((head(2), Kind::UploadStart, String::new()))
        } else if n >= 3 && segments[n - 2] == "blobs" {
            Some((head(2), Kind::Blob, decode_colon(segments[n - 1])))
        } else if n >= 3 && segments[n - 2] == "manifests" {
            Some((head(2), Kind::Manifest, decode_colon(segments[n - 1])))
        } else if n >= 3 && segments[n - 2] == "referrers" {
            Some((head(2), Kind::Referrers, decode_colon(segments[n - 1])))
        } else {
            None
        };
        let Some((name, kind, last)) = parsed else {
            return Ok(None);
        };
        let name: RepositoryName = name.parse().map_err(|e: damselfly_core::NameError| {
            RegistryError::oci(ErrorCode::NameInvalid, format!("{e}")).with_detail(serde_json::json!({ "name": name }))
        })?;
        Ok(Some(match kind {
            Kind::Tags => OciPath::Tags(name),
            Kind::UploadStart => OciPath::UploadStart(name),
            Kind::Upload => OciPath::Upload(name, last),
            Kind::Blob => OciPath::Blob(name, last),
            Kind::Manifest => OciPath::Manifest(name, last),
            Kind::Referrers => OciPath::Referrers(name, last),
        }))
    }
}

enum Kind {
    Tags,
    UploadStart,
    Upload,
    Blob,
    Manifest,
    Referrers,
}

/// Some clients percent-encode the `:` of a digest; nothing else in a valid
/// reference needs decoding.
fn decode_colon(s: &str) -> String {
    s.replace("%3A", ":").replace("%3a", ":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    #[test]
    fn names_with_api_words_in_them() {
        assert_eq!(OciPath::parse("/v2/").unwrap(), Some(OciPath::Base));
        assert_eq!(OciPath::parse("/v2").unwrap(), Some(OciPath::Base));
        assert_eq!(OciPath::parse("/v2/_catalog").unwrap(), Some(OciPath::Catalog));
        assert_eq!(
            OciPath::parse("/v2/a/blobs/manifests/latest").unwrap(),
            Some(OciPath::Manifest(name("a/blobs"), "latest".into()))
        );
        assert_eq!(
            OciPath::parse("/v2/a/b/c/d/e/f/g/h/blobs/uploads/").unwrap(),
            Some(OciPath::UploadStart(name("a/b/c/d/e/f/g/h")))
        );
        assert_eq!(OciPath::parse("/v2/x/blobs/uploads").unwrap(), Some(OciPath::UploadStart(name("x"))));
        assert_eq!(
            OciPath::parse("/v2/x/tags/list/blobs/uploads/abc").unwrap(),
            Some(OciPath::Upload(name("x/tags/list"), "abc".into()))
        );
        assert_eq!(
            OciPath::parse("/v2/x/blobs/sha256%3Aab").unwrap(),
            Some(OciPath::Blob(name("x"), "sha256:ab".into()))
        );
        assert_eq!(OciPath::parse("/v2/x/tags/list").unwrap(), Some(OciPath::Tags(name("x"))));
        assert_eq!(OciPath::parse("/v2/x/referrers/d").unwrap(), Some(OciPath::Referrers(name("x"), "d".into())));
    }

    #[test]
    fn unknown_paths_and_bad_names() {
        assert_eq!(OciPath::parse("/v2/x").unwrap(), None);
        assert_eq!(OciPath::parse("/v2/x/nothing/here").unwrap(), None);
        assert_eq!(OciPath::parse("/v3/x/tags/list").unwrap(), None);
        let err = OciPath::parse("/v2/Upper/tags/list").unwrap_err();
        assert_eq!(err.code(), ErrorCode::NameInvalid);
    }
}
