//! What makes a pushed manifest acceptable, and what it references.

use std::collections::BTreeMap;

use damselfly_core::Digest;
use serde::Deserialize;

use super::{Error, Thing};
use crate::metadata::TargetKind;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A content descriptor inside a manifest.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the target.
    #[serde(default)]
    pub media_type: String,
    /// Digest of the target.
    pub digest: String,
    /// Size of the target in bytes.
    pub size: i64,
    /// Where a non-distributable layer can be fetched instead.
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDocument {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// A manifest that passed every check that needs no database.
#[derive(Debug)]
pub struct ParsedManifest {
    /// The effective media type.
    pub media_type: String,
    /// `artifactType`, or the config's media type for an image manifest.
    pub artifact_type: Option<String>,
    /// The `subject` descriptor's digest.
    pub subject: Option<Digest>,
    /// The annotations, as compact JSON.
    pub annotations: Option<String>,
    /// Blobs and child manifests that must exist in the repository, with the size each descriptor claims.
    pub references: Vec<Reference>,
}

/// One thing a manifest points at.
#[derive(Debug)]
pub struct Reference {
    /// Its digest.
    pub digest: Digest,
    /// Blob or manifest.
    pub kind: TargetKind,
    /// Size claimed by the descriptor.
    pub size: u64,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid(Thing::Manifest, message)
}

/// Parses and checks a manifest body against the `Content-Type` it was pushed with.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, Error> {
    let doc: ManifestDocument = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("manifest is not valid JSON for an image manifest or index: {e}")))?;
    if doc.schema_version != Some(2) {
        return Err(invalid(
            "schemaVersion must be 2; schema 1 manifests are not supported, push with a current client",
        ));
    }
    // Content-Type may carry parameters; compare the bare type.
    let header_type = content_type.map(|c| c.split(';').next().unwrap_or("").trim()).filter(|c| !c.is_empty());
    let media_type = match (header_type, doc.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(invalid(format!("Content-Type {h} does not match the manifest's mediaType {b}")));
        }
        (Some(h), _) => h.to_owned(),
        (None, Some(b)) => b.to_owned(),
        (None, None) => return Err(invalid("set Content-Type or the mediaType field to the manifest's media type")),
    };
    let mut references = Vec::new();
    let mut add = |d: &Descriptor, kind: TargetKind, what: &str| -> Result<(), Error> {
        let digest: Digest = d.digest.parse().map_err(|e| invalid(format!("{what} descriptor: {e}")))?;
        if d.size < 0 {
            return Err(invalid(format!("{what} descriptor {digest} has a negative size")));
        }
        // Foreign layers (non-distributable) are fetched from their URLs, not from us.
        if kind == TargetKind::Blob && !d.urls.is_empty() {
            return Ok(());
        }
        references.push(Reference { digest, kind, size: d.size as u64 });
        Ok(())
    };
    let is_index = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        OCI_INDEX | DOCKER_MANIFEST_LIST => true,
        other => {
            return Err(invalid(format!(
                "media type {other} is not a manifest type this registry stores; use {OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST} or {DOCKER_MANIFEST_LIST}"
            )))
        }
    };
    let artifact_type = if is_index {
        let children = doc.manifests.as_ref().ok_or_else(|| invalid("an index needs a manifests array"))?;
        for c in children {
            add(c, TargetKind::Manifest, "manifests[]")?;
        }
        doc.artifact_type.clone()
    } else {
        let config = doc.config.as_ref().ok_or_else(|| invalid("an image manifest needs a config descriptor"))?;
        let layers = doc.layers.as_ref().ok_or_else(|| invalid("an image manifest needs a layers array"))?;
        add(config, TargetKind::Blob, "config")?;
        for l in layers {
            add(l, TargetKind::Blob, "layers[]")?;
        }
        doc.artifact_type.clone().or_else(|| Some(config.media_type.clone()).filter(|m| !m.is_empty()))
    };
    let subject = match &doc.subject {
        Some(s) => Some(s.digest.parse().map_err(|e| invalid(format!("subject descriptor: {e}")))?),
        None => None,
    };
    let annotations =
        doc.annotations.as_ref().filter(|a| !a.is_empty()).map(|a| serde_json::to_string(a).unwrap_or_default());
    Ok(ParsedManifest { media_type, artifact_type, subject, annotations, references })
}

#[cfg(test)]
mod tests {
    use damselfly_core::ErrorCode;

    use super::*;
    use crate::error::RegistryError;

    fn digest(s: &str) -> String {
        Digest::of(s.as_bytes()).to_string()
    }

    #[test]
    fn image_manifest_references_config_and_layers() {
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest("c"), "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest("l"), "size": 1}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": digest("s"), "size": 5},
            "annotations": {"a": "b"}
        });
        let m = parse(body.to_string().as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.references.len(), 2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        assert_eq!(m.subject, Some(Digest::of(b"s")));
        assert_eq!(m.annotations.as_deref(), Some(r#"{"a":"b"}"#));
    }

    #[test]
    fn rejects_what_it_cannot_store() {
        let cases = [
            (&b"not json"[..], Some(OCI_MANIFEST)),
            (br#"{"schemaVersion":1}"#, Some(OCI_MANIFEST)),
            (
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
                Some(OCI_MANIFEST),
            ),
            (br#"{"schemaVersion":2,"manifests":[]}"#, None),
            (br#"{"schemaVersion":2,"config":{"digest":"sha256:bad","size":1},"layers":[]}"#, Some(OCI_MANIFEST)),
            (br#"{"schemaVersion":2,"layers":[]}"#, Some(DOCKER_MANIFEST)),
            (br#"{"schemaVersion":2,"manifests":[]}"#, Some("text/plain")),
        ];
        for (body, ct) in cases {
            let err = parse(body, ct).unwrap_err();
            assert_eq!(
                RegistryError::from(err).code(),
                ErrorCode::ManifestInvalid,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
