//! How a blob is cut into pieces, and the arithmetic on them, for the
//! registry's seed and scheduler and for the agent alike: every piece but
//! the last is `piece_size` bytes, and in a swarm of `stripes` stripe trees
//! piece `i` belongs to stripe `i % stripes`.

use serde::{Deserialize, Serialize};

use super::JoinResponse;
use crate::Digest;

/// Where each piece of a blob lies: the blob's size and its piece size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceGeometry {
    /// Blob size in bytes.
    pub size: u64,
    /// Bytes per piece (the last may be shorter).
    pub piece_size: u64,
}

impl PieceGeometry {
    /// How many pieces: an empty blob has none, and a piece size of 0 cuts nothing.
    pub fn count(&self) -> u32 {
        if self.piece_size == 0 {
            return 0;
        }
        self.size.div_ceil(self.piece_size) as u32
    }

    /// Offset and length of piece `i`; past the last piece the length is 0.
    pub fn span(&self, i: u32) -> (u64, u64) {
        let start = u64::from(i) * self.piece_size;
        (start, self.piece_size.min(self.size.saturating_sub(start)))
    }

    /// The piece that holds byte `offset`.
    pub fn piece_at(&self, offset: u64) -> u32 {
        (offset / self.piece_size.max(1)) as u32
    }
}

/// Smallest piece the rule cuts (see [`piece_size_for`]).
pub const MIN_PIECE_SIZE: u64 = 256 * 1024;
/// Largest piece the rule cuts.
pub const MAX_PIECE_SIZE: u64 = 4 * 1024 * 1024;
/// Pieces the rule aims a blob at, between those bounds.
pub const TARGET_PIECES: u64 = 128;

/// The piece size the registry cuts a blob of `size` bytes into unless an
/// operator set one: the power of two that makes about [`TARGET_PIECES`]
/// pieces, within [`MIN_PIECE_SIZE`] and [`MAX_PIECE_SIZE`].
///
/// Many pieces let the stripe trees and the pull schedule keep every link
/// busy, since a piece travels on only once it is whole and every level of
/// a tree adds a piece's time; but every piece costs a few round trips and
/// a report. 16 agents pulling 64 MiB in four 16 MiB layers on 20 Mbit/s
/// links, main's binaries one run after the other: 512 KiB pieces 1.34x
/// and 1.31x the bound, 256 KiB 1.20x and 1.21x (each level of the trees'
/// drain is half as long); at 50 Mbit/s 1.38x and 1.41x against 1.45x and
/// 1.39x, the same within the runs' spread on a CPU-bound machine.
/// A 256 MiB layer went best in 1 and 2 MiB pieces in the simulator
/// (1.09-1.10x at 50 Mbit/s, against 1.12-1.15x in 4 MiB and 1.55-1.64x in 8 MiB).
pub fn piece_size_for(size: u64) -> u64 {
    let aim = (size / TARGET_PIECES).max(1);
    let power = 1u64 << (63 - aim.leading_zeros());
    power.clamp(MIN_PIECE_SIZE, MAX_PIECE_SIZE)
}

/// The stripe piece `i` belongs to, of `stripes` (at least 1).
pub fn stripe_of(i: u32, stripes: usize) -> usize {
    i as usize % stripes.max(1)
}

/// How many of a blob's `pieces` pieces belong to `stripe`, of `stripes`.
pub fn stripe_len(pieces: usize, stripes: usize, stripe: usize) -> usize {
    (pieces + stripes - 1 - stripe) / stripes
}

/// A blob's layout as the scheduler describes it: its size, its piece size
/// and the SHA-256 of every piece, which every piece received must match.
/// One that exists has exactly one digest per piece.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LayoutText", into = "LayoutText")]
pub struct BlobLayout {
    geometry: PieceGeometry,
    piece_digests: Vec<Digest>,
}

