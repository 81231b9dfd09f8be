//! From a reference to one blob: the registry's URL, a pull token with the
//! caller's credentials, and the manifest's layer the caller chose.

use std::collections::BTreeMap;

use damselfly_core::{Digest, Reference, RepositoryName};
use serde::Deserialize;

use super::args::GetArgs;
use crate::error::{Error, ReferenceProblem, Refusal, Result};
use crate::supernode::Challenge;

/// The annotation that names a file inside an artifact (`oras push` sets it).
const TITLE: &str = "org.opencontainers.image.title";

/// Manifest media types `get` asks for.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json";

/// A parsed reference.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// Registry base URL, without a trailing slash.
    pub registry: String,
    /// The repository.
    pub repository: RepositoryName,
    /// Tag or manifest digest; `None` for `<repo>` alone (with --digest).
    pub reference: Option<Reference>,
}

impl Target {
    /// Parses `[<host>/]<namespace>/<repo>[:<tag>|@<digest>]`; `registry` (the
    /// --registry flag) wins over a host in the reference.
    pub fn parse(text: &str, registry: Option<&str>) -> Result<Target> {
        let (mut path, host) = match text.split_once('/') {
            // A first segment with a dot or a port, or `localhost`, is a host, as in Docker references.
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (rest, Some(first)),
            _ => (text, None),
        };
        let registry = match (registry, host) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(host)) => {
                let local = host.starts_with("localhost") || host.starts_with("127.") || host.starts_with("[::1]");
                format!("{}://{host}", if local { "http" } else { "https" })
            }
            (None, None) => return Err(Error::NoRegistry(text.to_owned())),
        };
        let bad = |problem: ReferenceProblem| Error::Reference { reference: text.to_owned(), source: problem };
        let mut reference = None;
        if let Some((name, digest)) = path.split_once('@') {
            let digest: Digest = digest.parse().map_err(|e| bad(ReferenceProblem::Digest(e)))?;
            reference = Some(Reference::Digest(digest));
            path = name;
        } else if let Some((name, tag)) = path.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) {
            reference = Some(Reference::Tag(tag.parse().map_err(|e| bad(ReferenceProblem::Tag(e)))?));
            path = name;
        }
        let repository = path.parse().map_err(|e| bad(ReferenceProblem::Name(e)))?;
        Ok(Target { registry, repository, reference })
    }

    /// The reference as the user would write it, for messages.
    pub fn display(&self) -> String {
        match &self.reference {
            Some(Reference::Tag(t)) => format!("{}:{t}", self.repository.as_str()),
            Some(Reference::Digest(d)) => format!("{}@{d}", self.repository.as_str()),
            None => self.repository.as_str().to_owned(),
        }
    }
}

/// The blob to fetch.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Its digest.
    pub digest: Digest,
    /// Its size, when a manifest said it.
    pub size: Option<u64>,
    /// Its file name in the artifact, if it has one.
    pub title: Option<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// Whether the registry's answer means the caller may not pull.
pub fn refused_pull(refusal: &Refusal) -> bool {
    refusal.code == "UNAUTHORIZED" || refusal.code == "DENIED"
}

/// The registry's challenge, and a pull token for the repository from its
/// token endpoint (or the one given with --token).
pub async fn pull_token(
    http: &reqwest::Client,
    target: &Target,
    args: &GetArgs,
) -> Result<(Option<Challenge>, Option<String>)> {
    let url = format!("{}/v2/", target.registry);
    let r = http.get(&url).send().await.map_err(|source| Error::CannotReach {
        what: "the registry",
        url: target.registry.clone(),
        source,
    })?;
    let challenge =
        r.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(Challenge::parse);
    if args.token.is_some() {
        return Ok((challenge, args.token.clone()));
    }
    let Some(c) = challenge.clone() else { return Ok((None, None)) };
    let name = target.repository.as_str();
    let mut req =
        http.get(&c.realm).query(&[("service", c.service.as_str()), ("scope", &format!("repository:{name}:pull"))]);
    match (&args.username, &args.password) {
        (Some(user), Some(password)) => req = req.basic_auth(user, Some(password)),
        (Some(_), None) => return Err(Error::HalfCredentials { given: "username", missing: "password" }),
        (None, Some(_)) => return Err(Error::HalfCredentials { given: "password", missing: "username" }),
        (None, None) => {}
    }
    let r = req.send().await.map_err(|source| Error::CannotReach {
        what: "the registry's token endpoint",
        url: c.realm.clone(),
        source,
    })?;
    if !r.status().is_success() {
        return Err(Error::CredentialsRefused(Refusal::read(r).await));
    }
    #[derive(Deserialize)]
    struct TokenBody {
        token: String,
    }
    let body: TokenBody = r.json().await.map_err(Error::BadToken)?;
    Ok((challenge, Some(body.token)))
}

