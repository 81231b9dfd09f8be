//! The P2P API agents call (`/p2p/v1/…`), authenticated by their cluster
//! token, and the seed's piece endpoint, authenticated by a ticket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use damselfly_core::p2p::{
    parse_pieces_query, DeletedBlob, HeartbeatRequest, HeartbeatResponse, JoinMode, JoinRequest, JoinResponse,
    PieceGeometry, PreheatReport, RegisterRequest, RegisterResponse, ReportRequest, CLUSTER_AUTH_SCHEME,
    MAX_JOIN_WAIT_MS, TICKET_AUTH_SCHEME,
};
use damselfly_core::{Digest, ErrorCode, RepositoryName};
use futures_util::StreamExt;
use tokio::sync::Notify;

use super::extract::{method_not_allowed, unknown_endpoint, P2pJson, P2pPath};
use super::scheduler::{Agent, Blob, Plan, Scheduler};
use super::stats::{Joining, Traffic};
use super::ticket;
use crate::auth::password::token_sha256;
use crate::auth::Principal;
use crate::error::{oci, RegistryError, Result};
use crate::metadata::{Cluster, ClusterId};
use crate::state::AppState;

/// Lifetime of the tickets handed out with a join.
const TICKET_TTL_SECS: i64 = 300;

/// Every P2P route: the agents' calls, the seed, the setup script and the
/// webhook's question. Every answer that is not a success, even for a path
/// or a method the API does not have, is an OCI error body. The calls that
/// change a cluster's scheduling are served by the replica that holds the
/// cluster's lease (`super::forward`); a preheat report (the database), the
/// seed (a ticket and the shared blob store), the setup script and the
/// webhook's question are served by whichever replica receives them.
pub fn router(state: &AppState) -> Router<AppState> {
    let scheduled = Router::new()
        .route("/p2p/v1/agents", post(register))
        .route("/p2p/v1/agents/{agent}", axum::routing::delete(unregister))
        .route("/p2p/v1/agents/{agent}/heartbeat", post(heartbeat))
        .route("/p2p/v1/swarms/join", post(join))
        .route("/p2p/v1/swarms/report", post(report))
        .layer(Extension(Arc::new(HeldJoins::default())))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), super::forward::to_holder));
    Router::new()
        .route("/p2p/v1/preheat/{job}/report", post(preheat_report))
        .route("/p2p/v1/seed/{digest}/pieces", get(seed_pieces))
        .route("/p2p/v1/seed/{digest}/pieces/{index}", get(seed_piece))
        .merge(scheduled)
        .merge(super::install::router())
        .merge(super::acceleration::router())
        .route("/p2p/v1", any(unknown_endpoint))
        .route("/p2p/v1/", any(unknown_endpoint))
        .route("/p2p/v1/{*rest}", any(unknown_endpoint))
        .method_not_allowed_fallback(method_not_allowed)
}

/// Joins held open for agents with nothing to fetch, per cluster: a report
/// that the scheduler says changes things wakes them to plan again. The
/// scheduler decides; the waiting is done here.
#[derive(Default)]
struct HeldJoins {
    changes: Mutex<HashMap<ClusterId, Arc<Notify>>>,
}

impl HeldJoins {
    /// What wakes the cluster's held joins: take `notified()` of it before
    /// planning, so that nothing between the two is missed.
    fn changes(&self, cluster: ClusterId) -> Arc<Notify> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner()).entry(cluster).or_default().clone()
    }

    /// Wakes the cluster's held joins.
    fn wake(&self, cluster: ClusterId) {
        let notify = self.changes.lock().unwrap_or_else(|p| p.into_inner()).get(&cluster).cloned();
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }
}

pub(super) fn scheme_value<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// An agent's cluster, established from `Authorization: Cluster <token>`
/// (or already, by the step that chose this replica to serve the call).
#[derive(Clone)]
pub(super) struct ClusterCaller(pub(super) Cluster);

impl FromRequestParts<AppState> for ClusterCaller {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<ClusterCaller> {
        let refused = || {
            RegistryError::oci(
                ErrorCode::Unauthorized,
                "send the cluster token as `Authorization: Cluster <token>`; a cluster owner gets it when registering the cluster",
            )
        };
        if let Some(known) = parts.extensions.get::<ClusterCaller>() {
            return Ok(known.clone());
        }
        let token = scheme_value(&parts.headers, CLUSTER_AUTH_SCHEME).ok_or_else(refused)?;
        let cluster = state.db.clusters().by_token(&token_sha256(token)).await?.ok_or_else(refused)?;
        Ok(ClusterCaller(cluster))
    }
}

