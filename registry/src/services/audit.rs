//! Writing the audit log. A failed write is logged, never fails the action it records.

use crate::metadata::{NewAuditEvent, TenantId};
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
