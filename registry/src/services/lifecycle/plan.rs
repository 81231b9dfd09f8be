//! What a namespace's lifecycle rules would delete in one repository, worked
//! out from its tags and manifests without touching the database: the same
//! plan serves a dry run and a real one.
//!
//! Retention picks tags. Then a manifest is **kept** when a tag points at
//! it, or it is untagged but has not expired (the untagged-manifest policy's
//! age, or it lost its last tag to this plan's retention), or something kept
//! needs it: a kept index lists it, a kept referrer names it as `subject`,
//! or it is a referrer whose subject is kept. An untagged manifest that a
//! stored index lists (a platform's image), or whose `subject` is stored in
//! the repository (a signature, an SBOM), lives and dies with that index or
//! subject: it is never kept on its own account. Every other manifest goes.

use std::collections::{BTreeSet, HashMap};

use damselfly_core::Digest;

use super::{Policy, RetentionRule};
use crate::metadata::{ManifestRow, TagRow};

/// Why a tag goes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TagReason {
    /// Beyond the newest N the rule keeps.
    NotAmongNewest {
        /// The rule's pattern.
        tags: String,
        /// How many it keeps.
        keep: u32,
    },
    /// Not pulled (nor pushed) within the rule's days.
    NotPulledFor {
        /// The rule's pattern.
        tags: String,
        /// The rule's days.
        days: u32,
    },
}

/// The tags retention takes from one repository, each with the first rule that chose it.
pub fn retention(policy: &Policy, repository: &str, tags: &[TagRow], now: i64) -> Vec<(TagRow, TagReason)> {
    let mut chosen: Vec<(TagRow, TagReason)> = Vec::new();
    let mut take = |t: &TagRow, why: TagReason| {
        if !chosen.iter().any(|(c, _)| c.name == t.name) {
            chosen.push((t.clone(), why));
        }
    };
    for rule in &policy.retention {
        if !rule.covers_repository(repository) {
            continue;
        }
        // Immutable tags are never deleted, nor counted among the newest.
        let mut matching: Vec<&TagRow> =
            tags.iter().filter(|t| rule.covers_tag(&t.name) && !policy.is_immutable(&t.name)).collect();
        match rule {
            RetentionRule { keep_newest: Some(keep), .. } => {
                matching.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then_with(|| a.name.cmp(&b.name)));
                for t in matching.into_iter().skip(*keep as usize) {
                    take(t, TagReason::NotAmongNewest { tags: rule.tags.clone(), keep: *keep });
                }
            }
            RetentionRule { not_pulled_for_days: Some(days), .. } => {
                let before = now - i64::from(*days) * 86_400;
                for t in matching {
                    let last_use = t.pulled_at.unwrap_or(0).max(t.pushed_at);
                    if last_use < before {
                        take(t, TagReason::NotPulledFor { tags: rule.tags.clone(), days: *days });
                    }
                }
            }
            _ => {}
        }
    }
    chosen.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    chosen
}

/// The manifests of one repository that go, once the tags in `untagging`
/// are gone: in the order to delete them (an index before the manifests it
/// lists), each with the `untagged_at` it was decided on (`now` where none
/// is recorded yet).
pub fn unkept(
    rows: &[ManifestRow],
    tags_left: &HashMap<Digest, usize>,
    untagged_days: Option<i64>,
    untagging: &BTreeSet<Digest>,
    now: i64,
) -> Vec<(Digest, i64)> {
    let stored: BTreeSet<Digest> = rows.iter().map(|m| m.digest).collect();
    let listed: BTreeSet<Digest> = rows.iter().flat_map(|m| m.children.iter().copied()).collect();
    let tagged = |m: &ManifestRow| tags_left.get(&m.digest).copied().unwrap_or(0) > 0;
    let attached = |m: &ManifestRow| {
        !tagged(m) && (listed.contains(&m.digest) || m.subject.is_some_and(|s| s != m.digest && stored.contains(&s)))
    };
    let expired = |m: &ManifestRow| {
        if untagging.contains(&m.digest) {
            return true;
        }
        match (untagged_days, m.untagged_at) {
            (Some(days), Some(at)) => at <= now - days * 86_400,
            _ => false,
        }
    };
    let by_digest: HashMap<Digest, &ManifestRow> = rows.iter().map(|m| (m.digest, m)).collect();
    let mut kept: BTreeSet<Digest> = BTreeSet::new();
    let mut work: Vec<Digest> =
        rows.iter().filter(|m| tagged(m) || (!attached(m) && !expired(m))).map(|m| m.digest).collect();
    while let Some(d) = work.pop() {
        if !kept.insert(d) {
            continue;
        }
        let Some(m) = by_digest.get(&d) else { continue };
        work.extend(m.children.iter().filter(|c| stored.contains(c)).copied());
        if let Some(s) = m.subject.filter(|s| stored.contains(s)) {
            work.push(s);
        }
        work.extend(rows.iter().filter(|r| r.subject == Some(d) && attached(r)).map(|r| r.digest));
    }
    let mut gone: Vec<&ManifestRow> = rows.iter().filter(|m| !kept.contains(&m.digest)).collect();
    // Indexes first: a manifest an index still lists is not deleted.
    gone.sort_by_key(|m| (m.children.is_empty(), m.digest));
    gone.into_iter().map(|m| (m.digest, m.untagged_at.unwrap_or(now))).collect()
}

