//! How the P2P network cuts a blob into pieces: at the size the registry's
//! rule gives its length ([`piece_size_for`]), or at the configured
//! `--piece-size`. An upload records piece digests as it hashes the bytes,
//! before the blob's length is known, so a blob whose recorded pieces are
//! of another size (cut at upload, or pushed under an earlier rule) is cut
//! again on its first use in a swarm: its stored bytes are read once, the
//! blob's own digest is checked over the same pass, and the new piece
//! digests replace the old ones. Agents holding it under the old cut keep
//! it: a complete blob is the same bytes however it is cut.
//!
//! A blob pushed into a namespace with P2P on is cut the moment its push
//! completes ([`Recuts::after_push`]), beside the client's next request and
//! while its bytes are still in the page cache, so that the first pull
//! through an agent does not wait for the cut: on a 16 MiB layer it took
//! 50–70 ms (four layers at once on two cores), which was nearly all an agent
//! alone on a 1 Gbit/s link cost over a direct pull. Switching P2P on for
//! a namespace cuts the blobs pushed into it before ([`Recuts::switched_on`]).
//! A blob still uncut then (pushed under another rule and not since switched
//! on, or whose cut failed) is cut on its first join.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use damselfly_core::p2p::piece_size_for;
use damselfly_core::{BlobHasher, Digest, ErrorCode};
use futures_util::StreamExt;

use crate::error::{RegistryError, Result};
use crate::metadata::BlobRecord;
use crate::state::AppState;
use damselfly_core::RepositoryName;

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

/// The piece size `blob` is to be cut at, if its recorded cut is not that one.
fn cut_wanted(state: &AppState, blob: &BlobRecord) -> Option<u64> {
    let wanted = piece_size(state.config.piece_size, blob.size);
    (blob.pieces.piece_size() != wanted && blob.size != 0).then_some(wanted)
}

impl Recuts {
    /// The blob, with its pieces cut at [`piece_size`]: its record as it
    /// is, or, the first time, cut again from its stored bytes and recorded.
    pub async fn current(&self, state: &AppState, blob: BlobRecord) -> Result<BlobRecord> {
        self.cut(state, blob, "join").await
    }

    /// Cuts a blob just pushed into `name` at the P2P network's size, on a
    /// task of its own, if its namespace has P2P on and the upload's cut is
    /// not already that one. A failure is logged; the first join tries again.
    pub fn after_push(self: &Arc<Self>, state: &AppState, name: &RepositoryName, blob: BlobRecord) {
        if cut_wanted(state, &blob).is_none() {
            return;
        }
        let (recuts, state, namespace) = (self.clone(), state.clone(), name.namespace().to_owned());
        tokio::spawn(async move {
            let digest = blob.digest;
            // The database's row, not the policy's cache: P2P may have been switched on a moment ago.
            let p2p_on = match state.db.tenancy().namespace(&namespace).await {
                Ok(n) => n.is_some_and(|n| n.p2p_enabled),
                Err(e) => {
                    return tracing::warn!(%digest, error = %e, "cannot look up the namespace of a blob just pushed")
                }
            };
            if p2p_on {
                if let Err(e) = recuts.cut(&state, blob, "push").await {
                    tracing::warn!(%digest, error = %e, "cannot cut a blob just pushed into pieces; its first join will");
                }
            }
        });
    }

    /// Cuts every blob of `namespace` that the P2P network would cut
    /// otherwise, one after the other on a task of its own, when P2P was
    /// just switched on there: its blobs pushed before are then cut before
    /// their first pull rather than during it.
    pub fn switched_on(self: &Arc<Self>, state: &AppState, namespace: &str) {
        let (recuts, state, namespace) = (self.clone(), state.clone(), namespace.to_owned());
        tokio::spawn(async move {
            let blobs = match state.db.blobs().in_namespace(&namespace).await {
                Ok(blobs) => blobs,
                Err(e) => {
                    return tracing::warn!(%namespace, error = %e, "cannot list the blobs of a namespace to cut them")
                }
            };
            for blob in blobs {
                let digest = blob.digest;
                if let Err(e) = recuts.cut(&state, blob, "p2p switched on").await {
                    tracing::warn!(%digest, error = %e, "cannot cut a blob into pieces; its first join will");
                }
            }
        });
    }

    /// `current`, the cut's cause (`at`) named in its log line.
    async fn cut(&self, state: &AppState, blob: BlobRecord, at: &'static str) -> Result<BlobRecord> {
        let Some(wanted) = cut_wanted(state, &blob) else { return Ok(blob) };
        let digest = blob.digest;
        let turn = self.running.lock().unwrap_or_else(|p| p.into_inner()).entry(digest).or_default().clone();
        let cut = {
            let _turn = turn.lock().await;
            self.cut_once(state, blob, wanted, at).await
        };
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest);
        cut
    }

    async fn cut_once(&self, state: &AppState, blob: BlobRecord, wanted: u64, at: &'static str) -> Result<BlobRecord> {
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
            at,
            millis = started.elapsed().as_millis() as u64,
            "blob cut into pieces again for the P2P network"
        );
        Ok(BlobRecord { pieces, ..blob })
    }
}
