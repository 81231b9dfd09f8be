//! The wire types agents and the registry's scheduler exchange.
//!
//! An agent registers with its cluster token, then asks to join the swarm
//! of a blob on behalf of a client (whose bearer token it forwards). The
//! scheduler answers with the blob's piece digests, the parents to fetch
//! from, the pieces only the seed can give it, and a ticket that peers and
//! the seed accept for that blob.
//!
//! The contract both sides hold to lives here too: the ticket's claims,
//! and how a blob is cut into pieces ([`BlobLayout`], [`PieceGeometry`]).

mod feed;
mod pieces;
mod ticket;

use serde::{Deserialize, Serialize};

pub use self::feed::{FeedFrames, FrameError};
pub use self::pieces::{
    bitmap_from_hex, bitmap_hex, parse_pieces_query, piece_size_for, pieces_query, stripe_len, stripe_of, BlobLayout,
    LayoutError, PieceGeometry, MAX_PIECE_SIZE, MIN_PIECE_SIZE, TARGET_PIECES,
};
pub use self::ticket::{TicketClaims, TICKET_AUDIENCE};
use crate::Digest;

/// Scheme of the `Authorization` header agents send to the scheduler: `Cluster <token>`.
pub const CLUSTER_AUTH_SCHEME: &str = "Cluster";
/// Scheme of the `Authorization` header a ticket travels in: `Ticket <jwt>`.
pub const TICKET_AUTH_SCHEME: &str = "Ticket";

/// `POST /p2p/v1/agents`: an agent announces itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Kubernetes node name or host name.
    pub node: String,
    /// Address peers reach this agent's piece server at.
    pub ip: String,
    /// Port of the piece server (65002 by default).
    pub peer_port: u16,
    /// Topology zone; peers in the same zone are preferred.
    #[serde(default)]
    pub zone: String,
    /// Concurrent piece uploads this agent accepts.
    #[serde(default = "default_upload_slots")]
    pub upload_slots: u32,
    /// Agent version, for the console.
    #[serde(default)]
    pub version: String,
    /// The node's OCI platform, `<os>/<architecture>[/<variant>]` (e.g. `linux/arm64`): preheating
    /// a multi-platform tag fetches the manifest of this platform. Empty means `linux/amd64`.
    #[serde(default)]
    pub platform: String,
}

/// The OCI platform of the machine this code runs on, `<os>/<architecture>`
/// in the image-index spelling (Go's GOOS/GOARCH).
pub fn this_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

fn default_upload_slots() -> u32 {
    8
}

/// The scheduler's answer to a registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The agent's id for later calls.
    pub agent_id: String,
    /// Send a heartbeat at least this often, or be forgotten.
    pub heartbeat_secs: u64,
    /// The agent's cluster, as tickets name it ([`TicketClaims::cluster`]): the
    /// piece server serves only tickets of its own cluster. Absent from
    /// registries older than this field; an agent that does not know its
    /// cluster serves no piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<i64>,
}

/// `POST /p2p/v1/swarms/join`: an agent wants a blob for a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The agent asking.
    pub agent_id: String,
    /// Repository the client pulls from.
    pub repository: String,
    /// The blob.
    pub digest: Digest,
    /// The pulling client's bearer token (from the registry's token endpoint),
    /// or `None` for an anonymous pull.
    pub client_token: Option<String>,
    /// Pieces the agent holds already (after a restart or an earlier partial pull).
    #[serde(default)]
    pub have: Vec<u32>,
    /// Piece uploads the agent runs right now, all blobs together: the
    /// scheduler sends requesters to parents with free upload slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploading: Option<u32>,
    /// An agent with nothing to fetch asks the registry to hold its answer
    /// up to this many milliseconds (at most [`MAX_JOIN_WAIT_MS`]) until a
    /// seed piece is handed to it or a peer has a piece it lacks, rather
    /// than learn of either only at its next join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u32>,
    /// The agent holds the blob's piece digests and a ticket with more than
    /// [`BRIEF_TICKET_LEFT_SECS`] to run: the answer leaves both out
    /// (`piece_digests` and `ticket` empty). A swarm's agents join several
    /// times a second, and these answers share the seed's uplink.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub brief: bool,
    /// Piece downloads the agent runs right now, all blobs together: a
    /// seed piece goes to an agent whose downlink is free, if one asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetching: Option<u32>,
}

/// A ticket with less than this many seconds left is renewed at the next join.
pub const BRIEF_TICKET_LEFT_SECS: u64 = 60;

/// The longest the registry holds a join's answer (see [`JoinRequest::wait_ms`]).
pub const MAX_JOIN_WAIT_MS: u32 = 2000;

/// How the agent should get the blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinMode {
    /// Through the swarm, piece by piece.
    P2p,
    /// P2P acceleration is off for the namespace: fetch from the registry with the client's token.
    Passthrough,
}

/// A peer to fetch pieces from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    /// The peer's agent id.
    pub agent_id: String,
    /// `http://<ip>:<peer_port>` of its piece server.
    pub url: String,
    /// Pieces it holds that the requester lacks.
    pub pieces: Vec<u32>,
}

