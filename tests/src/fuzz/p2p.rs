//! The P2P network's wire: the bodies agents send the scheduler and the
//! answers they read back, the feed frames one agent streams another, and
//! the scheduler itself driven by any sequence of such bodies.

use std::sync::Arc;
use std::time::Duration;

use damselfly_core::p2p::{
    bitmap_from_hex, bitmap_hex, stripe_of, BlobLayout, FeedFrames, FeedRequest, HeartbeatRequest, HeartbeatResponse,
    JoinRequest, JoinResponse, PieceGeometry, PreheatReport, RegisterRequest, ReportRequest,
};
use damselfly_core::Digest;
use damselfly_registry::metadata::ClusterId;
use damselfly_registry::p2p::scheduler::{Blob, ManualClock, Scheduler, MAX_PARENTS};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Parses `body` as a `T`; what parses prints as JSON that parses to the same.
fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(body: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(body).ok()?;
    let again: T = serde_json::from_str(&serde_json::to_string(&value).expect("serializes")).expect("parses back");
    assert_eq!(again, value);
    Some(value)
}

/// A body of each P2P call, picked by the first byte. Whatever parses
/// round-trips; a join's answer yields a layout only when its piece digests
/// cover the blob exactly; a `have` bitmap reads back as it was written.
pub fn p2p_wire(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    match pick % 8 {
        0 => drop(round_trip::<RegisterRequest>(body)),
        1 => drop(round_trip::<JoinRequest>(body)),
        2 => drop(round_trip::<ReportRequest>(body)),
        3 => drop(round_trip::<HeartbeatRequest>(body)),
        4 => drop(round_trip::<HeartbeatResponse>(body)),
        5 => drop(round_trip::<PreheatReport>(body)),
        6 => {
            if let Some(feed) = round_trip::<FeedRequest>(body) {
                let pieces = (feed.stripes as usize).min(4096);
                if let Some(have) = bitmap_from_hex(&feed.have, pieces) {
                    assert_eq!(have.len(), pieces);
                    assert_eq!(bitmap_from_hex(&bitmap_hex(&have), pieces), Some(have));
                }
            }
        }
        _ => {
            if let Some(answer) = round_trip::<JoinResponse>(body) {
                if let Ok(layout) = BlobLayout::from_join(&answer) {
                    let covered: u64 = (0..layout.pieces()).map(|i| layout.span(i).1).sum();
                    assert_eq!(covered, layout.size(), "{answer:?}");
                    assert_eq!(layout.pieces() as usize, answer.piece_digests.len());
                }
            }
        }
    }
}

/// A feed as a peer may send it: eight bytes say the blob (size, piece
/// size), the stripe asked for and how the stream is cut into chunks; the
/// rest is the stream. Every piece cut is of the stripe, inside the blob,
/// and exactly as long as the layout says; memory stays within a piece and
/// a chunk.
pub fn feed_frames(data: &[u8]) {
    let Some((head, stream)) = data.split_first_chunk::<8>() else { return };
    let size = u64::from(u32::from_le_bytes([head[0], head[1], head[2], 0]));
    let piece_size = u64::from(u16::from_le_bytes([head[3], head[4]])) + 1;
    let (stripes, stripe, chunk) = (u32::from(head[5] % 9), u32::from(head[6] % 9), usize::from(head[7]) + 1);
    let geometry = PieceGeometry { size, piece_size };
    let mut frames = FeedFrames::new(geometry, stripes, stripe);
    for part in stream.chunks(chunk) {
        frames.extend(part);
        loop {
            match frames.next_piece() {
                Ok(Some((i, piece))) => {
                    assert!(i < geometry.count());
                    assert_eq!(stripe_of(i, stripes as usize), stripe as usize);
                    assert_eq!(piece.len() as u64, geometry.span(i).1);
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(e.index >= geometry.count() || stripe_of(e.index, stripes as usize) != stripe as usize);
                    return;
                }
            }
        }
        assert!(frames.held() as u64 <= piece_size + 4 + chunk as u64);
    }
}

/// The blob a join names, as the registry's metadata would give it: a
/// digest always has the same shape, from none to 69 pieces.
fn blob_of(digest: &Digest) -> Blob {
    let b = digest.as_bytes();
    Blob { pieces: usize::from(b[0] % 70), piece_size: [256 << 10, 4 << 20][usize::from(b[1] % 2)] }
}

