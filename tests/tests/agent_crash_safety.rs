//! The agent killed with SIGKILL while it works, and started again on the
//! same cache directory. Each cycle pushes a fresh 24 MiB blob (256 KiB
//! pieces, so parents feed their children stripes) and:
//!
//! - kills agent A at a random moment while it downloads the blob for a
//!   client (its downloads capped at 16 MiB/s, so the kill lands mid-blob);
//! - after the restart, a checker re-hashes everything in A's cache: every
//!   completed blob against its digest, every piece a partial blob's bitmap
//!   counts against its piece digest, every layout parses, and no temporary
//!   or stray file is left; then the blob pulls through A, whole and right;
//! - agent B pulls the blob, with A (which holds it all, its uploads capped
//!   at 16 MiB/s) as its parent, and A is killed again at a random moment
//!   of that feed: B's pull still completes with the right bytes, and both
//!   caches pass the checker.
//!
//! Stray files a kill can leave (half-written `*.tmp`, a bitmap or layout
//! without its blob, names that are not digests) are planted before the
//! first restart and must be gone after it. `DAMSELFLY_AGENT_CRASH_CYCLES`
//! cycles (2 kills each) run, 3 by default; `scripts/agent-faults.sh crash` runs
//! the long form. SQLite only: the scheduler keeps its state in memory, the
//! database is not what is tested.

use std::path::Path;
use std::time::{Duration, Instant};

use damselfly_core::p2p::BlobLayout;
use damselfly_core::Digest;
use damselfly_tests::http::{create_robot, Cred, Http};
use damselfly_tests::{metric_value, pseudo_random, Agent, Backend, Registry};
use reqwest::{Client, StatusCode};
use serde_json::json;

const MIB: usize = 1024 * 1024;
/// A's download and upload caps: 24 MiB takes about 1.5 s, for the kill to land in.
const CAP: &str = "16777216";

