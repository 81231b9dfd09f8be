use std::fmt;
use std::str::FromStr;

use sqlx::{AnyPool, Row};

use super::{now, NamespaceId, TenantId};

/// A role on a tenant or one of its namespaces: what its holder may do
/// there. Roles are ordered by what they allow, `Viewer` least.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything an admin may, and making other owners; tenant-wide only, never a robot.
    Owner,
    /// Pull, push, delete, create repositories and namespaces, manage members and robots.
    Admin,
    /// Pull and push to existing repositories.
    Developer,
    /// Pull.
    Viewer,
}

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Developer => 1,
            Role::Admin => 2,
            Role::Owner => 3,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

impl PartialOrd for Role {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Role {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" | "pull" => Ok(Role::Viewer),
            "developer" | "push" => Ok(Role::Developer),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            other => Err(format!("unknown role {other:?}: use owner, admin, developer or viewer")),
        }
    }
}

/// Who holds a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalRef {
    /// A user by id.
    User(i64),
    /// A robot account by id.
    Robot(i64),
}

impl PrincipalRef {
    fn kind(self) -> &'static str {
        match self {
            PrincipalRef::User(_) => "user",
            PrincipalRef::Robot(_) => "robot",
        }
    }

    fn id(self) -> i64 {
        match self {
            PrincipalRef::User(id) | PrincipalRef::Robot(id) => id,
        }
    }
}

/// A user row.
#[derive(Clone, Debug)]
pub struct User {
    /// Key.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Argon2 PHC string.
    pub password_hash: String,
    /// May do everything, everywhere.
    pub system_admin: bool,
    /// Bumped on every password change.
    pub credentials_version: i64,
    /// Bumped whenever one of its roles is removed or lessened.
    pub grants_version: i64,
}

/// A robot account row.
#[derive(Clone, Debug)]
pub struct Robot {
    /// Key.
    pub id: i64,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Owning tenant's name.
    pub tenant: String,
    /// Name within the tenant.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Hex SHA-256 of its token.
    pub token_sha256: String,
    /// Bumped on every token rotation and on revocation.
    pub credentials_version: i64,
    /// Bumped whenever one of its roles (its scopes) is removed or lessened.
    pub grants_version: i64,
    /// Unix seconds after which it no longer authenticates.
    pub expires_at: Option<i64>,
    /// Unix seconds it was revoked at.
    pub revoked_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
}

impl Robot {
    /// The login name clients use: `robot$<tenant>+<name>`.
    pub fn login(&self) -> String {
        format!("robot${}+{}", self.tenant, self.name)
    }

    /// True if it may authenticate at `at` (Unix seconds).
    pub fn is_active(&self, at: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| at < e)
    }
}

/// A role held on a tenant (namespace `None`) or on one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Tenant name.
    pub tenant: String,
    /// Namespace, or `None` for the whole tenant.
    pub namespace_id: Option<NamespaceId>,
    /// Namespace name.
    pub namespace: Option<String>,
    /// The role.
    pub role: Role,
}

/// A binding as listed for a tenant's members page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// `user` or `robot`.
    pub kind: String,
    /// Username, or robot login.
    pub name: String,
    /// Namespace, or `None` for the whole tenant.
    pub namespace: Option<String>,
    /// The role.
    pub role: Role,
}

/// The `users`, `robots` and `role_bindings` tables.
pub struct Accounts<'a> {
    pub(super) pool: &'a AnyPool,
}

const USER_COLUMNS: &str = "id, username, password_hash, system_admin, credentials_version, grants_version FROM users";
const ROBOT_COLUMNS: &str = "r.id, r.tenant_id, t.name, r.name, r.description, r.token_sha256, r.credentials_version, \
     r.expires_at, r.revoked_at, r.created_at, r.grants_version FROM robots r JOIN tenants t ON t.id = r.tenant_id";

/// What an access token's holder must still match for the token to work,
/// read on every request that presents one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenHolder {
    /// The credentials version now.
    pub credentials_version: i64,
    /// The grants version now.
    pub grants_version: i64,
    /// A user who is the system administrator.
    pub system_admin: bool,
    /// A robot: Unix seconds it stops authenticating at, if ever.
    pub expires_at: Option<i64>,
    /// A robot: revoked.
    pub revoked: bool,
}

fn user(r: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: r.try_get(0)?,
        username: r.try_get(1)?,
        password_hash: r.try_get(2)?,
        system_admin: r.try_get::<i64, _>(3)? != 0,
        credentials_version: r.try_get(4)?,
        grants_version: r.try_get(5)?,
    })
}

