//! The audit log: writing an event (a failed write is logged, never fails
//! the action it records), and reading the events a caller may read.

use super::{Error, Result, Thing};
use crate::metadata::{AuditEvent, AuditFilter, NewAuditEvent, TenantId};
use crate::state::AppState;

/// One event about to be recorded.
pub struct Event<'a> {
    /// Who.
    pub actor: &'a str,
    /// What: `login`, `token.issue`, `manifest.push`, …
    pub action: &'a str,
    /// To what.
    pub object: &'a str,
    /// Owning tenant, if any.
    pub tenant: Option<TenantId>,
    /// Client address.
    pub source: &'a str,
    /// `success`, `denied` or `failure`.
    pub outcome: &'a str,
    /// Extra JSON detail.
    pub detail: Option<serde_json::Value>,
}

/// Records an event.
pub async fn record(state: &AppState, e: Event<'_>) {
    let event = NewAuditEvent {
        actor: e.actor,
        action: e.action,
        object: e.object,
        tenant_id: e.tenant,
        source: e.source,
        outcome: e.outcome,
        detail: e.detail.map(|d| d.to_string()),
    };
    if let Err(err) = state.db.audit().record(event).await {
        tracing::error!(error = %err, action = e.action, object = e.object, "could not write the audit log");
    }
}

/// The tenants whose events a caller may read, as [`super::access::audit_log`] decided.
#[derive(Debug)]
pub struct Readable {
    /// `None` for every event (the system administrator).
    pub(super) tenant_ids: Option<Vec<i64>>,
}

/// How many events a page holds: 1 to 1000, 100 unless asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(i64);

impl Limit {
    const DEFAULT: i64 = 100;
    const MAX: i64 = 1000;

    /// `n` events, at most 1000; 100 for `None`.
    pub fn new(n: Option<i64>) -> Result<Limit> {
        match n {
            None => Ok(Limit(Self::DEFAULT)),
            Some(n) if n >= 1 => Ok(Limit(n.min(Self::MAX))),
            Some(_) => Err(Error::invalid(Thing::Field, format!("limit must be between 1 and {}", Self::MAX))),
        }
    }
}

/// Which of the readable events to return; `None` matches any.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this actor's: a username or `robot$<tenant>+<name>`.
    pub actor: Option<String>,
    /// Only this action, e.g. `role.grant`, or the actions with this dotted
    /// part: `push` for `manifest.push`, `robot` for every `robot.…`.
    pub action: Option<String>,
    /// Only events at or after these Unix seconds.
    pub since: Option<i64>,
    /// Only events after this event id.
    pub after: Option<i64>,
}

/// A page of the events the caller may read, oldest first.
pub async fn events(state: &AppState, readable: &Readable, filter: Filter, limit: Limit) -> Result<Vec<AuditEvent>> {
    let filter = AuditFilter {
        tenant_ids: readable.tenant_ids.clone(),
        actor: filter.actor,
        action: filter.action,
        after_id: filter.after,
        since: filter.since,
        limit: limit.0,
    };
    Ok(state.db.audit().query(&filter).await?)
}

/// The actions recorded among the events the caller may read, by name: the
/// choices of a filter.
pub async fn actions(state: &AppState, readable: &Readable) -> Result<Vec<String>> {
    Ok(state.db.audit().actions(readable.tenant_ids.as_deref()).await?)
}

/// An event's detail as JSON; detail that is not JSON is a JSON string.
pub fn detail(event: &AuditEvent) -> Option<serde_json::Value> {
    let text = event.detail.as_deref()?;
    Some(serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned())))
}
