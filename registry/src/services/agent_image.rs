//! The agent's executable for a host set up without Kubernetes (the setup
//! script's `--node`): the one layer of the agent image that
//! `damselfly-agent image push` put into this registry, a tar holding
//! `damselfly-agent`. The script unpacks it with the host's `tar`.
//!
//! A cluster may take it from a namespace of its own tenant or a public
//! one, the namespaces its agents may read the P2P switch of; any other is
//! as good as absent.

use damselfly_core::{Digest, Reference, RepositoryName};
use futures_util::StreamExt;
use serde_json::Value;

use super::{Error, Result, Thing};
use crate::metadata::Cluster;
use crate::state::AppState;

/// Largest image config read to learn the image's platform.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The layer to send: a blob of the agent image's repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentLayer {
    /// Its digest in the blob store.
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
}

/// `host/repository:tag` or `host/repository@sha256:…` split at this
/// registry's host; an image elsewhere is not ours to give.
fn in_this_registry(state: &AppState, image: &str) -> Result<(RepositoryName, Reference)> {
    let host = state.config.registry_host();
    let elsewhere = || {
        Error::invalid(
            Thing::Field,
            format!(
                "the agent image {image} is not in this registry ({host}): put damselfly-agent on this host's PATH \
                 (it is /damselfly-agent in that image), or set DAMSELFLY_AGENT_BIN to it"
            ),
        )
    };
    let path = image.strip_prefix(&format!("{host}/")).ok_or_else(elsewhere)?;
    let (repository, reference) = match path.split_once('@') {
        Some((repository, digest)) => (repository, digest),
        None => match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, tag),
            _ => (path, "latest"),
        },
    };
    let invalid =
        |e: String| Error::invalid(Thing::Field, format!("the agent image {image} is not an image reference: {e}"));
    let name: RepositoryName = repository.parse().map_err(|e: damselfly_core::NameError| invalid(e.to_string()))?;
    let reference: Reference = reference.parse().map_err(|e: damselfly_core::ReferenceError| invalid(e.to_string()))?;
    Ok((name, reference))
}

/// The layer holding the agent for `linux/<arch>` in `image`, for `cluster`.
pub async fn layer(state: &AppState, cluster: &Cluster, image: &str, arch: &str) -> Result<AgentLayer> {
    let (name, reference) = in_this_registry(state, image)?;
    let push_it = || {
        format!(
            "the agent image {image} is not in the registry, or not where cluster {}/{} may read it: push it with \
             `damselfly-agent image push --registry {} --public` (its namespace public, or the tenant's own)",
            cluster.tenant,
            cluster.name,
            state.config.public_url()
        )
    };
    let namespace = state.auth.policy.namespace(&state.db, name.namespace()).await?;
    if !namespace.is_some_and(|n| n.public || n.tenant_id == cluster.tenant_id) {
        return Err(Error::not_found(Thing::Repository, push_it()));
    }
    let manifests = state.db.manifests();
    let found = match &reference {
        Reference::Tag(t) => manifests.find_by_tag(name.as_str(), t.as_str()).await?,
        Reference::Digest(d) => manifests.find_by_digest(name.as_str(), d).await?,
    };
    let top = found.ok_or_else(|| Error::not_found(Thing::Manifest, push_it()))?;
    let mut content: Value = serde_json::from_slice(&top.content).unwrap_or(Value::Null);
    if let Some(entries) = content["manifests"].as_array() {
        // An index: the entry for this host's platform.
        let entry = entries.iter().find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch);
        let digest: Digest = entry
            .and_then(|m| m["digest"].as_str())
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| no_platform(image, arch))?;
        let child = manifests.find_by_digest(name.as_str(), &digest).await?;
        let child = child.ok_or_else(|| Error::not_found(Thing::Manifest, push_it()))?;
        content = serde_json::from_slice(&child.content).unwrap_or(Value::Null);
    } else if let Some(built_for) = image_architecture(state, &name, &content).await? {
        if built_for != arch {
            return Err(Error::invalid(
                Thing::Manifest,
                format!(
                    "the agent image {image} is for linux/{built_for} and this host is linux/{arch}: build \
                     damselfly-agent for this host and set DAMSELFLY_AGENT_BIN to it"
                ),
            ));
        }
    }
    let layers = content["layers"].as_array().map(Vec::as_slice).unwrap_or_default();
    let [layer] = layers else {
        return Err(Error::invalid(
            Thing::Manifest,
            format!(
                "the agent image {image} has {} layers, and the agent is taken only from an image of one, as \
                 `damselfly-agent image push` makes it: put damselfly-agent on this host's PATH instead",
                layers.len()
            ),
        ));
    };
    let digest: Digest = layer["digest"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| Error::invalid(Thing::Manifest, format!("the agent image {image}'s layer has no digest")))?;
    let blob = state.db.blobs().find_in_repository(name.as_str(), &digest).await?;
    let blob = blob.ok_or_else(|| Error::not_found(Thing::Manifest, push_it()))?;
    Ok(AgentLayer { digest, size: blob.size })
}

fn no_platform(image: &str, arch: &str) -> Error {
    Error::invalid(
        Thing::Manifest,
        format!(
            "the agent image {image} has no linux/{arch} image: build damselfly-agent for this host and set \
             DAMSELFLY_AGENT_BIN to it"
        ),
    )
}

/// The `architecture` of an image manifest's config, if it says.
async fn image_architecture(state: &AppState, name: &RepositoryName, manifest: &Value) -> Result<Option<String>> {
    let Some(digest) = manifest["config"]["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()) else {
        return Ok(None);
    };
    let Some(blob) = state.db.blobs().find_in_repository(name.as_str(), &digest).await? else { return Ok(None) };
    let failed = |e: &dyn std::fmt::Display| Error::Internal(format!("reading the agent image's config: {e}"));
    let len = blob.size.min(MAX_CONFIG_BYTES);
    let Some(mut stream) = state.blobs.read(&digest, 0, len).await.map_err(|e| failed(&e))? else { return Ok(None) };
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        text.extend_from_slice(&chunk.map_err(|e| failed(&e))?);
    }
    let config: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
    Ok(config["architecture"].as_str().map(str::to_owned))
}