/// Why a layout cannot be taken as it was given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// A piece digest is not 64 lowercase hex characters.
    #[error("piece digest {index} ({text:?}) is not a SHA-256 in hex")]
    PieceDigest {
        /// Which piece.
        index: usize,
        /// What was given.
        text: String,
    },
    /// A blob with bytes has no piece size.
    #[error("a blob of {0} bytes cannot be cut into pieces of 0 bytes")]
    NoPieceSize(u64),
    /// The size and piece size make more pieces than a piece index numbers.
    #[error("a blob of {size} bytes in pieces of {piece_size} has more than 2^32 pieces")]
    TooManyPieces {
        /// Blob size.
        size: u64,
        /// Piece size.
        piece_size: u64,
    },
    /// The number of piece digests does not match the size and piece size.
    #[error(
        "{digests} piece digests for a blob of {size} bytes in pieces of {piece_size}, which makes {pieces} pieces"
    )]
    Count {
        /// Digests given.
        digests: usize,
        /// Blob size.
        size: u64,
        /// Piece size.
        piece_size: u64,
        /// Pieces the size makes.
        pieces: u32,
    },
}

impl BlobLayout {
    /// A layout of `piece_digests.len()` pieces, if that is how many `size` and `piece_size` make.
    pub fn new(size: u64, piece_size: u64, piece_digests: Vec<Digest>) -> Result<BlobLayout, LayoutError> {
        let geometry = PieceGeometry { size, piece_size };
        if piece_size == 0 && size > 0 {
            return Err(LayoutError::NoPieceSize(size));
        }
        // count() numbers pieces with a u32, as the wire does.
        if piece_size > 0 && size.div_ceil(piece_size) > u64::from(u32::MAX) {
            return Err(LayoutError::TooManyPieces { size, piece_size });
        }
        if piece_digests.len() != geometry.count() as usize {
            return Err(LayoutError::Count {
                digests: piece_digests.len(),
                size,
                piece_size,
                pieces: geometry.count(),
            });
        }
        Ok(BlobLayout { geometry, piece_digests })
    }

    /// The layout a join's answer gives (one that is not brief: a brief
    /// answer leaves the piece digests out).
    pub fn from_join(plan: &JoinResponse) -> Result<BlobLayout, LayoutError> {
        LayoutText { size: plan.size, piece_size: plan.piece_size, piece_digests: plan.piece_digests.clone() }
            .try_into()
    }

    /// Blob size in bytes.
    pub fn size(&self) -> u64 {
        self.geometry.size
    }

    /// Bytes per piece (the last may be shorter).
    pub fn piece_size(&self) -> u64 {
        self.geometry.piece_size
    }

    /// Where the pieces lie.
    pub fn geometry(&self) -> PieceGeometry {
        self.geometry
    }

    /// Number of pieces.
    pub fn pieces(&self) -> u32 {
        self.piece_digests.len() as u32
    }

    /// Offset and length of piece `i`; past the last piece the length is 0.
    pub fn span(&self, i: u32) -> (u64, u64) {
        self.geometry.span(i)
    }

    /// True if `bytes` are piece `i`.
    pub fn verify(&self, i: u32, bytes: &[u8]) -> bool {
        self.piece_digests.get(i as usize).is_some_and(|d| *d == Digest::of(bytes))
    }

    /// The SHA-256 piece `i` must have.
    pub fn piece_digest(&self, i: u32) -> Option<&Digest> {
        self.piece_digests.get(i as usize)
    }
}

/// Pieces of a blob, in the compact form the seed's batched read takes in
/// its query (`?pieces=0-15,17,20-23`): ascending runs, each `first-last`
/// or a single index.
pub fn pieces_query(pieces: &[u32]) -> String {
    let mut out = String::new();
    let mut at = 0;
    while at < pieces.len() {
        let first = pieces[at];
        let mut last = first;
        while at + 1 < pieces.len() && pieces[at + 1] == last + 1 {
            at += 1;
            last += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&if first == last { first.to_string() } else { format!("{first}-{last}") });
        at += 1;
    }
    out
}

