//! `damselfly-agent get`: files pushed as an OCI artifact fetched by name,
//! by digest, to a path and to standard output, through a running agent and
//! as a one-shot peer without one; interrupted and resumed; and the errors a
//! person sees for a wrong digest, an unknown tag and a missing permission;
//! and preheat, which puts an artifact's files into the caches of a
//! cluster's agents before anything pulls them.
//! Everything runs on loopback against a real registry on SQLite (the
//! scheduler keeps its state in memory; the backend changes nothing here).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use damselfly_core::Digest;
use damselfly_tests::{binary, free_port, metric_value, pseudo_random, run, Agent, Backend, Registry};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const MIB: usize = 1024 * 1024;
const REPO: &str = "files/models";
const TITLE: &str = "org.opencontainers.image.title";

/// A registry with a cluster `edge`, an artifact `files/models:v1` of two
/// files with P2P on for `files`, and a robot that may pull from `files`.
struct Setup {
    reg: Registry,
    http: Client,
    cluster_token: String,
    /// (title, bytes, digest) of each file of the artifact.
    files: Vec<(String, Vec<u8>, Digest)>,
    manifest: Digest,
    robot: (String, String),
    tmp: tempfile::TempDir,
}

impl Setup {
    async fn new(sizes: &[usize]) -> Setup {
        let reg = Registry::start(Backend::Sqlite);
        let http = Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
        let cluster_token = reg.register_cluster("edge").await;
        let files: Vec<(String, Vec<u8>, Digest)> = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                let bytes = pseudo_random(*size, 70 + i as u64);
                let digest = Digest::of(&bytes);
                (format!("part-{i}.bin"), bytes, digest)
            })
            .collect();
        let tmp = tempfile::Builder::new().prefix("damselfly-get-").tempdir().expect("temp dir");
        let mut s =
            Setup { reg, http, cluster_token, files, manifest: Digest::of(b""), robot: Default::default(), tmp };
        s.manifest = s.push_artifact("v1").await;
        let (status, body) =
            s.reg.admin(reqwest::Method::PATCH, "/api/v1/namespaces/files", json!({"p2p_enabled": true})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        s.robot = s.robot("reader", true).await;
        // The registry caches namespaces for two seconds.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        s
    }

    /// Pushes the files as one artifact, as `oras push` does: an empty config and one titled layer per file.
    async fn push_artifact(&self, tag: &str) -> Digest {
        let config = self.reg.push_blob(REPO, b"{}").await;
        let mut layers = Vec::new();
        for (title, bytes, _) in &self.files {
            let digest = self.reg.push_blob(REPO, bytes).await;
            layers.push(json!({"mediaType": "application/octet-stream", "digest": digest, "size": bytes.len(),
                "annotations": {TITLE: title}}));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.damselfly.test.files",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
            "layers": layers,
            "annotations": {"org.opencontainers.image.description": "test files"},
        });
        self.reg.push_manifest(REPO, tag, &manifest).await
    }

    /// A robot of the default tenant; `viewer` of `files` if `may_pull`. Returns (login, secret).
    async fn robot(&self, name: &str, may_pull: bool) -> (String, String) {
        let scopes = if may_pull { json!([{"namespace": "files", "role": "viewer"}]) } else { json!([]) };
        let (status, body) = self
            .reg
            .admin(reqwest::Method::POST, "/api/v1/tenants/default/robots", json!({"name": name, "scopes": scopes}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (body["login"].as_str().expect("login").to_owned(), body["token"].as_str().expect("token").to_owned())
    }

    /// A token for pulling from `REPO` with the robot's credentials, from the registry's token endpoint.
    async fn pull_token(&self) -> String {
        let r = self
            .http
            .get(format!("{}/auth/token?service=damselfly&scope=repository:{REPO}:pull", self.reg.url))
            .basic_auth(&self.robot.0, Some(&self.robot.1))
            .send()
            .await
            .expect("token request");
        let body: Value = r.json().await.expect("token JSON");
        body["token"].as_str().expect("token").to_owned()
    }

    /// Bytes the registry sent as whole blobs and as seed pieces.
    async fn registry_bytes(&self) -> (f64, f64) {
        let page = self.http.get(format!("{}/metrics", self.reg.url)).send().await.expect("metrics");
        let page = page.text().await.expect("text");
        (
            metric_value(&page, "damselfly_bytes_sent_total{kind=\"blob\"}"),
            metric_value(&page, "damselfly_bytes_sent_total{kind=\"seed\"}"),
        )
    }

    /// `damselfly-agent get` with the robot's credentials, the registry's URL, the local agent at `agent`
    /// (`None`: nothing listens there) and the cluster token unless `one_shot` is false.
    fn get(&self, agent: Option<&Agent>, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("damselfly-agent"));
        let mirror = agent.map_or_else(|| format!("127.0.0.1:{}", free_port()), |a| a.mirror_host.clone());
        cmd.arg("get")
            .args(args)
            .current_dir(self.tmp.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path())
            .env("DAMSELFLY_AGENT_REGISTRY", &self.reg.url)
            .env("DAMSELFLY_AGENT_MIRROR", mirror)
            .env("DAMSELFLY_AGENT_CLUSTER_TOKEN", &self.cluster_token)
            .env("DAMSELFLY_AGENT_USERNAME", &self.robot.0)
            .env("DAMSELFLY_AGENT_PASSWORD", &self.robot.1);
        cmd
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.tmp.path().join(name)
    }
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run damselfly-agent get")).await.expect("join")
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "get failed with {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn agent_received(http: &Client, agent: &Agent, source: &str) -> f64 {
    let page = http.get(format!("{}/metrics", agent.metrics_url)).send().await.expect("metrics");
    metric_value(
        &page.text().await.expect("text"),
        &format!("damselfly_agent_bytes_received_total{{source=\"{source}\"}}"),
    )
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn get_help_lists_every_flag_with_its_environment_variable() {
    let help = run(Command::new(binary("damselfly-agent")).args(["get", "--help"]));
    for flag in [
        "--output",
        "--registry",
        "--username",
        "--password",
        "--token",
        "--file",
        "--digest",
        "--agent",
        "--cluster-token",
        "--cache-dir",
        "--peer-listen",
        "--advertise-ip",
        "--zone",
        "--download-rate",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    for var in [
        "DAMSELFLY_AGENT_REGISTRY",
        "DAMSELFLY_AGENT_USERNAME",
        "DAMSELFLY_AGENT_PASSWORD",
        "DAMSELFLY_AGENT_TOKEN",
        "DAMSELFLY_AGENT_MIRROR",
        "DAMSELFLY_AGENT_CLUSTER_TOKEN",
        "DAMSELFLY_AGENT_CACHE_DIR",
        "DAMSELFLY_AGENT_DOWNLOAD_RATE",
    ] {
        assert!(help.contains(var), "{var} missing from:\n{help}");
    }
    // Each default is said once, by clap, not again in the text before it.
    let rate = help.lines().find(|l| l.contains("--download-rate")).expect("the --download-rate line");
    assert!(
        rate.ends_with(
            "One-shot peer: most bytes per second of pieces fetched; 0 for no limit \
                        [env: DAMSELFLY_AGENT_DOWNLOAD_RATE=] [default: 0]"
        ),
        "{rate}"
    );
    for line in help.lines() {
        assert!(line.matches("[default: ").count() <= 1, "a default said twice: {line}");
    }
}

/// `image push` reads the credentials from the variables `get` reads.
#[test]
fn image_push_and_get_read_the_same_credential_variables() {
    let push = run(Command::new(binary("damselfly-agent")).args(["image", "push", "--help"]));
    let get = run(Command::new(binary("damselfly-agent")).args(["get", "--help"]));
    for var in ["DAMSELFLY_AGENT_USERNAME", "DAMSELFLY_AGENT_PASSWORD", "DAMSELFLY_AGENT_REGISTRY"] {
        assert!(push.contains(var) && get.contains(var), "{var}:\n{push}\n{get}");
    }
    assert!(!push.contains("DAMSELFLY_REGISTRY_USER"), "{push}");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_through_the_agent_fetches_files_by_name_by_digest_and_to_stdout() {
    let s = Setup::new(&[3 * MIB + 17, 5 * MIB]).await;
    let agent = Agent::start(&s.reg.url, &s.cluster_token, &[]);

    // By tag and file name, to a path.
    let out = output(s.get(Some(&agent), &[&format!("{REPO}:v1"), "--file", "part-1.bin", "-o", "one.bin"])).await;
    assert_ok(&out);
    assert_eq!(read(&s.path("one.bin")), s.files[1].1);
    assert!(!s.path("one.bin.part").exists());
    // The agent fetched it from the registry's seed, piece by piece: no pass-through.
    assert_eq!(agent_received(&s.http, &agent, "seed").await, s.files[1].1.len() as f64);
    assert_eq!(agent_received(&s.http, &agent, "passthrough").await, 0.0);

    // By manifest digest, named after the file's title in the current directory.
    let by_manifest = format!("{REPO}@{}", s.manifest);
    let out = output(s.get(Some(&agent), &[&by_manifest, "--file", "part-0.bin"])).await;
    assert_ok(&out);
    assert_eq!(read(&s.path("part-0.bin")), s.files[0].1);

    // A blob by digest, to standard output.
    let out = output(s.get(Some(&agent), &[REPO, "--digest", &s.files[0].2.to_string(), "-o", "-"])).await;
    assert_ok(&out);
    assert_eq!(out.stdout, s.files[0].1);
    // Both files came once each from the seed; the second read of part-0 was the agent's cache.
    assert_eq!(agent_received(&s.http, &agent, "seed").await, (s.files[0].1.len() + s.files[1].1.len()) as f64);
    assert_eq!(s.registry_bytes().await, (0.0, (s.files[0].1.len() + s.files[1].1.len()) as f64));

    // With a token from the registry's token endpoint instead of a password.
    let token = s.pull_token().await;
    let mut cmd = s.get(Some(&agent), &[&format!("{REPO}:v1"), "--file", "part-1.bin", "-o", "-"]);
    cmd.env_remove("DAMSELFLY_AGENT_USERNAME").env_remove("DAMSELFLY_AGENT_PASSWORD");
    cmd.env("DAMSELFLY_AGENT_TOKEN", &token);
    let out = output(cmd).await;
    assert_ok(&out);
    assert_eq!(out.stdout, s.files[1].1);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_without_an_agent_joins_the_swarm_as_a_one_shot_peer() {
    let s = Setup::new(&[6 * MIB + 5]).await;
    let cache = s.path("one-shot-cache");
    let out =
        output(s.get(None, &[&format!("{REPO}:v1"), "-o", "file.bin", "--cache-dir", cache.to_str().expect("utf-8")]))
            .await;
    assert_ok(&out);
    assert_eq!(read(&s.path("file.bin")), s.files[0].1);
    // The registry sent it as seed pieces to a swarm member, not as a plain blob download.
    assert_eq!(s.registry_bytes().await, (0.0, s.files[0].1.len() as f64));
    // The one-shot peer kept the verified blob in its cache.
    assert_eq!(read(&cache.join("blobs").join(s.files[0].2.hex())), s.files[0].1);
    // And it left the swarm when it was done: the cluster lists no agent.
    let (_, clusters) =
        s.reg.admin(reqwest::Method::GET, "/api/v1/tenants/default/clusters", serde_json::Value::Null).await;
    assert_eq!(clusters[0]["agents"], serde_json::json!([]), "{clusters}");

    // An agent that joins afterwards can still take the blob from the registry's seed.
    let agent = Agent::start(&s.reg.url, &s.cluster_token, &[]);
    let out = output(s.get(Some(&agent), &[&format!("{REPO}:v1"), "-o", "-"])).await;
    assert_ok(&out);
    assert_eq!(out.stdout, s.files[0].1);

    // Without an agent and without a cluster token, straight from the registry, saying so.
    let mut cmd = s.get(None, &[&format!("{REPO}:v1"), "-o", "direct.bin"]);
    cmd.env_remove("DAMSELFLY_AGENT_CLUSTER_TOKEN");
    let out = output(cmd).await;
    assert_ok(&out);
    assert!(stderr(&out).contains("downloading straight from the registry"), "{}", stderr(&out));
    assert_eq!(read(&s.path("direct.bin")), s.files[0].1);
    assert_eq!(s.registry_bytes().await.0, s.files[0].1.len() as f64);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_get_shows_progress_with_rate_and_eta_and_in_a_pipe_nothing() {
    let s = Setup::new(&[12 * MIB]).await;
    let agent = Agent::start(&s.reg.url, &s.cluster_token, &["--download-rate", &(4 * MIB).to_string()]);
    // `script` gives the command a terminal and copies what it draws there to its own standard output.
    let inner = s.get(Some(&agent), &[&format!("{REPO}:v1"), "-o", "shown.bin"]);
    let line: Vec<String> = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut cmd = Command::new("script");
    // A terminal comes with its TERM.
    cmd.args(["-qec", &line.join(" "), "/dev/null"]).env_clear().env("TERM", "xterm").current_dir(s.tmp.path());
    for (key, value) in inner.get_envs() {
        if let Some(value) = value {
            cmd.env(key, value);
        }
    }
    let out = output(cmd).await;
    assert_ok(&out);
    let drawn = String::from_utf8_lossy(&out.stdout);
    // A bar with bytes so far out of the whole size, rate and ETA, redrawn in place.
    assert!(drawn.contains("/s ETA ") && drawn.contains("\r\u{1b}[2K"), "the terminal showed: {drawn:?}");
    assert!(drawn.contains(" MiB/12.00 MiB "), "the terminal showed: {drawn:?}");
    assert_eq!(read(&s.path("shown.bin")), s.files[0].1);

    let out = output(s.get(Some(&agent), &[&format!("{REPO}:v1"), "-o", "piped.bin"])).await;
    assert_ok(&out);
    assert_eq!(stderr(&out), "", "nothing is drawn into a pipe");
    assert_eq!(read(&s.path("piped.bin")), s.files[0].1);
}

/// Starts `get`, waits until its `.part` file holds at least `at_least` bytes, and kills it.
async fn interrupt(mut cmd: Command, part: &Path, at_least: u64) -> u64 {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn get");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let len = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if len >= at_least {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("get ended with {status} before it was interrupted");
        }
        assert!(Instant::now() < deadline, "get wrote only {len} bytes in 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("kill get");
    child.wait().expect("wait");
    std::fs::metadata(part).expect("the partial file stays").len()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_get_resumes_where_it_stopped() {
    let s = Setup::new(&[24 * MIB]).await;
    let size = s.files[0].1.len() as u64;

    // Through an agent whose piece downloads crawl at 4 MiB/s.
    let agent = Agent::start(&s.reg.url, &s.cluster_token, &["--download-rate", &(4 * MIB).to_string()]);
    let part = s.path("via-agent.bin.part");
    let kept =
        interrupt(s.get(Some(&agent), &[&format!("{REPO}:v1"), "-o", "via-agent.bin"]), &part, 4 * MIB as u64).await;
    assert!(kept < size, "{kept} of {size} bytes before the interruption");
    let out = output(s.get(Some(&agent), &[&format!("{REPO}:v1"), "-o", "via-agent.bin"])).await;
    assert_ok(&out);
    assert!(stderr(&out).contains(&format!("resuming at byte {kept}")), "{}", stderr(&out));
    assert_eq!(read(&s.path("via-agent.bin")), s.files[0].1);
    assert!(!part.exists());
    // The agent's engine went on with the same download: the registry sent the blob once.
    assert_eq!(s.registry_bytes().await, (0.0, size as f64));
    drop(agent);

    // As a one-shot peer: the engine's partial cache survives the kill, and the rerun takes only the rest.
    let cache = s.path("one-shot-cache");
    let args = [
        &format!("{REPO}:v1") as &str,
        "-o",
        "one-shot.bin",
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        "--download-rate",
        &(4 * MIB).to_string(),
    ];
    let part = s.path("one-shot.bin.part");
    let kept = interrupt(s.get(None, &args), &part, 8 * MIB as u64).await;
    assert!(kept < size, "{kept} of {size} bytes before the interruption");
    let before = s.registry_bytes().await.1;
    let out = output(s.get(None, &args[..5])).await;
    assert_ok(&out);
    assert!(stderr(&out).contains(&format!("resuming at byte {kept}")), "{}", stderr(&out));
    assert_eq!(read(&s.path("one-shot.bin")), s.files[0].1);
    // The first run had fetched at least the pieces it wrote out, and its cache had kept all of them but
    // the last few: a verified piece reaches the output while it is still being stored (up to three at a
    // time) and before the next bitmap save (at most every 100 ms, one piece at this rate). So the second
    // run fetched the rest and at most those few pieces again, far less than the whole blob.
    let second = s.registry_bytes().await.1 - before;
    let unsaved = 5 * damselfly_core::p2p::piece_size_for(size);
    assert!(
        second <= (size - kept + unsaved) as f64 && second < size as f64,
        "the rerun took {second} bytes from the seed, {kept} were on disk"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get_fails_with_a_precise_error_for_a_wrong_digest_an_unknown_tag_and_no_permission() {
    let s = Setup::new(&[MIB, MIB]).await;
    let agent = Agent::start(&s.reg.url, &s.cluster_token, &[]);
    let missing = Digest::of(b"never pushed");
    let outsider = s.robot("outsider", false).await;
    for via in [Some(&agent), None] {
        let out = output(s.get(via, &[REPO, "--digest", &missing.to_string(), "-o", "x.bin"])).await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(
            stderr(&out).lines().last().unwrap_or_default(),
            format!(
                "damselfly-agent get: blob {missing} is not in {REPO} (BLOB_UNKNOWN); check the digest and the repository"
            )
        );
        assert!(!s.path("x.bin").exists() && !s.path("x.bin.part").exists());

        let out = output(s.get(via, &[&format!("{REPO}:v2"), "-o", "x.bin"])).await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).starts_with(&format!("damselfly-agent get: {REPO}:v2 does not exist (MANIFEST_UNKNOWN")),
            "{}",
            stderr(&out)
        );

        let mut cmd = s.get(via, &[&format!("{REPO}:v1"), "--file", "part-0.bin", "-o", "x.bin"]);
        cmd.env("DAMSELFLY_AGENT_USERNAME", &outsider.0).env("DAMSELFLY_AGENT_PASSWORD", &outsider.1);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).starts_with(&format!("damselfly-agent get: no permission to pull {REPO} (")),
            "{}",
            stderr(&out)
        );

        let mut cmd = s.get(via, &[&format!("{REPO}:v1"), "--file", "part-0.bin", "-o", "x.bin"]);
        cmd.env("DAMSELFLY_AGENT_PASSWORD", "not-the-secret");
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out)
                .starts_with("damselfly-agent get: the registry refused the credentials (UNAUTHORIZED, HTTP 401"),
            "{}",
            stderr(&out)
        );

        let out = output(s.get(via, &[&format!("{REPO}:v1"), "--file", "model.bin"])).await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(
            stderr(&out).trim_end(),
            format!(
                "damselfly-agent get: {REPO}:v1 has no file named \"model.bin\"; its files are: part-0.bin, part-1.bin"
            )
        );

        let out = output(s.get(via, &[&format!("{REPO}:v1")])).await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(
            stderr(&out).trim_end(),
            format!(
                "damselfly-agent get: {REPO}:v1 holds 2 files (part-0.bin, part-1.bin): choose one with --file <name>"
            )
        );
    }
}

/// Polls a preheat job until it is no longer running (60 s at most); returns it.
async fn settled(s: &Setup, job: &Value) -> Value {
    let path = format!("/api/v1/tenants/default/clusters/edge/preheat/{}", job["id"].as_str().expect("job id"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = s.reg.admin(reqwest::Method::GET, &path, Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["state"] != "running" {
            return body;
        }
        assert!(Instant::now() < deadline, "the preheat job still runs after 60 s: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn preheat_fills_the_chosen_agents_caches_so_that_pulls_cost_no_registry_or_peer_bytes() {
    let s = Setup::new(&[6 * MIB, 3 * MIB + 1]).await;
    let agents: Vec<Agent> = (0..3).map(|_| Agent::start(&s.reg.url, &s.cluster_token, &[])).collect();
    let preheat = "/api/v1/tenants/default/clusters/edge/preheat";

    let (status, body) = s.reg.admin(reqwest::Method::POST, preheat, json!({"repository": REPO, "tag": "v9"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errors"][0]["message"], format!("{REPO}:v9 does not exist in tenant default"));
    let (status, body) =
        s.reg.admin(reqwest::Method::POST, preheat, json!({"repository": REPO, "tag": "v1", "percent": 0})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A third of three agents, rounded up, is one; all of them is three. Both jobs run side by side.
    let (status, third) =
        s.reg.admin(reqwest::Method::POST, preheat, json!({"repository": REPO, "tag": "v1", "percent": 34})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{third}");
    let (status, every) = s.reg.admin(reqwest::Method::POST, preheat, json!({"repository": REPO, "tag": "v1"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{every}");
    assert_eq!(every["manifest"], s.manifest.to_string());
    // The config and both files.
    assert_eq!(every["blobs"].as_array().map(Vec::len), Some(3));
    let third = settled(&s, &third).await;
    let every = settled(&s, &every).await;
    assert_eq!(third["nodes"].as_array().map(Vec::len), Some(2), "{third}");
    assert_eq!(every["nodes"].as_array().map(Vec::len), Some(3), "{every}");
    for job in [&third, &every] {
        assert_eq!(job["state"], "done", "{job}");
        for node in job["nodes"].as_array().expect("nodes") {
            assert_eq!(node["state"], "done", "{job}");
        }
    }
    // Through the swarm: the registry sent about one copy for three caches.
    let blobs: usize = 2 + s.files.iter().map(|f| f.1.len()).sum::<usize>();
    let (blob_bytes, seed_bytes) = s.registry_bytes().await;
    assert_eq!(blob_bytes, 0.0);
    assert!(seed_bytes <= 1.25 * blobs as f64, "the registry sent {seed_bytes} seed bytes for {blobs} bytes of blobs");

    // Every node now serves every blob from its own cache: no new registry, seed or peer bytes.
    let mut before = Vec::new();
    for a in &agents {
        before.push((
            agent_received(&s.http, a, "peer").await,
            agent_received(&s.http, a, "seed").await,
            agent_received(&s.http, a, "passthrough").await,
        ));
    }
    let token = s.pull_token().await;
    let mut expected: Vec<(Digest, Vec<u8>)> = vec![(Digest::of(b"{}"), b"{}".to_vec())];
    expected.extend(s.files.iter().map(|f| (f.2, f.1.clone())));
    for a in &agents {
        for (digest, bytes) in &expected {
            let r = s
                .http
                .get(format!("{}/v2/{REPO}/blobs/{digest}", a.mirror_url))
                .bearer_auth(&token)
                .send()
                .await
                .expect("pull through the agent");
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(&r.bytes().await.expect("body")[..], &bytes[..], "{digest} through {}", a.mirror_url);
        }
    }
    for (a, was) in agents.iter().zip(before) {
        let now = (
            agent_received(&s.http, a, "peer").await,
            agent_received(&s.http, a, "seed").await,
            agent_received(&s.http, a, "passthrough").await,
        );
        assert_eq!(now, was, "bytes received by {} (peer, seed, passthrough) during the pulls", a.mirror_url);
    }
    assert_eq!(s.registry_bytes().await, (0.0, seed_bytes));
}

/// Pushes a multi-platform index under `tag`: `native` (this machine's platform) and a foreign
/// platform, each an image with its own layer. Returns (index, native manifest, native layers, foreign layer).
async fn push_two_platform_index(
    s: &Setup,
    tag: &str,
    sizes: (usize, usize),
) -> (Digest, Digest, Vec<Vec<u8>>, Digest) {
    let config = s.reg.push_blob(REPO, b"{}").await;
    let image = |layer: &[u8], digest: Digest| {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": layer.len()}],
        })
    };
    let native_layer = pseudo_random(sizes.0, 900 + sizes.0 as u64);
    let foreign_layer = pseudo_random(sizes.1, 901 + sizes.1 as u64);
    let native_digest = s.reg.push_blob(REPO, &native_layer).await;
    let foreign_digest = s.reg.push_blob(REPO, &foreign_layer).await;
    let native = image(&native_layer, native_digest);
    let foreign = image(&foreign_layer, foreign_digest);
    let native_manifest = s.reg.push_manifest(REPO, &format!("{tag}-native"), &native).await;
    let foreign_manifest = s.reg.push_manifest(REPO, &format!("{tag}-foreign"), &foreign).await;
    let here = damselfly_core::p2p::this_platform();
    let (os, arch) = here.split_once('/').expect("os/arch");
    let other_arch = if arch == "s390x" { "riscv64" } else { "s390x" };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": foreign_manifest,
             "size": foreign.to_string().len(), "platform": {"os": os, "architecture": other_arch}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": native_manifest,
             "size": native.to_string().len(), "platform": {"os": os, "architecture": arch}},
        ],
    })
    .to_string();
    let r = s
        .http
        .put(format!("{}/v2/{REPO}/manifests/{tag}", s.reg.url))
        .basic_auth(damselfly_tests::ADMIN_USER, Some(damselfly_tests::ADMIN_PASSWORD))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(index.clone())
        .send()
        .await
        .expect("push the index");
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap_or_default());
    (Digest::of(index.as_bytes()), native_manifest, vec![b"{}".to_vec(), native_layer], foreign_digest)
}

/// The preheat jobs of cluster `edge`, newest first.
async fn jobs(s: &Setup) -> Vec<Value> {
    let (status, body) =
        s.reg.admin(reqwest::Method::GET, "/api/v1/tenants/default/clusters/edge/preheat", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("a list of jobs").clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_that_preheats_on_push_sends_each_new_tag_into_the_chosen_clusters_caches() {
    let s = Setup::new(&[MIB]).await;
    let agents: Vec<Agent> = (0..2).map(|_| Agent::start(&s.reg.url, &s.cluster_token, &[])).collect();
    let namespace = "/api/v1/namespaces/files";
    let set = |targets: Value| s.reg.admin(reqwest::Method::PATCH, namespace, json!({"preheat_on_push": targets}));

    // Only the tenant's own clusters, each once, with a sensible share.
    let (status, body) = s.reg.admin(reqwest::Method::POST, "/api/v1/tenants", json!({"name": "acme"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) =
        s.reg.admin(reqwest::Method::POST, "/api/v1/tenants/acme/clusters", json!({"name": "far"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = set(json!([{"cluster": "far"}])).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        body["errors"][0]["message"],
        "preheat_on_push: cluster far does not exist in tenant default; list them with GET \
         /api/v1/tenants/default/clusters"
    );
    let (status, body) = set(json!([{"cluster": "edge", "percent": 0}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = set(json!([{"cluster": "edge"}, {"cluster": "edge", "percent": 50}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, shown) = s.reg.admin(reqwest::Method::GET, namespace, Value::Null).await;
    assert_eq!(shown["preheat_on_push"], json!([]), "a refused change leaves nothing behind");

    let (status, body) = set(json!([{"cluster": "edge"}])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["preheat_on_push"], json!([{"cluster": "edge", "percent": 100}]));

    // A multi-platform tag: each node gets the manifest of its own platform, and nothing of the other.
    let before = jobs(&s).await.len();
    let (index, native, blobs, foreign) = push_two_platform_index(&s, "v2", (3 * MIB + 7, 4 * MIB)).await;
    // The two per-platform tags pushed on the way were preheated too; the index is the newest job.
    let listed = jobs(&s).await;
    assert_eq!(listed.len(), before + 3, "{listed:#?}");
    let job = &listed[0];
    assert_eq!((job["tag"].as_str(), job["trigger"].as_str()), (Some("v2"), Some("push")), "{job}");
    assert_eq!(job["manifest"], index.to_string());
    for node in job["nodes"].as_array().expect("nodes") {
        assert_eq!(node["manifest"], native.to_string(), "{job}");
        assert_eq!(node["platform"], damselfly_core::p2p::this_platform());
    }
    assert!(!job["blobs"].as_array().expect("blobs").contains(&json!(foreign.to_string())), "{job}");
    for j in &listed[..3] {
        assert_eq!(settled(&s, j).await["state"], "done");
    }

    // Every node serves the tag's blobs from its own cache.
    let token = s.pull_token().await;
    for a in &agents {
        let was = (agent_received(&s.http, a, "peer").await, agent_received(&s.http, a, "seed").await);
        for blob in &blobs {
            let r = s
                .http
                .get(format!("{}/v2/{REPO}/blobs/{}", a.mirror_url, Digest::of(blob)))
                .bearer_auth(&token)
                .send()
                .await
                .expect("pull through the agent");
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(&r.bytes().await.expect("body")[..], &blob[..]);
        }
        let now = (agent_received(&s.http, a, "peer").await, agent_received(&s.http, a, "seed").await);
        assert_eq!(now, was, "bytes received by {} from peers and the seed during the pulls", a.mirror_url);
    }

    // A push by digest names no tag, and with P2P off nothing is preheated.
    let count = jobs(&s).await.len();
    let untagged = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": Digest::of(b"{}"), "size": 2},
        "layers": [],
        "annotations": {"n": "1"},
    });
    s.reg.push_manifest(REPO, &Digest::of(untagged.to_string().as_bytes()).to_string(), &untagged).await;
    assert_eq!(jobs(&s).await.len(), count);
    let (status, _) = s.reg.admin(reqwest::Method::PATCH, namespace, json!({"p2p_enabled": false})).await;
    assert_eq!(status, StatusCode::OK);
    s.push_artifact("v3").await;
    assert_eq!(jobs(&s).await.len(), count);

    // The audit log names the pusher and the trigger.
    let (_, audit) = s.reg.admin(reqwest::Method::GET, "/api/v1/audit?action=cluster.preheat", Value::Null).await;
    let entries = audit["events"].as_array().expect("audit events").clone();
    assert!(
        entries.iter().any(|e| e["object"] == format!("{REPO}:v2") && e["detail"]["trigger"] == "push"),
        "{audit:#}"
    );

    let (status, body) = set(json!([])).await;
    assert_eq!((status, &body["preheat_on_push"]), (StatusCode::OK, &json!([])));
}
