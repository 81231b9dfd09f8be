//! Types shared by the Damselfly registry and agent.
//!
//! Every type here is parsed at the edge and trusted afterwards: a [`Digest`]
//! that exists has a known algorithm and a well-formed hex value, and a
//! [`RepositoryName`] matches the OCI Distribution grammar.

mod digest;
mod error_code;
mod name;
pub mod p2p;
pub mod range;
mod reference;

pub use digest::{BlobHasher, Digest, DigestError, PieceDigests, PIECE_SIZE};
pub use error_code::{ErrorBody, ErrorCode, ErrorEntry};
pub use name::{NameError, RepositoryName};
pub use reference::{Reference, ReferenceError, Tag};
