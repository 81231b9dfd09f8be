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