/// The pieces a [`pieces_query`] names, of a blob of `count` pieces; `None`
/// unless it names at least one, in strictly ascending order, all below `count`.
pub fn parse_pieces_query(text: &str, count: u32) -> Option<Vec<u32>> {
    let mut pieces: Vec<u32> = Vec::new();
    for run in text.split(',') {
        let (first, last) = match run.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let i = run.parse::<u32>().ok()?;
                (i, i)
            }
        };
        if first > last || last >= count || pieces.last().is_some_and(|&p| p >= first) {
            return None;
        }
        pieces.extend(first..=last);
    }
    (!pieces.is_empty()).then_some(pieces)
}

/// A layout as JSON spells it, in a join's answer and in the agent's cache:
/// the piece digests as hex without the algorithm.
#[derive(Serialize, Deserialize)]
struct LayoutText {
    size: u64,
    piece_size: u64,
    piece_digests: Vec<String>,
}

impl TryFrom<LayoutText> for BlobLayout {
    type Error = LayoutError;

    fn try_from(text: LayoutText) -> Result<BlobLayout, LayoutError> {
        let digests = text
            .piece_digests
            .into_iter()
            .enumerate()
            .map(|(index, hex)| {
                format!("sha256:{hex}").parse().map_err(|_| LayoutError::PieceDigest { index, text: hex })
            })
            .collect::<Result<Vec<Digest>, _>>()?;
        BlobLayout::new(text.size, text.piece_size, digests)
    }
}

impl From<BlobLayout> for LayoutText {
    fn from(layout: BlobLayout) -> LayoutText {
        LayoutText {
            size: layout.geometry.size,
            piece_size: layout.geometry.piece_size,
            piece_digests: layout.piece_digests.iter().map(Digest::hex).collect(),
        }
    }
}

/// A set of piece indexes as a bitmap in hex: bit `i % 8` (least significant
/// first) of byte `i / 8`, two lowercase digits per byte.
pub fn bitmap_hex(have: &[bool]) -> String {
    let bytes: Vec<u8> =
        have.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |b, (k, h)| b | (u8::from(*h) << k))).collect();
    hex::encode(bytes)
}

