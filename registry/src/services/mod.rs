//! Rules of the registry that are independent of HTTP and SQL.

pub mod audit;
pub mod manifest;
pub mod uploads;
