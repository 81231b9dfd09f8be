//! A repository's tags as a person browses them, and deleting one, under
//! the same repository policy the Distribution API applies.

use damselfly_core::RepositoryName;
use serde_json::json;

use super::access::Caller;
use super::audit::{self, Event};
use super::{Error, Result, Thing};
use crate::metadata::TagDetail;
use crate::state::AppState;

/// A repository's tags, and what the caller may do with them.
#[derive(Debug)]
pub struct Tags {
    /// Tags with their manifests, at most the limit asked for.
    pub tags: Vec<TagDetail>,
    /// The caller may delete tags.
    pub may_delete: bool,
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
    Ok(Tags { tags: state.db.tags().details(repo, limit).await?, may_delete: actions.delete })
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
    let repo = state.db.repositories().find(name.as_str()).await?;
    let deleted = match repo {
        Some(repo) => state.db.tags().delete(repo, tag).await?,
        None => false,
    };
    if !deleted {
        return Err(Error::not_found(Thing::Tag, format!("{name} has no tag {tag}; it may have been deleted already")));
    }
    record("success").await;
    Ok(())
}
