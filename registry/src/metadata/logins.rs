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
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (2..subjects.len() + 2).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT subject, COUNT(*), MIN(at) FROM login_failures WHERE at >= $1 AND subject IN ({}) GROUP BY subject",
            marks.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(since_ms);
        for s in subjects {
            query = query.bind(*s);
        }
        let rows = query.fetch_all(self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)?.max(0) as usize, r.try_get(2)?))).collect()
    }

    /// The subjects with a failure at or after `since_ms`, at most `limit` of them.
    pub async fn subjects_since(&self, since_ms: i64, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query("SELECT DISTINCT subject FROM login_failures WHERE at >= $1 LIMIT $2")
            .bind(since_ms)
            .bind(limit)
            .fetch_all(self.pool)
            .await?;
        rows.iter().map(|r| r.try_get(0)).collect()
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
