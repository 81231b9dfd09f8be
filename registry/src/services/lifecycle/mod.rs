//! A namespace's lifecycle policy: untagged manifests deleted after N days
//! (off by default), retention rules that delete tags, and immutable tag
//! patterns. Reading it takes any role on the namespace; changing it, the
//! admin or owner role. The rules are applied by each garbage collection
//! run (`services::gc`), and [`preview`] lists what they would delete now.
//!
//! Patterns are globs: `*` any run of characters, `?` one, `[abc]` or
//! `[a-z]` a class. A tag is immutable when it matches an immutable
//! pattern: it may be pushed once, and again with the same manifest, but a
//! push that would move it, deleting it, and deleting its manifest are
//! refused with `DENIED`. Retention never deletes an immutable tag.

pub mod plan;

use std::collections::{BTreeSet, HashMap};

use damselfly_core::{Digest, RepositoryName};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::access::{Attempt, Manage, NamespaceAccess};
use super::{Error, Result, Thing};
use crate::metadata::{now, Namespace, NamespacePolicy, RepositoryId};
use crate::state::AppState;
use plan::TagReason;

/// Most days a policy may name: about thirty years.
const MAX_DAYS: u32 = 10_000;

/// One retention rule: of the tags matching `tags` (in repositories
/// matching `repositories`), keep the newest N, or delete those not pulled
/// for D days. Exactly one of the two is given.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Repositories the rule covers, a glob on the name after `<namespace>/`; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<String>,
    /// Tags the rule covers, a glob such as `v*` or `*`.
    pub tags: String,
    /// Keep the newest this many (by push time) of the tags it covers, and delete the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_newest: Option<u32>,
    /// Delete the tags it covers that were neither pulled nor pushed for this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_pulled_for_days: Option<u32>,
    #[serde(skip)]
    #[schema(ignore)]
    compiled: Option<(Option<glob::Pattern>, glob::Pattern)>,
}

impl RetentionRule {
    /// A rule as a person wrote it; [`Policy::parse`] checks it.
    pub fn new(
        repositories: Option<String>,
        tags: String,
        keep_newest: Option<u32>,
        not_pulled_for_days: Option<u32>,
    ) -> RetentionRule {
        RetentionRule { repositories, tags, keep_newest, not_pulled_for_days, compiled: None }
    }

    fn covers_repository(&self, repository: &str) -> bool {
        match &self.compiled {
            Some((Some(p), _)) => p.matches(repository),
            _ => true,
        }
    }

    fn covers_tag(&self, tag: &str) -> bool {
        self.compiled.as_ref().is_some_and(|(_, p)| p.matches(tag))
    }
}

/// A namespace's lifecycle policy, checked.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Delete untagged manifests this many days after they lost their last tag; never when `None`.
    pub untagged_days: Option<u32>,
    /// Retention rules, applied in order; a tag any of them picks goes.
    pub retention: Vec<RetentionRule>,
    /// Immutable tag patterns.
    pub immutable_tags: Vec<String>,
    immutable: Vec<glob::Pattern>,
}

fn pattern(field: &str, p: &str) -> Result<glob::Pattern> {
    if p.is_empty() {
        return Err(Error::invalid(Thing::Field, format!("{field}: a pattern may not be empty; use * for all")));
    }
    glob::Pattern::new(p).map_err(|e| {
        Error::invalid(
            Thing::Field,
            format!("{field}: {p:?} is not a pattern ({e}); use * for any characters, ? for one, [a-z] for a class"),
        )
    })
}

