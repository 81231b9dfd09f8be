//! `/api/v1/audit`: reading the audit log. The system administrator reads
//! all of it; a tenant's admins and owners read their tenants' events.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::Params;
use crate::metadata::{self, AuditFilter, Role};
use crate::state::AppState;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

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
    /// At most this many events: 1 to 1000, 100 if absent.
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
        let detail = e.detail.map(|d| serde_json::from_str(&d).unwrap_or(serde_json::Value::String(d)));
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

/// The tenants whose events the caller may read; `None` for all events.
async fn readable_tenants(state: &AppState, caller: &Caller, named: Option<&str>) -> ApiResult<Option<Vec<i64>>> {
    let found = match named {
        Some(name) => state.db.tenancy().tenant(name).await?,
        None => None,
    };
    if caller.principal.is_system_admin() {
        return match (named, found) {
            (None, _) => Ok(None),
            (Some(_), Some(t)) => Ok(Some(vec![t.id.0])),
            (Some(name), None) => {
                Err(ApiError::NotFound(format!("tenant {name} does not exist; list tenants with GET /api/v1/tenants")))
            }
        };
    }
    let administered: BTreeSet<i64> = caller
        .bindings(state)
        .await?
        .into_iter()
        .filter(|b| b.namespace_id.is_none() && b.role >= Role::Admin)
        .map(|b| b.tenant_id.0)
        .collect();
    match (named, found) {
        (Some(_), Some(t)) if administered.contains(&t.id.0) => Ok(Some(vec![t.id.0])),
        // The same words whether the tenant exists or not.
        (Some(name), _) => Err(ApiError::Denied(format!(
            "reading tenant {name}'s audit log takes the admin or owner role on it, which {} does not hold",
            caller.actor()
        ))),
        (None, _) if administered.is_empty() => Err(ApiError::Denied(format!(
            "the audit log is open to the system administrator and to tenant admins and owners; {} is neither",
            caller.actor()
        ))),
        (None, _) => Ok(Some(administered.into_iter().collect())),
    }
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
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n) if n >= 1 => n.min(MAX_LIMIT),
        Some(_) => {
            return Err(ApiError::InvalidRequest(format!("limit must be between 1 and {MAX_LIMIT}")));
        }
    };
    let tenant_ids = readable_tenants(&state, &caller, query.tenant.as_deref()).await?;
    let filter = AuditFilter {
        tenant_ids,
        actor: query.actor,
        action: query.action,
        after_id: query.after,
        since: query.since,
        limit,
    };
    let events = state.db.audit().query(&filter).await?;
    Ok(Json(AuditPage { events: events.into_iter().map(AuditEvent::from).collect() }))
}
