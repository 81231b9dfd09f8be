//! Talking to the registry: the scheduler (register, heartbeat, join,
//! report), its token challenge, and its JWKS, against which client tokens
//! and peer tickets are verified offline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use damselfly_core::p2p::{
    HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinResponse, PreheatReport, PreheatTask, RegisterRequest,
    RegisterResponse, ReportRequest, CLUSTER_AUTH_SCHEME,
};
use damselfly_core::Digest;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::Config;

/// Audience of P2P tickets.
pub const TICKET_AUDIENCE: &str = "damselfly-p2p";

/// Why a call to the scheduler failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// Unreachable, or a 5xx: the agent falls back to pass-through.
    #[error("the registry is unreachable: {0}")]
    Unreachable(String),
    /// The registry refused with this status.
    #[error("the registry refused with {0}")]
    Refused(u16),
    /// The scheduler does not know this agent (any more).
    #[error("the registry does not know this agent")]
    UnknownAgent,
    /// Not registered yet.
    #[error("the agent is not registered with the registry yet")]
    NotRegistered,
}

/// The registry's `WWW-Authenticate` challenge, learnt from its `/v2/`.
#[derive(Clone, Debug)]
pub struct Challenge {
    /// Token endpoint.
    pub realm: String,
    /// Service name: the audience of access tokens.
    pub service: String,
    /// Issuer of tokens and tickets: the realm's base URL.
    pub issuer: String,
}

impl Challenge {
    /// The header value for a 401 about `name`.
    pub fn header(&self, name: Option<&str>) -> String {
        let mut v = format!("Bearer realm=\"{}\",service=\"{}\"", self.realm, self.service);
        if let Some(name) = name {
            v.push_str(&format!(",scope=\"repository:{name}:pull\""));
        }
        v
    }

    /// Parses a `WWW-Authenticate: Bearer realm=…,service=…` header.
    pub fn parse(header: &str) -> Option<Challenge> {
        let rest = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer "))?;
        let mut realm = None;
        let mut service = None;
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            let v = v.trim_matches('"').to_owned();
            match k {
                "realm" => realm = Some(v),
                "service" => service = Some(v),
                _ => {}
            }
        }
        let realm = realm?;
        let issuer = realm.strip_suffix("/auth/token").unwrap_or(&realm).to_owned();
        Some(Challenge { realm, service: service.unwrap_or_default(), issuer })
    }
}

/// One grant of an access token.
#[derive(Clone, Debug, Deserialize)]
pub struct Access {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name.
    pub name: String,
    /// Actions.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// The claims of an access token the agent looks at.
#[derive(Clone, Debug, Deserialize)]
pub struct AccessClaims {
    /// Grants.
    #[serde(default)]
    pub access: Vec<Access>,
    /// `access` or `refresh`; a refresh token opens nothing here.
    #[serde(default)]
    pub typ: Option<String>,
}

impl AccessClaims {
    /// True if the token lets its holder pull from `name`.
    pub fn may_pull(&self, name: &str) -> bool {
        self.typ.as_deref().unwrap_or("access") == "access"
            && self
                .access
                .iter()
                .any(|a| a.kind == "repository" && a.name == name && a.actions.iter().any(|x| x == "pull" || x == "*"))
    }
}

/// The claims of a ticket the agent looks at.
#[derive(Clone, Debug, Deserialize)]
pub struct TicketClaims {
    /// The blob the ticket opens.
    pub blob: Digest,
    /// The agent the ticket was issued to.
    pub sub: String,
}

#[derive(Deserialize)]
struct Jwk {
    kid: String,
    x: String,
    y: String,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

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
pub struct RegistryClient {
    http: reqwest::Client,
    config: Config,
    agent_id: RwLock<Option<String>>,
    heartbeat: RwLock<Duration>,
    peer_port: std::sync::atomic::AtomicU16,
    challenge: RwLock<Option<Challenge>>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    keys_fetched: Mutex<Option<Instant>>,
    /// Held while registering again, so that concurrent notices register once.
    reregistering: tokio::sync::Mutex<()>,
    /// Read for the heartbeat, which tells the registry's console about cache use and bytes served.
    metrics: Arc<crate::metrics::Metrics>,
    /// Where preheat work from heartbeat answers goes; none on a one-shot `get` peer.
    preheat: Mutex<Option<tokio::sync::mpsc::UnboundedSender<PreheatTask>>>,
    /// The piece server's upload slots; how many are taken goes with every
    /// join and report, so that the scheduler sends requesters to free parents.
    upload_slots: Arc<tokio::sync::Semaphore>,
}

impl RegistryClient {
    /// A client for the configured registry; call [`RegistryClient::start`] next.
    pub fn new(config: Config, http: reqwest::Client, metrics: Arc<crate::metrics::Metrics>) -> Arc<RegistryClient> {
        Arc::new(RegistryClient {
            http,
            agent_id: RwLock::new(None),
            heartbeat: RwLock::new(Duration::from_secs(10)),
            peer_port: std::sync::atomic::AtomicU16::new(0),
            challenge: RwLock::new(None),
            keys: RwLock::new(HashMap::new()),
            keys_fetched: Mutex::new(None),
            reregistering: tokio::sync::Mutex::new(()),
            upload_slots: Arc::new(tokio::sync::Semaphore::new(config.upload_slots as usize)),
            metrics,
            preheat: Mutex::new(None),
            config,
        })
    }

