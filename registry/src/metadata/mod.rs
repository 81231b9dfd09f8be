//! The metadata store: one type per table group, all on one sqlx pool.
//!
//! The same SQL runs on SQLite (the embedded default) and PostgreSQL (the
//! system of record for real deployments) through sqlx's `Any` driver. Each
//! backend has its own migrations because their DDL differs (identity
//! columns, `BYTEA`, `COLLATE "C"`), but every query is written once with
//! `$n` placeholders numbered in order of appearance, which both accept.

mod accounts;
mod agents;
mod audit;
mod blobs;
mod clusters;
mod deletions;
mod gc_runs;
mod health;
mod keys;
mod leases;
mod logins;
mod manifests;
mod policies;
mod preheat;
mod repositories;
mod sessions;
mod sweep;
mod tags;
mod tenancy;
mod traffic;
mod uploads;
mod usage;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use accounts::{Accounts, Binding, Member, PrincipalRef, Robot, Role, TokenHolder, User};
pub use agents::{AgentRecord, Agents};
pub use audit::{AuditEvent, AuditFilter, AuditLog, NewAuditEvent};
pub use blobs::{BlobRecord, Blobs, Linked, CLAIM_HOLD_SECS};
pub use clusters::{Cluster, ClusterId, Clusters};
pub use deletions::{BlobDeletions, Departure};
pub use gc_runs::{GcCounts, GcRun, GcRuns, RunState};
pub use health::{watch as watch_health, Health};
pub use keys::{SigningKeys, StoredKey};
pub use leases::{LeaseHolder, Leases};
pub use logins::LoginFailures;
pub use manifests::{
    ManifestRecord, ManifestRow, Manifests, NewManifest, PutOutcome, Referrer, TagRule, TargetKind, Unstored,
};
pub use policies::{NamespacePolicy, Policies};
pub use preheat::{PreheatJobRow, PreheatJobs, PreheatNodeRow, TakenWork};
pub use repositories::{Repositories, RepositoryId, RepositorySummary};
pub use sessions::{ConsoleSession, ConsoleSessions};
pub use sweep::{BlobCandidate, BlobVerdict, Finished, Sweep};
pub use tags::{TagDetail, TagRow, Tags, PULL_RESOLUTION_SECS};
pub use tenancy::{Namespace, NamespaceId, Tenancy, Tenant, TenantId};
pub use traffic::{Traffic, TrafficRow};
pub use uploads::{UploadRow, Uploads};
pub use usage::{Level, Measure, QuotaExceeded, Storage, Usage, UsageRow};

/// Which SQL engine the pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The metadata database.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    engine: Engine,
    health: std::sync::Arc<Health>,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The connection failed.
    #[error("metadata database is unreachable at {url}: {source}{hint}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
        /// What to try next.
        hint: &'static str,
    },
    /// A migration failed.
    #[error("migrating the metadata database at {url} failed: {source}")]
    Migrate {
        /// Redacted URL.
        url: String,
        /// The migrator's error.
        source: sqlx::migrate::MigrateError,
    },
}

