//! The registry killed with SIGKILL at random moments while 16 clients push
//! (monolithic and chunked uploads, cross-repository mounts, manifests),
//! delete (tags, manifests, blobs, upload sessions) and pull, in a loop.
//! After each restart a checker holds the registry to what it acknowledged:
//!
//! - every tag a client was told is stored resolves to the manifest it
//!   pushed, byte for byte; one whose write or delete was cut by the kill
//!   is either before or after, never something else; every tag the
//!   registry lists resolves; every blob a stored manifest references
//!   exists, is as long as the manifest says and hashes to its digest;
//! - every blob acknowledged is there, every blob whose delete was
//!   acknowledged is gone, and a blob whose upload the kill cut is either
//!   absent or whole (no upload is half visible);
//! - an upload session left open is either unknown (`404
//!   BLOB_UPLOAD_UNKNOWN`) or holds exactly the bytes the registry
//!   acknowledged, and resuming it from there gives the right blob;
//! - on the filesystem, the temporary files of cut single-request uploads
//!   are gone once the registry is up again.
//!
//! `DAMSELFLY_CRASH_CYCLES` kills (5 by default; `scripts/crash.sh` runs 50)
//! on each backend: SQLite with the filesystem, PostgreSQL with S3.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use damselfly_tests::http::{Cred, Http, Reply};
use damselfly_tests::image::{OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use damselfly_tests::{on_both_backends, pseudo_random, sha256_digest, Backend, Registry};
use reqwest::Method;
use serde_json::{json, Value};

/// Clients pushing, deleting and pulling at once.
const CLIENTS: usize = 16;
/// Tags each client's repository cycles through.
const TAGS: u64 = 4;
/// The longest a layer gets; most are far smaller.
const MAX_LAYER: u64 = 3 << 20;

/// How many kills: `DAMSELFLY_CRASH_CYCLES`, 5 unless set.
fn cycles() -> usize {
    std::env::var("DAMSELFLY_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

/// A small deterministic generator (xorshift64*), so a run's choices follow from its printed seed.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A blob's bytes, kept as the seed and length they are made from.
#[derive(Clone, Copy, Debug)]
struct Bytes {
    seed: u64,
    len: u64,
}

impl Bytes {
    fn make(self) -> Vec<u8> {
        pseudo_random(self.len as usize, self.seed)
    }
}

/// A chunked upload the kill may have cut: what was sent, and what the registry acknowledged.
#[derive(Debug)]
struct OpenUpload {
    repo: String,
    location: String,
    bytes: Bytes,
    digest: String,
    acknowledged: u64,
    sent: u64,
    /// The closing `PUT` was sent: the blob may be complete.
    finishing: bool,
}

/// What the clients were told, which the registry must still hold after a crash.
#[derive(Default)]
struct Ledger {
    /// `(repository, tag)` to the manifests it may resolve to (`None`: deleted). One entry
    /// when the last write was acknowledged; two while a write was cut by the kill.
    tags: BTreeMap<(String, String), Vec<Option<String>>>,
    /// Every manifest pushed, by digest.
    manifests: BTreeMap<String, String>,
    /// Blobs acknowledged in a repository, with their length.
    blobs: BTreeMap<(String, String), u64>,
    /// Blobs whose upload or delete the kill cut: present and whole, or absent.
    maybe: BTreeMap<(String, String), u64>,
    /// Blobs whose delete was acknowledged.
    gone: BTreeSet<(String, String)>,
    /// Layers any client may mount: `(repository, digest, length)`.
    mountable: Vec<(String, String, u64)>,
    /// Upload sessions open at the kill, by location.
    open: BTreeMap<String, OpenUpload>,
    /// What broke a promise, for the failure message.
    violations: Vec<String>,
    stats: Stats,
}

#[derive(Default, Debug)]
struct Stats {
    acknowledged: u64,
    cut: u64,
    pulls: u64,
    mounts: u64,
    strays_cleaned: u64,
    uploads_resumed: u64,
    uploads_unknown: u64,
    tags_checked: u64,
    blobs_verified: u64,
}

type Shared = Arc<Mutex<Ledger>>;

fn note(ledger: &Shared, what: String) {
    ledger.lock().unwrap().violations.push(what);
}

/// One client's requests, which fail (and end the client) when the registry is gone.
struct Client {
    id: usize,
    repo: String,
    http: Http,
    cred: Cred,
    rng: Rng,
    ledger: Shared,
    /// This cycle's unique prefix, so no two runs of a seed push the same bytes.
    run: String,
    n: u64,
}

/// A request the kill cut: no answer.
struct Cut;

impl Client {
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply, Cut> {
        let request = request.timeout(Duration::from_secs(120)).build().expect("a valid request");
        let (method, url) = (request.method().clone(), request.url().to_string());
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
        let resp = client.execute(request).await.map_err(|_| Cut)?;
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let body = resp.bytes().await.map_err(|_| Cut)?.to_vec();
        Ok(Reply { method, url, status, headers, body })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(&self.cred, method, path)
    }

    /// Fails the run unless the answer is `want`.
    fn expect(&self, reply: &Reply, want: u16) -> bool {
        if reply.status != want {
            note(
                &self.ledger,
                format!(
                    "client {}: {} {} answered {} (not {want}): {}",
                    self.id,
                    reply.method,
                    reply.url,
                    reply.status,
                    reply.text()
                ),
            );
        }
        reply.status == want
    }

    fn fresh(&mut self) -> u64 {
        self.n += 1;
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in format!("{}-{}-{}", self.run, self.id, self.n).bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        h
    }

    async fn run(mut self) {
        loop {
            let step = match self.rng.below(10) {
                0..=3 => self.push_image().await,
                4 => self.delete_tag().await,
                5 => self.delete_manifest().await,
                6 => self.scratch_blob().await,
                7 => self.leave_upload_open().await,
                _ => self.pull().await,
            };
            if step.is_err() {
                return;
            }
        }
    }

    /// A monolithic upload; records the blob as acknowledged or cut.
    async fn monolithic(&mut self, bytes: Bytes) -> Result<String, Cut> {
        let body = bytes.make();
        let digest = sha256_digest(&body);
        let key = (self.repo.clone(), digest.clone());
        self.ledger.lock().unwrap().maybe.insert(key.clone(), bytes.len);
        let path = format!("/v2/{}/blobs/uploads/?digest={digest}", self.repo);
        let reply = self.send(self.request(Method::POST, &path).body(body)).await?;
        let mut l = self.ledger.lock().unwrap();
        l.maybe.remove(&key);
        if reply.status == 201 {
            l.stats.acknowledged += 1;
            l.blobs.insert(key, bytes.len);
        }
        drop(l);
        self.expect(&reply, 201);
        Ok(digest)
    }

    /// A chunked upload in 1 to 4 `PATCH`es; `finish` sends the closing `PUT`.
    async fn chunked(&mut self, bytes: Bytes, finish: bool) -> Result<String, Cut> {
        let body = bytes.make();
        let digest = sha256_digest(&body);
        let started = self.send(self.request(Method::POST, &format!("/v2/{}/blobs/uploads/", self.repo))).await?;
        if !self.expect(&started, 202) {
            return Ok(digest);
        }
        let location = started.header("location").expect("an upload's Location").to_owned();
        self.ledger.lock().unwrap().open.insert(
            location.clone(),
            OpenUpload {
                repo: self.repo.clone(),
                location: location.clone(),
                bytes,
                digest: digest.clone(),
                acknowledged: 0,
                sent: 0,
                finishing: false,
            },
        );
        let chunks = 1 + self.rng.below(4);
        let chunk = (bytes.len / chunks).max(1);
        let mut at = 0;
        while at < bytes.len {
            let end = (at + chunk).min(bytes.len);
            self.ledger.lock().unwrap().open.get_mut(&location).expect("open").sent = end;
            let request = self
                .request(Method::PATCH, &location)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{at}-{}", end - 1))
                .body(body[at as usize..end as usize].to_vec());
            let reply = self.send(request).await?;
            if !self.expect(&reply, 202) {
                self.ledger.lock().unwrap().open.remove(&location);
                return Ok(digest);
            }
            self.ledger.lock().unwrap().open.get_mut(&location).expect("open").acknowledged = end;
            at = end;
        }
        if !finish {
            return Ok(digest);
        }
        let key = (self.repo.clone(), digest.clone());
        self.ledger.lock().unwrap().open.get_mut(&location).expect("open").finishing = true;
        let separator = if location.contains('?') { '&' } else { '?' };
        let reply = self.send(self.request(Method::PUT, &format!("{location}{separator}digest={digest}"))).await?;
        let mut l = self.ledger.lock().unwrap();
        l.open.remove(&location);
        if reply.status == 201 {
            l.stats.acknowledged += 1;
            l.blobs.insert(key, bytes.len);
        }
        drop(l);
        self.expect(&reply, 201);
        Ok(digest)
    }

    /// A new config, a layer (new, chunked, or mounted from another client), a manifest under a tag.
    async fn push_image(&mut self) -> Result<(), Cut> {
        let config = Bytes { seed: self.fresh(), len: 64 + self.rng.below(512) };
        let config_digest = self.monolithic(config).await?;
        let mountable = {
            let l = self.ledger.lock().unwrap();
            let others: Vec<_> = l.mountable.iter().filter(|(r, ..)| *r != self.repo).cloned().collect();
            (!others.is_empty()).then(|| others[self.rng.below(others.len() as u64) as usize].clone())
        };
        let (layer_digest, layer_len) = match mountable.filter(|_| self.rng.below(3) == 0) {
            Some((from, digest, len)) => {
                let key = (self.repo.clone(), digest.clone());
                self.ledger.lock().unwrap().maybe.insert(key.clone(), len);
                let path = format!("/v2/{}/blobs/uploads/?mount={digest}&from={from}", self.repo);
                let reply = self.send(self.request(Method::POST, &path)).await?;
                let mut l = self.ledger.lock().unwrap();
                l.maybe.remove(&key);
                if reply.status == 201 {
                    l.stats.acknowledged += 1;
                    l.stats.mounts += 1;
                    l.blobs.insert(key, len);
                }
                drop(l);
                self.expect(&reply, 201);
                (digest, len)
            }
            None => {
                let layer = Bytes { seed: self.fresh(), len: 1 + self.rng.below(MAX_LAYER) };
                let digest = if self.rng.below(2) == 0 {
                    self.monolithic(layer).await?
                } else {
                    self.chunked(layer, true).await?
                };
                self.ledger.lock().unwrap().mountable.push((self.repo.clone(), digest.clone(), layer.len));
                (digest, layer.len)
            }
        };
        let manifest = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len },
            "layers": [{ "mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_len }] })
        .to_string();
        let digest = sha256_digest(manifest.as_bytes());
        let tag = format!("t{}", self.rng.below(TAGS));
        let key = (self.repo.clone(), tag.clone());
        {
            let mut l = self.ledger.lock().unwrap();
            l.manifests.insert(digest.clone(), manifest.clone());
            let before = l.tags.get(&key).and_then(|s| s.first().cloned()).unwrap_or(None);
            l.tags.insert(key.clone(), vec![before, Some(digest.clone())]);
        }
        let request = self
            .request(Method::PUT, &format!("/v2/{}/manifests/{tag}", self.repo))
            .header("content-type", OCI_MANIFEST)
            .body(manifest);
        let reply = self.send(request).await?;
        self.settle_tag(&key, &reply, 201, Some(digest));
        Ok(())
    }

    /// After an answered write to a tag: the one state it is now in.
    fn settle_tag(&self, key: &(String, String), reply: &Reply, want: u16, after: Option<String>) {
        let mut l = self.ledger.lock().unwrap();
        let states = l.tags.get_mut(key).expect("a tag written");
        if reply.status == want {
            *states = vec![after];
            l.stats.acknowledged += 1;
        } else {
            states.truncate(1);
        }
        drop(l);
        self.expect(reply, want);
    }

    /// One of this client's stored tags, with its manifest.
    fn stored_tag(&mut self) -> Option<((String, String), String)> {
        let l = self.ledger.lock().unwrap();
        let stored: Vec<_> = l
            .tags
            .iter()
            .filter(|((r, _), s)| *r == self.repo && s.len() == 1 && s[0].is_some())
            .map(|(k, s)| (k.clone(), s[0].clone().expect("stored")))
            .collect();
        drop(l);
        (!stored.is_empty()).then(|| stored[self.rng.below(stored.len() as u64) as usize].clone())
    }

    async fn delete_tag(&mut self) -> Result<(), Cut> {
        let Some((key, _)) = self.stored_tag() else { return Ok(()) };
        self.ledger.lock().unwrap().tags.get_mut(&key).expect("stored").push(None);
        let reply = self.send(self.request(Method::DELETE, &format!("/v2/{}/manifests/{}", key.0, key.1))).await?;
        self.settle_tag(&key, &reply, 202, None);
        Ok(())
    }

    /// Deletes a tag's manifest by digest, which takes every tag on it along.
    async fn delete_manifest(&mut self) -> Result<(), Cut> {
        let Some((_, digest)) = self.stored_tag() else { return Ok(()) };
        let keys: Vec<_> = {
            let mut l = self.ledger.lock().unwrap();
            let keys: Vec<_> = l
                .tags
                .iter()
                .filter(|((r, _), s)| *r == self.repo && s.contains(&Some(digest.clone())))
                .map(|(k, _)| k.clone())
                .collect();
            for k in &keys {
                l.tags.get_mut(k).expect("listed").push(None);
            }
            keys
        };
        let reply = self.send(self.request(Method::DELETE, &format!("/v2/{}/manifests/{digest}", self.repo))).await?;
        for key in &keys {
            self.settle_tag(key, &reply, 202, None);
        }
        Ok(())
    }

    /// A blob pushed only to be deleted.
    async fn scratch_blob(&mut self) -> Result<(), Cut> {
        let bytes = Bytes { seed: self.fresh(), len: 1 + self.rng.below(256 << 10) };
        let digest = self.monolithic(bytes).await?;
        let key = (self.repo.clone(), digest.clone());
        let acknowledged = {
            let mut l = self.ledger.lock().unwrap();
            let acknowledged = l.blobs.remove(&key).is_some();
            if acknowledged {
                l.maybe.insert(key.clone(), bytes.len);
            }
            acknowledged
        };
        if !acknowledged {
            return Ok(());
        }
        let reply = self.send(self.request(Method::DELETE, &format!("/v2/{}/blobs/{digest}", self.repo))).await?;
        let mut l = self.ledger.lock().unwrap();
        l.maybe.remove(&key);
        if reply.status == 202 {
            l.stats.acknowledged += 1;
            l.gone.insert(key);
        }
        drop(l);
        self.expect(&reply, 202);
        Ok(())
    }

    /// A chunked upload left unfinished (or cancelled), for the checker to resume.
    async fn leave_upload_open(&mut self) -> Result<(), Cut> {
        let bytes = Bytes { seed: self.fresh(), len: 1 + self.rng.below(MAX_LAYER) };
        self.chunked(bytes, false).await?;
        if self.rng.below(2) == 0 {
            let location = {
                let l = self.ledger.lock().unwrap();
                l.open.values().filter(|u| u.repo == self.repo).map(|u| u.location.clone()).last()
            };
            if let Some(location) = location {
                let reply = self.send(self.request(Method::DELETE, &location)).await?;
                if self.expect(&reply, 204) {
                    let mut l = self.ledger.lock().unwrap();
                    l.open.remove(&location);
                    l.stats.acknowledged += 1;
                }
            }
        }
        Ok(())
    }

    /// Pulls one of this client's stored tags and every blob of it.
    async fn pull(&mut self) -> Result<(), Cut> {
        let Some((key, digest)) = self.stored_tag() else { return Ok(()) };
        let reply = self
            .send(
                self.request(Method::GET, &format!("/v2/{}/manifests/{}", key.0, key.1)).header("accept", OCI_MANIFEST),
            )
            .await?;
        if self.expect(&reply, 200) {
            check_manifest(&self.ledger, &reply, &digest);
            for (blob, size) in referenced(&reply.body) {
                let got = self.send(self.request(Method::GET, &format!("/v2/{}/blobs/{blob}", self.repo))).await?;
                check_blob(&self.ledger, &got, &blob, size);
            }
        }
        self.ledger.lock().unwrap().stats.pulls += 1;
        Ok(())
    }
}

/// The blobs a manifest names, with their sizes.
fn referenced(manifest: &[u8]) -> Vec<(String, u64)> {
    let Ok(m) = serde_json::from_slice::<Value>(manifest) else { return Vec::new() };
    std::iter::once(&m["config"])
        .chain(m["layers"].as_array().into_iter().flatten())
        .filter_map(|d| Some((d["digest"].as_str()?.to_owned(), d["size"].as_u64()?)))
        .collect()
}

/// A manifest answer is `digest`, byte for byte as pushed.
fn check_manifest(ledger: &Shared, reply: &Reply, digest: &str) {
    let mut l = ledger.lock().unwrap();
    let pushed = l.manifests.get(digest).cloned();
    let header = reply.header("docker-content-digest").unwrap_or_default().to_owned();
    if sha256_digest(&reply.body) != digest
        || header != digest
        || pushed.as_deref().map(str::as_bytes) != Some(&reply.body[..])
    {
        l.violations.push(format!(
            "{}: expected manifest {digest}, got {header} with body {}",
            reply.url,
            reply.text()
        ));
    }
}

/// A blob answer is `size` bytes that hash to `digest`.
fn check_blob(ledger: &Shared, reply: &Reply, digest: &str, size: u64) {
    let mut l = ledger.lock().unwrap();
    l.stats.blobs_verified += 1;
    if reply.status != 200 || reply.body.len() as u64 != size || sha256_digest(&reply.body) != digest {
        l.violations.push(format!(
            "{}: blob {digest} of {size} bytes answered {} with {} bytes hashing to {}",
            reply.url,
            reply.status,
            reply.body.len(),
            sha256_digest(&reply.body)
        ));
    }
}

/// Files in the filesystem store's temporary directory (the readiness probe's aside).
fn strays(reg: &Registry) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(reg.data_dir.join("tmp")) else { return Vec::new() };
    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n != ".ready-probe").collect()
}

/// After a restart: everything the ledger says is stored, is; everything cut is before or after.
async fn check(reg: &Registry, ledger: &Shared, cycle: usize) {
    let http = Http::new(reg);
    let cred = Cred::admin();
    let say = |what: String| ledger.lock().unwrap().violations.push(format!("after kill {cycle}: {what}"));

    let left = strays(reg);
    if !left.is_empty() {
        say(format!("temporary files survived the restart: {left:?}"));
    }

    // Tags the clients wrote: one of the states they may be in.
    let tags: Vec<_> = ledger.lock().unwrap().tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut resolved = BTreeSet::new();
    for ((repo, tag), allowed) in tags {
        let reply = http
            .send(
                http.request(&cred, Method::GET, &format!("/v2/{repo}/manifests/{tag}")).header("accept", OCI_MANIFEST),
            )
            .await;
        let now = match reply.status {
            200 => Some(reply.header("docker-content-digest").unwrap_or_default().to_owned()),
            404 if reply.code().as_deref() == Some("MANIFEST_UNKNOWN") => None,
            _ => {
                say(format!("{repo}:{tag} answered {}: {}", reply.status, reply.text()));
                continue;
            }
        };
        if !allowed.contains(&now) {
            say(format!("{repo}:{tag} is {now:?}; the clients were told {allowed:?}"));
        }
        if let Some(digest) = &now {
            check_manifest(ledger, &reply, digest);
            resolved.insert((repo.clone(), reply.body.clone()));
        }
        let mut l = ledger.lock().unwrap();
        l.stats.tags_checked += 1;
        l.tags.insert((repo, tag), vec![now]);
    }

    // Tags the registry lists: each resolves, and each blob of each is whole.
    for client in 0..CLIENTS {
        let repo = format!("crash/c{client}");
        let list = http.get(&cred, &format!("/v2/{repo}/tags/list?n=1000")).await;
        if list.status == 404 {
            continue;
        }
        let names: Vec<String> = list.json()["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        for tag in names {
            let reply = http
                .send(
                    http.request(&cred, Method::GET, &format!("/v2/{repo}/manifests/{tag}"))
                        .header("accept", OCI_MANIFEST),
                )
                .await;
            if reply.status != 200 {
                say(format!("{repo}:{tag} is listed but answers {}: {}", reply.status, reply.text()));
                continue;
            }
            resolved.insert((repo.clone(), reply.body.clone()));
        }
    }
    for (repo, manifest) in resolved {
        for (digest, size) in referenced(&manifest) {
            let reply = http.get(&cred, &format!("/v2/{repo}/blobs/{digest}")).await;
            check_blob(ledger, &reply, &digest, size);
        }
    }

    // Blobs: acknowledged ones whole, deleted ones gone, cut ones absent or whole.
    let (blobs, maybe, gone) = {
        let mut l = ledger.lock().unwrap();
        (l.blobs.clone(), std::mem::take(&mut l.maybe), l.gone.clone())
    };
    for ((repo, digest), len) in &blobs {
        let reply = http.send(http.request(&cred, Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))).await;
        if reply.status != 200 || reply.header("content-length") != Some(&len.to_string()) {
            say(format!(
                "acknowledged blob {repo}@{digest} ({len} bytes) answers HEAD {} {:?}",
                reply.status,
                reply.header("content-length")
            ));
        }
    }
    for ((repo, digest), len) in maybe {
        let reply = http.get(&cred, &format!("/v2/{repo}/blobs/{digest}")).await;
        if reply.status == 200 {
            check_blob(ledger, &reply, &digest, len);
            ledger.lock().unwrap().blobs.insert((repo, digest), len);
        } else if reply.status != 404 {
            say(format!("blob {repo}@{digest} cut by the kill answers {}: {}", reply.status, reply.text()));
        }
    }
    for (repo, digest) in &gone {
        let reply = http.send(http.request(&cred, Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))).await;
        if reply.status != 404 {
            say(format!("deleted blob {repo}@{digest} answers HEAD {}", reply.status));
        }
    }

    // Open uploads: unknown, or exactly what was acknowledged, and resumable from there.
    let open = std::mem::take(&mut ledger.lock().unwrap().open);
    for (_, upload) in open {
        let blob_path = format!("/v2/{}/blobs/{}", upload.repo, upload.digest);
        let head = http.send(http.request(&cred, Method::HEAD, &blob_path)).await;
        if head.status == 200 && !upload.finishing {
            say(format!("upload {} was never finished, yet its blob {} is visible", upload.location, upload.digest));
        }
        let status = http.get(&cred, &upload.location).await;
        let held = match status.status {
            204 => {
                let range = status.header("range").unwrap_or_default();
                let last = range.strip_prefix("0-").and_then(|e| e.parse::<u64>().ok()).unwrap_or(u64::MAX);
                // `0-0` is how the spec says both "nothing" and "one byte".
                if last == 0 && upload.acknowledged <= 1 {
                    upload.acknowledged
                } else {
                    last.saturating_add(1)
                }
            }
            404 if status.code().as_deref() == Some("BLOB_UPLOAD_UNKNOWN") => {
                if upload.finishing && head.status == 200 {
                    let reply = http.get(&cred, &blob_path).await;
                    check_blob(ledger, &reply, &upload.digest, upload.bytes.len);
                    ledger.lock().unwrap().blobs.insert((upload.repo.clone(), upload.digest.clone()), upload.bytes.len);
                }
                ledger.lock().unwrap().stats.uploads_unknown += 1;
                continue;
            }
            _ => {
                say(format!("upload {} answers {}: {}", upload.location, status.status, status.text()));
                continue;
            }
        };
        // The chunk the kill cut is all in or all out: never a part of it.
        if held != upload.acknowledged && held != upload.sent {
            say(format!(
                "upload {} holds {held} bytes; the registry had acknowledged {} and was sent up to {}",
                upload.location, upload.acknowledged, upload.sent
            ));
            continue;
        }
        let body = upload.bytes.make();
        if held < upload.bytes.len {
            let request = http
                .request(&cred, Method::PATCH, &upload.location)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{held}-{}", upload.bytes.len - 1))
                .body(body[held as usize..].to_vec());
            let reply = http.send(request).await;
            if reply.status != 202 {
                say(format!(
                    "resuming upload {} at {held} answered {}: {}",
                    upload.location,
                    reply.status,
                    reply.text()
                ));
                continue;
            }
        }
        let separator = if upload.location.contains('?') { '&' } else { '?' };
        let reply = http
            .send(http.request(&cred, Method::PUT, &format!("{}{separator}digest={}", upload.location, upload.digest)))
            .await;
        if reply.status != 201 {
            say(format!("finishing resumed upload {} answered {}: {}", upload.location, reply.status, reply.text()));
            continue;
        }
        let reply = http.get(&cred, &blob_path).await;
        check_blob(ledger, &reply, &upload.digest, upload.bytes.len);
        let mut l = ledger.lock().unwrap();
        l.stats.uploads_resumed += 1;
        l.blobs.insert((upload.repo, upload.digest), upload.bytes.len);
    }
}

