//! The load campaign: many clients at once against a running registry, each
//! speaking the token protocol as Docker and containerd do, so that what is
//! measured is what a fleet of nodes costs the registry.
//!
//! [`run`] seeds a set of images, then runs two phases and reports each:
//!
//! - **pull**: `pullers` clients start together; each pings `/v2/`, reads the
//!   challenge, and pulls `pulls_per_client` of the images (a token for the
//!   repository's `pull` scope from the realm with Basic credentials, the
//!   manifest by tag, then the config and every layer, each checked against
//!   its digest);
//! - **push**: `pushers` clients push one distinct image each into a
//!   repository of their own (a token for `pull,push`, then per blob a
//!   `HEAD`, a `POST` that opens an upload and a `PUT` that closes it with the
//!   digest, then the manifest), and read the tag back.
//!
//! Every client has its own connection pool, as separate processes would.
//! Loops are bounded by their counts and every request by a timeout, so a
//! run always ends. An answer other than the one the protocol prescribes, or
//! bytes that do not hash to their digest, is an error; the campaign's
//! target is none. While a phase runs a thread counts the registry's open
//! file descriptors (`/proc/<pid>/fd`); its peak RSS is `VmHWM`.
//!
//! `scripts/load.sh` runs the full size against release builds;
//! `tests/tests/load.rs` a short form in CI. The binary is `damselfly-load`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::image::{OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use crate::{pseudo_random, sha256_digest};

/// How big a campaign is, and whom it runs against.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `http://host:port` of the registry.
    pub url: String,
    /// Login and password the clients send to the token endpoint.
    pub user: String,
    /// See [`Plan::user`].
    pub password: String,
    /// Namespace the images go to (the administrator's first push creates it).
    pub namespace: String,
    /// Images seeded for the pull phase.
    pub images: usize,
    /// Layers of each image.
    pub layers: usize,
    /// Bytes of each layer.
    pub layer_bytes: usize,
    /// Clients pulling at once.
    pub pullers: usize,
    /// Images each puller pulls, one after another.
    pub pulls_per_client: usize,
    /// Clients pushing at once, one image each.
    pub pushers: usize,
    /// The registry's process, to sample its descriptors and memory; `None` to skip.
    pub registry_pid: Option<u32>,
    /// Longest a single request may take before it counts as an error.
    pub request_timeout: Duration,
}

/// What one phase did.
#[derive(Debug, Default)]
pub struct PhaseReport {
    /// `pull` or `push`.
    pub name: String,
    /// Clients that ran at once.
    pub clients: usize,
    /// Requests made.
    pub requests: usize,
    /// Requests whose answer was wrong, or that got none.
    pub errors: usize,
    /// The first few errors, for a person.
    pub error_samples: Vec<String>,
    /// Wall time from the start of the first client to the end of the last.
    pub elapsed: Duration,
    /// Body bytes moved (pulled or pushed).
    pub bytes: u64,
    /// Latency of every request, sorted.
    pub latencies: Vec<Duration>,
    /// Latencies per kind of request (`token`, `manifest`, `blob`, …), sorted.
    pub kinds: Vec<(String, Vec<Duration>)>,
    /// Most descriptors the registry held open at once during the phase.
    pub peak_fds: Option<usize>,
    /// The registry's peak resident memory so far (`VmHWM`), in KiB.
    pub peak_rss_kib: Option<u64>,
}

impl PhaseReport {
    /// Requests a second.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency below which `q` (0..=1) of requests fall.
    pub fn quantile(latencies: &[Duration], q: f64) -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    }
}

/// What the whole campaign did.
#[derive(Debug, Default)]
pub struct Report {
    /// The pull phase, then the push phase.
    pub phases: Vec<PhaseReport>,
}

impl Report {
    /// Errors over all phases.
    pub fn errors(&self) -> usize {
        self.phases.iter().map(|p| p.errors).sum()
    }