/// The pieces of a [`bitmap_hex`] bitmap, for a blob of `pieces` pieces;
/// `None` if it is not hex. Bits past the last piece are ignored.
pub fn bitmap_from_hex(bitmap: &str, pieces: usize) -> Option<Vec<bool>> {
    let bytes = hex::decode(bitmap).ok()?;
    Some((0..pieces).map(|i| bytes.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bitmap_in_hex_round_trips_and_rejects_what_is_not_hex() {
        let have = [true, false, false, true, false, false, false, false, true, true];
        let hex = bitmap_hex(&have);
        assert_eq!(hex, "0903");
        assert_eq!(bitmap_from_hex(&hex, have.len()).as_deref(), Some(&have[..]));
        assert_eq!(bitmap_from_hex("", 3).as_deref(), Some(&[false; 3][..]), "missing bytes are pieces not held");
        assert_eq!(bitmap_from_hex("ff", 3).as_deref(), Some(&[true; 3][..]), "bits past the last piece are ignored");
        assert_eq!(bitmap_from_hex("zz", 3), None);
        assert_eq!(bitmap_from_hex("f", 3), None);
    }

    #[test]
    fn the_rule_aims_at_128_pieces_in_powers_of_two_from_a_quarter_mebibyte_to_four() {
        const MIB: u64 = 1 << 20;
        assert_eq!(piece_size_for(0), MIN_PIECE_SIZE);
        assert_eq!(piece_size_for(1000), MIN_PIECE_SIZE);
        assert_eq!(piece_size_for(16 * MIB), 256 * 1024, "64 pieces: no smaller than a quarter mebibyte");
        assert_eq!(piece_size_for(32 * MIB), 256 * 1024);
        assert_eq!(piece_size_for(64 * MIB - 1), 256 * 1024, "rounded down");
        assert_eq!(piece_size_for(64 * MIB), 512 * 1024);
        assert_eq!(piece_size_for(128 * MIB - 1), 512 * 1024, "rounded down");
        assert_eq!(piece_size_for(128 * MIB), MIB);
        assert_eq!(piece_size_for(256 * MIB), 2 * MIB);
        assert_eq!(piece_size_for(512 * MIB), 4 * MIB);
        assert_eq!(piece_size_for(8192 * MIB), 4 * MIB, "no larger than four");
    }

    #[test]
    fn a_list_of_pieces_is_written_as_runs_and_read_back_only_when_ascending_and_in_range() {
        assert_eq!(pieces_query(&[0, 1, 2, 3, 5, 7, 8]), "0-3,5,7-8");
        assert_eq!(pieces_query(&[4]), "4");
        assert_eq!(parse_pieces_query("0-3,5,7-8", 9), Some(vec![0, 1, 2, 3, 5, 7, 8]));
        assert_eq!(parse_pieces_query("4", 5), Some(vec![4]));
        for bad in ["", "3-1", "0-9", "2,1", "1,1", "1-2,2", "a", "1-", "-1", "1,,2"] {
            assert_eq!(parse_pieces_query(bad, 9), None, "{bad:?}");
        }
    }

    #[test]
    fn pieces_are_cut_at_the_piece_size_and_the_last_is_short() {
        let g = PieceGeometry { size: 10, piece_size: 4 };
        assert_eq!(g.count(), 3);
        assert_eq!([g.span(0), g.span(1), g.span(2), g.span(3)], [(0, 4), (4, 4), (8, 2), (12, 0)]);
        assert_eq!([g.piece_at(0), g.piece_at(3), g.piece_at(4), g.piece_at(9)], [0, 0, 1, 2]);
        assert_eq!(PieceGeometry { size: 8, piece_size: 4 }.count(), 2, "no empty piece at an exact multiple");
        assert_eq!(PieceGeometry { size: 0, piece_size: 4 }.count(), 0);
        assert_eq!([stripe_len(5, 2, 0), stripe_len(5, 2, 1), stripe_len(1, 2, 1)], [3, 2, 0]);
        assert_eq!(stripe_of(5, 2), 1);
    }

    #[test]
    fn a_layout_is_json_with_hex_piece_digests_and_one_per_piece() {
        let blob = b"0123456789";
        let digests: Vec<Digest> = blob.chunks(4).map(Digest::of).collect();
        let layout = BlobLayout::new(10, 4, digests.clone()).expect("three pieces");
        let json = serde_json::to_value(&layout).expect("json");
        let hex: Vec<String> = digests.iter().map(Digest::hex).collect();
        assert_eq!(json, serde_json::json!({"size": 10, "piece_size": 4, "piece_digests": hex}));
        assert_eq!(serde_json::from_value::<BlobLayout>(json).expect("parse"), layout);
        assert!(layout.verify(2, b"89") && !layout.verify(2, b"88") && !layout.verify(3, b""));

        assert_eq!(
            BlobLayout::new(10, 4, digests[..2].to_vec()),
            Err(LayoutError::Count { digests: 2, size: 10, piece_size: 4, pieces: 3 })
        );
        assert_eq!(BlobLayout::new(10, 0, Vec::new()), Err(LayoutError::NoPieceSize(10)));
        // Found by the fuzz target p2p_wire: the count wrapped, and one digest passed for 2^32 + 1 pieces.
        assert_eq!(
            BlobLayout::new((1 << 32) + 1, 1, vec![Digest::of(b"x")]),
            Err(LayoutError::TooManyPieces { size: (1 << 32) + 1, piece_size: 1 })
        );
        let bad = serde_json::json!({"size": 4, "piece_size": 4, "piece_digests": ["XYZ"]});
        assert!(serde_json::from_value::<BlobLayout>(bad).is_err(), "a digest that is not hex is refused");
    }
}
