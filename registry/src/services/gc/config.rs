//! Garbage collection settings: the `[gc]` table of the registry's
//! settings, with `DAMSELFLY_GC_*` variables and `--gc-*` flags over it.

use std::path::PathBuf;

use serde::Deserialize;

/// When garbage collection runs and what it spares.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Seconds between scheduled garbage collection runs, counted from the last run (any replica's);
    /// 0 turns the schedule off (runs then start only from the API or the console).
    #[arg(long = "gc-interval-secs", env = "DAMSELFLY_GC_INTERVAL_SECS", default_value_t = 86_400)]
    pub interval_secs: u64,
    /// Seconds a blob is kept after anything last needed it (an upload, a mount, a manifest that
    /// referenced it, a HEAD before a push) before an unreferenced one is collected.
    #[arg(long = "gc-grace-secs", env = "DAMSELFLY_GC_GRACE_SECS", default_value_t = 86_400)]
    pub grace_secs: u64,
    /// Blobs whose deletion a run finishes together: their rows are held in one transaction while their
    /// bytes go, then deleted in one commit (1 to 10000). With SQLite that transaction holds the database's
    /// write lock, so pushes wait for a batch's bytes to go.
    #[arg(long = "gc-delete-batch", env = "DAMSELFLY_GC_DELETE_BATCH", default_value_t = 500)]
    pub delete_batch: u32,
    /// Requests to the blob store in flight at once while a batch's bytes are deleted (1 to 256): files removed
    /// at once, or S3 DeleteObjects requests, which share the batch's keys (at most 1000 each).
    #[arg(long = "gc-delete-concurrency", env = "DAMSELFLY_GC_DELETE_CONCURRENCY", default_value_t = 8)]
    pub delete_concurrency: u32,
    /// Testing only: a directory of files that hold a run at chosen points (see services/gc/hold.rs)
    /// [default: none].
    #[arg(long = "gc-test-hold-dir", env = "DAMSELFLY_GC_TEST_HOLD_DIR")]
    pub test_hold_dir: Option<PathBuf>,
}

impl Default for GcConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

impl GcConfig {
    /// Checks the settings' ranges; the message says what to set.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_DELETE_BATCH).contains(&self.delete_batch) {
            return Err(format!(
                "gc delete_batch {} is out of range: use 1 to {MAX_DELETE_BATCH} (the default is 500)",
                self.delete_batch
            ));
        }
        if !(1..=MAX_DELETE_CONCURRENCY).contains(&self.delete_concurrency) {
            return Err(format!(
                "gc delete_concurrency {} is out of range: use 1 to {MAX_DELETE_CONCURRENCY} (the default is 8)",
                self.delete_concurrency
            ));
        }
        Ok(())
    }
}

/// Most blobs one batch deletes: its rows are one transaction's.
const MAX_DELETE_BATCH: u32 = 10_000;
/// Most deletion requests in flight at once.
const MAX_DELETE_CONCURRENCY: u32 = 256;