/// The scheduler's answer to a join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// P2P or pass-through.
    pub mode: JoinMode,
    /// Blob size in bytes.
    pub size: u64,
    /// Piece size in bytes (every piece but the last).
    pub piece_size: u64,
    /// Hex SHA-256 of each piece, in order. Every piece received must match.
    pub piece_digests: Vec<String>,
    /// Peers to fetch from, best first.
    pub parents: Vec<Parent>,
    /// Pieces nobody in the swarm holds or is fetching: take them from the seed.
    pub seed_pieces: Vec<u32>,
    /// For each piece, how many peers the scheduler knows to hold it; fetch the rarest first.
    #[serde(default)]
    pub availability: Vec<u32>,
    /// URL of the seed's piece endpoint for this blob: `<registry>/p2p/v1/seed/<digest>/pieces`.
    /// `GET <seed_url>/<i>` is piece `i`; `GET <seed_url>?pieces=<list>` (see [`pieces_query`]) is
    /// the listed pieces back to back, in one stream.
    pub seed_url: String,
    /// Ticket accepted by parents and the seed for this blob, for this agent.
    pub ticket: String,
    /// Seconds until the ticket expires; join again before then.
    pub ticket_expires_in: u64,
    /// The agent's place in the swarm's stripe trees, one entry per stripe
    /// (empty: no trees, fetch every piece as [`JoinResponse::parents`] and
    /// [`JoinResponse::seed_pieces`] say). Piece `i` belongs to stripe
    /// `i % feeds.len()`. `Some` names the parent that streams the stripe's
    /// pieces to the agent as it gets them ([`FeedRequest`]); `None` makes
    /// the agent the stripe's root, which takes the stripe from the seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<Option<Feed>>,
    /// The blob has pieces only the seed can give, and waits its turn there
    /// behind other blobs of the cluster: the download is not stalled, even
    /// if no piece arrives for a long while.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
}

/// The parent that streams one stripe of a blob to an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feed {
    /// The parent's agent id.
    pub agent_id: String,
    /// `http://<ip>:<peer_port>` of its piece server.
    pub url: String,
}

/// `POST /feeds/{digest}` on a peer's piece server, with a ticket for the
/// blob: stream me the pieces of one stripe as you get them.
///
/// The answer is a stream of frames, each the piece's index as four
/// big-endian bytes followed by the piece, every piece of the stripe the
/// parent holds or gets that the requester did not say it has, lowest
/// index first among those the parent holds. It ends once every such piece
/// is sent, or early if the parent's own download fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedRequest {
    /// Stripes the blob is cut into (the length of [`JoinResponse::feeds`]).
    pub stripes: u32,
    /// The stripe wanted: pieces `i` with `i % stripes == stripe`.
    pub stripe: u32,
    /// Pieces the requester holds already, as a bitmap in lowercase hex
    /// (see [`bitmap_hex`]).
    #[serde(default)]
    pub have: String,
}

/// `POST /p2p/v1/agents/{agent}/heartbeat`: what the agent says about itself.
/// The body is optional (older agents send none) and so is every field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// Bytes in the agent's cache.
    #[serde(default)]
    pub cache_bytes: Option<u64>,
    /// Bytes the agent has served to peers since it started.
    #[serde(default)]
    pub served_bytes: Option<u64>,
    /// The last blob deletion the agent heard of ([`HeartbeatResponse::deletions_cursor`]);
    /// `None` asks for those of the last day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletions_after: Option<i64>,
}

/// `POST /p2p/v1/swarms/report`: progress and trouble.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRequest {
    /// The reporting agent.
    pub agent_id: String,
    /// The blob.
    pub digest: Digest,
    /// Pieces now held and verified.
    #[serde(default)]
    pub have: Vec<u32>,
    /// Parents that stalled, disconnected or refused.
    #[serde(default)]
    pub failed_parents: Vec<String>,
    /// Parents that sent a piece whose SHA-256 did not match.
    #[serde(default)]
    pub bad_parents: Vec<String>,
    /// Bytes received from each parent since the last report, for throughput.
    #[serde(default)]
    pub bytes_from: Vec<(String, u64)>,
    /// Piece uploads the agent runs right now, as in [`JoinRequest::uploading`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploading: Option<u32>,
}

/// The answer to a heartbeat when the registry has work for the agent
/// (`200`); `204` without a body when it has none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Blobs to fetch into the cache before any workload asks for them.
    #[serde(default)]
    pub preheat: Vec<PreheatTask>,
    /// Blobs that left the cluster's tenant (deleted from its repositories,
    /// or collected) since the agent last heard: it drops them from its
    /// cache and refuses them to peers holding a ticket issued before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<DeletedBlob>,
    /// What to send as [`HeartbeatRequest::deletions_after`] next time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletions_cursor: Option<i64>,
}

/// A blob that left a tenant's repositories.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedBlob {
    /// The blob.
    pub digest: Digest,
    /// When, in Unix seconds of the registry's clock: tickets for it issued
    /// at or before this moment open nothing.
    pub at: i64,
}

/// One node's share of a preheat job: fetch these blobs of `repository`
/// through the swarm into the cache, then report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreheatTask {
    /// The job, for the report.
    pub job: String,
    /// The repository the blobs belong to.
    pub repository: String,
    /// The blobs: a tag's config and layers.
    pub blobs: Vec<Digest>,
    /// A short-lived pull token for `repository`, joined with like a client's.
    pub token: String,
}

/// `POST /p2p/v1/preheat/{job}/report`: how one node's share of a job ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreheatReport {
    /// The reporting agent.
    pub agent_id: String,
    /// Every blob is verified and in the cache.
    pub ok: bool,
    /// Why not, when not.
    #[serde(default)]
    pub error: Option<String>,
}
