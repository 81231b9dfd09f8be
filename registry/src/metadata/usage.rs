//! The `namespace_storage` and `tenant_storage` tables: quotas and what is
//! used against them.
//!
//! What counts: a blob once per namespace however many of its repositories
//! link it; a manifest's bytes in each repository that stores it (that is
//! where they are kept); a repository while it holds a blob or a manifest.
//! A tenant's use is the sum of its namespaces'.
//!
//! Every write that changes use holds the namespace's row and then the
//! tenant's (always in that order, namespaces by id before tenants by id),
//! works out what it adds or frees while it holds them, checks the quota
//! and applies the change in the same transaction. Two pushes into one
//! namespace therefore count a shared layer once, and a quota raised a
//! moment ago is the one checked. Each GC run recounts everything exactly.

use sqlx::{Any, AnyPool, Row, Transaction};

use super::{NamespaceId, RepositoryId, TenantId};

/// The namespace and tenant a repository's content counts against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Scope {
    pub namespace: NamespaceId,
    pub namespace_name: String,
    pub tenant: TenantId,
    pub tenant_name: String,
}

/// Whose quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// A namespace's.
    Namespace,
    /// A tenant's.
    Tenant,
}

/// What a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// Bytes stored.
    Bytes,
    /// Repositories holding something.
    Repositories,
}

/// A write refused because it would take a quota past its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// Namespace or tenant.
    pub level: Level,
    /// Its name.
    pub name: String,
    /// Bytes or repositories.
    pub measure: Measure,
    /// Used before the write.
    pub used: i64,
    /// The limit.
    pub limit: i64,
    /// What the write would have added.
    pub adding: i64,
}

/// Quota and use of one namespace or tenant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Most bytes allowed; `None` for no limit.
    pub quota_bytes: Option<i64>,
    /// Most repositories allowed; `None` for no limit.
    pub quota_repositories: Option<i64>,
    /// Bytes used.
    pub used_bytes: i64,
    /// Repositories holding something.
    pub used_repositories: i64,
}

/// A namespace's or tenant's usage with its names, as listings show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// The tenant.
    pub tenant: String,
    /// The namespace; `None` for a tenant's own row.
    pub namespace: Option<String>,
    /// Its quota and use.
    pub usage: Usage,
}

/// What a write adds to (or, negative, frees from) a scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Delta {
    pub bytes: i64,
    pub repositories: i64,
}

fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{value:.1} {} ({n} bytes)", UNITS[unit])
    }
}

impl QuotaExceeded {
    /// Why a commit was refused, naming the quota, its use and its limit, and what to do.
    pub fn refusal(&self, what: &str) -> String {
        let q = self;
        let (whose, raise) = match q.level {
            Level::Namespace => (format!("namespace {}", q.name), "ask an admin of its tenant to raise the quota"),
            Level::Tenant => (format!("tenant {}", q.name), "ask the system administrator to raise the quota"),
        };
        match q.measure {
            Measure::Bytes => format!(
            "storing this {what} would exceed the storage quota of {whose}: {} used of a limit of {}, and it adds {}; \
             nothing was stored. Delete images there (space is freed by the next garbage collection) or {raise}",
            bytes(q.used),
            bytes(q.limit),
            bytes(q.adding)
        ),
            Measure::Repositories => format!(
            "storing this {what} would exceed the repository quota of {whose}: {} of a limit of {} repositories hold \
             something; nothing was stored. Delete a repository's images or {raise}",
            q.used, q.limit
        ),
        }
    }
}

impl Delta {
    fn is_zero(self) -> bool {
        self.bytes == 0 && self.repositories == 0
    }
}

/// The rows of one scope, held for the rest of a transaction.
pub(super) struct Held {
    pub scope: Scope,
    namespace: Usage,
    tenant: Usage,
}

const COLUMNS: &str = "quota_bytes, quota_repositories, used_bytes, used_repositories";

fn usage(row: &sqlx::any::AnyRow) -> Result<Usage, sqlx::Error> {
    Ok(Usage {
        quota_bytes: row.try_get(0)?,
        quota_repositories: row.try_get(1)?,
        used_bytes: row.try_get(2)?,
        used_repositories: row.try_get(3)?,
    })
}

