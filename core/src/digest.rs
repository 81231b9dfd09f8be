use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256};

/// Size of one piece of a blob as the P2P network moves it, unless configured otherwise.
pub const PIECE_SIZE: u64 = 4 * 1024 * 1024;

/// A validated `sha256:<64 lowercase hex>` content digest.
///
/// Only SHA-256 is accepted: it is what every client computes by default, and
/// the registry must be able to verify every digest it is handed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a string is not a usable digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// The string has no `algorithm:` prefix or breaks the digest grammar.
    #[error("digest {0:?} is malformed: expected sha256:<64 lowercase hex characters>")]
    Malformed(String),
    /// The algorithm is well formed but not one the registry verifies.
    #[error("digest algorithm {0:?} is not supported: use sha256")]
    UnsupportedAlgorithm(String),
}

impl Digest {
    /// Digest of a byte slice held in memory (manifests, small test blobs).
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// The raw 32 bytes of the SHA-256 value.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds a digest from the raw 32 bytes of a SHA-256 value.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The lowercase hex value without the algorithm prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || DigestError::Malformed(s.to_owned());
        let (algorithm, encoded) = s.split_once(':').ok_or_else(malformed)?;
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .split(['+', '.', '_', '-'])
                .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let encoded_ok = !encoded.is_empty()
            && encoded.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
        if !algorithm_ok || !encoded_ok {
            return Err(malformed());
        }
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(algorithm.to_owned()));
        }
        if encoded.len() != 64 || !encoded.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(malformed());
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(encoded, &mut raw).map_err(|_| malformed())?;
        Ok(Digest(raw))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The SHA-256 of every fixed-size piece of a blob, in order.
///
/// Peers are not trusted, so every piece that crosses the P2P network is
/// checked against this list before it is stored or passed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PieceDigests {
    piece_size: u64,
    digests: Vec<Digest>,
}

impl PieceDigests {
    /// Size of every piece but the last.
    pub fn piece_size(&self) -> u64 {
        self.piece_size
    }

    /// Digests in piece order.
    pub fn digests(&self) -> &[Digest] {
        &self.digests
    }

    /// The raw digests concatenated, 32 bytes each, as stored in the metadata database.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.digests.iter().flat_map(|d| d.0).collect()
    }

    /// Rebuilds the list from [`PieceDigests::to_bytes`] output; `None` if the length is not a multiple of 32.
    pub fn from_bytes(piece_size: u64, bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(32) {
            return None;
        }
        let digests = bytes
            .chunks_exact(32)
            .map(|c| {
                let mut raw = [0u8; 32];
                raw.copy_from_slice(c);
                Digest(raw)
            })
            .collect();
        Some(PieceDigests { piece_size, digests })
    }
}

/// Computes a blob's digest and its piece digests in one pass over the bytes.
///
/// It is `Clone` so that a chunked upload can hash a chunk speculatively and
/// keep the new state only once the chunk has been written completely.
#[derive(Clone)]
pub struct BlobHasher {
    whole: Sha256,
    piece: Sha256,
    piece_filled: u64,
    piece_size: u64,
    pieces: Vec<Digest>,
    len: u64,
}

impl BlobHasher {
    /// A hasher cutting pieces of `piece_size` bytes (must be non-zero).
    pub fn new(piece_size: u64) -> Self {
        assert!(piece_size > 0, "piece size must be positive");
        BlobHasher {
            whole: Sha256::new(),
            piece: Sha256::new(),
            piece_filled: 0,
            piece_size,
            pieces: Vec::new(),
            len: 0,
        }
    }