    /// The piece server's upload slots.
    pub fn upload_slots(&self) -> Arc<tokio::sync::Semaphore> {
        self.upload_slots.clone()
    }

    /// Piece uploads running now.
    pub fn uploading(&self) -> u32 {
        self.config.upload_slots.saturating_sub(self.upload_slots.available_permits() as u32)
    }

    /// Hands preheat work found in heartbeat answers to `worker`.
    pub fn take_preheat_work(&self, worker: tokio::sync::mpsc::UnboundedSender<PreheatTask>) {
        *self.preheat.lock().unwrap_or_else(|p| p.into_inner()) = Some(worker);
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
        self.peer_port.store(peer_port, std::sync::atomic::Ordering::Relaxed);
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.bootstrap().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(
                        registry = self.base(),
                        error = %e,
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
                tracing::warn!(error = %e, "heartbeat failed; will retry");
            }
        }
    }

    async fn bootstrap(&self) -> Result<(), String> {
        if self.challenge().is_none() {
            let r = self.http.get(format!("{}/v2/", self.base())).send().await.map_err(|e| explain(&e))?;
            let header = r
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse)
                .ok_or_else(|| format!("the registry's /v2/ answered {} without a Bearer challenge", r.status()))?;
            *self.challenge.write().unwrap_or_else(|p| p.into_inner()) = Some(header);
        }
        self.refresh_keys().await?;
        self.register().await
    }

    async fn register(&self) -> Result<(), String> {
        let peer_port = self.peer_port.load(std::sync::atomic::Ordering::Relaxed);
        let req = RegisterRequest {
            node: self.config.node_name.clone(),
            ip: self.config.advertise_ip.to_string(),
            peer_port,
            zone: self.config.zone.clone(),
            upload_slots: self.config.upload_slots,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            platform: damselfly_core::p2p::this_platform(),
        };
        let r = self
            .http
            .post(format!("{}/p2p/v1/agents", self.base()))
            .header(reqwest::header::AUTHORIZATION, self.cluster_auth())
            .json(&req)
            .send()
            .await
            .map_err(|e| explain(&e))?;
        if !r.status().is_success() {
            return Err(format!("registration answered {}", r.status()));
        }
        let body: RegisterResponse = r.json().await.map_err(|e| explain(&e))?;
        tracing::info!(agent_id = body.agent_id, heartbeat_secs = body.heartbeat_secs, "registered with the registry");
        *self.heartbeat.write().unwrap_or_else(|p| p.into_inner()) = Duration::from_secs(body.heartbeat_secs.max(1));
        *self.agent_id.write().unwrap_or_else(|p| p.into_inner()) = Some(body.agent_id);
        Ok(())
    }

    async fn heartbeat_once(&self) -> Result<(), String> {
        let Some(id) = self.agent_id() else { return self.register().await };
        let r = self
            .http
            .post(format!("{}/p2p/v1/agents/{id}/heartbeat", self.base()))
            .header(reqwest::header::AUTHORIZATION, self.cluster_auth())
            .json(&HeartbeatRequest {
                cache_bytes: Some(self.metrics.cache_bytes.get().max(0) as u64),
                served_bytes: Some(self.metrics.served_total()),
            })
            .send()
            .await
            .map_err(|e| explain(&e))?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return self.register_again(&id).await;
        }
        if r.status() == reqwest::StatusCode::OK {
            let answer: HeartbeatResponse = r.json().await.unwrap_or_default();
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
        let r = self
            .http
            .post(format!("{}/p2p/v1/preheat/{job}/report", self.base()))
            .header(reqwest::header::AUTHORIZATION, self.cluster_auth())
            .timeout(Duration::from_secs(10))
            .json(&PreheatReport { agent_id, ok, error })
            .send()
            .await;
        if let Err(e) = r {
            tracing::warn!(job, error = %e, "cannot report a preheat job's outcome");
        }
    }

