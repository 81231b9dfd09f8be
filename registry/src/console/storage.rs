//! Storage in the console: a namespace's use and quota, its lifecycle
//! policy (untagged manifests, retention rules, immutable tags) with what
//! the policy would delete now, and a tenant's use and quota with each of
//! its namespaces'. The same services as the API decide who may see or
//! change what.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::{done, failed, human_bytes, notice, render, segment, Chrome, ConsoleResult, Posted, SignedIn};
use crate::metadata::Usage;
use crate::services::access::{self, Manage, Read};
use crate::services::lifecycle::{self, plan::TagReason, Outcome, Policy, RetentionRule};
use crate::services::quota::{self, Limits};
use crate::services::{Error, Thing};
use crate::state::AppState;

const MIB: i64 = 1024 * 1024;

#[derive(Template)]
#[template(path = "namespace_storage.html")]
struct NamespaceStoragePage {
    chrome: Chrome,
    namespace: String,
    tenant: String,
    usage: Usage,
    policy: Policy,
    preview: Outcome,
    /// Admin or owner of the tenant: sets the namespace's quota.
    may_set_quota: bool,
    /// Admin or owner of the namespace or tenant: changes its policy.
    may_change_policy: bool,
}

#[derive(Template)]
#[template(path = "tenant_storage.html")]
struct TenantStoragePage {
    chrome: Chrome,
    tenant: String,
    usage: Usage,
    namespaces: Vec<(String, Usage)>,
    may_set_quota: bool,
}

/// Both pages show use against limits the same way.
pub trait Shows {
    /// `12.0 MiB of 1.0 GiB (1%)`, or `12.0 MiB (no limit)`.
    fn bytes(&self, u: &Usage) -> String {
        match u.quota_bytes {
            Some(q) if q > 0 => format!(
                "{} of {} ({}%)",
                human_bytes(u.used_bytes.max(0) as u64),
                human_bytes(q as u64),
                u.used_bytes.max(0) * 100 / q
            ),
            Some(q) => format!("{} of {} ", human_bytes(u.used_bytes.max(0) as u64), human_bytes(q as u64)),
            None => format!("{} (no limit)", human_bytes(u.used_bytes.max(0) as u64)),
        }
    }

    /// `3 of 10`, or `3 (no limit)`.
    fn repositories(&self, u: &Usage) -> String {
        match u.quota_repositories {
            Some(q) => format!("{} of {q}", u.used_repositories),
            None => format!("{} (no limit)", u.used_repositories),
        }
    }

    /// The byte limit in MiB for a form field, empty for none.
    fn limit_mib(&self, u: &Usage) -> String {
        u.quota_bytes.map(|q| (q / MIB).to_string()).unwrap_or_default()
    }

    /// The repository limit for a form field, empty for none.
    fn limit_repositories(&self, u: &Usage) -> String {
        u.quota_repositories.map(|q| q.to_string()).unwrap_or_default()
    }
}

impl Shows for NamespaceStoragePage {}
impl Shows for TenantStoragePage {}

impl NamespaceStoragePage {
    fn base(&self) -> String {
        format!("/console/namespaces/{}/storage", segment(&self.namespace))
    }

    fn namespace_link(&self) -> String {
        format!("/console/namespaces/{}", segment(&self.namespace))
    }

    fn tenant_link(&self) -> String {
        format!("/console/tenants/{}/storage", segment(&self.tenant))
    }

    fn untagged_days(&self) -> String {
        self.policy.untagged_days.map(|d| d.to_string()).unwrap_or_default()
    }

    fn immutable_lines(&self) -> String {
        self.policy.immutable_tags.join("\n")
    }

    fn rule(&self, r: &RetentionRule) -> String {
        let repos = r.repositories.as_deref().map(|p| format!(" in repositories {p}")).unwrap_or_default();
        match (r.keep_newest, r.not_pulled_for_days) {
            (Some(n), _) => format!("tags {}{repos}: keep the newest {n}", r.tags),
            (_, Some(d)) => format!("tags {}{repos}: delete those not pulled for {d} days", r.tags),
            _ => r.tags.clone(),
        }
    }

    fn reason(&self, r: &TagReason) -> String {
        match r {
            TagReason::NotAmongNewest { tags, keep } => format!("not among the newest {keep} of {tags}"),
            TagReason::NotPulledFor { tags, days } => format!("{tags}: not pulled for {days} days"),
        }
    }