    /// Feeds the next bytes of the blob.
    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        self.len += data.len() as u64;
        while !data.is_empty() {
            let room = (self.piece_size - self.piece_filled) as usize;
            let take = room.min(data.len());
            self.piece.update(&data[..take]);
            self.piece_filled += take as u64;
            data = &data[take..];
            if self.piece_filled == self.piece_size {
                let done = std::mem::take(&mut self.piece);
                self.pieces.push(Digest(done.finalize().into()));
                self.piece_filled = 0;
            }
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing has been hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hasher's whole state as bytes, for a database: an upload session
    /// saved by one registry process continues on another with
    /// [`BlobHasher::restore`], without re-reading the bytes hashed so far.
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SAVED_HEAD + 2 * SHA256_STATE + 32 * self.pieces.len());
        out.push(SAVED_VERSION);
        for n in [self.piece_size, self.piece_filled, self.len] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.whole.serialize());
        out.extend_from_slice(&self.piece.serialize());
        for piece in &self.pieces {
            out.extend_from_slice(&piece.0);
        }
        out
    }

    /// The hasher [`BlobHasher::save`] wrote; `None` if the bytes are not such a state.
    pub fn restore(saved: &[u8]) -> Option<BlobHasher> {
        let (&version, rest) = saved.split_first()?;
        if version != SAVED_VERSION || rest.len() < SAVED_HEAD - 1 + 2 * SHA256_STATE {
            return None;
        }
        let number = |i: usize| u64::from_le_bytes(rest[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let (piece_size, piece_filled, len) = (number(0), number(1), number(2));
        let rest = &rest[24..];
        let sha =
            |bytes: &[u8]| SerializedState::<Sha256>::try_from(bytes).ok().and_then(|s| Sha256::deserialize(&s).ok());
        let whole = sha(&rest[..SHA256_STATE])?;
        let piece = sha(&rest[SHA256_STATE..2 * SHA256_STATE])?;
        let digests = PieceDigests::from_bytes(piece_size, &rest[2 * SHA256_STATE..])?.digests;
        let consistent =
            piece_size > 0 && piece_filled < piece_size && digests.len() as u64 * piece_size + piece_filled == len;
        consistent.then_some(BlobHasher { whole, piece, piece_filled, piece_size, pieces: digests, len })
    }

    /// The blob digest and its piece digests. An empty blob has no pieces.
    pub fn finish(mut self) -> (Digest, PieceDigests) {
        if self.piece_filled > 0 {
            self.pieces.push(Digest(self.piece.finalize().into()));
        }
        let digest = Digest(self.whole.finalize().into());
        (digest, PieceDigests { piece_size: self.piece_size, digests: self.pieces })
    }
}

/// Format of [`BlobHasher::save`]; a new layout gets a new number.
const SAVED_VERSION: u8 = 1;
/// The version byte and three `u64`s.
const SAVED_HEAD: usize = 1 + 3 * 8;
/// Length of one serialized SHA-256 state: its chaining value, block counter and partial block.
const SHA256_STATE: usize = 40 + 64;

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_sha256() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::of(b""));
    }

    #[test]
    fn rejects_malformed_and_unknown_algorithms() {
        for bad in ["", "sha256", "sha256:", ":abc", "sha256:XYZ", "SHA256:abc", "sha256:e3b0", &EMPTY.to_uppercase()] {
            assert!(matches!(bad.parse::<Digest>(), Err(DigestError::Malformed(_))), "{bad}");
        }
        assert_eq!("sha512:abcd".parse::<Digest>(), Err(DigestError::UnsupportedAlgorithm("sha512".into())));
        let upper_hex = format!("sha256:{}", &EMPTY[7..].to_uppercase());
        assert!(upper_hex.parse::<Digest>().is_err());
    }

    #[test]
    fn pieces_cut_at_piece_size_across_updates() {
        let data: Vec<u8> = (0..10u32).flat_map(|i| i.to_le_bytes()).collect(); // 40 bytes
        let mut w = BlobHasher::new(16);
        w.update(&data[..7]);
        w.update(&data[7..33]);
        w.update(&data[33..]);
        let (digest, pieces) = w.finish();
        assert_eq!(digest, Digest::of(&data));
        let expected: Vec<Digest> = data.chunks(16).map(Digest::of).collect();
        assert_eq!(pieces.digests(), expected.as_slice());
        assert_eq!(PieceDigests::from_bytes(16, &pieces.to_bytes()), Some(pieces));
    }

    #[test]
    fn exact_multiple_has_no_empty_trailing_piece() {
        let mut w = BlobHasher::new(4);
        w.update(b"abcdefgh");
        let (_, pieces) = w.finish();
        assert_eq!(pieces.digests().len(), 2);
        let (_, none) = BlobHasher::new(4).finish();
        assert!(none.digests().is_empty());
    }

    #[test]
    fn a_saved_hasher_resumes_where_it_stopped_at_any_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = {
            let mut w = BlobHasher::new(50);
            w.update(&data);
            w.finish()
        };
        for split in [0, 1, 49, 50, 63, 64, 65, 128, 199, 299, 300] {
            let mut first = BlobHasher::new(50);
            first.update(&data[..split]);
            let saved = first.save();
            let mut resumed = BlobHasher::restore(&saved).expect("a saved state restores");
            assert_eq!(resumed.len(), split as u64);
            resumed.update(&data[split..]);
            assert_eq!(resumed.finish(), whole, "split at {split}");
        }
    }

    #[test]
    fn serialized_sha256_state_has_the_length_assumed() {
        assert_eq!(Sha256::new().serialize().len(), SHA256_STATE);
    }

    #[test]
    fn damaged_saved_states_are_refused() {
        let mut w = BlobHasher::new(16);
        w.update(&[1u8; 40]);
        let saved = w.save();
        assert!(BlobHasher::restore(&saved[..saved.len() - 1]).is_none(), "a cut piece digest");
        assert!(BlobHasher::restore(&saved[..10]).is_none(), "a cut header");
        let mut wrong_version = saved.clone();
        wrong_version[0] = 9;
        assert!(BlobHasher::restore(&wrong_version).is_none());
        let mut wrong_len = saved;
        wrong_len[17] ^= 1;
        assert!(BlobHasher::restore(&wrong_len).is_none(), "a length the pieces do not add up to");
    }
}
