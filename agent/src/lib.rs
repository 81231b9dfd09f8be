//! The parts of `damselfly-agent` that other crates reach: its settings and
//! its error type, so that the fuzz targets (`fuzz/`) drive the same code
//! that reads a `--config` file. Everything else lives in the binary.

pub mod config;
pub mod error;
