//! The audit log, filterable by tenant, actor, action and period, newest
//! first. Who may read which events is the API's rule: the system
//! administrator all, tenant admins and owners their tenants'.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{render, utc, Chrome, ConsoleResult, SignedIn};
use crate::metadata::{now, AuditEvent};
use crate::services::access;
use crate::services::audit::{self, Filter as Matching, Limit};
use crate::state::AppState;

/// Most events a page shows.
const LIMIT: i64 = 1000;

/// The filter form's fields; empty means any.
#[derive(Deserialize, Default)]
pub struct Filter {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    /// `hour`, `day`, `week` or `all`.
    #[serde(default)]
    period: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    filter: Filter,
    events: Vec<AuditEvent>,
}

impl AuditPage {
    fn at(&self, e: &AuditEvent) -> String {
        utc(e.at)
    }

    fn tenant(&self, e: &AuditEvent) -> String {
        e.tenant.clone().unwrap_or_default()
    }

    fn detail(&self, e: &AuditEvent) -> String {
        audit::detail(e).map(|d| d.to_string()).unwrap_or_default()
    }

    fn period_is(&self, p: &str) -> bool {
        self.filter.period == p || (p == "day" && self.filter.period.is_empty())
    }
}

fn given(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// `GET /console/audit`.
pub async fn list(
    State(state): State<AppState>,
    who: SignedIn,
    Query(filter): Query<Filter>,
) -> ConsoleResult<Response> {
    let since = match filter.period.as_str() {
        "hour" => Some(now() - 3600),
        "week" => Some(now() - 7 * 86_400),
        "all" => None,
        _ => Some(now() - 86_400),
    };
    let limit = Limit::new(Some(LIMIT))?;
    let readable = access::audit_log(&state, &who.caller(), given(&filter.tenant).as_deref()).await?;
    let matching = Matching { actor: given(&filter.actor), action: given(&filter.action), since, after: None };
    let mut events = audit::events(&state, &readable, matching, limit).await?;
    events.reverse();
    Ok(render(&AuditPage { chrome: who.chrome(&state, "audit").await, filter, events }))
}
