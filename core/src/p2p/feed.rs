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
///
/// Each piece is copied once, into a buffer of its own of exactly its
/// length: the agent keeps its newest pieces in memory after storing them,
/// and a piece cut from a buffer shared with the bytes that follow it would
/// pin that buffer, so that every next piece grew a fresh one from nothing,
/// page faults and copies included.
pub struct FeedFrames {
    geometry: PieceGeometry,
    stripes: u32,
    stripe: u32,
    /// Bytes not yet taken into a piece: a frame's index, or what followed
    /// the end of the piece being received in the same chunk.
    buf: BytesMut,
    /// The piece being received: its index, its length and its bytes so far.
    current: Option<(u32, usize, BytesMut)>,
}

impl FeedFrames {
    /// A cutter for stripe `stripe` of `stripes` of a blob laid out as `geometry`.
    pub fn new(geometry: PieceGeometry, stripes: u32, stripe: u32) -> FeedFrames {
        FeedFrames { geometry, stripes, stripe, buf: BytesMut::new(), current: None }
    }

    /// Takes the next bytes of the stream: straight into the piece being
    /// received while nothing is waiting before them.
    pub fn extend(&mut self, mut chunk: &[u8]) {
        if let Some((_, len, piece)) = self.current.as_mut().filter(|_| self.buf.is_empty()) {
            let into = (*len - piece.len()).min(chunk.len());
            piece.extend_from_slice(&chunk[..into]);
            chunk = &chunk[into..];
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole piece, `None` until more bytes arrive, or an error if
    /// a frame names a piece that is not in the stripe (or not in the blob).
    pub fn next_piece(&mut self) -> Result<Option<(u32, Bytes)>, FrameError> {
        loop {
            match self.current.as_mut() {
                None if self.buf.len() >= 4 => {
                    let index = self.buf.get_u32();
                    let in_stripe = stripe_of(index, self.stripes as usize) == self.stripe as usize;
                    if index >= self.geometry.count() || !in_stripe {
                        return Err(FrameError { index, stripe: self.stripe, stripes: self.stripes });
                    }
                    let len = self.geometry.span(index).1 as usize;
                    self.current = Some((index, len, BytesMut::with_capacity(len)));
                }
                Some((_, len, piece)) => {
                    let into = (*len - piece.len()).min(self.buf.len());
                    piece.extend_from_slice(&self.buf.split_to(into));
                    if piece.len() < *len {
                        return Ok(None);
                    }
                    let Some((index, _, piece)) = self.current.take() else { return Ok(None) };
                    return Ok(Some((index, piece.freeze())));
                }
                None => return Ok(None),
            }
        }
    }

    /// True while a frame is begun and not whole: the stream may not end here.
    pub fn mid_frame(&self) -> bool {
        self.current.is_some() || !self.buf.is_empty()
    }

    /// Bytes held that are not yet a whole piece.
    pub fn held(&self) -> usize {
        self.buf.len() + self.current.as_ref().map_or(0, |(_, _, piece)| piece.len())
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
    fn each_piece_owns_a_buffer_of_its_own_length() {
        // A piece kept in memory must not hold the buffer the next piece's bytes go into.
        let geometry = PieceGeometry { size: 10, piece_size: 4 };
        let stream = [frame(0, b"abcd"), frame(2, b"ij")].concat();
        let mut frames = FeedFrames::new(geometry, 2, 0);
        let mut got = Vec::new();
        for part in stream.chunks(3) {
            frames.extend(part);
            while let Some((_, piece)) = frames.next_piece().expect("frames of the stripe") {
                got.push(piece);
            }
        }
        assert_eq!(got.len(), 2);
        for piece in got {
            let len = piece.len();
            let owned = piece.try_into_mut().expect("the piece's buffer is its own");
            assert_eq!(owned.capacity(), len);
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