impl Policy {
    /// Checks a policy as a person wrote it; the message says what to fix.
    pub fn parse(
        untagged_days: Option<u32>,
        retention: Vec<RetentionRule>,
        immutable_tags: Vec<String>,
    ) -> Result<Policy> {
        if untagged_days.is_some_and(|d| d == 0 || d > MAX_DAYS) {
            return Err(Error::invalid(
                Thing::Field,
                format!("untagged_days must be 1 to {MAX_DAYS}, or null to keep untagged manifests"),
            ));
        }
        let mut rules = Vec::with_capacity(retention.len());
        for (i, mut rule) in retention.into_iter().enumerate() {
            let at = format!("retention[{i}]");
            match (rule.keep_newest, rule.not_pulled_for_days) {
                (Some(n), None) if n >= 1 => {}
                (None, Some(d)) if (1..=MAX_DAYS).contains(&d) => {}
                (Some(_), None) => {
                    return Err(Error::invalid(Thing::Field, format!("{at}: keep_newest must be at least 1")));
                }
                (None, Some(_)) => {
                    return Err(Error::invalid(
                        Thing::Field,
                        format!("{at}: not_pulled_for_days must be 1 to {MAX_DAYS}"),
                    ));
                }
                _ => {
                    return Err(Error::invalid(
                        Thing::Field,
                        format!("{at}: give exactly one of keep_newest (a count) and not_pulled_for_days (days)"),
                    ));
                }
            }
            let repositories =
                rule.repositories.as_deref().map(|r| pattern(&format!("{at}.repositories"), r)).transpose()?;
            let tags = pattern(&format!("{at}.tags"), &rule.tags)?;
            rule.compiled = Some((repositories, tags));
            rules.push(rule);
        }
        let immutable = immutable_tags.iter().map(|p| pattern("immutable_tags", p)).collect::<Result<Vec<_>>>()?;
        Ok(Policy { untagged_days, retention: rules, immutable_tags, immutable })
    }

    /// The policy as stored; one the registry wrote, so a fault is the registry's.
    fn from_row(row: &NamespacePolicy) -> Result<Policy> {
        let broken = |e: serde_json::Error| Error::Internal(format!("a stored lifecycle policy does not parse: {e}"));
        let retention: Vec<RetentionRule> = serde_json::from_str(&row.retention).map_err(broken)?;
        let immutable: Vec<String> = serde_json::from_str(&row.immutable_tags).map_err(broken)?;
        let days = row.untagged_days.map(|d| d.clamp(1, i64::from(MAX_DAYS)) as u32);
        Policy::parse(days, retention, immutable)
    }

    fn to_row(&self) -> NamespacePolicy {
        NamespacePolicy {
            untagged_days: self.untagged_days.map(i64::from),
            retention: serde_json::to_string(&self.retention).unwrap_or_else(|_| "[]".into()),
            immutable_tags: serde_json::to_string(&self.immutable_tags).unwrap_or_else(|_| "[]".into()),
        }
    }

    /// The immutable pattern `tag` matches, if any.
    pub fn immutable_pattern(&self, tag: &str) -> Option<&str> {
        self.immutable.iter().zip(&self.immutable_tags).find(|(p, _)| p.matches(tag)).map(|(_, s)| s.as_str())
    }

    /// True when `tag` is immutable.
    pub fn is_immutable(&self, tag: &str) -> bool {
        self.immutable_pattern(tag).is_some()
    }
}

/// The policy of a namespace (the default, which deletes nothing, if it never had one).
pub async fn of_namespace(state: &AppState, ns: &Namespace) -> Result<Policy> {
    match state.db.policies().get(ns.id).await? {
        Some(row) => Policy::from_row(&row),
        None => Ok(Policy::default()),
    }
}

/// The policy, for a caller who may read the namespace.
pub async fn show<N>(state: &AppState, access: &NamespaceAccess<N>) -> Result<Policy> {
    of_namespace(state, access.namespace()).await
}

/// The audit attempt of changing namespace `name`'s policy.
pub fn updating(name: &str) -> Attempt {
    Attempt::new("namespace.lifecycle", format!("namespace/{name}"))
}

/// Replaces the policy; the check was made for [`updating`].
pub async fn update(state: &AppState, access: &NamespaceAccess<Manage>, policy: Policy) -> Result<Policy> {
    state.db.policies().set(access.namespace().id, &policy.to_row()).await?;
    let detail = json!({
        "untagged_days": policy.untagged_days,
        "retention": policy.retention,
        "immutable_tags": policy.immutable_tags,
    });
    access.record(state, Some(detail)).await;
    Ok(policy)
}

