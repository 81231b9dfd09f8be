//! A repository's tags as a person browses them, and deleting one, under
//! the same repository policy the Distribution API applies.

use damselfly_core::{Digest, RepositoryName};
use serde_json::{json, Value};

use super::access::Caller;
use super::audit::{self, Event};
use super::{Error, Result, Thing};
use crate::metadata::TagDetail;
use crate::state::AppState;

/// A repository's tags, and what the caller may do with them.
#[derive(Debug)]
pub struct Tags {
    /// Tags with their manifests, at most the limit asked for.
    pub tags: Vec<Tagged>,
    /// The caller may delete tags.
    pub may_delete: bool,
}

/// A tag with its manifest and the size of what it pulls.
#[derive(Debug)]
pub struct Tagged {
    /// The tag and its manifest.
    pub detail: TagDetail,
    /// What a pull of it fetches: one entry for an image or an artifact,
    /// one per platform for an index.
    pub sizes: Vec<ImageSize>,
}

/// The size of an image as people count it: its config and layers, the
/// bytes a pull fetches (a manifest's own few hundred bytes left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSize {
    /// `os/arch[/variant]` of an index's entry; `None` for a lone image.
    pub platform: Option<String>,
    /// `None` when an index names a manifest this repository does not hold.
    pub bytes: Option<u64>,
}

/// The config and layers an image manifest (or an artifact's) refers to.
fn pulled_bytes(content: &Value) -> u64 {
    let layers = content["layers"].as_array().map_or(0, |l| l.iter().filter_map(|d| d["size"].as_u64()).sum::<u64>());
    content["config"]["size"].as_u64().unwrap_or(0) + layers
}

/// `os/arch[/variant]` of an index entry.
fn platform(entry: &Value) -> String {
    let p = &entry["platform"];
    let part = |k: &str| p[k].as_str().unwrap_or("unknown");
    match p["variant"].as_str() {
        Some(v) => format!("{}/{}/{v}", part("os"), part("architecture")),
        None => format!("{}/{}", part("os"), part("architecture")),
    }
}

/// What an index entry is, as listed: its platform; for the attestations
/// `docker buildx` adds (platform `unknown/unknown`, annotated with the
/// image they describe), `attestations of <that image's platform>`.
fn entry_label(entry: &Value, entries: &[Value]) -> String {
    let annotations = &entry["annotations"];
    if annotations["vnd.docker.reference.type"].as_str() != Some("attestation-manifest") {
        return platform(entry);
    }
    let of = annotations["vnd.docker.reference.digest"].as_str();
    match entries.iter().find(|e| of.is_some() && e["digest"].as_str() == of) {
        Some(image) => format!("attestations of {}", platform(image)),
        None => "attestations".to_owned(),
    }
}

/// The sizes of what a manifest pulls: an image's own, or each platform's of an index.
async fn sizes(state: &AppState, name: &RepositoryName, content: &[u8]) -> Result<Vec<ImageSize>> {
    let content: Value = serde_json::from_slice(content).unwrap_or(Value::Null);
    let Some(entries) = content["manifests"].as_array() else {
        return Ok(vec![ImageSize { platform: None, bytes: Some(pulled_bytes(&content)) }]);
    };
    let mut sizes = Vec::with_capacity(entries.len());
    for entry in entries {
        let child = match entry["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()) {
            Some(d) => state.db.manifests().find_by_digest(name.as_str(), &d).await?,
            None => None,
        };
        let bytes = child.map(|m| pulled_bytes(&serde_json::from_slice(&m.content).unwrap_or(Value::Null)));
        sizes.push(ImageSize { platform: Some(entry_label(entry, entries)), bytes });
    }
    Ok(sizes)
}

/// The tags of `name`, for a caller who may pull from it.
pub async fn tags(state: &AppState, caller: &Caller, name: &RepositoryName, limit: i64) -> Result<Tags> {
    let actions = state.auth.policy.repository_actions(&state.db, &caller.principal, name).await?;
    if !actions.pull {
        // The same words whether the repository exists or not.
        return Err(Error::Denied(format!(
            "{} may not pull from {name}, or it does not exist; ask an admin of its namespace for a role",
            caller.actor()
        )));
    }
    let Some(repo) = state.db.repositories().find(name.as_str()).await? else {
        return Err(Error::not_found(
            Thing::Repository,
            format!("repository {name} has nothing in it yet; push an image to it first"),
        ));
    };
    let mut tags = Vec::new();
    for detail in state.db.tags().details(repo, limit).await? {
        let sizes = sizes(state, name, &detail.content).await?;
        tags.push(Tagged { detail, sizes });
    }
    Ok(Tags { tags, may_delete: actions.delete })
}

/// Removes tag `tag` of `name` (its manifest stays until collected), for a
/// caller who may delete there. `via` says through what, for the audit log.
pub async fn delete_tag(state: &AppState, caller: &Caller, name: &RepositoryName, tag: &str, via: &str) -> Result<()> {
    let object = format!("{name}:{tag}");
    let ns = state.auth.policy.namespace(&state.db, name.namespace()).await?;
    let tenant = ns.map(|n| n.tenant_id);
    let record = |outcome: &'static str| {
        let event = Event {
            actor: caller.actor(),
            action: "tag.delete",
            object: &object,
            tenant,
            source: &caller.source,
            outcome,
            detail: Some(json!({ "via": via })),
        };
        audit::record(state, event)
    };
    let actions = state.auth.policy.repository_actions(&state.db, &caller.principal, name).await?;
    if !actions.delete {
        record("denied").await;
        return Err(Error::Denied(format!(
            "deleting tags in {name} takes the admin or owner role on its namespace or tenant, which {} does not hold",
            caller.actor()
        )));
    }
    if let Err(refused) = super::lifecycle::check_tag_deletable(state, name, tag).await {
        record("denied").await;
        return Err(refused);
    }
    let repo = state.db.repositories().find(name.as_str()).await?;
    let deleted = match repo {
        Some(repo) => state.db.tags().delete(repo, tag).await?.is_some(),
        None => false,
    };
    if !deleted {
        return Err(Error::not_found(Thing::Tag, format!("{name} has no tag {tag}; it may have been deleted already")));
    }
    record("success").await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_image_counts_its_config_and_layers_and_an_index_names_each_entry() {
        let image = json!({"config": {"size": 100}, "layers": [{"size": 2000}, {"size": 30}]});
        assert_eq!(pulled_bytes(&image), 2130);
        let entries = [
            json!({"digest": "sha256:a", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}),
            json!({"digest": "sha256:b", "platform": {"os": "unknown", "architecture": "unknown"},
                   "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                   "vnd.docker.reference.digest": "sha256:a"}}),
            json!({"digest": "sha256:c", "platform": {"os": "unknown", "architecture": "unknown"},
                   "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}),
            json!({"digest": "sha256:d"}),
        ];
        let labels: Vec<String> = entries.iter().map(|e| entry_label(e, &entries)).collect();
        assert_eq!(labels, ["linux/arm64/v8", "attestations of linux/arm64/v8", "attestations", "unknown/unknown"]);
    }
}