    fn size(&self, n: &u64) -> String {
        human_bytes(*n)
    }
}

impl TenantStoragePage {
    fn ns_link(&self, name: &str) -> String {
        format!("/console/namespaces/{}/storage", segment(name))
    }

    fn action(&self) -> String {
        format!("/console/tenants/{}/storage/quota", segment(&self.tenant))
    }
}

/// `GET /console/namespaces/{namespace}/storage`.
pub async fn namespace(
    State(state): State<AppState>,
    who: SignedIn,
    Path(name): Path<String>,
) -> ConsoleResult<Response> {
    let caller = who.caller();
    let access = access::namespace::<Read>(&state, &caller, &name, None).await?;
    let ns = access.namespace().clone();
    let usage = quota::of_namespace(&state, &access).await?;
    let policy = lifecycle::show(&state, &access).await?;
    let preview = lifecycle::preview(&state, &ns).await?;
    // The checks a change makes decide what forms are shown; the POSTs check again.
    let may_change_policy = access::namespace::<Manage>(&state, &caller, &name, None).await.is_ok();
    let may_set_quota = access::tenant::<Manage>(&state, &caller, &ns.tenant, None).await.is_ok();
    let chrome = who.chrome(&state, "tenants").await;
    Ok(render(&NamespaceStoragePage {
        chrome,
        namespace: ns.name,
        tenant: ns.tenant,
        usage,
        policy,
        preview,
        may_set_quota,
        may_change_policy,
    }))
}

/// `GET /console/tenants/{tenant}/storage`.
pub async fn tenant(State(state): State<AppState>, who: SignedIn, Path(name): Path<String>) -> ConsoleResult<Response> {
    let caller = who.caller();
    let access = access::tenant::<Read>(&state, &caller, &name, None).await?;
    let usage = quota::of_tenant(&state, &access).await?;
    let mut namespaces = Vec::new();
    for ns in crate::services::namespaces::visible(&state, &access).await? {
        namespaces.push((ns.name.clone(), state.db.storage().namespace(ns.id).await?));
    }
    let may_set_quota = caller.principal.is_system_admin();
    let chrome = who.chrome(&state, "tenants").await;
    Ok(render(&TenantStoragePage { chrome, tenant: access.tenant().name.clone(), usage, namespaces, may_set_quota }))
}

/// A quota form: limits in MiB and repositories; empty means no limit.
#[derive(Deserialize)]
pub struct QuotaForm {
    #[serde(default)]
    limit_mib: String,
    #[serde(default)]
    limit_repositories: String,
}

impl QuotaForm {
    fn limits(&self) -> Result<Limits, Error> {
        let number = |field: &str, v: &str| -> Result<Option<i64>, Error> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            v.parse::<i64>().ok().filter(|n| *n >= 0).map(Some).ok_or_else(|| {
                Error::invalid(
                    Thing::Field,
                    format!("{field} must be a whole number, 0 or more, or empty for no limit"),
                )
            })
        };
        let mib = number("the storage limit (MiB)", &self.limit_mib)?;
        let bytes = mib
            .map(|m| m.checked_mul(MIB).ok_or_else(|| Error::invalid(Thing::Field, "the storage limit is too large")))
            .transpose()?;
        Ok(Limits { bytes, repositories: number("the repository limit", &self.limit_repositories)? })
    }
}

/// `POST /console/namespaces/{namespace}/storage/quota` (tenant admin or owner).
pub async fn set_namespace_quota(
    State(state): State<AppState>,
    Path(name): Path<String>,
    posted: Posted<QuotaForm>,
) -> Response {
    let Posted { who, form, kept, .. } = posted;
    let back = format!("/console/namespaces/{}/storage", segment(&name));
    let set = async { quota::set_namespace(&state, &who.caller(), &name, form.limits()?).await };
    match set.await {
        Ok(_) => {
            done(&state, &who, &back, notice(format!("Quota of namespace {name} set; it applies to the next push.")))
                .await
        }
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}

/// `POST /console/tenants/{tenant}/storage/quota` (system administrator).
pub async fn set_tenant_quota(
    State(state): State<AppState>,
    Path(name): Path<String>,
    posted: Posted<QuotaForm>,
) -> Response {
    let Posted { who, form, kept, .. } = posted;
    let back = format!("/console/tenants/{}/storage", segment(&name));
    let set = async {
        let admin = access::system_admin(&state, &who.caller(), Some(quota::setting_tenant(&name))).await?;
        quota::set_tenant(&state, &admin, &name, form.limits()?).await
    };
    match set.await {
        Ok(_) => {
            done(&state, &who, &back, notice(format!("Quota of tenant {name} set; it applies to the next push."))).await
        }
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}

/// The policy form: untagged days (empty: keep them) and immutable patterns, one per line.
#[derive(Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    untagged_days: String,
    #[serde(default)]
    immutable_tags: String,
}

/// A retention rule to add.
#[derive(Deserialize)]
pub struct RuleForm {
    #[serde(default)]
    repositories: String,
    #[serde(default)]
    tags: String,
    /// `keep_newest` or `not_pulled_for_days`.
    #[serde(default)]
    kind: String,
    #[serde(default)]
    number: String,
}

/// Which rule to remove.
#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    index: usize,
}