async fn register(
    State(state): State<AppState>,
    ClusterCaller(cluster): ClusterCaller,
    P2pJson(req): P2pJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>> {
    if req.ip.parse::<std::net::IpAddr>().is_err() || req.peer_port == 0 || req.node.is_empty() {
        return Err(RegistryError::oci(
            ErrorCode::Unsupported,
            "register with a node name, the IP address peers reach you at, and a non-zero peer port",
        )
        .with_status(StatusCode::BAD_REQUEST));
    }
    let agent_id = state.scheduler.register(cluster.id, &req);
    // Kept in the database too: for the console and preheat on every replica,
    // and for the replica that schedules the cluster next.
    state.db.agents().insert(&agent_id, cluster.id, &req).await?;
    tracing::info!(cluster = cluster.name, tenant = cluster.tenant, node = req.node, agent_id, "agent registered");
    Ok(Json(RegisterResponse {
        agent_id,
        heartbeat_secs: state.scheduler.heartbeat().as_secs(),
        cluster: Some(cluster.id.0),
    }))
}

/// `DELETE /p2p/v1/agents/{agent}`: an agent leaving (a stopping daemon, a
/// finished one-shot `get`) stops being anyone's parent at once, rather than
/// after three missed heartbeats.
async fn unregister(
    State(state): State<AppState>,
    ClusterCaller(cluster): ClusterCaller,
    P2pPath(agent): P2pPath<String>,
) -> Result<StatusCode> {
    let scheduled = state.scheduler.forget(cluster.id, &agent);
    if !state.db.agents().delete(cluster.id, &agent).await? && !scheduled {
        return Err(unknown_agent());
    }
    tracing::info!(agent, cluster = cluster.id.0, "agent left");
    Ok(StatusCode::NO_CONTENT)
}

async fn heartbeat(
    State(state): State<AppState>,
    ClusterCaller(cluster): ClusterCaller,
    P2pPath(agent): P2pPath<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    // Older agents send no body; a body that does not parse is ignored rather than
    // refusing the heartbeat, which keeps the agent in its swarms.
    let said: HeartbeatRequest = serde_json::from_slice(&body).unwrap_or_default();
    if !state.scheduler.heartbeat_from(cluster.id, &agent) {
        known_agent(&state, cluster.id, &agent).await?;
    }
    state.db.agents().heard_from(cluster.id, &agent, said.cache_bytes, said.served_bytes).await?;
    // Work rides on the heartbeat's answer: agents behind NAT cannot be called.
    let preheat = crate::services::preheat::take_work(&state, cluster.id, &agent).await?;
    // Only the cluster's own tenant's departures: which blobs another tenant deleted is none of its business.
    let departures = state.db.blob_deletions().of_tenant(cluster.tenant_id, said.deletions_after).await?;
    if preheat.is_empty() && departures.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let deletions_cursor = departures.last().map(|d| d.id).or(said.deletions_after);
    let deleted = departures.into_iter().map(|d| DeletedBlob { digest: d.digest, at: d.at }).collect();
    Ok(Json(HeartbeatResponse { preheat, deleted, deletions_cursor }).into_response())
}

/// An agent says how its share of a preheat job ended.
async fn preheat_report(
    State(state): State<AppState>,
    ClusterCaller(cluster): ClusterCaller,
    P2pPath(job): P2pPath<String>,
    P2pJson(req): P2pJson<PreheatReport>,
) -> Result<StatusCode> {
    if crate::services::preheat::report(&state, cluster.id, &job, &req.agent_id, req.ok, req.error).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(RegistryError::oci(ErrorCode::NameUnknown, "no such preheat job for this agent")
            .with_status(StatusCode::NOT_FOUND))
    }
}

fn unknown_agent() -> RegistryError {
    RegistryError::oci(ErrorCode::AgentUnknown, "this agent is unknown or was forgotten: register again")
}