/// The namespace (first path segment) and tenant a repository counts against;
/// `None` when no namespace of that name exists (nothing is counted then).
pub(super) async fn scope_of(tx: &mut Transaction<'_, Any>, repository: &str) -> Result<Option<Scope>, sqlx::Error> {
    let Some((namespace, _)) = repository.split_once('/') else { return Ok(None) };
    scope_named(tx, namespace).await
}

/// The scope of the namespace `name`.
pub(super) async fn scope_named(tx: &mut Transaction<'_, Any>, name: &str) -> Result<Option<Scope>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT n.id, n.tenant_id, t.name FROM namespaces n JOIN tenants t ON t.id = n.tenant_id WHERE n.name = $1",
    )
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| {
        Ok(Scope {
            namespace: NamespaceId(r.try_get(0)?),
            namespace_name: name.to_owned(),
            tenant: TenantId(r.try_get(1)?),
            tenant_name: r.try_get(2)?,
        })
    })
    .transpose()
}

async fn lock_namespace(tx: &mut Transaction<'_, Any>, id: NamespaceId) -> Result<Usage, sqlx::Error> {
    lock_row(tx, "namespace_storage", "namespace_id", id.0).await
}

async fn lock_tenant(tx: &mut Transaction<'_, Any>, id: TenantId) -> Result<Usage, sqlx::Error> {
    lock_row(tx, "tenant_storage", "tenant_id", id.0).await
}

/// Creates the usage row of `id` in `table` if it is missing, and holds it
/// (a no-op update takes the row lock on both engines) until the transaction ends.
async fn lock_row(tx: &mut Transaction<'_, Any>, table: &str, key: &str, id: i64) -> Result<Usage, sqlx::Error> {
    sqlx::query(&format!("INSERT INTO {table} ({key}) VALUES ($1) ON CONFLICT ({key}) DO NOTHING"))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query(&format!("UPDATE {table} SET used_bytes = used_bytes WHERE {key} = $1 RETURNING {COLUMNS}"))
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    usage(&row)
}

/// Holds the rows of `scopes`: every namespace by id, then every tenant by
/// id, the one order all writers take them in.
pub(super) async fn hold(tx: &mut Transaction<'_, Any>, mut scopes: Vec<Scope>) -> Result<Vec<Held>, sqlx::Error> {
    scopes.sort_by_key(|s| s.namespace.0);
    scopes.dedup_by_key(|s| s.namespace.0);
    let mut namespaces = Vec::with_capacity(scopes.len());
    for s in &scopes {
        namespaces.push(lock_namespace(tx, s.namespace).await?);
    }
    let mut tenant_ids: Vec<i64> = scopes.iter().map(|s| s.tenant.0).collect();
    tenant_ids.sort_unstable();
    tenant_ids.dedup();
    let mut tenants = Vec::with_capacity(tenant_ids.len());
    for id in &tenant_ids {
        tenants.push((*id, lock_tenant(tx, TenantId(*id)).await?));
    }
    Ok(scopes
        .into_iter()
        .zip(namespaces)
        .map(|(scope, namespace)| {
            let tenant = tenants.iter().find(|(id, _)| *id == scope.tenant.0).map(|(_, u)| *u).unwrap_or_default();
            Held { scope, namespace, tenant }
        })
        .collect())
}

/// Holds one scope's rows.
pub(super) async fn hold_one(tx: &mut Transaction<'_, Any>, scope: Scope) -> Result<Held, sqlx::Error> {
    let mut held = hold(tx, vec![scope]).await?;
    held.pop().ok_or_else(|| sqlx::Error::Protocol("no usage row was held".into()))
}

fn exceeds(level: Level, name: &str, usage: &Usage, delta: Delta) -> Option<QuotaExceeded> {
    let over = |measure, used: i64, limit: Option<i64>, adding: i64| {
        let limit = limit?;
        (adding > 0 && used + adding > limit).then(|| QuotaExceeded {
            level,
            name: name.to_owned(),
            measure,
            used,
            limit,
            adding,
        })
    };
    over(Measure::Bytes, usage.used_bytes, usage.quota_bytes, delta.bytes)
        .or_else(|| over(Measure::Repositories, usage.used_repositories, usage.quota_repositories, delta.repositories))
}

