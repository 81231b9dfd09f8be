//! `/api/v1/audit`: reading the audit log. The system administrator reads
//! all of it; a tenant's admins and owners read their tenants' events.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiResult, ErrorBody};
use super::Params;
use crate::metadata;
use crate::services::access::{self, Caller};
use crate::services::audit::{self, Filter, Limit};
use crate::state::AppState;

/// Which events to return.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this tenant's events. Tenant admins get all their tenants' events without it.
    pub tenant: Option<String>,
    /// Only this actor's: a username or `robot$<tenant>+<name>`.
    pub actor: Option<String>,
    /// Only this action, e.g. `role.grant`.
    pub action: Option<String>,
    /// Only events at or after these Unix seconds.
    pub since: Option<i64>,
    /// Only events after this event id: pass the last id of a page to get the next.
    pub after: Option<i64>,
    /// At most this many events (no more than 1000 are returned); 100 if absent.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

/// One recorded action.
#[derive(Serialize, ToSchema)]
pub struct AuditEvent {
    /// Sequence number, increasing.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who: a username, `robot$<tenant>+<name>`, or `anonymous`.
    pub actor: String,
    /// What, e.g. `login`, `token.issue`, `role.grant`, `robot.create`.
    pub action: String,
    /// To what, e.g. `user/alice`, `namespace/team`, `team/app:1.0`.
    pub object: String,
    /// The tenant the object belongs to, if any.
    pub tenant: Option<String>,
    /// Client address.
    pub source: String,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    /// What changed, if recorded.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

impl From<metadata::AuditEvent> for AuditEvent {
    fn from(e: metadata::AuditEvent) -> Self {
        let detail = audit::detail(&e);
        AuditEvent {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            object: e.object,
            tenant: e.tenant,
            source: e.source,
            outcome: e.outcome,
            detail,
        }
    }
}

/// A page of the audit log.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Oldest first.
    pub events: Vec<AuditEvent>,
}

/// Audit events, oldest first (system administrator: all; tenant admins and owners: their tenants').
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    operation_id = "listAuditEvents",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Matching events, oldest first", body = AuditPage),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not an admin or owner of the tenant asked for, or of any tenant", body = ErrorBody),
        (status = 404, description = "No such tenant (system administrator only)", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = Limit::new(query.limit)?;
    let readable = access::audit_log(&state, &caller, query.tenant.as_deref()).await?;
    let filter = Filter { actor: query.actor, action: query.action, since: query.since, after: query.after };
    let events = audit::events(&state, &readable, filter, limit).await?;
    Ok(Json(AuditPage { events: events.into_iter().map(AuditEvent::from).collect() }))
}