/// The agent as the scheduler knows it. One the scheduler has not seen is
/// taken back from the database if it is alive there: it registered with
/// the replica that scheduled its cluster before this one took the lease
/// over. It keeps its id, its tickets stay good, and its next join says
/// which pieces it holds.
async fn known_agent(state: &AppState, cluster: ClusterId, id: &str) -> Result<Agent> {
    if let Some(agent) = state.scheduler.agent(cluster, id) {
        return Ok(agent);
    }
    let alive_since = crate::metadata::now() - 3 * state.scheduler.heartbeat().as_secs() as i64;
    let record = state.db.agents().find(cluster, id, alive_since).await?.ok_or_else(unknown_agent)?;
    state.scheduler.readmit(cluster, id, &record.registered);
    tracing::info!(
        cluster = cluster.0,
        agent_id = id,
        node = record.registered.node,
        "took the agent over from another replica"
    );
    state.scheduler.agent(cluster, id).ok_or_else(unknown_agent)
}

/// Admits the agent to the blob's swarm on behalf of its client: the
/// client's token must grant `pull` on the repository, and the blob must
/// belong to that repository. Nothing is revealed otherwise.
///
/// A cluster accelerates its own tenant's namespaces, those whose P2P switch
/// is on, and no other: for any other repository, public ones of other
/// tenants included, the answer is `passthrough` with no ticket, and the
/// agent streams the bytes from the registry with the client's own rights,
/// keeping nothing. Another tenant's blobs thus never enter this cluster's
/// swarms or its nodes' caches, where they would outlive that tenant's
/// choices (a namespace made private, an image deleted) out of its sight;
/// preheat follows the same rule.
async fn join(
    State(state): State<AppState>,
    Extension(held): Extension<Arc<HeldJoins>>,
    ClusterCaller(cluster): ClusterCaller,
    P2pJson(req): P2pJson<JoinRequest>,
) -> Result<Json<JoinResponse>> {
    let agent = known_agent(&state, cluster.id, &req.agent_id).await?;
    let name: RepositoryName = req
        .repository
        .parse()
        .map_err(|e: damselfly_core::NameError| RegistryError::oci(ErrorCode::NameInvalid, e.to_string()))?;
    let may_pull = match &req.client_token {
        Some(token) => {
            let auth = &state.auth;
            match auth.authenticator.bearer(&state.db, &auth.keys, token, &auth.service, &auth.issuer).await {
                Ok((_, claims)) => claims.grants(name.as_str(), "pull"),
                Err(crate::auth::AuthError::Db(e)) => return Err(e.into()),
                Err(e) => return Err(RegistryError::oci(ErrorCode::Unauthorized, format!("the client's token: {e}"))),
            }
        }
        None => state.auth.policy.repository_actions(&state.db, &Principal::Anonymous, &name).await?.pull,
    };
    if !may_pull {
        return Err(RegistryError::oci(ErrorCode::Denied, format!("the client may not pull from {name}")));
    }
    let blob = state.db.blobs().find_in_repository(name.as_str(), &req.digest).await?;
    let blob = blob.ok_or_else(|| oci::blob_unknown(&name, &req.digest))?;
    let namespace = state.auth.policy.namespace(&state.db, name.namespace()).await?;
    let p2p_on = namespace.is_some_and(|n| n.p2p_enabled && n.tenant_id == cluster.tenant_id);
    state.scheduler.load(cluster.id, &agent.id, req.uploading, req.fetching);
    if !p2p_on {
        return Ok(Json(JoinResponse {
            mode: JoinMode::Passthrough,
            size: blob.size,
            piece_size: blob.pieces.piece_size(),
            piece_digests: Vec::new(),
            parents: Vec::new(),
            seed_pieces: Vec::new(),
            availability: Vec::new(),
            seed_url: String::new(),
            ticket: String::new(),
            ticket_expires_in: 0,
            feeds: Vec::new(),
            queued: false,
        }));
    }
    // Cut at the size the P2P network uses for it, once; a pass-through pull needs no pieces.
    let blob = state.recuts.current(&state, blob).await?;
    let shape = Blob { pieces: blob.pieces.digests().len(), piece_size: blob.pieces.piece_size() };
    let joining = Joining { agent: &agent.id, pieces: shape.pieces, held: &req.have };
    state.p2p_stats.joined(&state.db, cluster.tenant_id, cluster.id, name.namespace(), req.digest, joining).await?;
    let plan = plan_held(&state.scheduler, &held, cluster.id, &agent.id, &req, shape).await;
    // A brief join's agent holds the digests and a ticket: neither is made again.
    let (piece_digests, ticket, ticket_expires_in) = if req.brief {
        (Vec::new(), String::new(), 0)
    } else {
        let ticket = ticket::issue(&state.auth, &agent.id, cluster.id, req.digest, TICKET_TTL_SECS)
            .map_err(|e| RegistryError::Io(std::io::Error::other(e)))?;
        (blob.pieces.digests().iter().map(Digest::hex).collect(), ticket, TICKET_TTL_SECS as u64)
    };
    Ok(Json(JoinResponse {
        mode: JoinMode::P2p,
        size: blob.size,
        piece_size: blob.pieces.piece_size(),
        piece_digests,
        parents: plan.parents,
        seed_pieces: plan.seed_pieces,
        availability: plan.availability,
        seed_url: format!("{}/p2p/v1/seed/{}/pieces", state.auth.issuer, req.digest),
        ticket,
        ticket_expires_in,
        feeds: plan.feeds,
        queued: plan.queued,
    }))
}