/// What `delta` would exceed in `scope` as its rows stand, without holding
/// them: an early answer that saves storing bytes bound to be refused. The
/// transaction that commits checks again, holding the rows.
pub(super) async fn would_exceed(
    tx: &mut Transaction<'_, Any>,
    scope: &Scope,
    delta: Delta,
) -> Result<Option<QuotaExceeded>, sqlx::Error> {
    let ns = sqlx::query(&format!("SELECT {COLUMNS} FROM namespace_storage WHERE namespace_id = $1"))
        .bind(scope.namespace.0)
        .fetch_optional(&mut **tx)
        .await?;
    let tenant = sqlx::query(&format!("SELECT {COLUMNS} FROM tenant_storage WHERE tenant_id = $1"))
        .bind(scope.tenant.0)
        .fetch_optional(&mut **tx)
        .await?;
    let ns = ns.as_ref().map(usage).transpose()?.unwrap_or_default();
    let tenant = tenant.as_ref().map(usage).transpose()?.unwrap_or_default();
    Ok(exceeds(Level::Namespace, &scope.namespace_name, &ns, delta)
        .or_else(|| exceeds(Level::Tenant, &scope.tenant_name, &tenant, delta)))
}

/// Checks `delta` against the namespace's and then the tenant's quota, and
/// applies it to both if it fits. Freeing (a negative delta) always fits.
pub(super) async fn apply(
    tx: &mut Transaction<'_, Any>,
    held: &mut Held,
    delta: Delta,
) -> Result<Result<(), QuotaExceeded>, sqlx::Error> {
    if delta.is_zero() {
        return Ok(Ok(()));
    }
    if let Some(refused) = exceeds(Level::Namespace, &held.scope.namespace_name, &held.namespace, delta)
        .or_else(|| exceeds(Level::Tenant, &held.scope.tenant_name, &held.tenant, delta))
    {
        return Ok(Err(refused));
    }
    for (table, key, id) in [
        ("namespace_storage", "namespace_id", held.scope.namespace.0),
        ("tenant_storage", "tenant_id", held.scope.tenant.0),
    ] {
        sqlx::query(&format!(
            "UPDATE {table} SET used_bytes = used_bytes + $1, used_repositories = used_repositories + $2 WHERE {key} = $3"
        ))
        .bind(delta.bytes)
        .bind(delta.repositories)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    }
    for u in [&mut held.namespace, &mut held.tenant] {
        u.used_bytes += delta.bytes;
        u.used_repositories += delta.repositories;
    }
    Ok(Ok(()))
}

/// `[ns/, ns0)`: exactly the repository names under `ns/` (`0` is the byte after `/`).
pub(super) fn name_range(namespace: &str) -> (String, String) {
    (format!("{namespace}/"), format!("{namespace}0"))
}

/// True when a repository of the namespace other than `except` links the blob.
pub(super) async fn linked_in_namespace(
    tx: &mut Transaction<'_, Any>,
    digest: &str,
    namespace: &str,
    except: Option<RepositoryId>,
) -> Result<bool, sqlx::Error> {
    let (from, to) = name_range(namespace);
    let row = sqlx::query(
        "SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
         WHERE rb.digest = $1 AND r.name > $2 AND r.name < $3 AND rb.repository_id <> $4 LIMIT 1",
    )
    .bind(digest)
    .bind(from)
    .bind(to)
    .bind(except.map_or(0, |r| r.0))
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
}

/// True when the repository holds no blob and no manifest.
pub(super) async fn repository_is_empty(
    tx: &mut Transaction<'_, Any>,
    repo: RepositoryId,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM repository_blobs WHERE repository_id = $1) \
         OR EXISTS (SELECT 1 FROM manifests WHERE repository_id = $1)",
    )
    .bind(repo.0)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_none())
}

/// Quotas and use, read and set.
pub struct Storage<'a> {
    pub(super) pool: &'a AnyPool,
}

