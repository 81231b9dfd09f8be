//! The fetch loop of one download: which piece from whom, what to do with
//! what arrives, and what to tell the scheduler.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use damselfly_core::p2p::{JoinResponse, Parent, ReportRequest, TICKET_AUTH_SCHEME};
use tokio::task::JoinSet;

use super::{Download, Engine};

/// Pieces fetched at once per blob.
const PARALLEL: usize = 4;
/// A source that sends no byte of a piece for this long has stalled. A slow
/// but moving transfer is left alone: cutting it would throw away what was
/// sent and fetch it again.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often to ask the scheduler again while pieces remain.
const REJOIN_EVERY: Duration = Duration::from_millis(300);
/// How often progress is reported.
const REPORT_EVERY: Duration = Duration::from_millis(200);
/// A download with no new piece for this long gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// Attempts at one piece from the seed before giving up on the blob.
const SEED_ATTEMPTS: u32 = 5;
/// How long a parent that failed is not asked again.
const FAILED_PARENT_PAUSE: Duration = Duration::from_secs(30);
/// With nothing in flight for this long after a parent failed, the missing
/// pieces are asked of the seed directly: the seed serves any piece to a
/// ticket holder, while the scheduler keeps counting a failed parent's
/// pieces as held (a crashed peer until it misses three heartbeats) and so
/// hands them to nobody.
const STALL: Duration = Duration::from_secs(3);
/// Idle this long, the seed is asked even if no parent failed: as long as
/// the scheduler reserves a seed piece for another agent.
const STALL_ANYWAY: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
enum Source {
    Seed,
    Parent { id: String, url: String },
}

type Fetched = (u32, Source, Result<Bytes, String>);

/// What is owed to the scheduler at the next report.
#[derive(Default)]
struct Report {
    have: Vec<u32>,
    failed: Vec<String>,
    bad: Vec<String>,
    bytes_from: HashMap<String, u64>,
}

/// The state of one download's fetching.
struct Fetch<'a> {
    engine: &'a Engine,
    d: &'a Arc<Download>,
    repository: &'a str,
    client_token: Option<&'a str>,
    parents: Vec<Parent>,
    seed: BTreeSet<u32>,
    ticket: String,
    seed_url: String,
    /// Parents not to ask: until a moment (failed), or for good (sent a corrupt piece).
    avoid: HashMap<String, Option<Instant>>,
    inflight: HashMap<u32, Source>,
    seed_attempts: HashMap<u32, u32>,
    report: Report,
    last_join: Instant,
    last_progress: Instant,
    idle_since: Option<Instant>,
}

impl Engine {
    /// Fetches every missing piece of `d`, starting from the join's plan.
    pub(super) async fn fetch_all(
        &self,
        d: &Arc<Download>,
        plan: JoinResponse,
        repository: &str,
        client_token: Option<&str>,
    ) -> Result<(), String> {
        let mut f = Fetch {
            engine: self,
            d,
            repository,
            client_token,
            parents: plan.parents,
            seed: plan.seed_pieces.into_iter().collect(),
            ticket: plan.ticket,
            seed_url: plan.seed_url,
            avoid: HashMap::new(),
            inflight: HashMap::new(),
            seed_attempts: HashMap::new(),
            // A resumed download announces what it holds already.
            report: Report { have: d.have_list(), ..Report::default() },
            last_join: Instant::now(),
            last_progress: Instant::now(),
            idle_since: None,
        };
        let mut tasks: JoinSet<Fetched> = JoinSet::new();
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !d.missing().is_empty() {
            f.start_fetches(&mut tasks);
            tokio::select! {
                Some(Ok(fetched)) = tasks.join_next(), if !tasks.is_empty() => f.received(fetched).await?,
                _ = tick.tick() => f.on_tick(tasks.is_empty()).await?,
            }
        }
        f.flush().await;
        Ok(())
    }
}