    /// Tells the registry this agent is leaving, so that it stops naming it as
    /// a parent at once. Best effort: a registry that does not answer forgets
    /// the agent after three missed heartbeats anyway.
    pub async fn unregister(&self) {
        let Some(id) = self.agent_id() else { return };
        let r = self
            .http
            .delete(format!("{}/p2p/v1/agents/{id}", self.base()))
            .header(reqwest::header::AUTHORIZATION, self.cluster_auth())
            .timeout(Duration::from_secs(3))
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => tracing::info!(agent_id = id, "left the registry's swarms"),
            Ok(r) => tracing::debug!(status = %r.status(), "unregistering was refused"),
            Err(e) => tracing::debug!(error = %explain(&e), "could not unregister"),
        }
    }

    /// Registers again after the registry forgot `stale` (it restarted), once
    /// however many downloads and heartbeats notice at the same moment: only
    /// the first to get here registers; the others find a new id in place.
    async fn register_again(&self, stale: &str) -> Result<(), String> {
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
    ) -> Result<JoinResponse, SchedulerError> {
        let stale = self.agent_id().unwrap_or_default();
        match self.join_once(repository, digest, client_token, have.clone(), again).await {
            Err(SchedulerError::UnknownAgent) => {
                self.register_again(&stale).await.map_err(SchedulerError::Unreachable)?;
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
    ) -> Result<JoinResponse, SchedulerError> {
        let agent_id = self.agent_id().ok_or(SchedulerError::NotRegistered)?;
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
        let r = self
            .http
            .post(format!("{}/p2p/v1/swarms/join", self.base()))
            .header(reqwest::header::AUTHORIZATION, self.cluster_auth())
            .timeout(Duration::from_secs(10))
            .json(&req)
            .send()
            .await
            .map_err(|e| SchedulerError::Unreachable(e.to_string()))?;
        let status = r.status();
        if status.is_server_error() {
            return Err(SchedulerError::Unreachable(format!("join answered {status}")));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            // 404 is either the blob (BLOB_UNKNOWN) or this agent (AGENT_UNKNOWN: register again).
            let body: damselfly_core::ErrorBody = r.json().await.unwrap_or_default();
            if body.code() == Some(damselfly_core::ErrorCode::AgentUnknown) {
                return Err(SchedulerError::UnknownAgent);
            }
            return Err(SchedulerError::Refused(status.as_u16()));
        }
        if !status.is_success() {
            return Err(SchedulerError::Refused(status.as_u16()));
        }
        r.json().await.map_err(|e| SchedulerError::Unreachable(e.to_string()))
    }

    /// Reports progress and trouble; failures are only logged.
    pub async fn report(&self, report: ReportRequest) {
        let r = self
            .http
            .post(format!("{}/p2p/v1/swarms/report", self.base()))
            .header(reqwest::header::AUTHORIZATION, self.cluster_auth())
            .timeout(Duration::from_secs(10))
            .json(&report)
            .send()
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "report failed");
        }
    }

    async fn refresh_keys(&self) -> Result<(), String> {
        let r = self.http.get(format!("{}/auth/jwks.json", self.base())).send().await.map_err(|e| explain(&e))?;
        let set: JwkSet = r.json().await.map_err(|e| format!("the registry's JWKS is not valid: {e}"))?;
        let mut keys = HashMap::new();
        for k in set.keys {
            if let Ok(key) = DecodingKey::from_ec_components(&k.x, &k.y) {
                keys.insert(k.kid, key);
            }
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        *self.keys_fetched.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(())
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        if let Some(k) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(kid) {
            return Some(k.clone());
        }
        // An unknown kid may be a freshly rotated key: refresh, but not more than every two seconds.
        let recently = self
            .keys_fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2));
        if !recently {
            let _ = self.refresh_keys().await;
        }
        self.keys.read().unwrap_or_else(|p| p.into_inner()).get(kid).cloned()
    }

    /// Verifies a JWT the registry signed, offline, for `audience`.
    pub async fn verify<T: serde::de::DeserializeOwned>(&self, token: &str, audience: &str) -> Option<T> {
        let challenge = self.challenge()?;
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::ES256 {
            return None;
        }
        let key = self.key(&header.kid?).await?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&challenge.issuer]);
        validation.leeway = 5;
        validation.validate_nbf = true;
        jsonwebtoken::decode::<T>(token, &key, &validation).ok().map(|d| d.claims)
    }

    /// Verifies a client's access token and that it grants pull on `name`.
    pub async fn client_may_pull(&self, token: &str, name: &str) -> bool {
        let Some(service) = self.challenge().map(|c| c.service) else { return false };
        self.verify::<AccessClaims>(token, &service).await.is_some_and(|c| c.may_pull(name))
    }
}

/// An error with its causes, which reqwest keeps out of its own message
/// ("error sending request" says nothing about an untrusted certificate).
pub fn explain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