/// Reads the policy, lets `change` edit it, and stores it as the API would.
async fn change_policy(
    state: &AppState,
    who: &SignedIn,
    name: &str,
    change: impl FnOnce(&mut Policy) -> Result<(), Error>,
) -> Result<Policy, Error> {
    let caller = who.caller();
    let access = access::namespace::<Manage>(state, &caller, name, Some(lifecycle::updating(name))).await?;
    let mut policy = lifecycle::show(state, &access).await?;
    change(&mut policy)?;
    let checked = Policy::parse(policy.untagged_days, policy.retention, policy.immutable_tags)?;
    lifecycle::update(state, &access, checked).await
}

/// `POST /console/namespaces/{namespace}/storage/policy`.
pub async fn set_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    posted: Posted<PolicyForm>,
) -> Response {
    let Posted { who, form, kept, .. } = posted;
    let back = format!("/console/namespaces/{}/storage", segment(&name));
    let changed = change_policy(&state, &who, &name, |p| {
        let days = form.untagged_days.trim();
        p.untagged_days = if days.is_empty() {
            None
        } else {
            Some(days.parse().map_err(|_| {
                Error::invalid(
                    Thing::Field,
                    "untagged days must be a whole number of days, or empty to keep untagged manifests",
                )
            })?)
        };
        p.immutable_tags =
            form.immutable_tags.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
        Ok(())
    });
    match changed.await {
        Ok(_) => done(&state, &who, &back, notice(format!("Lifecycle policy of {name} saved."))).await,
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}

/// `POST /console/namespaces/{namespace}/storage/rules`: adds a retention rule.
pub async fn add_rule(State(state): State<AppState>, Path(name): Path<String>, posted: Posted<RuleForm>) -> Response {
    let Posted { who, form, kept, .. } = posted;
    let back = format!("/console/namespaces/{}/storage", segment(&name));
    let changed = change_policy(&state, &who, &name, |p| {
        let n: u32 =
            form.number.trim().parse().map_err(|_| Error::invalid(Thing::Field, "give the rule a whole number"))?;
        let repositories = Some(form.repositories.trim().to_owned()).filter(|r| !r.is_empty());
        let tags = form.tags.trim().to_owned();
        let rule = match form.kind.as_str() {
            "keep_newest" => RetentionRule::new(repositories, tags, Some(n), None),
            "not_pulled_for_days" => RetentionRule::new(repositories, tags, None, Some(n)),
            _ => {
                return Err(Error::invalid(
                    Thing::Field,
                    "choose what the rule does: keep the newest, or delete those not pulled",
                ))
            }
        };
        p.retention.push(rule);
        Ok(())
    });
    match changed.await {
        Ok(_) => {
            done(
                &state,
                &who,
                &back,
                notice(format!("Retention rule added to {name}; the next garbage collection run applies it.")),
            )
            .await
        }
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}

/// `POST /console/namespaces/{namespace}/storage/rules/remove`.
pub async fn remove_rule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    posted: Posted<RemoveForm>,
) -> Response {
    let Posted { who, form, kept, .. } = posted;
    let back = format!("/console/namespaces/{}/storage", segment(&name));
    let changed = change_policy(&state, &who, &name, |p| {
        if form.index >= p.retention.len() {
            return Err(Error::invalid(Thing::Field, "that rule is gone already; reload the page"));
        }
        p.retention.remove(form.index);
        Ok(())
    });
    match changed.await {
        Ok(_) => done(&state, &who, &back, notice(format!("Retention rule removed from {name}."))).await,
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}
