//! The parts of `damselfly-agent` that other crates reach: its settings and
//! its error type, so that the fuzz targets (`fuzz/`) drive the same code
//! that reads a `--config` file; and [`schedule`], the decisions of a
//! download's fetch loop, which the simulator (`sim/`) runs for each of its
//! simulated agents, so that what it measures is what the agent decides.
//! Everything else lives in the binary (`main.rs`).

pub mod config;
pub mod error;
#[path = "piece/schedule.rs"]
pub mod schedule;
