use sqlx::{AnyPool, Row};

use super::now;

/// A stored ES256 signing key.
#[derive(Clone)]
pub struct StoredKey {
    /// Key id, as put in the JWT header and the JWKS.
    pub kid: String,
    /// PKCS#8 DER of the private key.
    pub private_pkcs8: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds it stopped signing at; it still verifies until tokens it signed have expired.
    pub retired_at: Option<i64>,
}

/// The `signing_keys` table.
pub struct SigningKeys<'a> {
    pub(super) pool: &'a AnyPool,
}

impl SigningKeys<'_> {
    /// Whether a key with this id was ever stored, retired or not.
    pub async fn contains(&self, kid: &str) -> Result<bool, sqlx::Error> {
        let row = sqlx::query("SELECT 1 FROM signing_keys WHERE kid = $1").bind(kid).fetch_optional(self.pool).await?;
        Ok(row.is_some())
    }

    /// Keys that sign or may still verify: active ones and those retired after `retired_after`.
    pub async fn usable(&self, retired_after: i64) -> Result<Vec<StoredKey>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT kid, private_pkcs8, created_at, retired_at FROM signing_keys \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at, kid",
        )
        .bind(retired_after)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredKey {
                    kid: r.try_get(0)?,
                    private_pkcs8: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                    retired_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Adds a new active key and retires every other active one, atomically.
    pub async fn rotate_in(&self, kid: &str, private_pkcs8: &[u8]) -> Result<(), sqlx::Error> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO signing_keys (kid, private_pkcs8, created_at) VALUES ($1, $2, $3)")
            .bind(kid)
            .bind(private_pkcs8)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
}
