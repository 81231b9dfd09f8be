//! The registry as this agent's supernode: its scheduler (register,
//! heartbeat, join, report), its token challenge, and its JWKS, against
//! which client tokens and peer tickets are verified offline.

mod challenge;
mod departed;
mod jwks;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use damselfly_core::p2p::{
    HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinResponse, PreheatReport, PreheatTask, RegisterRequest,
    RegisterResponse, ReportRequest, CLUSTER_AUTH_SCHEME,
};
use damselfly_core::{Digest, ErrorBody, ErrorCode};
use tokio::sync::{mpsc, Semaphore};

pub use self::challenge::Challenge;
pub use self::departed::Departed;
pub use self::jwks::AccessClaims;
use self::jwks::Jwks;
use crate::config::Config;
use crate::error::{Error, Report, Result};
use crate::metrics::Metrics;

/// What a download's later join adds to its first.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rejoin {
    /// Hold the answer up to this long until there is something to fetch.
    pub wait_ms: Option<u32>,
    /// The download holds the piece digests and a ticket with time to run.
    pub brief: bool,
    /// Piece downloads the node runs now.
    pub fetching: Option<u32>,
}

/// The client of the registry's P2P and auth endpoints.
pub struct Supernode {
    http: reqwest::Client,
    config: Config,
    agent_id: RwLock<Option<String>>,
    /// The cluster the registry put this agent in, as tickets name it.
    cluster: RwLock<Option<i64>>,
    heartbeat: RwLock<Duration>,
    peer_port: AtomicU16,
    challenge: RwLock<Option<Challenge>>,
    keys: Jwks,
    /// Held while registering again, so that concurrent notices register once.
    reregistering: tokio::sync::Mutex<()>,
    /// Read for the heartbeat, which tells the registry's console about cache use and bytes served.
    metrics: Arc<Metrics>,
    /// Where preheat work from heartbeat answers goes; none on a one-shot `get` peer.
    preheat: Mutex<Option<mpsc::UnboundedSender<PreheatTask>>>,
    /// Blobs that left the cluster's tenant, from heartbeat answers.
    departed: Departed,
    /// Where blobs to drop from the cache go; none on a one-shot `get` peer.
    evict: Mutex<Option<mpsc::UnboundedSender<Digest>>>,
    /// The piece server's upload slots; how many are taken goes with every
    /// join and report, so that the scheduler sends requesters to free parents.
    upload_slots: Arc<Semaphore>,
    /// When a call last found the registry unreachable (or failing with
    /// 502 to 504), until a call succeeds again; see [`Supernode::registry_down`].
    down: Mutex<Option<Down>>,
}

/// Since when the registry is down, and when a join may ask it again.
#[derive(Clone, Copy)]
struct Down {
    since: Instant,
    next_try: Instant,
}

