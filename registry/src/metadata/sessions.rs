use sqlx::{AnyPool, Row};

use super::now;

/// A console sign-in, found by the hash of its cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSession {
    /// SHA-256 of the cookie's secret.
    pub id_sha256: String,
    /// Who signed in.
    pub user_id: i64,
    /// The user's credentials version at sign-in; a password change moves it on.
    pub credentials_version: i64,
    /// The token every form of this session must carry.
    pub csrf_token: String,
    /// Unix seconds after which the session is over.
    pub expires_at: i64,
}

/// The `console_sessions` table.
pub struct ConsoleSessions<'a> {
    pub(super) pool: &'a AnyPool,
}

impl ConsoleSessions<'_> {
    /// Records a sign-in.
    pub async fn create(&self, s: &ConsoleSession) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO console_sessions (id_sha256, user_id, credentials_version, csrf_token, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&s.id_sha256)
        .bind(s.user_id)
        .bind(s.credentials_version)
        .bind(&s.csrf_token)
        .bind(now())
        .bind(s.expires_at)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// The session whose cookie hashes to `id_sha256`, if it has not expired.
    pub async fn find(&self, id_sha256: &str) -> Result<Option<ConsoleSession>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id_sha256, user_id, credentials_version, csrf_token, expires_at FROM console_sessions \
             WHERE id_sha256 = $1 AND expires_at > $2",
        )
        .bind(id_sha256)
        .bind(now())
        .fetch_optional(self.pool)
        .await?;
        row.map(|r| {
            Ok(ConsoleSession {
                id_sha256: r.try_get(0)?,
                user_id: r.try_get(1)?,
                credentials_version: r.try_get(2)?,
                csrf_token: r.try_get(3)?,
                expires_at: r.try_get(4)?,
            })
        })
        .transpose()
    }

    /// Ends a session.
    pub async fn delete(&self, id_sha256: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM console_sessions WHERE id_sha256 = $1").bind(id_sha256).execute(self.pool).await?;
        Ok(())
    }

    /// Ends every session of a user, e.g. after a password change.
    pub async fn delete_of_user(&self, user_id: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM console_sessions WHERE user_id = $1").bind(user_id).execute(self.pool).await?;
        Ok(())
    }

    /// Forgets expired sessions.
    pub async fn delete_expired(&self) -> Result<u64, sqlx::Error> {
        let done =
            sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1").bind(now()).execute(self.pool).await?;
        Ok(done.rows_affected())
    }

    /// Leaves a message for the session's next page.
    pub async fn set_flash(&self, id_sha256: &str, flash: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE console_sessions SET flash = $1 WHERE id_sha256 = $2")
            .bind(flash)
            .bind(id_sha256)
            .execute(self.pool)
            .await?;
        Ok(())
    }

    /// Takes the message left for this page, so it is shown once.
    pub async fn take_flash(&self, id_sha256: &str) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query("SELECT flash FROM console_sessions WHERE id_sha256 = $1")
            .bind(id_sha256)
            .fetch_optional(self.pool)
            .await?;
        let flash: Option<String> = match row {
            Some(r) => r.try_get(0)?,
            None => None,
        };
        if flash.is_some() {
            sqlx::query("UPDATE console_sessions SET flash = NULL WHERE id_sha256 = $1")
                .bind(id_sha256)
                .execute(self.pool)
                .await?;
        }
        Ok(flash)
    }
}