fn cycles() -> u64 {
    std::env::var("DAMSELFLY_AGENT_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

/// What the checker found in a cache.
#[derive(Debug, Default)]
struct CacheCheck {
    complete: usize,
    partial_pieces: usize,
}

/// Re-hashes everything the cache at `dir` would trust, and fails on any
/// file it would not: see the header.
fn check_cache(dir: &Path) -> CacheCheck {
    let mut found = CacheCheck::default();
    let layout = |hex: &str| -> BlobLayout {
        let path = dir.join("meta").join(format!("{hex}.json"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: not a layout: {e}", path.display()))
    };
    for e in std::fs::read_dir(dir.join("blobs")).expect("blobs/").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(e.path()).expect("a cached blob");
        assert_eq!(Digest::of(&bytes).hex(), name, "cached blob {name} does not hash to its name");
        assert_eq!(layout(&name).size(), bytes.len() as u64, "cached blob {name} and its layout disagree");
        found.complete += 1;
    }
    for e in std::fs::read_dir(dir.join("partial")).expect("partial/").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(hex) = name.strip_suffix(".bitmap") {
            assert!(dir.join("partial").join(hex).exists(), "bitmap {name} without its partial blob");
            continue;
        }
        assert!(format!("sha256:{name}").parse::<Digest>().is_ok(), "stray file partial/{name}");
        let layout = layout(&name);
        let data = std::fs::read(e.path()).expect("a partial blob");
        let bitmap = std::fs::read(dir.join("partial").join(format!("{name}.bitmap"))).unwrap_or_default();
        for (i, bit) in bitmap.iter().enumerate() {
            if *bit == 1 {
                let (start, len) = layout.span(i as u32);
                let piece = data.get(start as usize..(start + len) as usize).unwrap_or_default();
                assert!(layout.verify(i as u32, piece), "partial blob {name}: piece {i} is counted but wrong");
                found.partial_pieces += 1;
            }
        }
    }
    for e in std::fs::read_dir(dir.join("meta")).expect("meta/").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let hex = name.strip_suffix(".json").unwrap_or_else(|| panic!("stray file meta/{name}"));
        layout(hex);
    }
    found
}

struct Setup {
    reg: Registry,
    http: Client,
    cluster_token: String,
    robot: Cred,
}

impl Setup {
    async fn new() -> Setup {
        let reg = Registry::start_with(Backend::Sqlite, &[("DAMSELFLY_PIECE_SIZE", "262144")]);
        let http = Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
        let cluster_token = reg.register_cluster("edge").await;
        reg.push_blob("accel/app", b"first").await;
        let (status, body) =
            reg.admin(reqwest::Method::PATCH, "/api/v1/namespaces/accel", json!({"p2p_enabled": true})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let scopes = json!([{"namespace": "accel", "role": "viewer"}]);
        let robot = create_robot(&Http::new(&reg), "default", "puller", scopes).await;
        // The registry caches namespaces for two seconds.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        Setup { reg, http, cluster_token, robot }
    }

    /// A fresh pull token for `accel/app` (the long form outlives one).
    async fn token(&self) -> String {
        Http::new(&self.reg).token(&self.robot, &["repository:accel/app:pull"]).await.0
    }
}

/// The blob through `agent`'s mirror: its bytes, or why there are none.
async fn pull(http: Client, mirror: String, digest: Digest, token: String) -> Result<Vec<u8>, String> {
    let r = http
        .get(format!("{mirror}/v2/accel/app/blobs/{digest}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != StatusCode::OK {
        return Err(format!("status {}", r.status()));
    }
    r.bytes().await.map(|b| b.to_vec()).map_err(|e| e.to_string())
}

/// Waits until the agent has moved the blob among its completed ones (just
/// after the last bytes went out).
async fn settled(agent: &Agent, digest: Digest) {
    let path = agent.cache_dir.join("blobs").join(digest.hex());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "blob {digest} not in the cache 20 s after its pull");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pseudo-random delay in `[lo, hi)` ms from `seed`.
fn delay(seed: u64, lo: u64, hi: u64) -> Duration {
    let r = u64::from_le_bytes(pseudo_random(8, seed).try_into().expect("8 bytes"));
    Duration::from_millis(lo + r % (hi - lo))
}

/// Files a kill can leave, for the restart to clean.
fn plant_strays(dir: &Path) -> Vec<std::path::PathBuf> {
    let ghost = Digest::of(b"a blob this cache never had").hex();
    let strays = [
        dir.join("partial").join(format!("{ghost}.bitmap.tmp")),
        dir.join("partial").join(format!("{ghost}.bitmap")),
        dir.join("partial").join(&ghost),
        dir.join("meta").join(format!("{ghost}.json.tmp")),
        dir.join("meta").join(format!("{ghost}.json")),
        dir.join("blobs").join("not-a-digest"),
        dir.join("blobs").join(&ghost),
    ];
    for s in &strays {
        std::fs::write(s, b"{\"half").expect("plant a stray file");
    }
    strays.to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_during_downloads_and_feeds_restarts_with_only_verified_pieces() {
    let s = Setup::new().await;
    let mut a = Agent::start(&s.reg.url, &s.cluster_token, &["--download-rate", CAP, "--upload-rate", CAP]);
    let b = Agent::start(&s.reg.url, &s.cluster_token, &[]);
    let (mut cut_downloads, mut resumed_pieces, mut cut_feeds) = (0, 0, 0);
    let mut slowest_feed_recovery = Duration::ZERO;
    let started = Instant::now();
    for cycle in 0..cycles() {
        let blob = pseudo_random(24 * MIB, 1000 + cycle);
        let digest = s.reg.push_blob("accel/app", &blob).await;
        let token = s.token().await;

        // Killed while downloading for a client.
        let first = tokio::spawn(pull(s.http.clone(), a.mirror_url.clone(), digest, token.clone()));
        tokio::time::sleep(delay(cycle * 2, 200, 1400)).await;
        let strays = if cycle == 0 { plant_strays(&a.cache_dir) } else { Vec::new() };
        a.restart(&s.cluster_token);
        match first.await.expect("the pull task") {
            Ok(bytes) => assert!(bytes == blob, "cycle {cycle}: a pull cut by the kill delivered wrong bytes"),
            Err(_) => cut_downloads += 1,
        }
        for stray in &strays {
            assert!(!stray.exists(), "cycle {cycle}: {} survived the restart", stray.display());
        }
        let found = check_cache(&a.cache_dir);
        resumed_pieces += found.partial_pieces;
        let bytes = tokio::time::timeout(
            Duration::from_secs(60),
            pull(s.http.clone(), a.mirror_url.clone(), digest, token.clone()),
        )
        .await
        .unwrap_or_else(|_| panic!("cycle {cycle}: no pull through the restarted agent in 60 s"))
        .unwrap_or_else(|e| panic!("cycle {cycle}: pull through the restarted agent: {e}"));
        assert!(bytes == blob, "cycle {cycle}: wrong bytes after the restart");
        settled(&a, digest).await;

        // Killed while feeding B.
        let second = tokio::spawn(pull(s.http.clone(), b.mirror_url.clone(), digest, token.clone()));
        tokio::time::sleep(delay(cycle * 2 + 1, 100, 1200)).await;
        let feeding = !second.is_finished();
        let killed = Instant::now();
        a.restart(&s.cluster_token);
        cut_feeds += usize::from(feeding);
        let bytes = tokio::time::timeout(Duration::from_secs(60), second)
            .await
            .unwrap_or_else(|_| panic!("cycle {cycle}: B's pull did not finish 60 s after its parent was killed"))
            .expect("the pull task")
            .unwrap_or_else(|e| panic!("cycle {cycle}: B's pull failed when its parent was killed: {e}"));
        assert!(bytes == blob, "cycle {cycle}: B got wrong bytes");
        slowest_feed_recovery = slowest_feed_recovery.max(killed.elapsed());
        settled(&b, digest).await;
        check_cache(&a.cache_dir);
        check_cache(&b.cache_dir);
        let bytes = pull(s.http.clone(), a.mirror_url.clone(), digest, token).await.expect("a pull after the feed");
        assert!(bytes == blob, "cycle {cycle}: wrong bytes from A after the second restart");
    }
    let page = s.http.get(format!("{}/metrics", b.metrics_url)).send().await.expect("metrics");
    let page = page.text().await.expect("metrics text");
    let from_peers = metric_value(&page, "damselfly_agent_bytes_received_total{source=\"peer\"}");
    assert!(from_peers > 0.0, "B never took a byte from a peer: the feed phase fed nothing\n{page}");
    assert!(a.log().contains("removed what an interrupted run left in the cache"), "the sweep is in the log");
    println!(
        "agent crash safety: {} cycles, {} kills in {:?}: {cut_downloads} pulls cut mid-download, {resumed_pieces} verified \
         pieces found after restarts, {cut_feeds} kills during a feed (B's pull done at most {slowest_feed_recovery:?} after \
         the kill); B took {from_peers} bytes from peers; every cache passed the checker",
        cycles(),
        cycles() * 2,
        started.elapsed()
    );
}
