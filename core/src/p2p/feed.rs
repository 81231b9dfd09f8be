//! The frames of a stripe feed (see [`super::FeedRequest`]): each piece's
//! index as four big-endian bytes, then the piece. The receiving agent cuts
//! the stream with [`FeedFrames`]; the bytes come from a peer, so nothing
//! about them is trusted but their framing, which is checked here, and their
//! content, which the agent checks against the piece's digest afterwards.

use bytes::{Buf, Bytes, BytesMut};

use super::{stripe_of, PieceGeometry};

/// Why a feed's bytes are not frames of the stripe asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sent piece {index}, which is not one of stripe {stripe} of {stripes}")]
pub struct FrameError {
    /// The index the frame named.
    pub index: u32,
    /// The stripe asked for.
    pub stripe: u32,
    /// The stripe count.
    pub stripes: u32,
}

/// Cuts a feed's byte stream into pieces of one stripe of a blob. Memory is
/// bounded by one piece plus the chunk last given to it.
pub struct FeedFrames {
    geometry: PieceGeometry,
    stripes: u32,
    stripe: u32,
    buf: BytesMut,
    /// The piece being received, and its length.
    current: Option<(u32, usize)>,
}

impl FeedFrames {
    /// A cutter for stripe `stripe` of `stripes` of a blob laid out as `geometry`.
    pub fn new(geometry: PieceGeometry, stripes: u32, stripe: u32) -> FeedFrames {
        FeedFrames { geometry, stripes, stripe, buf: BytesMut::new(), current: None }
    }

    /// Takes the next bytes of the stream.
    pub fn extend(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole piece, `None` until more bytes arrive, or an error if
    /// a frame names a piece that is not in the stripe (or not in the blob).
    pub fn next_piece(&mut self) -> Result<Option<(u32, Bytes)>, FrameError> {
        loop {
            match self.current {
                None if self.buf.len() >= 4 => {
                    let index = self.buf.get_u32();
                    let in_stripe = stripe_of(index, self.stripes as usize) == self.stripe as usize;
                    if index >= self.geometry.count() || !in_stripe {
                        return Err(FrameError { index, stripe: self.stripe, stripes: self.stripes });
                    }
                    self.current = Some((index, self.geometry.span(index).1 as usize));
                }
                Some((index, len)) if self.buf.len() >= len => {
                    self.current = None;
                    return Ok(Some((index, self.buf.split_to(len).freeze())));
                }
                _ => return Ok(None),
            }
        }
    }

    /// True while a frame is begun and not whole: the stream may not end here.
    pub fn mid_frame(&self) -> bool {
        self.current.is_some() || !self.buf.is_empty()
    }

    /// Bytes held that are not yet a whole piece.
    pub fn held(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(index: u32, piece: &[u8]) -> Vec<u8> {
        [&index.to_be_bytes()[..], piece].concat()
    }

    #[test]
    fn pieces_come_out_whole_however_the_stream_is_cut() {
        // 10 bytes in pieces of 4: pieces 0, 1 (4 bytes) and 2 (2 bytes); stripe 0 of 2 is pieces 0 and 2.
        let geometry = PieceGeometry { size: 10, piece_size: 4 };
        let stream = [frame(0, b"abcd"), frame(2, b"ij")].concat();
        for cut in 0..stream.len() {
            let mut frames = FeedFrames::new(geometry, 2, 0);
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                frames.extend(part);
                while let Some((i, piece)) = frames.next_piece().expect("frames of the stripe") {
                    got.push((i, piece.to_vec()));
                }
            }
            assert_eq!(got, [(0, b"abcd".to_vec()), (2, b"ij".to_vec())], "cut at {cut}");
            assert!(!frames.mid_frame());
        }
    }

    #[test]
    fn a_piece_of_another_stripe_or_past_the_end_is_refused() {
        let geometry = PieceGeometry { size: 10, piece_size: 4 };
        for index in [1, 3, u32::MAX] {
            let mut frames = FeedFrames::new(geometry, 2, 0);
            frames.extend(&index.to_be_bytes());
            assert_eq!(frames.next_piece(), Err(FrameError { index, stripe: 0, stripes: 2 }));
        }
        let mut frames = FeedFrames::new(geometry, 2, 0);
        frames.extend(&frame(0, b"ab"));
        assert_eq!(frames.next_piece(), Ok(None));
        assert!(frames.mid_frame(), "half a piece may not end the feed");
        assert_eq!(frames.held(), 2);
    }
}