/// True for the statuses that say the registry (or the proxy in front of
/// it) cannot serve at all for now: `502`, `503`, `504`. Another `5xx` is
/// one request's failure, not an outage.
pub fn unavailable(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// After a call finds the registry unreachable, joins are not tried again
/// for this long: a registry that hangs (stopped, partitioned) would make
/// every pull wait the join's 10 s timeout before the mirror serves it from
/// the cache or answers 502. Heartbeats keep trying, and any call that
/// succeeds ends the pause.
const DOWN_PAUSE: Duration = Duration::from_secs(5);

impl Supernode {
    /// A client for the configured registry; call [`Supernode::start`] next.
    pub fn new(config: Config, http: reqwest::Client, metrics: Arc<Metrics>) -> Arc<Supernode> {
        Arc::new(Supernode {
            http,
            agent_id: RwLock::new(None),
            cluster: RwLock::new(None),
            heartbeat: RwLock::new(Duration::from_secs(10)),
            peer_port: AtomicU16::new(0),
            challenge: RwLock::new(None),
            keys: Jwks::new(&config.registry),
            reregistering: tokio::sync::Mutex::new(()),
            upload_slots: Arc::new(Semaphore::new(config.upload_slots as usize)),
            metrics,
            preheat: Mutex::new(None),
            departed: Departed::default(),
            evict: Mutex::new(None),
            down: Mutex::new(None),
            config,
        })
    }

    /// The piece server's upload slots.
    pub fn upload_slots(&self) -> Arc<Semaphore> {
        self.upload_slots.clone()
    }

    /// Piece uploads running now.
    pub fn uploading(&self) -> u32 {
        self.config.upload_slots.saturating_sub(self.upload_slots.available_permits() as u32)
    }

    /// Hands preheat work found in heartbeat answers to `worker`.
    pub fn take_preheat_work(&self, worker: mpsc::UnboundedSender<PreheatTask>) {
        *self.preheat.lock().unwrap_or_else(|p| p.into_inner()) = Some(worker);
    }

    /// Hands the blobs to drop from the cache, as heartbeat answers name them, to `worker`.
    pub fn take_evictions(&self, worker: mpsc::UnboundedSender<Digest>) {
        *self.evict.lock().unwrap_or_else(|p| p.into_inner()) = Some(worker);
    }

    /// Blobs that left the cluster's tenant.
    pub fn departed(&self) -> &Departed {
        &self.departed
    }

    /// The registry's base URL.
    pub fn base(&self) -> &str {
        &self.config.registry
    }

    /// True once registered and the challenge is known.
    pub fn ready(&self) -> bool {
        self.agent_id().is_some() && self.challenge().is_some()
    }

    /// Our agent id, once registered.
    pub fn agent_id(&self) -> Option<String> {
        self.agent_id.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// This agent's cluster, once registered with a registry that says it:
    /// the piece server serves tickets of this cluster only.
    pub fn cluster(&self) -> Option<i64> {
        *self.cluster.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The registry's challenge, once learnt.
    pub fn challenge(&self) -> Option<Challenge> {
        self.challenge.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn cluster_auth(&self) -> String {
        format!("{CLUSTER_AUTH_SCHEME} {}", self.config.cluster_token)
    }

    /// Learns the challenge, the keys, and registers, retrying with backoff
    /// until the registry answers; then keeps the heartbeat going.
    pub async fn start(self: Arc<Self>, peer_port: u16) {
        self.peer_port.store(peer_port, Ordering::Relaxed);
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.bootstrap().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(
                        registry = self.base(),
                        error = %Report(&e),
                        retry_in = ?backoff,
                        "cannot register with the registry: is it running, is the cluster token right, and for \
                         https, is its certificate's CA trusted (--registry-ca)?"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        loop {
            let period = *self.heartbeat.read().unwrap_or_else(|p| p.into_inner());
            tokio::time::sleep(period).await;
            if let Err(e) = self.heartbeat_once().await {
                tracing::warn!(error = %Report(&e), "heartbeat failed; will retry");
            }
        }
    }

    async fn bootstrap(&self) -> Result<()> {
        if self.challenge().is_none() {
            let url = format!("{}/v2/", self.base());
            let r = self.http.get(&url).send().await.map_err(|source| Error::Unreachable { url, source })?;
            let header = r
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse)
                .ok_or_else(|| Error::NoChallenge { status: r.status().as_u16() })?;
            *self.challenge.write().unwrap_or_else(|p| p.into_inner()) = Some(header);
        }
        self.keys.refresh(&self.http).await?;
        self.register().await
    }

    /// Sends a call of the P2P API with the cluster token; a registry that
    /// cannot be reached, or fails it (5xx), is an error.
    async fn call(&self, call: &'static str, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let r = request.header(reqwest::header::AUTHORIZATION, self.cluster_auth()).send().await.map_err(|source| {
            self.set_down(true);
            Error::Unreachable {
                url: source.url().map(|u| u.to_string()).unwrap_or_else(|| self.base().into()),
                source,
            }
        })?;
        let status = r.status();
        self.set_down(unavailable(status.as_u16()));
        if status.is_server_error() {
            return Err(Error::RegistryFailed { call, status: status.as_u16() });
        }
        if !status.is_success() {
            // AGENT_UNKNOWN: the scheduler forgot this agent (a registry restart); others are refusals.
            let body: ErrorBody = r.json().await.unwrap_or_default();
            return Err(match body.code() {
                Some(ErrorCode::AgentUnknown) => Error::AgentUnknown,
                code => Error::Refused { call, status: status.as_u16(), code },
            });
        }
        Ok(r)
    }

    async fn register(&self) -> Result<()> {
        let req = RegisterRequest {
            node: self.config.node_name.clone(),
            ip: self.config.advertise_ip.to_string(),
            peer_port: self.peer_port.load(Ordering::Relaxed),
            zone: self.config.zone.clone(),
            upload_slots: self.config.upload_slots,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            platform: damselfly_core::p2p::this_platform(),
        };
        let call = "registration";
        let r = self.call(call, self.http.post(format!("{}/p2p/v1/agents", self.base())).json(&req)).await?;
        let body: RegisterResponse = r.json().await.map_err(|source| Error::BadAnswer { call, source })?;
        tracing::info!(agent_id = body.agent_id, heartbeat_secs = body.heartbeat_secs, "registered with the registry");
        *self.heartbeat.write().unwrap_or_else(|p| p.into_inner()) = Duration::from_secs(body.heartbeat_secs.max(1));
        if body.cluster.is_none() {
            tracing::warn!(
                "the registry does not say which cluster this agent is in: no piece will be served to peers"
            );
        }
        *self.cluster.write().unwrap_or_else(|p| p.into_inner()) = body.cluster;
        *self.agent_id.write().unwrap_or_else(|p| p.into_inner()) = Some(body.agent_id);
        Ok(())
    }

    async fn heartbeat_once(&self) -> Result<()> {
        let Some(id) = self.agent_id() else { return self.register().await };
        let said = HeartbeatRequest {
            cache_bytes: Some(self.metrics.cache_bytes.get().max(0) as u64),
            served_bytes: Some(self.metrics.served_total()),
            deletions_after: self.departed.cursor(),
        };
        let request = self.http.post(format!("{}/p2p/v1/agents/{id}/heartbeat", self.base())).json(&said);
        let r = match self.call("heartbeat", request).await {
            Err(Error::AgentUnknown) => return self.register_again(&id).await,
            other => other?,
        };
        if r.status() == reqwest::StatusCode::OK {
            let answer: HeartbeatResponse = r.json().await.unwrap_or_default();
            if !answer.deleted.is_empty() {
                tracing::info!(blobs = answer.deleted.len(), "blobs left the registry; no longer serving them");
            }
            let gone = self.departed.record(&answer.deleted, answer.deletions_cursor);
            let evict = self.evict.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(evict) = evict {
                for digest in gone {
                    let _ = evict.send(digest);
                }
            }
            let worker = self.preheat.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for task in answer.preheat {
                match &worker {
                    Some(w) if w.send(task.clone()).is_ok() => {}
                    _ => {
                        let error = "this peer takes no preheat work (a one-shot get)".to_owned();
                        self.report_preheat(&task.job, false, Some(error)).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Tells the registry how this node's share of preheat job `job` ended; failures are only logged.
    pub async fn report_preheat(&self, job: &str, ok: bool, error: Option<String>) {
        let Some(agent_id) = self.agent_id() else { return };
        let request = self
            .http
            .post(format!("{}/p2p/v1/preheat/{job}/report", self.base()))
            .timeout(Duration::from_secs(10))
            .json(&PreheatReport { agent_id, ok, error });
        if let Err(e) = self.call("preheat report", request).await {
            tracing::warn!(job, error = %Report(&e), "cannot report a preheat job's outcome");
        }
    }

    /// Tells the registry this agent is leaving, so that it stops naming it as
    /// a parent at once. Best effort: a registry that does not answer forgets
    /// the agent after three missed heartbeats anyway.
    pub async fn unregister(&self) {
        let Some(id) = self.agent_id() else { return };
        let request = self.http.delete(format!("{}/p2p/v1/agents/{id}", self.base())).timeout(Duration::from_secs(3));
        match self.call("unregistration", request).await {
            Ok(_) => tracing::info!(agent_id = id, "left the registry's swarms"),
            Err(e) => tracing::debug!(error = %Report(&e), "could not unregister"),
        }
    }

    /// Registers again after the registry forgot `stale` (it restarted), once
    /// however many downloads and heartbeats notice at the same moment: only
    /// the first to get here registers; the others find a new id in place.
    async fn register_again(&self, stale: &str) -> Result<()> {
        let _one_at_a_time = self.reregistering.lock().await;
        if self.agent_id().is_some_and(|id| id != stale) {
            return Ok(());
        }
        tracing::info!("the registry forgot this agent; registering again");
        self.register().await
    }

    /// Asks to join a blob's swarm on behalf of a client (a download's
    /// later joins say so in `again`). If the scheduler forgot this agent (a
    /// registry restart), registers again and retries once.
    pub async fn join(
        &self,
        repository: &str,
        digest: Digest,
        client_token: Option<&str>,
        have: Vec<u32>,
        again: Rejoin,
    ) -> Result<JoinResponse> {
        let stale = self.agent_id().unwrap_or_default();
        match self.join_once(repository, digest, client_token, have.clone(), again).await {
            Err(Error::AgentUnknown) => {
                self.register_again(&stale).await?;
                // A new registration invalidates tickets: ask for everything.
                self.join_once(repository, digest, client_token, have, Rejoin { brief: false, ..again }).await
            }
            other => other,
        }
    }

    async fn join_once(
        &self,
        repository: &str,
        digest: Digest,
        client_token: Option<&str>,
        have: Vec<u32>,
        again: Rejoin,
    ) -> Result<JoinResponse> {
        let agent_id = self.agent_id().ok_or(Error::NotRegistered)?;
        self.registry_down()?;
        let req = JoinRequest {
            agent_id,
            repository: repository.to_owned(),
            digest,
            client_token: client_token.map(str::to_owned),
            have,
            uploading: Some(self.uploading()),
            wait_ms: again.wait_ms,
            brief: again.brief,
            fetching: again.fetching,
        };
        let call = "join";
        let request =
            self.http.post(format!("{}/p2p/v1/swarms/join", self.base())).timeout(Duration::from_secs(10)).json(&req);
        let r = self.call(call, request).await?;
        r.json().await.map_err(|source| Error::BadAnswer { call, source })
    }

    /// Reports progress and trouble; failures are only logged.
    pub async fn report(&self, report: ReportRequest) {
        let request = self
            .http
            .post(format!("{}/p2p/v1/swarms/report", self.base()))
            .timeout(Duration::from_secs(10))
            .json(&report);
        if let Err(e) = self.call("report", request).await {
            tracing::debug!(error = %Report(&e), "report failed");
        }
    }

    /// Records whether the last call found the registry down; logs the changes.
    pub fn set_down(&self, down: bool) {
        let mut state = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match (*state, down) {
            (None, true) => {
                tracing::warn!(registry = self.base(), "the registry cannot be reached; serving what the cache holds");
                *state = Some(Down { since: now, next_try: now + DOWN_PAUSE });
            }
            (Some(d), true) => *state = Some(Down { next_try: now + DOWN_PAUSE, ..d }),
            (Some(_), false) => {
                tracing::info!(registry = self.base(), "the registry answers again");
                *state = None;
            }
            (None, false) => {}
        }
    }

    /// `Err` while joins pause after a call found the registry down. Once
    /// the pause is over one caller goes through to find out (and the next
    /// pause starts), so that a hung registry costs one timeout per pause.
    pub fn registry_down(&self) -> Result<()> {
        let mut state = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let Some(d) = *state else { return Ok(()) };
        let now = Instant::now();
        if now >= d.next_try {
            *state = Some(Down { next_try: now + DOWN_PAUSE, ..d });
            return Ok(());
        }
        Err(Error::RegistryDown { since: now - d.since, retry_in: d.next_try - now })
    }

    /// Verifies a JWT the registry signed, offline, for `audience`.
    pub async fn verify<T: serde::de::DeserializeOwned>(&self, token: &str, audience: &str) -> Option<T> {
        let issuer = self.challenge()?.issuer;
        self.keys.verify(&self.http, token, audience, &issuer).await
    }

    /// Verifies a client's access token and that it grants pull on `name`.
    pub async fn client_may_pull(&self, token: &str, name: &str) -> bool {
        let Some(service) = self.challenge().map(|c| c.service) else { return false };
        self.verify::<AccessClaims>(token, &service).await.is_some_and(|c| c.may_pull(name))
    }
}