impl Storage<'_> {
    /// A namespace's quota and use (zero use and no limits before its first push).
    pub async fn namespace(&self, id: NamespaceId) -> Result<Usage, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM namespace_storage WHERE namespace_id = $1"))
            .bind(id.0)
            .fetch_optional(self.pool)
            .await?;
        row.as_ref().map(usage).transpose().map(Option::unwrap_or_default)
    }

    /// A tenant's quota and use.
    pub async fn tenant(&self, id: TenantId) -> Result<Usage, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tenant_storage WHERE tenant_id = $1"))
            .bind(id.0)
            .fetch_optional(self.pool)
            .await?;
        row.as_ref().map(usage).transpose().map(Option::unwrap_or_default)
    }

    /// Sets a namespace's limits (`None`: no limit). It counts from the next write on.
    pub async fn set_namespace_quota(
        &self,
        id: NamespaceId,
        bytes: Option<i64>,
        repositories: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        self.set_quota("namespace_storage", "namespace_id", id.0, bytes, repositories).await
    }

    /// Sets a tenant's limits (`None`: no limit).
    pub async fn set_tenant_quota(
        &self,
        id: TenantId,
        bytes: Option<i64>,
        repositories: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        self.set_quota("tenant_storage", "tenant_id", id.0, bytes, repositories).await
    }

    /// Writes the limits of the row of `table` keyed by `key` = `id`, making the row if need be.
    async fn set_quota(
        &self,
        table: &str,
        key: &str,
        id: i64,
        bytes: Option<i64>,
        repositories: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "INSERT INTO {table} ({key}, quota_bytes, quota_repositories) VALUES ($1, $2, $3) \
             ON CONFLICT ({key}) DO UPDATE SET quota_bytes = excluded.quota_bytes, quota_repositories = excluded.quota_repositories"
        ))
        .bind(id)
        .bind(bytes)
        .bind(repositories)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// Every namespace's and tenant's quota and use, tenants first, by name (for metrics and listings).
    pub async fn all(&self) -> Result<Vec<UsageRow>, sqlx::Error> {
        let mut out = Vec::new();
        let tenants = sqlx::query(&format!(
            "SELECT t.name, s.quota_bytes, s.quota_repositories, s.used_bytes, s.used_repositories \
             FROM tenant_storage s JOIN tenants t ON t.id = s.tenant_id ORDER BY t.name"
        ))
        .fetch_all(self.pool)
        .await?;
        for r in &tenants {
            out.push(UsageRow { tenant: r.try_get(0)?, namespace: None, usage: usage_at(r, 1)? });
        }
        let namespaces = sqlx::query(
            "SELECT t.name, n.name, s.quota_bytes, s.quota_repositories, s.used_bytes, s.used_repositories \
             FROM namespace_storage s JOIN namespaces n ON n.id = s.namespace_id JOIN tenants t ON t.id = n.tenant_id \
             ORDER BY t.name, n.name",
        )
        .fetch_all(self.pool)
        .await?;
        for r in &namespaces {
            out.push(UsageRow { tenant: r.try_get(0)?, namespace: Some(r.try_get(1)?), usage: usage_at(r, 2)? });
        }
        Ok(out)
    }

    /// Recounts a namespace's use exactly, holding its row so that no write
    /// counts in between; returns the use before and after.
    pub async fn recount_namespace(&self, id: NamespaceId, name: &str) -> Result<(Usage, Usage), sqlx::Error> {
        let mut tx = super::begin_write(self.pool).await?;
        let before = lock_namespace(&mut tx, id).await?;
        let (from, to) = name_range(name);
        let row = sqlx::query(
            "SELECT \
               (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM blobs b WHERE EXISTS ( \
                  SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                  WHERE rb.digest = b.digest AND r.name > $1 AND r.name < $2)), \
               (SELECT CAST(COALESCE(SUM(LENGTH(m.content)), 0) AS BIGINT) FROM manifests m \
                  JOIN repositories r ON r.id = m.repository_id WHERE r.name > $1 AND r.name < $2), \
               (SELECT COUNT(*) FROM repositories r WHERE r.name > $1 AND r.name < $2 \
                  AND (EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id) \
                    OR EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.repository_id = r.id)))",
        )
        .bind(&from)
        .bind(&to)
        .fetch_one(&mut *tx)
        .await?;
        let blobs: i64 = row.try_get(0)?;
        let manifests: i64 = row.try_get(1)?;
        let repositories: i64 = row.try_get(2)?;
        let after = Usage { used_bytes: blobs + manifests, used_repositories: repositories, ..before };
        if after != before {
            sqlx::query("UPDATE namespace_storage SET used_bytes = $1, used_repositories = $2 WHERE namespace_id = $3")
                .bind(after.used_bytes)
                .bind(after.used_repositories)
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((before, after))
    }

    /// Recounts a tenant's use as the sum of its namespaces', holding its row.
    /// A write that holds a namespace row waits for this one before it
    /// changes the tenant's, so the sum it reads stays right.
    pub async fn recount_tenant(&self, id: TenantId) -> Result<(Usage, Usage), sqlx::Error> {
        let mut tx = super::begin_write(self.pool).await?;
        let before = lock_tenant(&mut tx, id).await?;
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(s.used_bytes), 0) AS BIGINT), CAST(COALESCE(SUM(s.used_repositories), 0) AS BIGINT) \
             FROM namespace_storage s JOIN namespaces n ON n.id = s.namespace_id WHERE n.tenant_id = $1",
        )
        .bind(id.0)
        .fetch_one(&mut *tx)
        .await?;
        let after = Usage { used_bytes: row.try_get(0)?, used_repositories: row.try_get(1)?, ..before };
        if after != before {
            sqlx::query("UPDATE tenant_storage SET used_bytes = $1, used_repositories = $2 WHERE tenant_id = $3")
                .bind(after.used_bytes)
                .bind(after.used_repositories)
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((before, after))
    }
}

