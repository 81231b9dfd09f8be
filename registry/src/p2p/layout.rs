//! How the P2P network cuts a blob into pieces: at the size the registry's
//! rule gives its length ([`piece_size_for`]), or at the configured
//! `--piece-size`. An upload records piece digests as it hashes the bytes,
//! before the blob's length is known, so a blob whose recorded pieces are
//! of another size (cut at upload, or pushed under an earlier rule) is cut
//! again on its first use in a swarm: its stored bytes are read once, the
//! blob's own digest is checked over the same pass, and the new piece
//! digests replace the old ones. Agents holding it under the old cut keep
//! it: a complete blob is the same bytes however it is cut.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use damselfly_core::p2p::piece_size_for;
use damselfly_core::{BlobHasher, Digest, ErrorCode};
use futures_util::StreamExt;

use crate::error::{RegistryError, Result};
use crate::metadata::BlobRecord;
use crate::state::AppState;

/// The blobs being cut again now, so that a crowd's first joins wait for
/// one cut rather than each reading the blob.
#[derive(Default)]
pub struct Recuts {
    running: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

/// The piece size the P2P network uses for a blob of `size` bytes.
pub fn piece_size(configured: Option<u64>, size: u64) -> u64 {
    configured.unwrap_or_else(|| piece_size_for(size))
}

impl Recuts {
    /// The blob, with its pieces cut at [`piece_size`]: its record as it
    /// is, or, the first time, cut again from its stored bytes and recorded.
    pub async fn current(&self, state: &AppState, blob: BlobRecord) -> Result<BlobRecord> {
        let wanted = piece_size(state.config.piece_size, blob.size);
        if blob.pieces.piece_size() == wanted || blob.size == 0 {
            return Ok(blob);
        }
        let digest = blob.digest;
        let turn = self.running.lock().unwrap_or_else(|p| p.into_inner()).entry(digest).or_default().clone();
        let cut = {
            let _turn = turn.lock().await;
            self.cut_once(state, blob, wanted).await
        };
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest);
        cut
    }

    async fn cut_once(&self, state: &AppState, blob: BlobRecord, wanted: u64) -> Result<BlobRecord> {
        // Another join may have cut it while this one waited its turn.
        if let Some(fresh) = state.db.blobs().find(&blob.digest).await? {
            if fresh.pieces.piece_size() == wanted {
                return Ok(fresh);
            }
        }
        let digest = blob.digest;
        let stream = state.blobs.read(&digest, 0, blob.size).await?.ok_or_else(|| {
            RegistryError::oci(ErrorCode::BlobUnknown, format!("blob {digest} is recorded but its bytes are missing"))
        })?;
        let started = std::time::Instant::now();
        // Streamed from the store (a file or a bucket) and hashed on a
        // blocking thread as it comes: a gigabyte is seconds of SHA-256,
        // which must not hold one of the runtime's threads.
        let (chunks, mut to_hash) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
        let hashing = tokio::task::spawn_blocking(move || {
            let mut hasher = BlobHasher::new(wanted);
            while let Some(chunk) = to_hash.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher.finish()
        });
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            if chunks.send(chunk?).await.is_err() {
                break;
            }
        }
        drop(chunks);
        let (found, pieces) = hashing.await.map_err(std::io::Error::other)?;
        if found != digest {
            tracing::error!(%digest, %found, "a stored blob does not match its digest");
            return Err(RegistryError::oci(
                ErrorCode::InternalError,
                format!("the stored bytes of blob {digest} do not match it; push the blob again"),
            ));
        }
        state.db.blobs().set_pieces(&digest, &pieces).await?;
        tracing::info!(
            %digest,
            size = blob.size,
            from = blob.pieces.piece_size(),
            to = wanted,
            millis = started.elapsed().as_millis() as u64,
            "blob cut into pieces again for the P2P network"
        );
        Ok(BlobRecord { pieces, ..blob })
    }
}
