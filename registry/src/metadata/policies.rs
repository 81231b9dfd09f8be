//! The `namespace_policies` table: what a namespace's lifecycle rules say.
//! The rules' JSON is read and checked by `services::lifecycle`.

use sqlx::{AnyPool, Row};

use super::NamespaceId;

/// A namespace's lifecycle policy as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespacePolicy {
    /// Delete untagged manifests this many days after they lost their last tag; `None`: never.
    pub untagged_days: Option<i64>,
    /// Retention rules, a JSON array.
    pub retention: String,
    /// Immutable tag patterns, a JSON array of strings.
    pub immutable_tags: String,
}

/// The `namespace_policies` table.
pub struct Policies<'a> {
    pub(super) pool: &'a AnyPool,
}

fn policy(r: &sqlx::any::AnyRow, first: usize) -> Result<NamespacePolicy, sqlx::Error> {
    Ok(NamespacePolicy {
        untagged_days: r.try_get(first)?,
        retention: r.try_get(first + 1)?,
        immutable_tags: r.try_get(first + 2)?,
    })
}

impl Policies<'_> {
    /// A namespace's policy; `None` when it never had one (nothing is deleted, no tag is immutable).
    pub async fn get(&self, namespace: NamespaceId) -> Result<Option<NamespacePolicy>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT untagged_days, retention, immutable_tags FROM namespace_policies WHERE namespace_id = $1",
        )
        .bind(namespace.0)
        .fetch_optional(self.pool)
        .await?;
        row.as_ref().map(|r| policy(r, 0)).transpose()
    }

    /// Replaces a namespace's policy.
    pub async fn set(&self, namespace: NamespaceId, p: &NamespacePolicy) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO namespace_policies (namespace_id, untagged_days, retention, immutable_tags) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (namespace_id) DO UPDATE SET untagged_days = excluded.untagged_days, \
             retention = excluded.retention, immutable_tags = excluded.immutable_tags",
        )
        .bind(namespace.0)
        .bind(p.untagged_days)
        .bind(&p.retention)
        .bind(&p.immutable_tags)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// The names of the namespaces whose policy deletes something, by name.
    pub async fn deleting(&self) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT n.name FROM namespace_policies p JOIN namespaces n ON n.id = p.namespace_id \
             WHERE p.untagged_days IS NOT NULL OR p.retention <> '[]' ORDER BY n.name",
        )
        .fetch_all(self.pool)
        .await?;
        rows.iter().map(|r| r.try_get(0)).collect()
    }
}