fn usage_at(row: &sqlx::any::AnyRow, first: usize) -> Result<Usage, sqlx::Error> {
    Ok(Usage {
        quota_bytes: row.try_get(first)?,
        quota_repositories: row.try_get(first + 1)?,
        used_bytes: row.try_get(first + 2)?,
        used_repositories: row.try_get(first + 3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_refuses_only_what_would_pass_its_limit() {
        let u = Usage { quota_bytes: Some(100), quota_repositories: Some(2), used_bytes: 60, used_repositories: 2 };
        assert_eq!(exceeds(Level::Namespace, "ns", &u, Delta { bytes: 40, repositories: 0 }), None);
        let over = exceeds(Level::Namespace, "ns", &u, Delta { bytes: 41, repositories: 0 }).unwrap();
        assert_eq!((over.measure, over.used, over.limit, over.adding), (Measure::Bytes, 60, 100, 41));
        let repos = exceeds(Level::Tenant, "t", &u, Delta { bytes: 0, repositories: 1 }).unwrap();
        assert_eq!((repos.level, repos.measure), (Level::Tenant, Measure::Repositories));
        // Freeing always fits, even past a lowered limit.
        let lowered = Usage { quota_bytes: Some(10), ..u };
        assert_eq!(exceeds(Level::Namespace, "ns", &lowered, Delta { bytes: -5, repositories: -1 }), None);
        assert_eq!(exceeds(Level::Namespace, "ns", &Usage::default(), Delta { bytes: 1 << 40, repositories: 9 }), None);
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_quota_its_use_and_its_limit() {
        let q = QuotaExceeded {
            level: Level::Namespace,
            name: "team".into(),
            measure: Measure::Bytes,
            used: 9 * 1024 * 1024,
            limit: 10 * 1024 * 1024,
            adding: 2 * 1024 * 1024,
        };
        let m = q.refusal("blob");
        assert!(m.contains("storage quota of namespace team"), "{m}");
        assert!(m.contains("9.0 MiB (9437184 bytes) used of a limit of 10.0 MiB (10485760 bytes)"), "{m}");
        assert!(m.contains("adds 2.0 MiB (2097152 bytes)"), "{m}");
        let r =
            QuotaExceeded { level: Level::Tenant, measure: Measure::Repositories, used: 3, limit: 3, adding: 1, ..q };
        assert!(r.refusal("manifest").contains("repository quota of tenant team: 3 of a limit of 3"));
    }
}