impl Fetch<'_> {
    /// Starts fetches up to [`PARALLEL`], lowest pieces first so that readers in order get going soonest.
    fn start_fetches(&mut self, tasks: &mut JoinSet<Fetched>) {
        for i in self.d.missing() {
            if tasks.len() >= PARALLEL {
                break;
            }
            if self.inflight.contains_key(&i) {
                continue;
            }
            let Some(source) = self.source_of(i) else { continue };
            let url = match &source {
                Source::Seed => format!("{}/{i}", self.seed_url),
                Source::Parent { url, .. } => format!("{url}/pieces/{}/{i}", self.d.digest),
            };
            self.inflight.insert(i, source.clone());
            let http = self.engine.http.clone();
            let ticket = self.ticket.clone();
            let expected = self.d.layout.span(i).1;
            let slots = self.engine.fetch_slots.clone();
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await;
                (i, source, fetch_piece(&http, &url, &ticket, expected).await)
            });
        }
    }

    /// The least busy usable parent holding piece `i`, else the seed if it was handed the piece.
    fn source_of(&self, i: u32) -> Option<Source> {
        let busy =
            |id: &str| self.inflight.values().filter(|s| matches!(s, Source::Parent { id: p, .. } if p == id)).count();
        let parent = self
            .parents
            .iter()
            .filter(|p| !self.avoid.contains_key(&p.agent_id) && p.pieces.contains(&i))
            .min_by_key(|p| busy(&p.agent_id));
        match parent {
            Some(p) => Some(Source::Parent { id: p.agent_id.clone(), url: p.url.clone() }),
            None if self.seed.contains(&i) => Some(Source::Seed),
            None => None,
        }
    }

    /// Verifies and stores what arrived, or notes who failed.
    async fn received(&mut self, (i, source, result): Fetched) -> Result<(), String> {
        self.inflight.remove(&i);
        let digest = self.d.digest;
        let metrics = &self.engine.metrics;
        match (result, source) {
            (Ok(bytes), source) if self.d.layout.verify(i, &bytes) => {
                let len = bytes.len() as u64;
                self.engine.store(self.d, i, bytes).await.map_err(|e| format!("cannot write to the cache: {e}"))?;
                metrics.piece("verified");
                self.last_progress = Instant::now();
                self.report.have.push(i);
                self.seed.remove(&i);
                match source {
                    Source::Seed => metrics.received("seed", len),
                    Source::Parent { id, .. } => {
                        metrics.received("peer", len);
                        *self.report.bytes_from.entry(id).or_default() += len;
                    }
                }
            }
            (Ok(_), Source::Parent { id, .. }) => {
                metrics.piece("rejected");
                tracing::warn!(%digest, piece = i, parent = id, "a parent sent a corrupt piece; avoiding it");
                self.avoid.insert(id.clone(), None);
                self.report.bad.push(id);
            }
            (Ok(_), Source::Seed) => {
                metrics.piece("rejected");
                tracing::warn!(%digest, piece = i, "the seed sent a piece that does not match its digest");
                *self.seed_attempts.entry(i).or_default() += 1;
            }
            (Err(e), Source::Parent { id, .. }) => {
                tracing::info!(%digest, piece = i, parent = id, error = e, "a parent failed; trying elsewhere");
                self.avoid.insert(id.clone(), Some(Instant::now() + FAILED_PARENT_PAUSE));
                self.report.failed.push(id);
            }
            (Err(e), Source::Seed) => {
                tracing::info!(%digest, piece = i, error = e, "a seed fetch failed; will retry");
                *self.seed_attempts.entry(i).or_default() += 1;
            }
        }
        if self.seed_attempts.values().any(|&a| a >= SEED_ATTEMPTS) {
            return Err("the seed failed the same piece repeatedly".into());
        }
        Ok(())
    }

    /// Reports, joins again for new parents and seed pieces, and notices a stall.
    async fn on_tick(&mut self, idle: bool) -> Result<(), String> {
        self.flush().await;
        let waiting = self.d.missing().into_iter().any(|i| !self.inflight.contains_key(&i));
        if waiting && self.last_join.elapsed() >= REJOIN_EVERY {
            self.last_join = Instant::now();
            let have = self.d.have_list();
            match self.engine.registry.join(self.repository, self.d.digest, self.client_token, have).await {
                Ok(next) => {
                    self.parents = next.parents;
                    self.seed.extend(next.seed_pieces);
                    self.ticket = next.ticket;
                    // A parent that failed gets another chance once its pause is over; a liar never does.
                    self.avoid.retain(|_, until| until.is_none_or(|t| t > Instant::now()));
                }
                Err(e) => tracing::debug!(error = %e, "re-join failed"),
            }
        }
        if !idle {
            self.idle_since = None;
        } else {
            let idle_for = self.idle_since.get_or_insert_with(Instant::now).elapsed();
            if (idle_for >= STALL && !self.avoid.is_empty()) || idle_for >= STALL_ANYWAY {
                let missing: Vec<u32> = self.d.missing().into_iter().take(PARALLEL).collect();
                tracing::info!(digest = %self.d.digest, pieces = ?missing, "no source for these; asking the seed");
                self.seed.extend(missing);
                self.idle_since = None;
            }
        }
        if self.last_progress.elapsed() > GIVE_UP_AFTER {
            return Err(format!("no new piece for {} s", GIVE_UP_AFTER.as_secs()));
        }
        Ok(())
    }

    async fn flush(&mut self) {
        let r = &self.report;
        if r.have.is_empty() && r.failed.is_empty() && r.bad.is_empty() {
            return;
        }
        let Some(agent_id) = self.engine.registry.agent_id() else { return };
        let r = std::mem::take(&mut self.report);
        let report = ReportRequest {
            agent_id,
            digest: self.d.digest,
            have: r.have,
            failed_parents: r.failed,
            bad_parents: r.bad,
            bytes_from: r.bytes_from.into_iter().collect(),
        };
        self.engine.registry.report(report).await;
    }
}

async fn fetch_piece(http: &reqwest::Client, url: &str, ticket: &str, expected: u64) -> Result<Bytes, String> {
    use futures_util::StreamExt;
    let request = http.get(url).header(reqwest::header::AUTHORIZATION, format!("{TICKET_AUTH_SCHEME} {ticket}")).send();
    let r = tokio::time::timeout(STALL_TIMEOUT, request)
        .await
        .map_err(|_| format!("no answer in {} s", STALL_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("answered {}", r.status()));
    }
    let mut body = r.bytes_stream();
    let mut piece = bytes::BytesMut::with_capacity(expected as usize);
    loop {
        let next = tokio::time::timeout(STALL_TIMEOUT, body.next())
            .await
            .map_err(|_| format!("stalled for {} s after {} bytes", STALL_TIMEOUT.as_secs(), piece.len()))?;
        match next {
            Some(chunk) => {
                let chunk = chunk.map_err(|e| e.to_string())?;
                if piece.len() as u64 + chunk.len() as u64 > expected {
                    return Err(format!("sent more than the piece's {expected} bytes"));
                }
                piece.extend_from_slice(&chunk);
            }
            None => break,
        }
    }
    if piece.len() as u64 != expected {
        return Err(format!("sent {} bytes instead of {expected}", piece.len()));
    }
    Ok(piece.freeze())
}