/// The immutable pattern that forbids moving or deleting `tag` of `name`, if one does.
pub async fn immutable_pattern(state: &AppState, name: &RepositoryName, tag: &str) -> Result<Option<String>> {
    let Some(ns) = state.auth.policy.namespace(&state.db, name.namespace()).await? else { return Ok(None) };
    let policy = of_namespace(state, &ns).await?;
    Ok(policy.immutable_pattern(tag).map(str::to_owned))
}

/// Refuses deleting `tag` of `name` when it is immutable.
pub async fn check_tag_deletable(state: &AppState, name: &RepositoryName, tag: &str) -> Result<()> {
    match immutable_pattern(state, name, tag).await? {
        Some(p) => Err(Error::Denied(immutable_message(name, tag, &p, "deleted"))),
        None => Ok(()),
    }
}

/// Refuses deleting manifest `digest` of `name` when an immutable tag points at it.
pub async fn check_manifest_deletable(
    state: &AppState,
    name: &RepositoryName,
    repo: RepositoryId,
    digest: &Digest,
) -> Result<()> {
    let Some(ns) = state.auth.policy.namespace(&state.db, name.namespace()).await? else { return Ok(()) };
    let policy = of_namespace(state, &ns).await?;
    if policy.immutable_tags.is_empty() {
        return Ok(());
    }
    for tag in state.db.tags().pointing_at(repo, digest).await? {
        if let Some(p) = policy.immutable_pattern(&tag) {
            return Err(Error::Denied(format!(
                "manifest {digest} of {name} carries tag {tag}, which is immutable (it matches the namespace's \
                 immutable pattern {p:?}), so it cannot be deleted; an admin of the namespace can change its immutable patterns"
            )));
        }
    }
    Ok(())
}

/// Why an immutable tag refuses a change: "tag v1 of team/app is immutable…".
pub fn immutable_message(name: &RepositoryName, tag: &str, pattern: &str, done: &str) -> String {
    format!(
        "tag {tag} of {name} is immutable (it matches the namespace's immutable pattern {pattern:?}) and cannot be \
         {done}; push under a new tag, or ask an admin of the namespace to change its immutable patterns"
    )
}

/// A tag that goes.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DoomedTag {
    /// `<namespace>/<repository>`.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The manifest it points at.
    pub digest: String,
    /// Which rule takes it, and why.
    #[schema(value_type = Object)]
    pub reason: TagReason,
}

/// A manifest that goes.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DoomedManifest {
    /// `<namespace>/<repository>`.
    pub repository: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What a namespace's policy deletes (or would, for a dry run).
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct Outcome {
    /// Tags retention takes.
    pub tags: Vec<DoomedTag>,
    /// Manifests that go: untagged past the policy's days, or left untagged by retention.
    pub manifests: Vec<DoomedManifest>,
}

/// What the namespace's policy would delete if a GC run started now.
pub async fn preview(state: &AppState, ns: &Namespace) -> Result<Outcome> {
    let policy = of_namespace(state, ns).await?;
    apply(state, ns, &policy, true).await.map(|(outcome, _)| outcome)
}