/// The scheduler's plan for a join. An agent with nothing to fetch may ask
/// for the answer to be held (`wait_ms`) until the plan has something for
/// it: a seed piece then goes out the moment the seed can send one, not at
/// the agent's next join.
async fn plan_held(
    scheduler: &Scheduler,
    held: &HeldJoins,
    cluster: ClusterId,
    agent: &str,
    req: &JoinRequest,
    blob: Blob,
) -> Plan {
    let wait = Duration::from_millis(u64::from(req.wait_ms.unwrap_or(0).min(MAX_JOIN_WAIT_MS)));
    let until = tokio::time::Instant::now() + wait;
    let changes = held.changes(cluster);
    loop {
        let changed = changes.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let plan = scheduler.join(cluster, agent, req.digest, blob, &req.have);
        if !plan.is_idle() || tokio::time::timeout_at(until, changed).await.is_err() {
            return plan;
        }
    }
}

async fn report(
    State(state): State<AppState>,
    Extension(held): Extension<Arc<HeldJoins>>,
    ClusterCaller(cluster): ClusterCaller,
    P2pJson(req): P2pJson<ReportRequest>,
) -> Result<StatusCode> {
    known_agent(&state, cluster.id, &req.agent_id).await?;
    if state.scheduler.report(cluster.id, &req) {
        held.wake(cluster.id);
    }
    let from_peers = req.bytes_from.iter().map(|(_, n)| *n).sum();
    state.p2p_stats.received(cluster.id, req.digest, Traffic { peers: from_peers, seed: 0 });
    state.p2p_stats.progressed(&state.db, cluster.id, req.digest, &req.agent_id, &req.have).await?;
    if !req.bad_parents.is_empty() {
        tracing::warn!(reporter = req.agent_id, bad = ?req.bad_parents, digest = %req.digest, "peers sent corrupt pieces");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The seed: one piece of a blob, straight from the blob store, to a ticket holder.
async fn seed_piece(
    State(state): State<AppState>,
    P2pPath((digest, index)): P2pPath<(String, u32)>,
    headers: HeaderMap,
) -> Result<Response> {
    let (digest, cluster, blob) = seed_blob(&state, &digest, &headers).await?;
    let count = blob.pieces.digests().len();
    if index as usize >= count {
        return Err(RegistryError::oci(ErrorCode::SizeInvalid, format!("the blob has {count} pieces"))
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE));
    }
    seed_stream(&state, digest, cluster, &blob, &[index]).await
}

/// `?pieces=` of the seed's batched read.
#[derive(serde::Deserialize)]
struct PieceList {
    pieces: String,
}

/// The seed: the listed pieces of a blob back to back, in one stream, to a
/// ticket holder. An agent with many pieces to take from the seed (alone
/// in its swarm, say) gets them at the speed of the link, rather than one
/// request, and one round trip, per piece.
async fn seed_pieces(
    State(state): State<AppState>,
    P2pPath(digest): P2pPath<String>,
    list: std::result::Result<Query<PieceList>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response> {
    let (digest, cluster, blob) = seed_blob(&state, &digest, &headers).await?;
    let count = blob.pieces.digests().len() as u32;
    let list = list.map_or_else(|_| PieceList { pieces: String::new() }, |Query(list)| list);
    let pieces = parse_pieces_query(&list.pieces, count).ok_or_else(|| {
        RegistryError::oci(
            ErrorCode::SizeInvalid,
            format!(
                "pieces={:?} is not a list of pieces of this blob: give ascending indexes below {count}, \
                 as runs `first-last` or single indexes, separated by commas",
                list.pieces
            ),
        )
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
    })?;
    seed_stream(&state, digest, cluster, &blob, &pieces).await
}

/// The blob a seed request names, and the cluster of its ticket.
async fn seed_blob(
    state: &AppState,
    digest: &str,
    headers: &HeaderMap,
) -> Result<(Digest, ClusterId, crate::metadata::BlobRecord)> {
    let digest: Digest = digest.parse().map_err(|e: damselfly_core::DigestError| oci::digest_invalid(e.to_string()))?;
    let ticket = scheme_value(headers, TICKET_AUTH_SCHEME).ok_or_else(|| {
        RegistryError::oci(
            ErrorCode::Unauthorized,
            "pieces are served only with `Authorization: Ticket <ticket>` from a join",
        )
    })?;
    let claims = ticket::verify(&state.auth, ticket, &digest)
        .map_err(|e| RegistryError::oci(ErrorCode::Denied, format!("ticket refused: {e}")))?;
    // A ticket is good for one download of the agent it names: once that
    // agent has left its cluster's swarms (it unregistered, fell silent, or
    // its cluster's token was re-issued), the ticket is a replay. Any replica
    // serves the seed, and the agents they all know are the database's; the
    // scheduler here answers first when this replica schedules the cluster.
    let cluster = ClusterId(claims.cluster);
    let in_swarms = state.scheduler.agent(cluster, &claims.sub).is_some()
        || state.db.agents().find(cluster, &claims.sub, super::alive_since(&state)).await?.is_some();
    if !in_swarms {
        return Err(RegistryError::oci(
            ErrorCode::Denied,
            "ticket refused: the agent it was issued to is no longer in its cluster's swarms; join again for a new one",
        ));
    }
    let blob = state.db.blobs().find(&digest).await?.ok_or_else(|| oci::blob_unknown(&"the seed", &digest))?;
    Ok((digest, ClusterId(claims.cluster), blob))
}

/// `pieces` (ascending, each below the blob's count) straight from the blob
/// store, as one body, each run of consecutive pieces one read.
async fn seed_stream(
    state: &AppState,
    digest: Digest,
    cluster: ClusterId,
    blob: &crate::metadata::BlobRecord,
    pieces: &[u32],
) -> Result<Response> {
    let geometry = PieceGeometry { size: blob.size, piece_size: blob.pieces.piece_size() };
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &i in pieces {
        let (start, len) = geometry.span(i);
        match runs.last_mut() {
            Some((run_start, run_len)) if *run_start + *run_len == start => *run_len += len,
            _ => runs.push((start, len)),
        }
    }
    let total: u64 = runs.iter().map(|(_, len)| len).sum();
    // The first run is opened here, so that a missing blob is a 404 rather
    // than a body that breaks; later runs are read as the body gets to them.
    let first = state.blobs.read(&digest, runs[0].0, runs[0].1).await?;
    let first = first.ok_or_else(|| oci::blob_unknown(&"the seed", &digest))?;
    let blobs = state.blobs.clone();
    let mut first = Some(first);
    let reads = futures_util::stream::iter(runs).then(move |(start, len)| {
        let (blobs, opened) = (blobs.clone(), first.take());
        async move {
            match opened {
                Some(stream) => Ok(stream),
                None => blobs
                    .read(&digest, start, len)
                    .await
                    .map_err(std::io::Error::other)?
                    .ok_or_else(|| std::io::Error::other("the blob is gone")),
            }
        }
    });
    let metrics = state.metrics.clone();
    let stats = state.p2p_stats.clone();
    let stream = reads
        .map(|read| match read {
            Ok(chunks) => chunks.left_stream(),
            Err(e) => futures_util::stream::once(std::future::ready(Err(e))).right_stream(),
        })
        .flatten()
        .inspect(move |chunk| {
            if let Ok(c) = chunk {
                metrics.sent("seed", c.len() as u64);
                stats.received(cluster, digest, Traffic { peers: 0, seed: c.len() as u64 });
            }
        });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::CONTENT_LENGTH, total.to_string())],
        Body::from_stream(stream),
    )
        .into_response())
}
