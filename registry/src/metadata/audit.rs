use sqlx::{AnyPool, Row};

use super::{now, TenantId};

/// One recorded action.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEvent {
    /// Sequence number.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who: a username, `robot$tenant+name`, or `anonymous`.
    pub actor: String,
    /// What, e.g. `login`, `token.issue`, `manifest.push`, `role.grant`.
    pub action: String,
    /// To what, e.g. `team/app:1.0` or `tenant/acme`.
    pub object: String,
    /// The tenant the object belongs to, if any.
    pub tenant: Option<String>,
    /// Client address.
    pub source: String,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    /// Extra JSON detail, if any.
    pub detail: Option<String>,
}

/// A new event to record.
pub struct NewAuditEvent<'a> {
    /// Who.
    pub actor: &'a str,
    /// What.
    pub action: &'a str,
    /// To what.
    pub object: &'a str,
    /// Owning tenant.
    pub tenant_id: Option<TenantId>,
    /// Client address.
    pub source: &'a str,
    /// `success`, `denied` or `failure`.
    pub outcome: &'a str,
    /// Extra JSON detail.
    pub detail: Option<String>,
}

/// Filters for reading the log; `None` matches everything.
#[derive(Default)]
pub struct AuditFilter {
    /// Only events of these tenants (an empty list matches only tenant-less events... use `None` for all).
    pub tenant_ids: Option<Vec<i64>>,
    /// Exact actor.
    pub actor: Option<String>,
    /// An action, or one dotted part of it: `push` matches `manifest.push`,
    /// `robot` matches `robot.create` and `robot.revoke`.
    pub action: Option<String>,
    /// Events after this id (for paging).
    pub after_id: Option<i64>,
    /// At or after this time.
    pub since: Option<i64>,
    /// Most events returned.
    pub limit: i64,
}

/// The `audit_events` table.
pub struct AuditLog<'a> {
    pub(super) pool: &'a AnyPool,
}

impl AuditLog<'_> {
    /// Records an event.
    pub async fn record(&self, e: NewAuditEvent<'_>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO audit_events (at, actor, action, object, tenant_id, source, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(now())
        .bind(e.actor)
        .bind(e.action)
        .bind(e.object)
        .bind(e.tenant_id.map(|t| t.0))
        .bind(e.source)
        .bind(e.outcome)
        .bind(e.detail)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// The actions recorded for these tenants (`None`: all), by name.
    pub async fn actions(&self, tenant_ids: Option<&[i64]>) -> Result<Vec<String>, sqlx::Error> {
        let tenant_clause = tenant_clause(tenant_ids, "WHERE");
        let sql = format!("SELECT DISTINCT e.action FROM audit_events e {tenant_clause} ORDER BY e.action");
        let rows = sqlx::query(&sql).fetch_all(self.pool).await?;
        rows.iter().map(|r| r.try_get(0)).collect()
    }

    /// Events matching the filter, oldest first.
    pub async fn query(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, sqlx::Error> {
        let tenant_clause = tenant_clause(f.tenant_ids.as_deref(), " AND");
        let sql = format!(
            "SELECT e.id, e.at, e.actor, e.action, e.object, t.name, e.source, e.outcome, e.detail \
             FROM audit_events e LEFT JOIN tenants t ON t.id = e.tenant_id \
             WHERE ($1 IS NULL OR e.actor = $1) \
             AND ($2 IS NULL OR e.action = $2 OR e.action LIKE $6 ESCAPE '\\' OR e.action LIKE $7 ESCAPE '\\' \
                  OR e.action LIKE $8 ESCAPE '\\') \
             AND e.id > $3 AND e.at >= $4{tenant_clause} ORDER BY e.id LIMIT $5"
        );
        // `_` and `%` in what was typed are literal, not wildcards.
        let part = f.action.as_deref().map(|a| a.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let rows = sqlx::query(&sql)
            .bind(f.actor.as_deref())
            .bind(f.action.as_deref())
            .bind(f.after_id.unwrap_or(0))
            .bind(f.since.unwrap_or(0))
            .bind(f.limit)
            .bind(part.as_ref().map(|p| format!("{p}.%")))
            .bind(part.as_ref().map(|p| format!("%.{p}")))
            .bind(part.as_ref().map(|p| format!("%.{p}.%")))
            .fetch_all(self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    object: r.try_get(4)?,
                    tenant: r.try_get(5)?,
                    source: r.try_get(6)?,
                    outcome: r.try_get(7)?,
                    detail: r.try_get(8)?,
                })
            })
            .collect()
    }
}

/// `<joiner> e.tenant_id IN (…)` for these tenants; nothing for all of them.
fn tenant_clause(tenant_ids: Option<&[i64]>, joiner: &str) -> String {
    // Tenant ids are integers from our own tables, so inlining them is safe.
    match tenant_ids {
        None => String::new(),
        Some([]) => format!("{joiner} 1 = 0"),
        Some(ids) => {
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            format!("{joiner} e.tenant_id IN ({})", list.join(","))
        }
    }
}