async fn kills_during_pushes_mounts_deletes_and_pulls_lose_nothing_acknowledged(backend: Backend) {
    let seed: u64 = std::env::var("DAMSELFLY_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
    });
    let mut reg = Registry::start_paired(backend);
    let ledger: Shared = Arc::default();
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let cycles = cycles();
    for cycle in 0..cycles {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let client = Client {
                    id,
                    repo: format!("crash/c{id}"),
                    http: Http::new(&reg),
                    cred: Cred::admin(),
                    rng: Rng::new(rng.next()),
                    ledger: ledger.clone(),
                    run: format!("{seed}-{cycle}"),
                    n: 0,
                };
                tokio::spawn(client.run())
            })
            .collect();
        // Anywhere from the first requests to well into the loop.
        tokio::time::sleep(Duration::from_millis(300 + rng.below(5700))).await;
        reg.kill();
        for client in clients {
            client.await.expect("a client panicked");
        }
        {
            let mut l = ledger.lock().unwrap();
            l.stats.cut += l.tags.values().filter(|s| s.len() > 1).count() as u64 + l.maybe.len() as u64;
            l.stats.strays_cleaned += strays(&reg).len() as u64;
        }
        reg.start_again(&[]);
        check(&reg, &ledger, cycle).await;
        let l = ledger.lock().unwrap();
        assert!(
            l.violations.is_empty(),
            "seed {seed}, {backend:?}, kill {cycle}: {} broken promises:\n{}\n{:?}\nregistry log tail:\n{}",
            l.violations.len(),
            l.violations.join("\n"),
            l.stats,
            reg.log().lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let l = ledger.lock().unwrap();
    println!(
        "crash safety, {backend:?}: seed {seed}, {cycles} kills of {CLIENTS} clients in {:.0} s; {:?}",
        started.elapsed().as_secs_f64(),
        l.stats
    );
}