/// Applies the policy to every repository of the namespace, or with `dry`
/// only works out what it would delete. Returns what went (or would go) and
/// the errors met, each of which leaves its object for the next run.
pub async fn apply(state: &AppState, ns: &Namespace, policy: &Policy, dry: bool) -> Result<(Outcome, Vec<String>)> {
    let mut outcome = Outcome::default();
    let mut errors = Vec::new();
    if policy.retention.is_empty() && policy.untagged_days.is_none() {
        return Ok((outcome, errors));
    }
    let at = now();
    let days = policy.untagged_days.map(i64::from);
    for (repo, name) in state.db.repositories().all_in_namespace(&ns.name).await? {
        let short = name.strip_prefix(&format!("{}/", ns.name)).unwrap_or(&name).to_owned();
        let tags = state.db.tags().rows(repo).await?;
        let chosen = plan::retention(policy, &short, &tags, at);
        let mut gone_tags = Vec::new();
        for (t, reason) in chosen {
            let deleted = dry || state.db.tags().delete_if_unchanged(repo, &t).await?;
            if deleted {
                outcome.tags.push(DoomedTag {
                    repository: name.clone(),
                    tag: t.name.clone(),
                    digest: t.digest.to_string(),
                    reason,
                });
                gone_tags.push(t);
            }
        }
        // Read again after the deletions: their `untagged_at` is what deleting the manifests re-checks.
        let (tags, untagging_from) =
            if dry { (tags, gone_tags.as_slice()) } else { (state.db.tags().rows(repo).await?, &[][..]) };
        let left = plan::tags_left(&tags, untagging_from);
        let untagging: BTreeSet<Digest> =
            gone_tags.iter().map(|t| t.digest).filter(|d| left.get(d).copied().unwrap_or(0) == 0).collect();
        let rows = state.db.manifests().rows(repo).await?;
        let sizes: HashMap<Digest, u64> = rows.iter().map(|m| (m.digest, m.size)).collect();
        let mut pending = plan::unkept(&rows, &left, days, &untagging, at);
        if dry {
            for (digest, _) in pending {
                let size = sizes.get(&digest).copied().unwrap_or(0);
                outcome.manifests.push(DoomedManifest { repository: name.clone(), digest: digest.to_string(), size });
            }
            continue;
        }
        // An index goes before what it lists; what one still listed is tried again after it.
        for _ in 0..4 {
            let mut skipped = Vec::new();
            let before = pending.len();
            for (digest, untagged_at) in pending {
                match state.db.manifests().delete_if_unkept(repo, &digest, untagged_at).await {
                    Ok(Some(size)) => outcome.manifests.push(DoomedManifest {
                        repository: name.clone(),
                        digest: digest.to_string(),
                        size,
                    }),
                    Ok(None) => skipped.push((digest, untagged_at)),
                    Err(e) => errors.push(format!("deleting manifest {name}@{digest}: {e}")),
                }
            }
            if skipped.len() == before || skipped.is_empty() {
                break;
            }
            pending = skipped;
        }
    }
    Ok((outcome, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: serde_json::Value) -> RetentionRule {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_policy_says_what_is_wrong_with_it() {
        let err = |days, rules: Vec<RetentionRule>, imm: &[&str]| {
            Policy::parse(days, rules, imm.iter().map(|s| s.to_string()).collect()).unwrap_err().to_string()
        };
        assert!(err(Some(0), vec![], &[]).contains("untagged_days must be 1"));
        assert!(err(None, vec![rule(json!({"tags": "*"}))], &[]).contains("exactly one of keep_newest"));
        assert!(err(None, vec![rule(json!({"tags": "*", "keep_newest": 1, "not_pulled_for_days": 2}))], &[])
            .contains("exactly one"));
        assert!(err(None, vec![rule(json!({"tags": "*", "keep_newest": 0}))], &[]).contains("at least 1"));
        assert!(err(None, vec![rule(json!({"tags": "[", "keep_newest": 1}))], &[]).contains("retention[0].tags"));
        assert!(err(None, vec![], &[""]).contains("may not be empty"));
        assert!(serde_json::from_value::<RetentionRule>(json!({"tags": "*", "keep": 1})).is_err());
    }

    #[test]
    fn immutable_patterns_match_as_globs() {
        let p = Policy::parse(None, vec![], vec!["v[0-9]*".into(), "release-?".into()]).unwrap();
        assert_eq!(p.immutable_pattern("v1.2"), Some("v[0-9]*"));
        assert_eq!(p.immutable_pattern("release-a"), Some("release-?"));
        assert!(!p.is_immutable("latest") && !p.is_immutable("release-10") && !p.is_immutable("vx"));
    }
}
