//! The registry's rules, between the faces that speak HTTP (`oci/`, `api/`,
//! `console/`) and the SQL in `metadata/`: who may do what, and what doing
//! it means. Services take parsed, typed input and return one [`Error`],
//! which each face turns into its own answer in one place.
//!
//! A face reads as three steps: check who may act ([`access`], which hands
//! back a proof), parse what the request names ([`names`] and the types of
//! each service), and act through the service that takes the proof.

pub mod access;
pub mod agent_image;
pub mod audit;
pub mod clusters;
mod error;
pub mod gc;
pub mod lifecycle;
pub mod manifest;
pub mod members;
pub mod names;
pub mod namespaces;
pub mod number;
pub mod preheat;
pub mod quota;
pub mod repositories;
pub mod robots;
pub mod signing_keys;
pub mod tenants;
pub mod uploads;
pub mod users;

pub use error::{Error, Hint, OnDuplicate, Place, Problem, Result, Thing};