    /// The report as a markdown table, one row per phase and one per kind of request.
    pub fn table(&self) -> String {
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        let mut out = String::from(
            "| phase | clients | requests | errors | seconds | req/s | MiB/s | p50 ms | p99 ms | max ms | registry peak fds | registry peak RSS MiB |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for p in &self.phases {
            let l = &p.latencies;
            out += &format!(
                "| {} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {} | {} | {} | {} | {} |\n",
                p.name,
                p.clients,
                p.requests,
                p.errors,
                p.elapsed.as_secs_f64(),
                p.throughput(),
                p.bytes as f64 / 1048576.0 / p.elapsed.as_secs_f64().max(1e-9),
                ms(PhaseReport::quantile(l, 0.5)),
                ms(PhaseReport::quantile(l, 0.99)),
                ms(l.last().copied().unwrap_or_default()),
                p.peak_fds.map_or("-".into(), |n| n.to_string()),
                p.peak_rss_kib.map_or("-".into(), |k| format!("{:.0}", k as f64 / 1024.0)),
            );
            for (kind, l) in &p.kinds {
                out += &format!(
                    "| {} · {kind} | | {} | | | | | {} | {} | {} | | |\n",
                    p.name,
                    l.len(),
                    ms(PhaseReport::quantile(l, 0.5)),
                    ms(PhaseReport::quantile(l, 0.99)),
                    ms(l.last().copied().unwrap_or_default()),
                );
            }
        }
        for p in self.phases.iter().filter(|p| p.errors > 0) {
            out += &format!("\n{} errors in {} (first {}):\n", p.errors, p.name, p.error_samples.len());
            for e in &p.error_samples {
                out += &format!("  {e}\n");
            }
        }
        out
    }
}

/// An image as the clients know it: where it is and what its blobs hash to.
#[derive(Clone)]
struct Seeded {
    repo: String,
    manifest_digest: String,
    /// Config first, then the layers.
    blobs: Vec<String>,
}

