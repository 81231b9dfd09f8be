use sqlx::{AnyPool, Row};

/// The `login_failures` table: failed logins per login name and per client
/// address, counted by every replica together.
pub struct LoginFailures<'a> {
    pub(super) pool: &'a AnyPool,
}

impl LoginFailures<'_> {
    /// Per subject among `subjects`, the failures at or after `since_ms`:
    /// how many, and the oldest of them (milliseconds since the epoch).
    pub async fn recent(&self, subjects: &[&str], since_ms: i64) -> Result<Vec<(String, usize, i64)>, sqlx::Error> {
        let mut out = Vec::with_capacity(subjects.len());
        for subject in subjects {
            let row = sqlx::query("SELECT COUNT(*), MIN(at) FROM login_failures WHERE subject = $1 AND at >= $2")
                .bind(*subject)
                .bind(since_ms)
                .fetch_one(self.pool)
                .await?;
            let n = row.try_get::<i64, _>(0)?.max(0) as usize;
            if n > 0 {
                out.push(((*subject).to_owned(), n, row.try_get::<Option<i64>, _>(1)?.unwrap_or(since_ms)));
            }
        }
        Ok(out)
    }

    /// Counts a failure at `at_ms` against every subject, and forgets those
    /// older than `forget_before_ms`.
    pub async fn record(&self, subjects: &[&str], at_ms: i64, forget_before_ms: i64) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM login_failures WHERE at < $1").bind(forget_before_ms).execute(&mut *tx).await?;
        for subject in subjects {
            sqlx::query("INSERT INTO login_failures (subject, at) VALUES ($1, $2)")
                .bind(*subject)
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Forgets a subject's failures (a login name that logged in).
    pub async fn clear(&self, subject: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM login_failures WHERE subject = $1").bind(subject).execute(self.pool).await?;
        Ok(())
    }
}