impl Db {
    /// Connects, creating the SQLite file if needed, and applies pending migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Db, OpenError> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") { Engine::Sqlite } else { Engine::Postgres };
        let connect_error = |source| OpenError::Connect {
            url: redact_url(url),
            source,
            hint: match engine {
                Engine::Sqlite => ": check that the data directory exists and is writable",
                Engine::Postgres => ": is PostgreSQL running, and do the user, password and database exist?",
            },
        };
        let url_with_mode = match engine {
            Engine::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url_with_mode).map_err(connect_error)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        // WAL lets readers proceed while one writer commits; the busy
                        // timeout queues writers instead of failing them.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        let migrator = match engine {
            Engine::Sqlite => sqlx::migrate!("../migrations/sqlite"),
            Engine::Postgres => sqlx::migrate!("../migrations/postgres"),
        };
        migrator.run(&pool).await.map_err(|source| OpenError::Migrate { url: redact_url(url), source })?;
        Ok(Db { pool, engine, health: Default::default() })
    }

    /// The engine behind the pool.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Whether the database can be reached, as `watch_health` last saw it.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The pool, for the table types.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Repositories table.
    pub fn repositories(&self) -> Repositories<'_> {
        Repositories { pool: &self.pool }
    }

    /// Blobs and their links to repositories.
    pub fn blobs(&self) -> Blobs<'_> {
        Blobs { pool: &self.pool }
    }

    /// Manifests, their references and referrers.
    pub fn manifests(&self) -> Manifests<'_> {
        Manifests { pool: &self.pool }
    }

    /// Tags.
    pub fn tags(&self) -> Tags<'_> {
        Tags { pool: &self.pool }
    }

    /// Upload sessions.
    pub fn uploads(&self) -> Uploads<'_> {
        Uploads { pool: &self.pool }
    }

    /// Tenants and namespaces.
    pub fn tenancy(&self) -> Tenancy<'_> {
        Tenancy { pool: &self.pool }
    }

    /// Users, robot accounts and role bindings.
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts { pool: &self.pool }
    }

    /// Clusters registered for P2P acceleration.
    pub fn clusters(&self) -> Clusters<'_> {
        Clusters { pool: &self.pool }
    }

    /// Web console sign-ins.
    pub fn console_sessions(&self) -> ConsoleSessions<'_> {
        ConsoleSessions { pool: &self.pool }
    }

    /// Token signing keys.
    pub fn signing_keys(&self) -> SigningKeys<'_> {
        SigningKeys { pool: &self.pool }
    }

    /// The audit log.
    pub fn audit(&self) -> AuditLog<'_> {
        AuditLog { pool: &self.pool }
    }

    /// Which replica schedules each P2P cluster.
    pub fn leases(&self) -> Leases<'_> {
        Leases { pool: &self.pool, engine: self.engine }
    }

    /// The agents registered with each cluster.
    pub fn agents(&self) -> Agents<'_> {
        Agents { pool: &self.pool }
    }

    /// Preheat jobs and their nodes.
    pub fn preheat_jobs(&self) -> PreheatJobs<'_> {
        PreheatJobs { pool: &self.pool }
    }

    /// P2P traffic for the acceleration dashboard.
    pub fn traffic(&self) -> Traffic<'_> {
        Traffic { pool: &self.pool }
    }

    /// Failed logins, for the limit every replica enforces.
    pub fn login_failures(&self) -> LoginFailures<'_> {
        LoginFailures { pool: &self.pool }
    }

    /// Quotas and storage use of namespaces and tenants.
    pub fn storage(&self) -> Storage<'_> {
        Storage { pool: &self.pool }
    }

    /// Namespaces' lifecycle policies: untagged manifests, retention, immutable tags.
    pub fn policies(&self) -> Policies<'_> {
        Policies { pool: &self.pool }
    }

    /// Garbage collection runs and their reports.
    pub fn gc_runs(&self) -> GcRuns<'_> {
        GcRuns { pool: &self.pool }
    }

    /// The sweep's conditional deletions of blobs and links.
    pub fn sweep(&self) -> Sweep<'_> {
        Sweep { pool: &self.pool }
    }

    /// Blobs that left a tenant, for its agents.
    pub fn blob_deletions(&self) -> BlobDeletions<'_> {
        BlobDeletions { pool: &self.pool }
    }

    /// Answers when the database accepts a query.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    /// Closes every connection; pending writes are flushed.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Begins a transaction that writes. On SQLite it is `BEGIN IMMEDIATE`: the
/// write lock is taken at once (waiting up to the busy timeout for another
/// writer), so no later statement of it can fail because another writer
/// made its snapshot stale. On PostgreSQL it is a plain `BEGIN` (READ
/// COMMITTED); the writes order themselves by the rows they lock.
pub(crate) async fn begin_write(pool: &AnyPool) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    if pool.connect_options().database_url.scheme().starts_with("sqlite") {
        pool.begin_with("BEGIN IMMEDIATE").await
    } else {
        pool.begin().await
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// True when the error is a unique or primary-key violation.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// True when the error says the database could not be reached or went away
/// (connection refused or reset, no connection within the pool's wait, the
/// server shutting down or not yet accepting connections) rather than that a
/// statement failed: the same request may succeed once the database is back.
pub fn is_unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL's classes 08 (connection exception) and 57P (operator
        // intervention: shutdown, crash recovery, not yet accepting), and
        // too_many_connections.
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P") || code == "53300")
        }
        _ => false,
    }
}

/// True when the database could not write because its disk is full:
/// SQLite's `SQLITE_FULL` (13, with its extended forms), PostgreSQL's
/// `disk_full` (53100).
pub fn is_disk_full(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|code| {
        code == "53100" || code.parse::<u32>().is_ok_and(|n| n & 0xff == 13)
    }))
}

/// A URL with any password replaced by `***`, safe to log.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_owned()
}