/// Requests, latencies and errors one client gathered.
#[derive(Default)]
struct Tally {
    requests: usize,
    bytes: u64,
    latencies: Vec<(&'static str, Duration)>,
    errors: Vec<String>,
}

impl Tally {
    fn record(&mut self, kind: &'static str, started: Instant) {
        self.requests += 1;
        self.latencies.push((kind, started.elapsed()));
    }
}

/// Runs the campaign: seeds the images, pulls, pushes. Errors are counted,
/// not raised; only a registry that cannot be seeded fails the call.
pub async fn run(plan: &Plan) -> Result<Report, String> {
    let images = seed(plan).await?;
    let mut report = Report::default();
    // Each client's pool is built before the phase starts: building one reads
    // the system's root certificates, which is no part of what is measured.
    let pulling = |client| pull(plan.clone(), images.clone(), http_client(plan), client);
    report.phases.push(phase(plan, "pull", plan.pullers, pulling).await);
    let pushing = |client| push(plan.clone(), http_client(plan), client);
    report.phases.push(phase(plan, "push", plan.pushers, pushing).await);
    Ok(report)
}

/// A client as a separate process would have: its own pool, bounded requests.
fn http_client(plan: &Plan) -> Client {
    Client::builder().timeout(plan.request_timeout).build().expect("an HTTP client")
}

/// Starts `clients` tasks at once, waits for all, and gathers what they did
/// while a thread watches the registry's descriptors.
async fn phase<F, Fut>(plan: &Plan, name: &str, clients: usize, client: F) -> PhaseReport
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Tally> + Send + 'static,
{
    let watching = Arc::new(AtomicBool::new(true));
    let peak_fds = Arc::new(AtomicUsize::new(0));
    let watcher = plan.registry_pid.map(|pid| {
        let (watching, peak_fds) = (watching.clone(), peak_fds.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                    peak_fds.fetch_max(dir.count(), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    });
    // Every client waits at the barrier, so that all of them are in flight at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let barrier = barrier.clone();
            let work = client(i);
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut report = PhaseReport { name: name.to_owned(), clients, ..PhaseReport::default() };
    let mut kinds: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    for task in tasks {
        let tally =
            task.await.unwrap_or_else(|e| Tally { errors: vec![format!("client panicked: {e}")], ..Tally::default() });
        report.requests += tally.requests;
        report.bytes += tally.bytes;
        report.errors += tally.errors.len();
        for e in tally.errors {
            if report.error_samples.len() < 20 {
                report.error_samples.push(e);
            }
        }
        for (kind, latency) in tally.latencies {
            report.latencies.push(latency);
            kinds.entry(kind).or_default().push(latency);
        }
    }
    report.elapsed = started.elapsed();
    watching.store(false, Ordering::Relaxed);
    if let Some(watcher) = watcher {
        let _ = watcher.join();
        report.peak_fds = Some(peak_fds.load(Ordering::Relaxed));
    }
    report.peak_rss_kib = plan.registry_pid.and_then(peak_rss_kib);
    report.latencies.sort();
    report.kinds = kinds
        .into_iter()
        .map(|(kind, mut l)| {
            l.sort();
            (kind.to_owned(), l)
        })
        .collect();
    report
}

/// An error and its causes, `: `-separated (reqwest's own text hides them).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

/// `VmHWM` of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// The realm and service of a `WWW-Authenticate: Bearer …` challenge.
fn parse_challenge(header: &str) -> Option<(String, String)> {
    let params = header.strip_prefix("Bearer ")?;
    let value = |key: &str| {
        let start = params.find(&format!("{key}=\""))? + key.len() + 2;
        let len = params[start..].find('"')?;
        Some(params[start..start + len].to_owned())
    };
    Some((value("realm")?, value("service")?))
}

/// Where a client gets its tokens, learnt from the registry's challenge.
struct TokenRealm {
    realm: String,
    service: String,
}

impl TokenRealm {
    /// `GET /v2/` without credentials: the `401` and its challenge.
    async fn ping(http: &Client, plan: &Plan, tally: &mut Tally) -> Option<TokenRealm> {
        let started = Instant::now();
        let answer = http.get(format!("{}/v2/", plan.url)).send().await;
        tally.record("ping", started);
        let challenge = match answer {
            Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).and_then(parse_challenge)
            }
            Ok(r) => {
                tally.errors.push(format!("GET /v2/: {} instead of 401", r.status()));
                return None;
            }
            Err(e) => {
                tally.errors.push(format!("GET /v2/: {}", causes(&e)));
                return None;
            }
        };
        let Some((realm, service)) = challenge else {
            tally.errors.push("GET /v2/: no Bearer challenge".to_owned());
            return None;
        };
        Some(TokenRealm { realm, service })
    }

    /// A token for `scope`, asked with the plan's Basic credentials.
    async fn token(&self, http: &Client, plan: &Plan, scope: &str, tally: &mut Tally) -> Option<String> {
        let started = Instant::now();
        let answer = http
            .get(&self.realm)
            .query(&[("service", self.service.as_str()), ("scope", scope)])
            .basic_auth(&plan.user, Some(&plan.password))
            .send()
            .await;
        let body = match answer {
            Ok(r) if r.status() == StatusCode::OK => r.json::<Value>().await.map_err(|e| causes(&e)),
            Ok(r) => Err(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
            Err(e) => Err(causes(&e)),
        };
        tally.record("token", started);
        match body.map(|b| b["token"].as_str().map(str::to_owned)) {
            Ok(Some(token)) => Some(token),
            Ok(None) => {
                tally.errors.push(format!("token for {scope}: no token in the answer"));
                None
            }
            Err(e) => {
                tally.errors.push(format!("token for {scope}: {e}"));
                None
            }
        }
    }
}

/// A `GET` with a bearer token whose body must hash to `digest`.
async fn fetch_verified(
    http: &Client,
    url: String,
    token: &str,
    digest: &str,
    kind: &'static str,
    tally: &mut Tally,
) -> bool {
    let started = Instant::now();
    let answer = http.get(&url).bearer_auth(token).header("accept", OCI_MANIFEST).send().await;
    let outcome = match answer {
        Ok(r) if r.status() == StatusCode::OK => r.bytes().await.map_err(|e| causes(&e)),
        Ok(r) => Err(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
        Err(e) => Err(causes(&e)),
    };
    tally.record(kind, started);
    match outcome {
        Ok(body) => {
            tally.bytes += body.len() as u64;
            let got = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
            if got != digest {
                tally.errors.push(format!("GET {url}: bytes hash to {got}, not {digest}"));
                return false;
            }
            true
        }
        Err(e) => {
            tally.errors.push(format!("GET {url}: {e}"));
            false
        }
    }
}

/// One puller: a ping, then its share of the images, each with a fresh token.
async fn pull(plan: Plan, images: Arc<Vec<Seeded>>, http: Client, client: usize) -> Tally {
    let mut tally = Tally::default();
    let Some(realm) = TokenRealm::ping(&http, &plan, &mut tally).await else {
        return tally;
    };
    for k in 0..plan.pulls_per_client {
        let image = &images[(client + k) % images.len()];
        let scope = format!("repository:{}:pull", image.repo);
        let Some(token) = realm.token(&http, &plan, &scope, &mut tally).await else {
            continue;
        };
        let manifest_url = format!("{}/v2/{}/manifests/latest", plan.url, image.repo);
        if !fetch_verified(&http, manifest_url, &token, &image.manifest_digest, "manifest", &mut tally).await {
            continue;
        }
        for digest in &image.blobs {
            let url = format!("{}/v2/{}/blobs/{digest}", plan.url, image.repo);
            fetch_verified(&http, url, &token, digest, "blob", &mut tally).await;
        }
    }
    tally
}

/// The blobs and manifest of image `seed`: a config, then `plan.layers` layers.
fn image_of(plan: &Plan, seed: u64) -> (Vec<Vec<u8>>, String) {
    let config = json!({ "architecture": "amd64", "os": "linux", "load": seed }).to_string().into_bytes();
    let layers: Vec<Vec<u8>> =
        (0..plan.layers as u64).map(|l| pseudo_random(plan.layer_bytes, seed * 1000 + l + 1)).collect();
    let descriptor = |bytes: &[u8], media_type: &str| json!({ "mediaType": media_type, "digest": sha256_digest(bytes), "size": bytes.len() });
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(&config, OCI_CONFIG),
        "layers": layers.iter().map(|l| descriptor(l, OCI_LAYER)).collect::<Vec<_>>(),
    })
    .to_string();
    let mut blobs = vec![config];
    blobs.extend(layers);
    (blobs, manifest)
}

/// Pushes one image the way a client does; false once a step failed.
async fn push_image(
    http: &Client,
    plan: &Plan,
    token: &str,
    repo: &str,
    blobs: &[Vec<u8>],
    manifest: &str,
    tally: &mut Tally,
) -> bool {
    async fn step(
        tally: &mut Tally,
        kind: &'static str,
        what: String,
        expect: StatusCode,
        request: reqwest::RequestBuilder,
    ) -> Option<reqwest::header::HeaderMap> {
        let started = Instant::now();
        let answer = request.send().await;
        let outcome = match answer {
            Ok(r) if r.status() == expect => {
                let headers = r.headers().clone();
                r.bytes().await.map(|_| headers).map_err(|e| causes(&e))
            }
            Ok(r) => Err(format!("{} instead of {expect}: {}", r.status(), r.text().await.unwrap_or_default())),
            Err(e) => Err(causes(&e)),
        };
        tally.record(kind, started);
        outcome.map_err(|e| tally.errors.push(format!("{what}: {e}"))).ok()
    }
    for blob in blobs {
        let digest = sha256_digest(blob);
        let blob_url = format!("{}/v2/{repo}/blobs/{digest}", plan.url);
        let head = http.head(&blob_url).bearer_auth(token);
        if step(tally, "blob HEAD", format!("HEAD {blob_url}"), StatusCode::NOT_FOUND, head).await.is_none() {
            return false;
        }
        let open_url = format!("{}/v2/{repo}/blobs/uploads/", plan.url);
        let open = http.post(&open_url).bearer_auth(token);
        let Some(headers) = step(tally, "upload POST", format!("POST {open_url}"), StatusCode::ACCEPTED, open).await
        else {
            return false;
        };
        let Some(location) = headers.get("location").and_then(|v| v.to_str().ok()) else {
            tally.errors.push(format!("POST {open_url}: 202 without a Location"));
            return false;
        };
        let location = if location.starts_with('/') { format!("{}{location}", plan.url) } else { location.to_owned() };
        let separator = if location.contains('?') { '&' } else { '?' };
        let close_url = format!("{location}{separator}digest={digest}");
        let close = http
            .put(&close_url)
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(blob.clone());
        if step(tally, "upload PUT", format!("PUT {close_url}"), StatusCode::CREATED, close).await.is_none() {
            return false;
        }
        tally.bytes += blob.len() as u64;
    }
    let manifest_url = format!("{}/v2/{repo}/manifests/latest", plan.url);
    let put = http.put(&manifest_url).bearer_auth(token).header("content-type", OCI_MANIFEST).body(manifest.to_owned());
    step(tally, "manifest PUT", format!("PUT {manifest_url}"), StatusCode::CREATED, put).await.is_some()
}

/// One pusher: a distinct image into a repository of its own, then the tag read back.
async fn push(plan: Plan, http: Client, client: usize) -> Tally {
    let mut tally = Tally::default();
    let Some(realm) = TokenRealm::ping(&http, &plan, &mut tally).await else {
        return tally;
    };
    let repo = format!("{}/pushed-{client}", plan.namespace);
    let Some(token) = realm.token(&http, &plan, &format!("repository:{repo}:pull,push"), &mut tally).await else {
        return tally;
    };
    let (blobs, manifest) = image_of(&plan, 1_000_000 + client as u64);
    if push_image(&http, &plan, &token, &repo, &blobs, &manifest, &mut tally).await {
        let url = format!("{}/v2/{repo}/manifests/latest", plan.url);
        fetch_verified(&http, url, &token, &sha256_digest(manifest.as_bytes()), "manifest", &mut tally).await;
    }
    tally
}

/// Pushes the images the pullers pull, one after another; any failure ends the run.
async fn seed(plan: &Plan) -> Result<Arc<Vec<Seeded>>, String> {
    let http = http_client(plan);
    let mut tally = Tally::default();
    let realm = TokenRealm::ping(&http, plan, &mut tally).await;
    let mut images = Vec::new();
    for i in 0..plan.images {
        let repo = format!("{}/image-{i}", plan.namespace);
        let token = match &realm {
            Some(realm) => realm.token(&http, plan, &format!("repository:{repo}:pull,push"), &mut tally).await,
            None => None,
        };
        let (blobs, manifest) = image_of(plan, i as u64);
        let pushed = match token {
            Some(token) => push_image(&http, plan, &token, &repo, &blobs, &manifest, &mut tally).await,
            None => false,
        };
        if !pushed {
            return Err(format!("could not seed {repo}: {}", tally.errors.join("; ")));
        }
        images.push(Seeded {
            repo,
            manifest_digest: sha256_digest(manifest.as_bytes()),
            blobs: blobs.iter().map(|b| sha256_digest(b)).collect(),
        });
    }
    Ok(Arc::new(images))
}

impl Plan {
    /// Requests the pull phase makes when nothing fails: per client a ping, and
    /// per pull a token, the manifest and every blob.
    pub fn pull_requests(&self) -> usize {
        self.pullers * (1 + self.pulls_per_client * (2 + 1 + self.layers))
    }

    /// Requests the push phase makes when nothing fails: per client a ping, a
    /// token, three per blob, the manifest and its read-back.
    pub fn push_requests(&self) -> usize {
        self.pushers * (2 + 3 * (1 + self.layers) + 2)
    }
}