/// The scheduler, driven by lines of calls as the P2P routes make them:
/// `r` register, `j` join, `p` report (each followed by its JSON body),
/// `h` heartbeat, `f` forget, `x` expire, `t` let time pass. An agent id
/// that is a number names the n-th registered agent. Every plan names only
/// pieces of the blob, parents other than the requester holding pieces it
/// lacks, and no more parents than the scheduler promises.
pub fn scheduler(data: &[u8]) {
    let clock = Arc::new(ManualClock::new());
    let scheduler = Scheduler::new(Duration::from_secs(10)).with_clock(clock.clone()).with_stripes(2);
    let cluster = ClusterId(1);
    let mut agents: Vec<String> = Vec::new();
    let named = |agents: &[String], id: &str| -> String {
        match (id.parse::<usize>(), agents.len()) {
            (Ok(n), len) if len > 0 => agents[n % len].clone(),
            _ => id.to_owned(),
        }
    };
    for line in data.split(|&b| b == b'\n').take(200) {
        let Some((&op, body)) = line.split_first() else { continue };
        match op {
            b'r' => {
                let req = serde_json::from_slice::<RegisterRequest>(body).unwrap_or(RegisterRequest {
                    node: "node".into(),
                    ip: "127.0.0.1".into(),
                    peer_port: 65002,
                    zone: String::new(),
                    upload_slots: 2,
                    version: String::new(),
                    platform: String::new(),
                });
                agents.push(scheduler.register(cluster, &req));
            }
            b'j' => {
                let Ok(mut req) = serde_json::from_slice::<JoinRequest>(body) else { continue };
                req.agent_id = named(&agents, &req.agent_id);
                if scheduler.agent(cluster, &req.agent_id).is_none() {
                    continue;
                }
                let blob = blob_of(&req.digest);
                scheduler.load(cluster, &req.agent_id, req.uploading, req.fetching);
                let plan = scheduler.join(cluster, &req.agent_id, req.digest, blob, &req.have);
                let inside = |i: &u32| (*i as usize) < blob.pieces;
                assert!(plan.seed_pieces.iter().all(inside), "{plan:?}");
                assert!(plan.seed_pieces.iter().all(|i| !req.have.contains(i)), "{plan:?}");
                assert_eq!(plan.availability.len(), blob.pieces, "{plan:?}");
                assert!(plan.parents.len() <= MAX_PARENTS, "{plan:?}");
                for parent in &plan.parents {
                    assert_ne!(parent.agent_id, req.agent_id, "{plan:?}");
                    assert!(parent.pieces.iter().all(inside), "{plan:?}");
                    assert!(parent.pieces.iter().all(|i| !req.have.contains(i)), "{plan:?}");
                }
                assert!(plan.feeds.iter().flatten().all(|f| f.agent_id != req.agent_id), "{plan:?}");
            }
            b'p' => {
                let Ok(mut report) = serde_json::from_slice::<ReportRequest>(body) else { continue };
                report.agent_id = named(&agents, &report.agent_id);
                for id in report.failed_parents.iter_mut().chain(report.bad_parents.iter_mut()) {
                    *id = named(&agents, id);
                }
                for (id, _) in report.bytes_from.iter_mut() {
                    *id = named(&agents, id);
                }
                if scheduler.agent(cluster, &report.agent_id).is_some() {
                    scheduler.report(cluster, &report);
                    let holders = scheduler.holders(cluster, report.digest);
                    assert!(holders.iter().all(|&n| n <= agents.len()), "{holders:?}");
                }
            }
            b'h' => drop(scheduler.heartbeat_from(cluster, &named(&agents, &String::from_utf8_lossy(body)))),
            b'f' => drop(scheduler.forget(cluster, &named(&agents, &String::from_utf8_lossy(body)))),
            b'x' => scheduler.expire(),
            b't' => {
                let ms = String::from_utf8_lossy(body).trim().parse::<u64>().unwrap_or(1000);
                clock.advance(Duration::from_millis(ms.min(3_600_000)));
            }
            _ => {}
        }
    }
    assert!(scheduler.census().agents <= agents.len());
}