fn robot(r: &sqlx::any::AnyRow) -> Result<Robot, sqlx::Error> {
    Ok(Robot {
        id: r.try_get(0)?,
        tenant_id: TenantId(r.try_get(1)?),
        tenant: r.try_get(2)?,
        name: r.try_get(3)?,
        description: r.try_get(4)?,
        token_sha256: r.try_get(5)?,
        credentials_version: r.try_get(6)?,
        expires_at: r.try_get(7)?,
        revoked_at: r.try_get(8)?,
        created_at: r.try_get(9)?,
        grants_version: r.try_get(10)?,
    })
}

impl Accounts<'_> {
    /// Creates a user.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        system_admin: bool,
    ) -> Result<i64, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO users (username, password_hash, system_admin, credentials_version, created_at) \
             VALUES ($1, $2, $3, 1, $4) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(system_admin as i64)
        .bind(now())
        .fetch_one(self.pool)
        .await?;
        row.try_get(0)
    }

    /// A user by name.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} WHERE username = $1"))
            .bind(username)
            .fetch_optional(self.pool)
            .await?;
        row.as_ref().map(user).transpose()
    }

    /// A user by id.
    pub async fn user(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        let row =
            sqlx::query(&format!("SELECT {USER_COLUMNS} WHERE id = $1")).bind(id).fetch_optional(self.pool).await?;
        row.as_ref().map(user).transpose()
    }

    /// The state a token of user or robot `who` must still match; `None` once the account is gone.
    pub async fn token_holder(&self, who: PrincipalRef) -> Result<Option<TokenHolder>, sqlx::Error> {
        match who {
            PrincipalRef::User(id) => {
                let row =
                    sqlx::query("SELECT credentials_version, grants_version, system_admin FROM users WHERE id = $1")
                        .bind(id)
                        .fetch_optional(self.pool)
                        .await?;
                row.map(|r| {
                    Ok(TokenHolder {
                        credentials_version: r.try_get(0)?,
                        grants_version: r.try_get(1)?,
                        system_admin: r.try_get::<i64, _>(2)? != 0,
                        expires_at: None,
                        revoked: false,
                    })
                })
                .transpose()
            }
            PrincipalRef::Robot(id) => {
                let row = sqlx::query(
                    "SELECT credentials_version, grants_version, expires_at, revoked_at FROM robots WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(self.pool)
                .await?;
                row.map(|r| {
                    Ok(TokenHolder {
                        credentials_version: r.try_get(0)?,
                        grants_version: r.try_get(1)?,
                        system_admin: false,
                        expires_at: r.try_get(2)?,
                        revoked: r.try_get::<Option<i64>, _>(3)?.is_some(),
                    })
                })
                .transpose()
            }
        }
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>, sqlx::Error> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} ORDER BY username")).fetch_all(self.pool).await?;
        rows.iter().map(user).collect()
    }

    /// Replaces a password; every token issued for the old one stops working.
    pub async fn set_password(&self, id: i64, password_hash: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE users SET password_hash = $1, credentials_version = credentials_version + 1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(self.pool)
            .await?;
        Ok(())
    }

    /// Creates a robot account.
    pub async fn create_robot(
        &self,
        tenant: TenantId,
        name: &str,
        description: &str,
        token_sha256: &str,
        expires_at: Option<i64>,
    ) -> Result<i64, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO robots (tenant_id, name, description, token_sha256, credentials_version, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, 1, $5, $6) RETURNING id",
        )
        .bind(tenant.0)
        .bind(name)
        .bind(description)
        .bind(token_sha256)
        .bind(expires_at)
        .bind(now())
        .fetch_one(self.pool)
        .await?;
        row.try_get(0)
    }

    /// A robot by tenant and name.
    pub async fn robot_by_name(&self, tenant: &str, name: &str) -> Result<Option<Robot>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {ROBOT_COLUMNS} WHERE t.name = $1 AND r.name = $2"))
            .bind(tenant)
            .bind(name)
            .fetch_optional(self.pool)
            .await?;
        row.as_ref().map(robot).transpose()
    }

    /// A robot by id.
    pub async fn robot(&self, id: i64) -> Result<Option<Robot>, sqlx::Error> {
        let row =
            sqlx::query(&format!("SELECT {ROBOT_COLUMNS} WHERE r.id = $1")).bind(id).fetch_optional(self.pool).await?;
        row.as_ref().map(robot).transpose()
    }

    /// A tenant's robots, by name.
    pub async fn robots_of(&self, tenant: TenantId) -> Result<Vec<Robot>, sqlx::Error> {
        let rows = sqlx::query(&format!("SELECT {ROBOT_COLUMNS} WHERE r.tenant_id = $1 ORDER BY r.name"))
            .bind(tenant.0)
            .fetch_all(self.pool)
            .await?;
        rows.iter().map(robot).collect()
    }

    /// Revokes a robot: its token and every JWT issued to it stop working.
    pub async fn revoke_robot(&self, id: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE robots SET revoked_at = $1, credentials_version = credentials_version + 1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(self.pool)
            .await?;
        Ok(())
    }

    /// Replaces a robot's token; the old one and its JWTs stop working.
    pub async fn rotate_robot(&self, id: i64, token_sha256: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE robots SET token_sha256 = $1, credentials_version = credentials_version + 1 WHERE id = $2")
            .bind(token_sha256)
            .bind(id)
            .execute(self.pool)
            .await?;
        Ok(())
    }

    /// Grants a role, replacing any role the principal held on the same
    /// tenant or namespace. A lesser role than the one replaced bumps the
    /// principal's grants version in the same transaction, ending its access
    /// tokens; returns true if it did.
    pub async fn bind(
        &self,
        who: PrincipalRef,
        tenant: TenantId,
        namespace: Option<NamespaceId>,
        role: Role,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let previous: Option<String> = sqlx::query(
            "SELECT role FROM role_bindings WHERE principal_kind = $1 AND principal_id = $2 AND tenant_id = $3 \
             AND COALESCE(namespace_id, 0) = $4",
        )
        .bind(who.kind())
        .bind(who.id())
        .bind(tenant.0)
        .bind(namespace.map_or(0, |n| n.0))
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        unbind_in(&mut tx, who, tenant, namespace).await?;
        sqlx::query(
            "INSERT INTO role_bindings (principal_kind, principal_id, tenant_id, namespace_id, role, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(who.kind())
        .bind(who.id())
        .bind(tenant.0)
        .bind(namespace.map(|n| n.0))
        .bind(role.as_str())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        let narrowed = previous.and_then(|p| p.parse::<Role>().ok()).is_some_and(|p| role < p);
        if narrowed {
            bump_grants_version(&mut tx, who).await?;
        }
        tx.commit().await?;
        Ok(narrowed)
    }

    /// Removes a role, bumping the principal's grants version in the same
    /// transaction so that its access tokens end; true if there was one.
    pub async fn unbind(
        &self,
        who: PrincipalRef,
        tenant: TenantId,
        namespace: Option<NamespaceId>,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let n = unbind_in(&mut tx, who, tenant, namespace).await?;
        if n > 0 {
            bump_grants_version(&mut tx, who).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Every role a principal holds.
    pub async fn bindings_of(&self, who: PrincipalRef) -> Result<Vec<Binding>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT b.tenant_id, t.name, b.namespace_id, n.name, b.role FROM role_bindings b \
             JOIN tenants t ON t.id = b.tenant_id LEFT JOIN namespaces n ON n.id = b.namespace_id \
             WHERE b.principal_kind = $1 AND b.principal_id = $2",
        )
        .bind(who.kind())
        .bind(who.id())
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get(4)?;
                Ok(Binding {
                    tenant_id: TenantId(r.try_get(0)?),
                    tenant: r.try_get(1)?,
                    namespace_id: r.try_get::<Option<i64>, _>(2)?.map(NamespaceId),
                    namespace: r.try_get(3)?,
                    role: role.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                })
            })
            .collect()
    }

    /// Every role held on a tenant or its namespaces.
    pub async fn members_of(&self, tenant: TenantId) -> Result<Vec<Member>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT b.principal_kind, COALESCE(u.username, 'robot$' || t.name || '+' || r.name), n.name, b.role \
             FROM role_bindings b JOIN tenants t ON t.id = b.tenant_id \
             LEFT JOIN users u ON b.principal_kind = 'user' AND u.id = b.principal_id \
             LEFT JOIN robots r ON b.principal_kind = 'robot' AND r.id = b.principal_id \
             LEFT JOIN namespaces n ON n.id = b.namespace_id \
             WHERE b.tenant_id = $1 ORDER BY 2, 3",
        )
        .bind(tenant.0)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get(3)?;
                Ok(Member {
                    kind: r.try_get(0)?,
                    name: r.try_get(1)?,
                    namespace: r.try_get(2)?,
                    role: role.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                })
            })
            .collect()
    }
}

async fn bump_grants_version(tx: &mut sqlx::Transaction<'_, sqlx::Any>, who: PrincipalRef) -> Result<(), sqlx::Error> {
    let table = match who {
        PrincipalRef::User(_) => "UPDATE users SET grants_version = grants_version + 1 WHERE id = $1",
        PrincipalRef::Robot(_) => "UPDATE robots SET grants_version = grants_version + 1 WHERE id = $1",
    };
    sqlx::query(table).bind(who.id()).execute(&mut **tx).await?;
    Ok(())
}

async fn unbind_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    who: PrincipalRef,
    tenant: TenantId,
    namespace: Option<NamespaceId>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM role_bindings WHERE principal_kind = $1 AND principal_id = $2 AND tenant_id = $3 \
         AND COALESCE(namespace_id, 0) = $4",
    )
    .bind(who.kind())
    .bind(who.id())
    .bind(tenant.0)
    .bind(namespace.map_or(0, |n| n.0))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}
