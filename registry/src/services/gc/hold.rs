//! Testing only: points where a run can be held, so that a test can make a
//! race happen on purpose or kill the registry at a chosen moment.
//!
//! With `--gc-test-hold-dir DIR`, a run that reaches point `P` while the
//! file `DIR/P` exists writes the blob's digest to `DIR/P.reached` and
//! waits until `DIR/P` is removed (at most two minutes). If `DIR/P` holds a
//! digest, only that blob is held. Without the setting this costs nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use damselfly_core::Digest;

/// Where a run can be held.
#[derive(Clone, Copy, Debug)]
pub enum Point {
    /// A candidate was picked, before the decision takes its row.
    Decide,
    /// The decision is made (links removed, blob marked), before it commits: the row is held.
    Marked,
    /// The bytes are deleted, before the row's deletion commits.
    BytesDeleted,
}

impl Point {
    fn file(self) -> &'static str {
        match self {
            Point::Decide => "decide",
            Point::Marked => "marked",
            Point::BytesDeleted => "bytes-deleted",
        }
    }
}

/// Waits at `point` for `digest` while the test asks for it.
pub async fn at(dir: Option<&Path>, point: Point, digest: &Digest) {
    let Some(dir) = dir else { return };
    let flag = dir.join(point.file());
    let Ok(wanted) = tokio::fs::read_to_string(&flag).await else { return };
    if !wanted.trim().is_empty() && wanted.trim() != digest.to_string() {
        return;
    }
    let _ = tokio::fs::write(dir.join(format!("{}.reached", point.file())), digest.to_string()).await;
    tracing::warn!(point = point.file(), %digest, "garbage collection held by the testing setting gc_test_hold_dir");
    let until = Instant::now() + Duration::from_secs(120);
    while tokio::fs::metadata(&flag).await.is_ok() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