/// How many tags point at each manifest once `untagging` tags are gone.
pub fn tags_left(tags: &[TagRow], untagging: &[TagRow]) -> HashMap<Digest, usize> {
    let mut left: HashMap<Digest, usize> = HashMap::new();
    for t in tags {
        if !untagging.iter().any(|u| u.name == t.name) {
            *left.entry(t.digest).or_default() += 1;
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const NOW: i64 = 100 * DAY;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn tag(name: &str, m: &str, pushed_days_ago: i64, pulled_days_ago: Option<i64>) -> TagRow {
        TagRow {
            name: name.into(),
            digest: d(m),
            pushed_at: NOW - pushed_days_ago * DAY,
            pulled_at: pulled_days_ago.map(|p| NOW - p * DAY),
        }
    }

    fn row(m: &str, untagged_days_ago: Option<i64>) -> ManifestRow {
        ManifestRow {
            digest: d(m),
            subject: None,
            tagged: untagged_days_ago.is_none(),
            untagged_at: untagged_days_ago.map(|a| NOW - a * DAY),
            children: Vec::new(),
            size: 10,
        }
    }

    fn policy(json: &str, immutable: &[&str]) -> Policy {
        Policy::parse(None, serde_json::from_str(json).unwrap(), immutable.iter().map(|s| s.to_string()).collect())
            .unwrap()
    }

    fn names(chosen: &[(TagRow, TagReason)]) -> Vec<&str> {
        chosen.iter().map(|(t, _)| t.name.as_str()).collect()
    }

    #[test]
    fn keep_newest_deletes_the_older_matching_tags_but_never_an_immutable_one() {
        let tags = [
            tag("v1", "a", 5, None),
            tag("v2", "b", 4, None),
            tag("v3", "c", 3, None),
            tag("v4", "d", 2, None),
            tag("latest", "d", 1, None),
            tag("v0-locked", "e", 9, None),
        ];
        let p = policy(r#"[{"tags": "v*", "keep_newest": 2}]"#, &["*-locked"]);
        assert_eq!(names(&retention(&p, "app", &tags, NOW)), ["v1", "v2"]);
    }

    #[test]
    fn not_pulled_counts_the_last_pull_or_push_whichever_is_later() {
        let tags = [
            tag("old-unpulled", "a", 40, None),
            tag("old-pulled-lately", "b", 40, Some(2)),
            tag("new", "c", 3, None),
            tag("old-pulled-long-ago", "d", 60, Some(45)),
        ];
        let p = policy(r#"[{"tags": "*", "not_pulled_for_days": 30}]"#, &[]);
        assert_eq!(names(&retention(&p, "app", &tags, NOW)), ["old-pulled-long-ago", "old-unpulled"]);
    }

    #[test]
    fn rules_can_be_limited_to_some_repositories() {
        let tags = [tag("t1", "a", 5, None), tag("t2", "b", 4, None)];
        let p = policy(r#"[{"repositories": "ci-*", "tags": "*", "keep_newest": 1}]"#, &[]);
        assert_eq!(names(&retention(&p, "ci-builds", &tags, NOW)), ["t1"]);
        assert!(retention(&p, "app", &tags, NOW).is_empty());
    }

    #[test]
    fn untagged_manifests_go_after_their_days_unless_an_index_or_a_tagged_referrer_needs_them() {
        let mut index = row("index", None);
        index.children = vec![d("child")];
        let mut tagged_sig = row("tagged-sig", None);
        tagged_sig.subject = Some(d("signed"));
        let rows = vec![
            index,
            row("child", Some(50)),
            row("old", Some(50)),
            row("young", Some(2)),
            row("signed", Some(50)),
            tagged_sig,
        ];
        let left: HashMap<Digest, usize> = [(d("index"), 1), (d("tagged-sig"), 1)].into_iter().collect();
        let gone = unkept(&rows, &left, Some(30), &BTreeSet::new(), NOW);
        assert_eq!(gone, [(d("old"), NOW - 50 * DAY)]);
        // Without the policy nothing untagged goes.
        assert!(unkept(&rows, &left, None, &BTreeSet::new(), NOW).is_empty());
    }

    #[test]
    fn an_untagged_referrer_lives_and_dies_with_its_subject() {
        let mut sig_of_kept = row("sig-of-kept", Some(50));
        sig_of_kept.subject = Some(d("kept"));
        let mut sig_of_gone = row("sig-of-gone", Some(1));
        sig_of_gone.subject = Some(d("gone"));
        let mut dangling = row("dangling", Some(50));
        dangling.subject = Some(d("never-pushed"));
        let rows = vec![row("kept", None), sig_of_kept, row("gone", Some(50)), sig_of_gone, dangling];
        let left: HashMap<Digest, usize> = [(d("kept"), 1)].into_iter().collect();
        let gone: BTreeSet<Digest> =
            unkept(&rows, &left, Some(30), &BTreeSet::new(), NOW).into_iter().map(|(g, _)| g).collect();
        assert_eq!(gone, [d("gone"), d("sig-of-gone"), d("dangling")].into_iter().collect());
    }

    #[test]
    fn a_manifest_retention_untags_goes_at_once_with_its_referrers_and_an_index_goes_before_its_children() {
        let mut index = row("index", None);
        index.children = vec![d("child")];
        let mut sig = row("sig", Some(0));
        sig.subject = Some(d("index"));
        let rows = vec![index, row("child", Some(0)), sig, row("other", Some(0))];
        let untagging: BTreeSet<Digest> = [d("index")].into_iter().collect();
        let gone = unkept(&rows, &HashMap::new(), None, &untagging, NOW);
        let order: Vec<Digest> = gone.iter().map(|(g, _)| *g).collect();
        assert_eq!(order.len(), 3, "index, its child and its signature go; `other` was untagged before and stays");
        assert_eq!(order[0], d("index"));
        assert!(order.contains(&d("child")) && order.contains(&d("sig")));
    }
}
