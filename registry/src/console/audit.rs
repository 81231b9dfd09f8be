//! The audit log, filterable by tenant, actor, action and period, newest
//! first. Who may read which events is the API's rule: the system
//! administrator all, tenant admins and owners their tenants'.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

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
    /// An action, or a dotted part of one (`robot`, `push`).
    #[serde(default)]
    action: String,
    /// `hour`, `day`, `week` or `all`.
    #[serde(default)]
    period: String,
}

/// The actions to choose from, grouped by their first part (`robot` for
/// `robot.create` and `robot.revoke`); an action of one part stands alone.
struct ActionGroup {
    /// The first part, which also matches every action of the group.
    name: String,
    /// The actions of the group, or just the one.
    actions: Vec<String>,
}

impl ActionGroup {
    /// An action of one part (`login`), which is its own group.
    fn stands_alone(&self) -> bool {
        self.actions.len() == 1 && self.actions[0] == self.name
    }
}

/// An event as a row of the log.
struct EventRow {
    at: String,
    actor: String,
    action: String,
    object: String,
    tenant: String,
    outcome: String,
    source: String,
    /// The detail as lines of `what: value`, times in UTC.
    detail: Vec<String>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    filter: Filter,
    groups: Vec<ActionGroup>,
    events: Vec<EventRow>,
}

impl AuditPage {
    fn period_is(&self, p: &str) -> bool {
        self.filter.period == p || (p == "day" && self.filter.period.is_empty())
    }

    fn action_is(&self, a: &str) -> bool {
        self.filter.action.trim() == a
    }

    /// An action asked for (in the URL) that is none of the choices: shown as asked.
    fn other_action(&self) -> Option<&str> {
        let asked = self.filter.action.trim();
        let listed = self.groups.iter().any(|g| g.name == asked || g.actions.iter().any(|a| a == asked));
        (!asked.is_empty() && !listed).then_some(asked)
    }
}

fn given(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn groups(actions: Vec<String>) -> Vec<ActionGroup> {
    let mut groups: Vec<ActionGroup> = Vec::new();
    for action in actions {
        let first = action.split('.').next().unwrap_or_default().to_owned();
        match groups.last_mut() {
            Some(g) if g.name == first => g.actions.push(action),
            _ => groups.push(ActionGroup { name: first, actions: vec![action] }),
        }
    }
    groups
}

/// A detail value as people read it: times of `…_at` keys in UTC, a robot's
/// scope as `developer on web`, lists joined.
fn value_text(key: &str, v: &Value) -> String {
    match v {
        Value::Null => "none".to_owned(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        Value::Number(n) if key.ends_with("_at") => n.as_i64().map_or_else(|| n.to_string(), utc),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "none".to_owned(),
        Value::Array(items) => items.iter().map(|i| value_text(key, i)).collect::<Vec<_>>().join(", "),
        Value::Object(o) if o.contains_key("role") => {
            let on = o.get("namespace").and_then(Value::as_str).unwrap_or("the whole tenant");
            format!("{} on {on}", value_text("role", &o["role"]))
        }
        Value::Object(o) => {
            o.iter().map(|(k, v)| format!("{}: {}", words(k), value_text(k, v))).collect::<Vec<_>>().join(", ")
        }
    }
}

fn words(key: &str) -> String {
    key.replace('_', " ")
}

/// The detail as lines; a token's id, which its object was, is one of them.
fn detail_lines(e: &AuditEvent) -> Vec<String> {
    let mut lines = match audit::detail(e) {
        Some(Value::Object(o)) => o.iter().map(|(k, v)| format!("{}: {}", words(k), value_text(k, v))).collect(),
        Some(other) => vec![value_text("", &other)],
        None => Vec::new(),
    };
    if e.action == "token.issue" {
        lines.push(format!("token id: {}", e.object));
    }
    lines
}

/// What the event acted on. A token's object is its random id, which says
/// nothing: it is named by what it grants instead.
fn object_text(e: &AuditEvent) -> String {
    if e.action != "token.issue" {
        return e.object.clone();
    }
    match audit::detail(e).as_ref().and_then(|d| d["granted"].as_array()) {
        Some(granted) if !granted.is_empty() => {
            let scopes: Vec<String> = granted.iter().map(|g| value_text("", g)).collect();
            format!("access token for {}", scopes.join(", "))
        }
        _ => "access token (no repository access)".to_owned(),
    }
}

fn row(e: AuditEvent) -> EventRow {
    EventRow {
        at: utc(e.at).trim_end_matches(" UTC").to_owned(),
        object: object_text(&e),
        detail: detail_lines(&e),
        actor: e.actor,
        action: e.action,
        tenant: e.tenant.unwrap_or_default(),
        outcome: e.outcome,
        source: e.source,
    }
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
    let groups = groups(audit::actions(&state, &readable).await?);
    let events = events.into_iter().map(row).collect();
    Ok(render(&AuditPage { chrome: who.chrome(&state, "audit").await, filter, groups, events }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, object: &str, detail: Value) -> AuditEvent {
        AuditEvent {
            id: 1,
            at: 0,
            actor: "admin".into(),
            action: action.into(),
            object: object.into(),
            tenant: None,
            source: String::new(),
            outcome: "success".into(),
            detail: Some(detail.to_string()),
        }
    }

    #[test]
    fn details_read_as_words_with_times_in_utc() {
        let robot = event(
            "robot.create",
            "robot/robot$acme+ci",
            serde_json::json!({"expires_at": 1_764_158_400, "scopes": [{"namespace": "web", "role": "developer"}, {"namespace": null, "role": "viewer"}]}),
        );
        assert_eq!(
            detail_lines(&robot),
            ["expires at: 2025-11-26 12:00:00 UTC", "scopes: developer on web, viewer on the whole tenant"]
        );
        let token = event(
            "token.issue",
            "5f0c-uuid",
            serde_json::json!({"requested": ["repository:web/app:pull,push"], "granted": ["repository:web/app:pull"]}),
        );
        assert_eq!(object_text(&token), "access token for repository:web/app:pull");
        assert_eq!(
            detail_lines(&token),
            ["granted: repository:web/app:pull", "requested: repository:web/app:pull,push", "token id: 5f0c-uuid"]
        );
        let login = event("token.issue", "x", serde_json::json!({"requested": [], "granted": []}));
        assert_eq!(object_text(&login), "access token (no repository access)");
    }

    #[test]
    fn actions_are_grouped_by_their_first_part() {
        let g = groups(vec!["login".into(), "manifest.delete".into(), "manifest.push".into(), "robot.create".into()]);
        let shape: Vec<(&str, usize)> = g.iter().map(|g| (g.name.as_str(), g.actions.len())).collect();
        assert_eq!(shape, [("login", 1), ("manifest", 2), ("robot", 1)]);
    }
}
