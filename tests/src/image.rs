//! Images pushed through the Distribution API for a scenario: blobs with
//! their digests, and an image whose signature refers to it.

use serde_json::{json, Value};

use crate::http::{Cred, Http, Reply};
use crate::sha256_digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// A gzipped OCI layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The empty descriptor of an artifact.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The artifact type of the signatures pushed here.
pub const SIGNATURE: &str = "application/vnd.example.signature.v1+json";

/// Some bytes and their digest.
#[derive(Clone)]
pub struct Blob {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>`.
    pub digest: String,
}

impl Blob {
    /// The bytes, with their digest.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Blob {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        Blob { bytes, digest }
    }

    /// A descriptor of it with `media_type`.
    pub fn descriptor(&self, media_type: &str) -> Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// An image pushed to a repository under the tag `v1`, with one referrer (a signature).
#[derive(Clone)]
pub struct Image {
    /// The repository.
    pub repo: String,
    /// Its config.
    pub config: Blob,
    /// Its one layer.
    pub layer: Blob,
    /// The manifest as pushed.
    pub manifest: String,
    /// The manifest's digest.
    pub digest: String,
    /// The signature's manifest digest.
    pub referrer: String,
}

impl Image {
    /// `/v2/<repo>/manifests/<reference>`.
    pub fn manifest_path(&self, reference: &str) -> String {
        format!("/v2/{}/manifests/{reference}", self.repo)
    }

    /// `/v2/<repo>/blobs/<digest>`.
    pub fn blob_path(&self, digest: &str) -> String {
        format!("/v2/{}/blobs/{digest}", self.repo)
    }
}

/// Pushes `blob` into `repo` in one `POST …?digest=`, which must create it.
pub async fn push_blob(http: &Http, cred: &Cred, repo: &str, blob: &Blob) {
    let path = format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest);
    http.send(http.request(cred, reqwest::Method::POST, &path).body(blob.bytes.clone())).await.expect(201);
}

/// Pushes a manifest under `reference`; the answer, whatever it is.
pub async fn push_manifest(
    http: &Http,
    cred: &Cred,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &str,
) -> Reply {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let request = http.request(cred, reqwest::Method::PUT, &path).header("content-type", media_type);
    http.send(request.body(body.to_owned())).await
}

/// Pushes an image whose bytes depend on `seed`, and a signature referring to it.
pub async fn push_image(http: &Http, cred: &Cred, repo: &str, seed: &str) -> Image {
    let config = Blob::new(format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}"));
    let layer = Blob::new(format!("layer of {seed} ").repeat(100));
    push_blob(http, cred, repo, &config).await;
    push_blob(http, cred, repo, &layer).await;
    let manifest = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": config.descriptor(OCI_CONFIG), "layers": [layer.descriptor(OCI_LAYER)] })
    .to_string();
    let digest = sha256_digest(manifest.as_bytes());
    push_manifest(http, cred, repo, "v1", OCI_MANIFEST, &manifest).await.expect(201);
    let empty = Blob::new(b"{}".to_vec());
    let signature = Blob::new(format!("signature of {seed}"));
    push_blob(http, cred, repo, &empty).await;
    push_blob(http, cred, repo, &signature).await;
    let artifact = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIGNATURE,
        "config": empty.descriptor(OCI_EMPTY), "layers": [signature.descriptor("application/octet-stream")],
        "subject": { "mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len() } })
    .to_string();
    let referrer = sha256_digest(artifact.as_bytes());
    push_manifest(http, cred, repo, &referrer, OCI_MANIFEST, &artifact).await.expect(201);
    Image { repo: repo.to_owned(), config, layer, manifest, digest, referrer }
}
