use sqlx::{AnyPool, Row};

use super::now;

/// Primary key of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TenantId(pub i64);

/// A tenant row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// Key.
    pub id: TenantId,
    /// Unique name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Primary key of a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NamespaceId(pub i64);

/// A namespace row with its tenant's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// Key.
    pub id: NamespaceId,
    /// Unique name: the first segment of its repositories' names.
    pub name: String,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Owning tenant's name.
    pub tenant: String,
    /// Anyone may pull.
    pub public: bool,
    /// P2P acceleration is on.
    pub p2p_enabled: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// The `tenants` and `namespaces` tables.
pub struct Tenancy<'a> {
    pub(super) pool: &'a AnyPool,
}

const NAMESPACE_COLUMNS: &str =
    "n.id, n.name, n.tenant_id, t.name, n.public, n.p2p_enabled, n.created_at FROM namespaces n JOIN tenants t ON t.id = n.tenant_id";

fn namespace(r: &sqlx::any::AnyRow) -> Result<Namespace, sqlx::Error> {
    Ok(Namespace {
        id: NamespaceId(r.try_get(0)?),
        name: r.try_get(1)?,
        tenant_id: TenantId(r.try_get(2)?),
        tenant: r.try_get(3)?,
        public: r.try_get::<i64, _>(4)? != 0,
        p2p_enabled: r.try_get::<i64, _>(5)? != 0,
        created_at: r.try_get(6)?,
    })
}

fn tenant(r: &sqlx::any::AnyRow) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant { id: TenantId(r.try_get(0)?), name: r.try_get(1)?, created_at: r.try_get(2)? })
}

impl Tenancy<'_> {
    /// Creates a tenant; a unique violation means the name is taken.
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, sqlx::Error> {
        let at = now();
        let row = sqlx::query("INSERT INTO tenants (name, created_at) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(at)
            .fetch_one(self.pool)
            .await?;
        Ok(Tenant { id: TenantId(row.try_get(0)?), name: name.to_owned(), created_at: at })
    }

    /// A tenant by name.
    pub async fn tenant(&self, name: &str) -> Result<Option<Tenant>, sqlx::Error> {
        let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool)
            .await?;
        row.as_ref().map(tenant).transpose()
    }

    /// Every tenant, by name.
    pub async fn tenants(&self) -> Result<Vec<Tenant>, sqlx::Error> {
        let rows = sqlx::query("SELECT id, name, created_at FROM tenants ORDER BY name").fetch_all(self.pool).await?;
        rows.iter().map(tenant).collect()
    }

    /// Creates a namespace in a tenant.
    pub async fn create_namespace(
        &self,
        tenant: TenantId,
        name: &str,
        public: bool,
    ) -> Result<NamespaceId, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO namespaces (tenant_id, name, public, p2p_enabled, created_at) VALUES ($1, $2, $3, 0, $4) RETURNING id",
        )
        .bind(tenant.0)
        .bind(name)
        .bind(public as i64)
        .bind(now())
        .fetch_one(self.pool)
        .await?;
        Ok(NamespaceId(row.try_get(0)?))
    }

    /// A namespace by name.
    pub async fn namespace(&self, name: &str) -> Result<Option<Namespace>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {NAMESPACE_COLUMNS} WHERE n.name = $1"))
            .bind(name)
            .fetch_optional(self.pool)
            .await?;
        row.as_ref().map(namespace).transpose()
    }

    /// A tenant's namespaces, by name.
    pub async fn namespaces_of(&self, tenant: TenantId) -> Result<Vec<Namespace>, sqlx::Error> {
        let rows = sqlx::query(&format!("SELECT {NAMESPACE_COLUMNS} WHERE n.tenant_id = $1 ORDER BY n.name"))
            .bind(tenant.0)
            .fetch_all(self.pool)
            .await?;
        rows.iter().map(namespace).collect()
    }

    /// Sets the public flag and the P2P switch; `None` leaves a value as it is.
    pub async fn update_namespace(
        &self,
        id: NamespaceId,
        public: Option<bool>,
        p2p_enabled: Option<bool>,
    ) -> Result<(), sqlx::Error> {
        if let Some(p) = public {
            sqlx::query("UPDATE namespaces SET public = $1 WHERE id = $2")
                .bind(p as i64)
                .bind(id.0)
                .execute(self.pool)
                .await?;
        }
        if let Some(p) = p2p_enabled {
            sqlx::query("UPDATE namespaces SET p2p_enabled = $1 WHERE id = $2")
                .bind(p as i64)
                .bind(id.0)
                .execute(self.pool)
                .await?;
        }
        Ok(())
    }
}