/// What the reference designates: the --digest blob, or the manifest's one
/// file (the one named by --file in a multi-file artifact).
pub async fn blob(http: &reqwest::Client, target: &Target, token: Option<&str>, args: &GetArgs) -> Result<Blob> {
    let shown = target.display();
    let reference = match (&target.reference, args.digest) {
        (None, Some(digest)) => return Ok(Blob { digest, size: None, title: None }),
        (Some(_), Some(_)) => return Err(Error::DigestAndTag(shown)),
        (None, None) => return Err(Error::NoTag(shown)),
        (Some(r), None) => r,
    };
    let url = format!("{}/v2/{}/manifests/{reference}", target.registry, target.repository.as_str());
    let mut req = http.get(url).header(reqwest::header::ACCEPT, ACCEPT);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.map_err(|source| Error::CannotReach {
        what: "the registry",
        url: target.registry.clone(),
        source,
    })?;
    if !r.status().is_success() {
        let refusal = Refusal::read(r).await;
        return Err(match refusal.code.as_str() {
            "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" => Error::ManifestUnknown { shown, refusal },
            _ if refused_pull(&refusal) => Error::NoPermission { repository: target.repository.clone(), refusal },
            _ => Error::ManifestRefused { shown, refusal },
        });
    }
    let bytes = r.bytes().await.map_err(|source| Error::ManifestRead { shown: shown.clone(), source })?;
    if let Reference::Digest(d) = reference {
        if Digest::of(&bytes) != *d {
            return Err(Error::ManifestDigest(shown));
        }
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|source| Error::ManifestInvalid { shown: shown.clone(), source })?;
    choose(manifest, args.file.as_deref(), &shown)
}

fn choose(manifest: Manifest, file: Option<&str>, shown: &str) -> Result<Blob> {
    if manifest.layers.is_empty() && !manifest.manifests.is_empty() {
        let manifests = manifest.manifests.iter().map(|m| m.digest.to_string()).collect();
        return Err(Error::Index { shown: shown.to_owned(), manifests });
    }
    let title = |d: &Descriptor| d.annotations.get(TITLE).cloned();
    let names: Vec<String> = manifest.layers.iter().map(|d| title(d).unwrap_or_else(|| d.digest.to_string())).collect();
    let layer = match file {
        Some(name) => manifest.layers.iter().find(|d| title(d).as_deref() == Some(name)).ok_or_else(|| {
            Error::NoSuchFile { shown: shown.to_owned(), name: name.to_owned(), files: names.clone() }
        })?,
        None => match manifest.layers.as_slice() {
            [one] => one,
            [] => return Err(Error::NoFiles(shown.to_owned())),
            _ => return Err(Error::SeveralFiles { shown: shown.to_owned(), files: names }),
        },
    };
    Ok(Blob { digest: layer.digest, size: Some(layer.size), title: title(layer) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_take_a_host_a_tag_or_a_digest() {
        let t = Target::parse("registry.example.com:5000/ml/models:v1", None).expect("parse");
        assert_eq!(t.registry, "https://registry.example.com:5000");
        assert_eq!(t.repository.as_str(), "ml/models");
        assert_eq!(t.reference, Some(Reference::Tag("v1".parse().expect("tag"))));

        let t = Target::parse("localhost:5000/ml/models", None).expect("parse");
        assert_eq!((t.registry.as_str(), t.reference), ("http://localhost:5000", None));

        let d = Digest::of(b"m");
        let t = Target::parse(&format!("ml/models@{d}"), Some("http://r:1/")).expect("parse");
        assert_eq!((t.registry.as_str(), t.reference), ("http://r:1", Some(Reference::Digest(d))));

        assert!(Target::parse("ml/models:v1", None).expect_err("no registry").to_string().contains("--registry"));
        assert!(Target::parse("ML/x:v1", Some("http://r")).is_err());
    }

    #[test]
    fn a_file_is_chosen_by_its_title() {
        let json = |titles: &[&str]| {
            let layers: Vec<serde_json::Value> = titles
                .iter()
                .map(|t| {
                    serde_json::json!({"mediaType": "application/octet-stream", "digest": Digest::of(t.as_bytes()),
                        "size": t.len(), "annotations": {TITLE: t}})
                })
                .collect();
            serde_json::from_value::<Manifest>(serde_json::json!({"layers": layers})).expect("manifest")
        };
        let b = choose(json(&["a.bin", "b.bin"]), Some("b.bin"), "x").expect("b");
        assert_eq!((b.digest, b.size, b.title.as_deref()), (Digest::of(b"b.bin"), Some(5), Some("b.bin")));
        let e = choose(json(&["a.bin", "b.bin"]), Some("c.bin"), "x").expect_err("no c");
        assert_eq!(e.to_string(), "x has no file named \"c.bin\"; its files are: a.bin, b.bin");
        let e = choose(json(&["a.bin", "b.bin"]), None, "x").expect_err("ambiguous");
        assert_eq!(e.to_string(), "x holds 2 files (a.bin, b.bin): choose one with --file <name>");
        assert_eq!(choose(json(&["a.bin"]), None, "x").expect("one").title.as_deref(), Some("a.bin"));
    }
}
