//! Blob bytes on the local filesystem.

mod blob_store;

pub use blob_store::{AppendError, BlobStore};