/// A crash between creating a session's file and recording the session (or
/// between forgetting a session and deleting its file) leaves a file in
/// `uploads/` that no session owns. Once it is older than the upload TTL it
/// is deleted, at start and then periodically; a session's own file is kept
/// however old, until the session itself expires.
async fn upload_files_no_session_owns_are_swept(backend: Backend) {
    let mut reg = Registry::start_with(backend, &[("DAMSELFLY_UPLOAD_TTL_SECS", "600")]);
    let (http, cred) = (Http::new(&reg), Cred::admin());
    let started = http.send(http.request(&cred, Method::POST, "/v2/crash/sweep/blobs/uploads/")).await.expect(202);
    let location = started.header("location").expect("Location").to_owned();
    let id = location.rsplit('/').next().expect("an id").to_owned();
    let request = http.request(&cred, Method::PATCH, &location).body(vec![7u8; 1000]);
    http.send(request).await.expect(202);
    reg.kill();
    let uploads = reg.data_dir.join("uploads");
    let orphan = uploads.join(uuid_like(&id));
    std::fs::write(&orphan, vec![9u8; 4096]).expect("an orphan file");
    // Both look an hour old: only the one no session owns may go.
    for file in [&orphan, &uploads.join(&id)] {
        let touched = std::process::Command::new("touch").args(["-d", "1 hour ago"]).arg(file).status();
        assert!(touched.expect("touch").success());
    }
    reg.start_again(&[("DAMSELFLY_UPLOAD_TTL_SECS", "600")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while orphan.exists() {
        assert!(Instant::now() < deadline, "the orphaned upload file was not swept in 60 s:\n{}", reg.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = http.get(&cred, &location).await.expect(204);
    assert_eq!(status.header("range"), Some("0-999"), "the live session kept its bytes");
    assert!(reg.log().contains("removed what interrupted uploads left in the blob store"), "{}", reg.log());
}

/// A crash in the middle of a chunk leaves part of it in the session's
/// file. The registry never acknowledged those bytes: after the restart the
/// session holds what it acknowledged, and resuming from there gives the
/// right blob.
async fn a_chunk_cut_by_a_crash_is_not_counted(backend: Backend) {
    let mut reg = Registry::start_with(backend, &[]);
    let (http, cred) = (Http::new(&reg), Cred::admin());
    let blob = pseudo_random(3 << 20, 21);
    let started = http.send(http.request(&cred, Method::POST, "/v2/crash/cut/blobs/uploads/")).await.expect(202);
    let location = started.header("location").expect("Location").to_owned();
    let id = location.rsplit('/').next().expect("an id").to_owned();
    let first =
        http.request(&cred, Method::PATCH, &location).header("content-range", "0-999").body(blob[..1000].to_vec());
    http.send(first).await.expect(202);

    // The second chunk: its headers and 2 of its 3 MiB, then nothing more until the kill.
    let mut conn = tokio::net::TcpStream::connect(&reg.host).await.expect("connect");
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Range: 1000-{}\r\nContent-Length: {}\r\n\r\n",
        reg.host,
        damselfly_tests::basic_authorization(damselfly_tests::ADMIN_USER, damselfly_tests::ADMIN_PASSWORD),
        blob.len() - 1,
        blob.len() - 1000
    );
    tokio::io::AsyncWriteExt::write_all(&mut conn, head.as_bytes()).await.expect("headers");
    tokio::io::AsyncWriteExt::write_all(&mut conn, &blob[1000..(2 << 20) + 1000]).await.expect("part of the body");
    let file = reg.data_dir.join("uploads").join(&id);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&file).map_or(0, |m| m.len()) <= 1000 {
        assert!(Instant::now() < deadline, "the registry wrote nothing of the second chunk in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reg.kill();
    drop(conn);
    let cut = std::fs::metadata(&file).expect("the session's file").len();
    assert!(cut > 1000, "part of the chunk is in the file");
    reg.start_again(&[]);

    let status = http.get(&cred, &location).await.expect(204);
    assert_eq!(
        status.header("range"),
        Some("0-999"),
        "the session holds what was acknowledged, not the {cut} bytes on disk"
    );
    let rest = http
        .request(&cred, Method::PATCH, &location)
        .header("content-range", format!("1000-{}", blob.len() - 1))
        .body(blob[1000..].to_vec());
    http.send(rest).await.expect(202);
    let digest = sha256_digest(&blob);
    http.send(http.request(&cred, Method::PUT, &format!("{location}?digest={digest}"))).await.expect(201);
    let got = http.get(&cred, &format!("/v2/crash/cut/blobs/{digest}")).await.expect(200);
    assert!(got.body == blob, "the blob is the bytes sent");
}

/// Another session id of the same shape as `id`.
fn uuid_like(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c == '-' {
                c
            } else if c == '0' {
                '1'
            } else {
                '0'
            }
        })
        .collect()
}

on_both_backends!(
    kills_during_pushes_mounts_deletes_and_pulls_lose_nothing_acknowledged,
    a_chunk_cut_by_a_crash_is_not_counted,
    upload_files_no_session_owns_are_swept
);
