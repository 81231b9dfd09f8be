//! A swarm on a real (virtual) network: the registry and every agent run in
//! their own network namespace with their own address, joined by a bridge,
//! each node's upload and download limited with `tc`. A multi-layer image is
//! pushed, P2P is switched on, and all agents pull every layer at the same
//! moment through their own mirror.
//!
//! Needs root and iproute2; fails (never skips) without them. The benchmark
//! `bench_swarm` is `#[ignore]`d and driven by `scripts/bench-swarm.sh`.

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use damselfly_core::Digest;
use damselfly_tests::netns::{Net, NsProcess};
use damselfly_tests::postgres::PrivatePostgres;
use damselfly_tests::scaled::{haproxy_binary, haproxy_config};
use damselfly_tests::seaweedfs::SeaweedFs;
use damselfly_tests::{binary, metric_value, pseudo_random, run, ADMIN_PASSWORD, ADMIN_USER};
use serde_json::{json, Value};

const MIB: usize = 1024 * 1024;
const REPO: &str = "accel/app";
/// Node 0 is the test's own client (no limits), node 1 the registry, nodes 2.. the agents.
const CTL: usize = 0;
const REG: usize = 1;
const FIRST_AGENT: usize = 2;
/// A piece size for which the scheduler places agents in stripe trees.
const TREE_PIECE_KIB: u64 = 256;

/// The registry, N agents and the network. Fields drop in order: processes first, then the namespaces.
struct Swarm {
    agents: Vec<Option<NsProcess>>,
    /// The registry, or with replicas the load balancer in front of them.
    registry: NsProcess,
    /// Replicas behind `registry`, with what they share, when the swarm has them.
    replicated: Option<Replicated>,
    net: Net,
    reg_url: String,
    cluster_token: String,
    tmp: tempfile::TempDir,
    /// The registry's piece size in KiB, when not its default.
    piece_kib: Option<u64>,
    /// With two zones (see [`Swarm::start_in_two_zones`]), the first agent of the second.
    second_zone_from: Option<usize>,
}

/// Registry replicas behind the swarm's load balancer, and the database and
/// object store they share, all in the registry's namespace.
struct Replicated {
    replicas: Vec<Option<NsProcess>>,
    /// Each replica's own URL.
    urls: Vec<String>,
    _s3: SeaweedFs,
    _postgres: PrivatePostgres,
}

/// One layer of the pushed image.
#[derive(Clone)]
struct Layer {
    digest: Digest,
    len: usize,
}

/// How one node's pull went.
#[derive(Debug, Clone)]
struct NodePull {
    /// Seconds from the common start to the last layer's last byte.
    secs: f64,
    /// (layer digest, sha256 of what arrived, curl ok) per layer.
    layers: Vec<(String, String, bool, String)>,
}

/// Starts the registry in its namespace on SQLite under `dir`, logging to
/// `dir/registry.log`, with pieces of `piece_kib` KiB (its default if `None`).
/// The benchmark's SWARM_PIECE_KIB overrides both, and DAMSELFLY_P2P_STRIPES
/// is passed on.
fn spawn_registry(net: &Net, reg_url: &str, dir: &std::path::Path, piece_kib: Option<u64>) -> NsProcess {
    let data = dir.join("registry");
    let mut cmd = net.command(REG, binary("damselfly-registry"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DAMSELFLY_LISTEN", format!("{}:5000", net.nodes[REG].ip))
        .env("DAMSELFLY_PUBLIC_URL", reg_url)
        .env("DAMSELFLY_DATA_DIR", &data)
        .env("DAMSELFLY_DATABASE_URL", format!("sqlite://{}/metadata.db", data.display()))
        .env("DAMSELFLY_LOG_FORMAT", "json")
        .env("DAMSELFLY_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", std::env::var("SWARM_REGISTRY_LOG").unwrap_or_else(|_| "info".into()));
    let kib = std::env::var("SWARM_PIECE_KIB").ok().map(|k| k.parse::<u64>().expect("SWARM_PIECE_KIB is a number"));
    if let Some(kib) = kib.or(piece_kib) {
        cmd.env("DAMSELFLY_PIECE_SIZE", (kib * 1024).to_string());
    }
    if let Ok(stripes) = std::env::var("DAMSELFLY_P2P_STRIPES") {
        cmd.env("DAMSELFLY_P2P_STRIPES", stripes);
    }
    NsProcess::spawn(cmd, dir.join("registry.log"))
}

/// Waits up to 30 s for the registry to answer /readyz.
fn wait_until_ready(net: &Net, reg_url: &str, registry: &mut NsProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = registry.exited() {
            panic!("registry exited during start with {status}; log:\n{}", registry.log());
        }
        let ready = net.command(CTL, "curl").args(["-fsS", "-o", "/dev/null", &format!("{reg_url}/readyz")]).output();
        if ready.is_ok_and(|o| o.status.success()) {
            return;
        }
        assert!(Instant::now() < deadline, "registry not ready in 30 s; log:\n{}", registry.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Swarm {
    fn start(agents: usize) -> Swarm {
        Swarm::start_with_pieces(agents, None)
    }

    /// Pieces of `piece_kib` KiB: 512 or less gets the scheduler's stripe trees.
    fn start_with_pieces(agents: usize, piece_kib: Option<u64>) -> Swarm {
        let net = Net::new(FIRST_AGENT + agents);
        let tmp = tempfile::Builder::new().prefix("damselfly-swarm-").tempdir().expect("temp dir");
        let reg_ip = net.nodes[REG].ip.clone();
        let reg_url = format!("http://{reg_ip}:5000");
        let registry = spawn_registry(&net, &reg_url, tmp.path(), piece_kib);
        Swarm::assemble(
            Swarm {
                agents: Vec::new(),
                registry,
                replicated: None,
                net,
                reg_url,
                cluster_token: String::new(),
                tmp,
                piece_kib,
                second_zone_from: None,
            },
            agents,
        )
    }

    /// `per_zone` agents in each of two zones, joined by a link of
    /// `pipe_mbit` Mbit/s each way; the registry and the test's client are
    /// in the first zone, the registry's default pieces.
    fn start_in_two_zones(per_zone: usize, pipe_mbit: u32) -> Swarm {
        let net = Net::new(FIRST_AGENT + 2 * per_zone);
        let second: Vec<usize> = (FIRST_AGENT + per_zone..FIRST_AGENT + 2 * per_zone).collect();
        net.split_zone(&second, pipe_mbit);
        let tmp = tempfile::Builder::new().prefix("damselfly-swarm-").tempdir().expect("temp dir");
        let reg_url = format!("http://{}:5000", net.nodes[REG].ip);
        let registry = spawn_registry(&net, &reg_url, tmp.path(), None);
        let swarm = Swarm {
            agents: Vec::new(),
            registry,
            replicated: None,
            net,
            reg_url,
            cluster_token: String::new(),
            tmp,
            piece_kib: None,
            second_zone_from: Some(per_zone),
        };
        Swarm::assemble(swarm, 2 * per_zone)
    }

    /// Three registry replicas in the registry's namespace on their own
    /// PostgreSQL server and SeaweedFS store (there too), with HAProxy at
    /// the registry's address in front of them: a fleet in miniature.
    fn start_replicated(agents: usize, piece_kib: Option<u64>) -> Swarm {
        const REPLICAS: usize = 3;
        let net = Net::new(FIRST_AGENT + agents);
        let tmp = tempfile::Builder::new().prefix("damselfly-swarm-").tempdir().expect("temp dir");
        let ns = net.nodes[REG].ns.clone();
        let reg_ip = net.nodes[REG].ip.clone();
        let reg_url = format!("http://{reg_ip}:5000");
        let postgres = PrivatePostgres::start_in(Some(&ns), 5432);
        let database = postgres.create_database("damselfly");
        let s3 = SeaweedFs::start_in(Some(&ns));
        let bucket = s3.create_bucket();
        let mut env: Vec<(String, String)> = s3.registry_env(&bucket);
        env.push(("DAMSELFLY_DATABASE_URL".into(), database));
        if let Some(kib) = piece_kib {
            env.push(("DAMSELFLY_PIECE_SIZE".into(), (kib * 1024).to_string()));
        }
        let mut replicas = Vec::new();
        let mut urls = Vec::new();
        for i in 0..REPLICAS {
            let listen = format!("{reg_ip}:{}", 5001 + i);
            let data = tmp.path().join(format!("replica-{i}"));
            let mut cmd = net.command(REG, binary("damselfly-registry"));
            cmd.env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("DAMSELFLY_LISTEN", &listen)
                .env("DAMSELFLY_PUBLIC_URL", &reg_url)
                .env("DAMSELFLY_DATA_DIR", &data)
                .env("DAMSELFLY_LOG_FORMAT", "json")
                .env("DAMSELFLY_ADMIN_PASSWORD", ADMIN_PASSWORD)
                .env("RUST_LOG", "info")
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let url = format!("http://{listen}");
            let mut replica = NsProcess::spawn(cmd, tmp.path().join(format!("replica-{i}.log")));
            wait_until_ready(&net, &url, &mut replica);
            replicas.push(Some(replica));
            urls.push(url);
        }
        let backends: Vec<String> = urls.iter().map(|u| u.trim_start_matches("http://").to_owned()).collect();
        let cfg = tmp.path().join("haproxy.cfg");
        std::fs::write(&cfg, haproxy_config(&format!("{reg_ip}:5000"), &backends)).expect("haproxy.cfg");
        let mut cmd = net.command(REG, haproxy_binary());
        cmd.args(["-db", "-f"]).arg(&cfg);
        let registry = NsProcess::spawn(cmd, tmp.path().join("haproxy.log"));
        let replicated = Replicated { replicas, urls, _s3: s3, _postgres: postgres };
        let swarm = Swarm {
            agents: Vec::new(),
            registry,
            replicated: Some(replicated),
            net,
            reg_url,
            cluster_token: String::new(),
            tmp,
            piece_kib,
            second_zone_from: None,
        };
        Swarm::assemble(swarm, agents)
    }

    /// Once the registry answers: registers the cluster `swarm` and starts `agents` agents with its token.
    fn assemble(mut s: Swarm, agents: usize) -> Swarm {
        wait_until_ready(&s.net, &s.reg_url, &mut s.registry);
        let (code, body) = s.admin("POST", "/api/v1/tenants/default/clusters", &json!({"name": "swarm"}));
        assert_eq!(code, 201, "{body}");
        s.cluster_token = body["token"].as_str().expect("cluster token").to_owned();
        for i in 0..agents {
            s.start_agent(i);
        }
        s
    }

    /// The fault scenarios' setting: six agents on 40 Mbit/s links with P2P on for
    /// a 72 MiB image in three layers, in 256 KiB pieces, so that the stripe trees
    /// carry most of it; (swarm, layers, pull token, agent indices).
    fn fault_scenario() -> (Swarm, Vec<Layer>, String, Vec<usize>) {
        const AGENTS: usize = 6;
        let swarm = Swarm::start_with_pieces(AGENTS, Some(TREE_PIECE_KIB));
        let layers = swarm.push_image(3, 24 * MIB);
        let token = swarm.limited(40);
        (swarm, layers, token, (0..AGENTS).collect())
    }

    /// Replica `i`'s metrics page, empty if it does not answer.
    fn replica_metrics(&self, i: usize) -> String {
        let url = &self.replicated.as_ref().expect("replicas").urls[i];
        self.curl(&["-fsS", "--max-time", "5", &format!("{url}/metrics")]).1
    }

    /// The replica scheduling the cluster: the one holding its lease.
    fn scheduling_replica(&self) -> Option<usize> {
        let replicas = self.replicated.as_ref().expect("replicas").urls.len();
        (0..replicas).find(|&i| metric_value(&self.replica_metrics(i), "damselfly_p2p_clusters_scheduled") >= 1.0)
    }

    /// Bytes that left the registry's node on its link: every replica's and
    /// the load balancer's, headers and retransmissions included.
    fn registry_link_sent(&self) -> f64 {
        let out = self
            .net
            .command(REG, "cat")
            .arg("/sys/class/net/eth0/statistics/tx_bytes")
            .output()
            .expect("read the registry node's counters");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("tx_bytes")
    }

    fn agent_ip(&self, i: usize) -> &str {
        &self.net.nodes[FIRST_AGENT + i].ip
    }

    fn start_agent(&mut self, i: usize) {
        let node = FIRST_AGENT + i;
        let ip = self.net.nodes[node].ip.clone();
        let mut cmd = self.net.command(node, binary("damselfly-agent"));
        cmd.args(["run", "--registry", &self.reg_url])
            .args(["--listen", &format!("{ip}:65001")])
            .args(["--peer-listen", &format!("{ip}:65002")])
            .args(["--metrics-listen", &format!("{ip}:65003")])
            .args(["--advertise-ip", &ip])
            .args(["--node-name", &format!("node-{i}")])
            .args(self.second_zone_from.map(|k| ["--zone", if i < k { "zone-a" } else { "zone-b" }]).iter().flatten())
            .arg("--cache-dir")
            .arg(self.tmp.path().join(format!("cache-{i}")))
            // Filesystem-use eviction would tie the outcome to the machine's disk.
            .args(["--cache-high-watermark", "100", "--cache-low-watermark", "99"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DAMSELFLY_AGENT_CLUSTER_TOKEN", &self.cluster_token)
            .env("RUST_LOG", std::env::var("SWARM_AGENT_LOG").unwrap_or_else(|_| "info".into()));
        // The benchmark passes agent settings through (e.g. DAMSELFLY_AGENT_UPLOAD_SLOTS).
        cmd.envs(std::env::vars().filter(|(k, _)| k.starts_with("DAMSELFLY_AGENT_") && !k.ends_with("_BIN")));
        let mut agent = NsProcess::spawn(cmd, self.tmp.path().join(format!("agent-{i}.log")));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = agent.exited() {
                panic!("agent {i} exited during start with {status}; log:\n{}", agent.log());
            }
            if self.curl(&["-fsS", "-o", "/dev/null", &format!("http://{ip}:65003/healthz")]).0 {
                break;
            }
            assert!(Instant::now() < deadline, "agent {i} did not register in 30 s; log:\n{}", agent.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        self.agents.push(Some(agent));
    }

    /// curl from the control namespace; (success, stdout).
    fn curl(&self, args: &[&str]) -> (bool, String) {
        let out = self.net.command(CTL, "curl").args(["--max-time", "120"]).args(args).output().expect("run curl");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A management API call with admin Basic auth; (status, JSON body).
    fn admin(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let user = format!("{ADMIN_USER}:{ADMIN_PASSWORD}");
        let url = format!("{}{path}", self.reg_url);
        let data = body.to_string();
        let mut args = vec!["-sS", "-u", &user, "-X", method, "-w", "\n%{http_code}", &url];
        if !body.is_null() {
            args.extend(["-H", "content-type: application/json", "--data-binary", &data]);
        }
        let (_, out) = self.curl(&args);
        let (text, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        (code.trim().parse().unwrap_or(0), serde_json::from_str(text).unwrap_or(Value::Null))
    }

    /// Pushes a blob (through a file, from the control namespace) with admin Basic auth.
    fn push_blob(&self, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        let path = self.tmp.path().join("upload.bin");
        std::fs::write(&path, bytes).expect("write blob file");
        let user = format!("{ADMIN_USER}:{ADMIN_PASSWORD}");
        // A session, then the bytes in one PUT streamed from the file (-T): curl holds a
        // --data-binary body in memory and refuses a large one.
        let start = format!("{}/v2/{REPO}/blobs/uploads/", self.reg_url);
        let (_, location) =
            self.curl(&["-sS", "-o", "/dev/null", "-w", "%header{location}", "-u", &user, "-X", "POST", &start]);
        let location = location.trim();
        assert!(location.starts_with('/'), "no upload session for {digest}: {location:?}");
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{}{location}{sep}digest={digest}", self.reg_url);
        let file = path.display().to_string();
        let (_, code) = self.curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-u", &user, "-T", &file, &url]);
        assert_eq!(code.trim(), "201", "push of {digest}");
        let _ = std::fs::remove_file(&path);
        digest
    }

    /// Pushes `len` random bytes as a one-file artifact titled `title` under `tag`; returns its digest and size.
    fn push_file(&self, len: usize, tag: &str, title: &str) -> (Digest, usize) {
        let file = pseudo_random(len, 4242 + len as u64);
        let digest = self.push_blob(&file);
        drop(file);
        let config = self.push_blob(b"{}");
        self.push_manifest(
            &json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.damselfly.test.file",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config.to_string(), "size": 2},
                "layers": [{"mediaType": "application/octet-stream", "digest": digest.to_string(), "size": len,
                    "annotations": {"org.opencontainers.image.title": title}}],
            }),
            tag,
        );
        (digest, len)
    }

    /// Switches P2P on, limits every node (the registry's too) to `mbit` up and down, and
    /// returns a pull token.
    fn limited(&self, mbit: u32) -> String {
        self.limited_to(&Links { seed: mbit, up: mbit, down: mbit })
    }

    /// Switches P2P on, limits the registry's node to `links.seed` up and down and every
    /// agent's to `links.up` and `links.down`, and returns a pull token.
    fn limited_to(&self, links: &Links) -> String {
        self.set_p2p(true);
        let token = self.pull_token();
        self.net.limit_each(REG, links.seed, links.seed);
        for i in FIRST_AGENT..self.net.nodes.len() {
            self.net.limit_each(i, links.up, links.down);
        }
        token
    }

    /// Pushes an image of `layers` random layers of `layer_bytes` each, a config and an OCI manifest.
    fn push_image(&self, layers: usize, layer_bytes: usize) -> Vec<Layer> {
        let mut out = Vec::new();
        for l in 0..layers {
            let blob = pseudo_random(layer_bytes, 1001 + 2 * l as u64);
            out.push(Layer { digest: self.push_blob(&blob), len: blob.len() });
        }
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = self.push_blob(config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
            "layers": out.iter().map(|l| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l.digest.to_string(), "size": l.len,
            })).collect::<Vec<_>>(),
        });
        self.push_manifest(&manifest, "v1");
        out
    }

    /// Pushes an OCI manifest under `tag` with admin Basic auth.
    fn push_manifest(&self, manifest: &Value, tag: &str) {
        let path = self.tmp.path().join("manifest.json");
        std::fs::write(&path, manifest.to_string()).expect("write manifest");
        let user = format!("{ADMIN_USER}:{ADMIN_PASSWORD}");
        let url = format!("{}/v2/{REPO}/manifests/{tag}", self.reg_url);
        let file = format!("@{}", path.display());
        let (_, code) = self.curl(&[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            &user,
            "-X",
            "PUT",
            "-H",
            "content-type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &file,
            &url,
        ]);
        assert_eq!(code.trim(), "201", "manifest push");
    }

    fn set_p2p(&self, on: bool) {
        let (code, body) = self.admin("PATCH", "/api/v1/namespaces/accel", &json!({"p2p_enabled": on}));
        assert_eq!(code, 200, "{body}");
        // The registry caches namespaces for two seconds.
        std::thread::sleep(Duration::from_millis(2100));
    }

    /// A bearer token for pulling `accel/app`, for a new robot that may pull from `accel`.
    fn pull_token(&self) -> String {
        let (code, body) = self.admin(
            "POST",
            "/api/v1/tenants/default/robots",
            &json!({"name": "puller", "scopes": [{"namespace": "accel", "role": "viewer"}]}),
        );
        assert_eq!(code, 201, "{body}");
        let creds = format!("{}:{}", body["login"].as_str().expect("login"), body["token"].as_str().expect("secret"));
        let url = format!("{}/auth/token?service=damselfly&scope=repository:{REPO}:pull", self.reg_url);
        let (ok, out) = self.curl(&["-fsS", "-u", &creds, &url]);
        assert!(ok, "token request failed: {out}");
        let body: Value = serde_json::from_str(&out).expect("token JSON");
        body["token"].as_str().expect("token").to_owned()
    }

    fn registry_metrics(&self) -> String {
        let (ok, page) = self.curl(&["-fsS", &format!("{}/metrics", self.reg_url)]);
        assert!(ok, "registry metrics");
        page
    }

    /// Bytes the registry sent as seed pieces and as blobs.
    fn registry_blob_bytes(&self) -> (f64, f64) {
        let page = self.registry_metrics();
        (
            metric_value(&page, "damselfly_bytes_sent_total{kind=\"seed\"}"),
            metric_value(&page, "damselfly_bytes_sent_total{kind=\"blob\"}"),
        )
    }

    /// Agent `i`'s metrics page, empty if it does not answer.
    fn agent_metrics(&self, i: usize) -> String {
        self.curl(&["-fsS", "--max-time", "5", &format!("http://{}:65003/metrics", self.agent_ip(i))]).1
    }

    /// Sum over agents of `damselfly_agent_bytes_received_total{source=…}` for peer, seed, passthrough.
    fn agent_bytes(&self, nodes: &[usize]) -> (f64, f64, f64) {
        let mut sums = (0.0, 0.0, 0.0);
        for &i in nodes {
            let page = self.agent_metrics(i);
            let v = |source: &str| {
                metric_value(&page, &format!("damselfly_agent_bytes_received_total{{source=\"{source}\"}}"))
            };
            let (peer, seed, pass) = (v("peer"), v("seed"), v("passthrough"));
            eprintln!(
                "agent {i}: received peer {peer} seed {seed} passthrough {pass}; served to peers {}; pieces verified {} rejected {}",
                metric_value(&page, "damselfly_agent_bytes_served_to_peers_total"),
                metric_value(&page, "damselfly_agent_pieces_total{outcome=\"verified\"}"),
                metric_value(&page, "damselfly_agent_pieces_total{outcome=\"rejected\"}"),
            );
            sums.0 += peer;
            sums.1 += seed;
            sums.2 += pass;
        }
        sums
    }

    /// Every one of `nodes` (agent indices) GETs every layer from `base(node)` at the
    /// same moment (layers of one node in parallel, as a runtime does), hashing what
    /// arrives. `during` runs once everyone has started. Bounded by `timeout`.
    fn pull_all(
        &self,
        nodes: &[usize],
        layers: &[Layer],
        token: &str,
        base: impl Fn(usize) -> String,
        timeout: Duration,
        during: impl FnOnce(),
    ) -> Vec<NodePull> {
        let mut cmds = Vec::new();
        for &n in nodes {
            for layer in layers {
                let url = format!("{}/v2/{REPO}/blobs/{}", base(n), layer.digest);
                let mut cmd = self.net.command(FIRST_AGENT + n, "bash");
                cmd.args([
                    "-c",
                    "set -o pipefail; curl -fsS --max-time \"$MAXT\" -H \"Authorization: Bearer $TOKEN\" \"$URL\" | openssl dgst -sha256 -r",
                ])
                .env("TOKEN", token)
                .env("URL", &url)
                .env("MAXT", timeout.as_secs().to_string());
                cmds.push((n, layer.digest.to_string(), cmd));
            }
        }
        let mut results: Vec<NodePull> = nodes.iter().map(|_| NodePull { secs: 0.0, layers: Vec::new() }).collect();
        for (n, digest, end, out) in run_at_once(cmds, during) {
            let slot = nodes.iter().position(|&x| x == n).expect("node");
            let sum = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_owned();
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            results[slot].secs = results[slot].secs.max(end);
            results[slot].layers.push((digest, format!("sha256:{sum}"), out.status.success(), err));
        }
        results
    }

    /// [`Swarm::pull_all`] through each node's own agent, bounded by 240 s.
    fn pull_through_agents(
        &self,
        nodes: &[usize],
        layers: &[Layer],
        token: &str,
        during: impl FnOnce(),
    ) -> Vec<NodePull> {
        let agent = |n: usize| format!("http://{}:65001", self.agent_ip(n));
        self.pull_all(nodes, layers, token, agent, Duration::from_secs(240), during)
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, a) in self.agents.iter().enumerate() {
            let log = a.as_ref().map(NsProcess::log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str(&format!("--- agent {i} ({}) last lines:\n", self.agent_ip(i)));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Swarm {
    /// With `SWARM_LOG_DIR` set, the registry's and agents' logs are copied there.
    fn drop(&mut self) {
        if let Ok(dir) = std::env::var("SWARM_LOG_DIR") {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(&self.registry.log_path, format!("{dir}/registry.log"));
            for (i, a) in self.agents.iter().enumerate() {
                if let Some(a) = a {
                    let _ = std::fs::copy(&a.log_path, format!("{dir}/agent-{i}.log"));
                }
            }
        }
    }
}

/// Runs every command at the same moment, each on its own thread; `during` runs once all
/// have started. Returns (node, label, seconds from the common start to its end, output).
fn run_at_once(
    cmds: Vec<(usize, String, Command)>,
    during: impl FnOnce(),
) -> Vec<(usize, String, f64, std::process::Output)> {
    let barrier = Arc::new(Barrier::new(cmds.len() + 1));
    let mut handles = Vec::new();
    for (n, label, mut cmd) in cmds {
        let barrier = barrier.clone();
        handles.push((
            n,
            label,
            std::thread::spawn(move || {
                barrier.wait();
                let t0 = Instant::now();
                let out = cmd.output().expect("run a command in the node namespace");
                (t0, t0.elapsed(), out)
            }),
        ));
    }
    barrier.wait();
    let start = Instant::now();
    during();
    handles
        .into_iter()
        .map(|(n, label, h)| {
            let (t0, took, out) = h.join().expect("command thread");
            (n, label, (t0 + took).saturating_duration_since(start).as_secs_f64(), out)
        })
        .collect()
}

fn assert_all_correct(results: &[NodePull], nodes: &[usize], swarm: &Swarm) {
    for (r, n) in results.iter().zip(nodes) {
        for (digest, sum, ok, err) in &r.layers {
            assert!(
                *ok && sum == digest,
                "agent {n}: layer {digest} arrived as {sum} (curl ok: {ok}, {err})\n{}",
                swarm.logs()
            );
        }
    }
}

#[test]
fn two_zones_of_eight_agents_pull_an_image_across_their_slower_link_about_once() {
    const PER_ZONE: usize = 8;
    const MBIT: u32 = 40;
    const PIPE_MBIT: u32 = 40;
    let _serial = serial();
    // Each node's link at 40 Mbit/s, and one 40 Mbit/s link between the zones for all of them:
    // sixteen nodes' worth of traffic through one node's link, unless each stripe crosses once.
    let swarm = Swarm::start_in_two_zones(PER_ZONE, PIPE_MBIT);
    let layers = swarm.push_image(3, 16 * MIB);
    let image: usize = layers.iter().map(|l| l.len).sum();
    let token = swarm.limited(MBIT);
    let (seed0, blob0) = swarm.registry_blob_bytes();
    let crossed0 = swarm.net.between_zones_bytes();
    let nodes: Vec<usize> = (0..2 * PER_ZONE).collect();
    let t = Instant::now();
    let results = swarm.pull_through_agents(&nodes, &layers, &token, || {});
    let makespan = t.elapsed().as_secs_f64();
    let crossed = swarm.net.between_zones_bytes() - crossed0;
    let (seed1, blob1) = swarm.registry_blob_bytes();
    let (peer, seed, pass) = swarm.agent_bytes(&nodes);
    let ratio = crossed as f64 / image as f64;
    eprintln!(
        "two zones: {PER_ZONE} agents each, {MBIT} Mbit/s per node, {PIPE_MBIT} Mbit/s between; image {image} B; \
         makespan {makespan:.1} s; per node {:?}; between the zones {crossed} B ({ratio:.2}x the \
         image); registry sent seed {} + blob {}; agents received peer {peer} seed {seed} passthrough {pass}",
        results.iter().map(|r| format!("{:.1}", r.secs)).collect::<Vec<_>>(),
        seed1 - seed0,
        blob1 - blob0
    );
    assert_all_correct(&results, &nodes, &swarm);
    assert_eq!(pass, 0.0, "nothing passed through");
    // Two copies at most: the seed's stripes may cross into the second zone when its agent joined first, and
    // from its roots back to the first; the frames' headers and the acknowledgements coming back count too.
    assert!(ratio <= 2.2, "{crossed} B crossed between the zones, {ratio:.2}x the image\n{}", swarm.logs());
}

#[test]
fn six_agents_in_their_own_namespaces_pull_a_64_mib_image_mostly_from_each_other() {
    const AGENTS: usize = 6;
    const MBIT: u32 = 40;
    let _serial = serial();
    // Pieces small enough for the stripe trees; the other tests here and the
    // single-node ones cover the pull schedule of larger pieces.
    let swarm = Swarm::start_with_pieces(AGENTS, Some(TREE_PIECE_KIB));
    let layers = swarm.push_image(3, 24 * MIB);
    let image: usize = layers.iter().map(|l| l.len).sum();
    let token = swarm.limited(MBIT);
    let (seed0, blob0) = swarm.registry_blob_bytes();
    let nodes: Vec<usize> = (0..AGENTS).collect();
    let t = Instant::now();
    let results = swarm.pull_through_agents(&nodes, &layers, &token, || {});
    let makespan = t.elapsed().as_secs_f64();
    let (seed1, blob1) = swarm.registry_blob_bytes();
    let (peer, seed, pass) = swarm.agent_bytes(&nodes);
    let sent = (seed1 - seed0) + (blob1 - blob0);
    eprintln!(
        "swarm: {AGENTS} agents, {MBIT} Mbit/s per node, image {image} B; makespan {makespan:.1} s; per node {:?}; \
         registry sent {sent} B (seed {} + blob {}); agents received peer {peer} seed {seed} passthrough {pass}",
        results.iter().map(|r| format!("{:.1}", r.secs)).collect::<Vec<_>>(),
        seed1 - seed0,
        blob1 - blob0
    );
    assert_all_correct(&results, &nodes, &swarm);
    assert!(
        sent <= 1.25 * image as f64,
        "the registry sent {sent} bytes of blobs (seed {} + blob {}) for a {image} byte image ({:.2}×)\n{}",
        seed1 - seed0,
        blob1 - blob0,
        sent / image as f64,
        swarm.logs()
    );
    assert!(peer > seed, "agents received {peer} bytes from peers and {seed} from the seed\n{}", swarm.logs());
}

/// A slow registry and stripe trees: a cluster's blobs have the seed one
/// after another, so the last layer waits longer than an agent's stall limit
/// (60 s without a piece) for its first piece. The joins say that the blob is
/// queued, and every layer arrives.
#[test]
fn a_layer_that_waits_over_a_minute_for_the_seed_is_not_given_up() {
    const AGENTS: usize = 2;
    let _serial = serial();
    let swarm = Swarm::start_with_pieces(AGENTS, Some(TREE_PIECE_KIB));
    // Three 12 MiB layers from a 3 Mbit/s registry: over 33 s each, so the
    // third has waited more than 67 s when its first piece leaves the seed.
    let layers = swarm.push_image(3, 12 * MIB);
    let token = swarm.limited_to(&Links { seed: 3, up: 40, down: 40 });
    let nodes: Vec<usize> = (0..AGENTS).collect();
    let results = swarm.pull_through_agents(&nodes, &layers, &token, || {});
    assert_all_correct(&results, &nodes, &swarm);
    let slowest = results.iter().map(|r| r.secs).fold(0.0, f64::max);
    assert!(slowest > 67.0, "the last layer should have waited past the stall limit; all done in {slowest:.1} s");
    let logs = swarm.logs();
    assert!(!logs.contains("no new piece for"), "a queued download was given up:\n{logs}");
}

/// `damselfly-agent get` on six nodes at the same moment, each through its own agent, of
/// one 256 MiB file pushed as an OCI artifact: every copy verifies, and the registry
/// sends the file about once.
#[test]
fn six_nodes_get_a_256_mib_artifact_file_at_once_and_the_registry_sends_it_about_once() {
    const AGENTS: usize = 6;
    const MBIT: u32 = 100;
    let _serial = serial();
    let swarm = Swarm::start(AGENTS);
    let (digest, size) = swarm.push_file(256 * MIB, "model", "model.bin");
    let token = swarm.limited(MBIT);
    let nodes: Vec<usize> = (0..AGENTS).collect();
    let cmds = nodes
        .iter()
        .map(|&n| {
            let out = swarm.tmp.path().join(format!("model-{n}.bin"));
            let mut cmd = swarm.net.command(FIRST_AGENT + n, binary("damselfly-agent"));
            cmd.args(["get", &format!("{REPO}:model"), "--file", "model.bin", "--registry", &swarm.reg_url])
                .args(["--agent", &format!("{}:65001", swarm.agent_ip(n)), "-o"])
                .arg(&out)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("DAMSELFLY_AGENT_TOKEN", &token);
            (n, out.display().to_string(), cmd)
        })
        .collect();
    let before = swarm.registry_blob_bytes();
    let results = run_at_once(cmds, || {});
    let after = swarm.registry_blob_bytes();
    let (peer, seed, pass) = swarm.agent_bytes(&nodes);
    let sent = (after.0 - before.0) + (after.1 - before.1);
    eprintln!(
        "get swarm: {AGENTS} nodes, {MBIT} Mbit/s per node, file {size} B; nodes finished at {:?} s; registry sent \
         {sent} B ({:.2}×); agents received peer {peer} seed {seed} passthrough {pass}",
        results.iter().map(|r| format!("{:.1}", r.2)).collect::<Vec<_>>(),
        sent / size as f64
    );
    for (n, path, secs, out) in &results {
        assert!(
            out.status.success(),
            "node {n}: get failed after {secs:.1} s: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            swarm.logs()
        );
        let sum = run(Command::new("sha256sum").arg(path));
        assert_eq!(sum.split_whitespace().next(), Some(digest.hex().as_str()), "node {n}'s copy");
    }
    assert!(
        sent <= 1.25 * size as f64,
        "the registry sent {sent} bytes for a {size} byte file ({:.2}×)\n{}",
        sent / size as f64,
        swarm.logs()
    );
}

/// Preheat to all six agents of a cluster, each in its own namespace: afterwards every
/// node's pull of every layer is served from its own cache, with no byte from the
/// registry or a peer, and the preheat itself cost the registry about one copy.
#[test]
fn after_a_preheat_to_six_agents_every_pull_comes_from_the_local_cache() {
    let _serial = serial();
    let (swarm, layers, token, nodes) = Swarm::fault_scenario();
    let image: usize = layers.iter().map(|l| l.len).sum();
    let (code, job) = swarm.admin(
        "POST",
        "/api/v1/tenants/default/clusters/swarm/preheat",
        &json!({"repository": REPO, "tag": "v1"}),
    );
    assert_eq!(code, 202, "{job}");
    let path = format!("/api/v1/tenants/default/clusters/swarm/preheat/{}", job["id"].as_str().expect("job id"));
    let deadline = Instant::now() + Duration::from_secs(90);
    let job = loop {
        let (code, job) = swarm.admin("GET", &path, &Value::Null);
        assert_eq!(code, 200, "{job}");
        if job["state"] != "running" {
            break job;
        }
        assert!(Instant::now() < deadline, "preheat still running after 90 s: {job}\n{}", swarm.logs());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(job["state"], "done", "{job}\n{}", swarm.logs());
    assert_eq!(job["nodes"].as_array().map(Vec::len), Some(nodes.len()), "{job}");
    let (seed, blob) = swarm.registry_blob_bytes();
    eprintln!("preheat: the registry sent {} B for a {image} B image to {} nodes", seed + blob, nodes.len());
    // The config (a few hundred bytes) was preheated too.
    assert!(seed + blob <= 1.25 * image as f64, "the preheat cost the registry {} bytes for {image}", seed + blob);

    let received = swarm.agent_bytes(&nodes);
    let results = swarm.pull_through_agents(&nodes, &layers, &token, || {});
    assert_all_correct(&results, &nodes, &swarm);
    assert_eq!(
        swarm.agent_bytes(&nodes),
        received,
        "(peer, seed, passthrough) bytes the agents received while pulling"
    );
    assert_eq!(
        swarm.registry_blob_bytes(),
        (seed, blob),
        "(seed, blob) bytes the registry sent while the nodes pulled"
    );
}

#[test]
fn an_agent_killed_mid_transfer_does_not_stop_the_others() {
    let _serial = serial();
    let (mut swarm, layers, token, nodes) = Swarm::fault_scenario();
    // Agent 0 is killed six seconds in: by then it holds pieces and serves them to the others.
    let victim = 0usize;
    let mut victim_proc = swarm.agents[victim].take().expect("victim agent");
    let results = swarm.pull_through_agents(&nodes, &layers, &token, || {
        std::thread::sleep(Duration::from_secs(6));
        victim_proc.kill();
    });
    let survivors: Vec<usize> = nodes.iter().copied().filter(|&n| n != victim).collect();
    let surviving: Vec<NodePull> = survivors.iter().map(|&n| results[n].clone()).collect();
    let (peer, seed, pass) = swarm.agent_bytes(&survivors);
    eprintln!(
        "fault: agent {victim} killed at 6 s; survivors finished at {:?} s; they received peer {peer} seed {seed} passthrough {pass}",
        surviving.iter().map(|r| format!("{:.1}", r.secs)).collect::<Vec<_>>()
    );
    assert_all_correct(&surviving, &survivors, &swarm);
}

#[test]
fn an_agent_frozen_mid_transfer_is_replaced_and_catches_up_when_it_wakes() {
    let _serial = serial();
    let (swarm, layers, token, nodes) = Swarm::fault_scenario();
    // Agent 0 stops, its connections open and silent, as on a hung node;
    // twenty seconds later it goes on. It stops the moment it starts sending
    // a piece (its served-bytes counter moves when it does), four seconds in
    // at the earliest, so that a child is mid-piece: one stopped between
    // uploads might not be anybody's parent again before the others finish.
    // Its children must notice the stall and fetch elsewhere meanwhile.
    let victim = 0usize;
    let pid = swarm.agents[victim].as_ref().and_then(NsProcess::pid).expect("victim pid").to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill").args([sig, &pid]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    };
    let served = || metric_value(&swarm.agent_metrics(victim), "damselfly_agent_bytes_served_to_peers_total");
    let mut frozen_at = Duration::ZERO;
    let results = swarm.pull_through_agents(&nodes, &layers, &token, || {
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs(4));
        let before = served();
        while start.elapsed() < Duration::from_secs(20) && served() <= before {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal("-STOP");
        frozen_at = start.elapsed();
        std::thread::sleep(Duration::from_secs(20));
        signal("-CONT");
    });
    let survivors: Vec<usize> = nodes.iter().copied().filter(|&n| n != victim).collect();
    eprintln!(
        "fault: agent {victim} frozen from {:.1} s for 20 s; nodes finished at {:?} s",
        frozen_at.as_secs_f64(),
        results.iter().map(|r| format!("{:.1}", r.secs)).collect::<Vec<_>>()
    );
    assert_all_correct(&results, &nodes, &swarm);
    let last_survivor = survivors.iter().map(|&n| results[n].secs).fold(0.0, f64::max);
    assert!(
        last_survivor < results[victim].secs,
        "the survivors went on without the frozen agent: the last finished at {last_survivor:.1} s, it at {:.1} s",
        results[victim].secs
    );
    let noticed: Vec<String> = survivors
        .iter()
        .flat_map(|&n| {
            let log = swarm.agents[n].as_ref().map(NsProcess::log).unwrap_or_default();
            log.lines()
                .filter(|l| l.contains("a parent failed") || l.contains("a stripe's feed failed"))
                .filter(|l| l.contains("stalled for") || l.contains("no answer in"))
                .map(|l| format!("agent {n}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect();
    // With the stripe trees a hung root may be sending nothing when it
    // stops; the scheduler then passes it over for its silence.
    let passed_over = swarm.registry.log().contains("an agent went silent holding seed pieces");
    assert!(
        !noticed.is_empty() || passed_over,
        "no survivor reported the frozen parent as stalled, nor did the scheduler pass it over\n{}",
        swarm.logs()
    );
    eprintln!("{}", noticed.join("\n"));
}

#[test]
fn a_registry_killed_and_restarted_mid_swarm_does_not_stop_the_pulls() {
    let _serial = serial();
    let (mut swarm, layers, token, nodes) = Swarm::fault_scenario();
    let pid = swarm.registry.pid().expect("registry pid").to_string();
    let mut restarted = None;
    // Four seconds in, the registry (scheduler and seed) dies without warning; two seconds later
    // it starts again with an empty scheduler. Agents keep trading with the tickets they hold, then
    // register and join again.
    let results = swarm.pull_through_agents(&nodes, &layers, &token, || {
        std::thread::sleep(Duration::from_secs(4));
        run(Command::new("kill").args(["-9", &pid]));
        std::thread::sleep(Duration::from_secs(2));
        let mut registry = spawn_registry(&swarm.net, &swarm.reg_url, swarm.tmp.path(), swarm.piece_kib);
        wait_until_ready(&swarm.net, &swarm.reg_url, &mut registry);
        restarted = Some(registry);
    });
    swarm.registry = restarted.expect("the registry was restarted");
    let (peer, seed, pass) = swarm.agent_bytes(&nodes);
    eprintln!(
        "fault: registry killed at 4 s, back at about 6 s; nodes finished at {:?} s; received peer {peer} seed {seed} passthrough {pass}",
        results.iter().map(|r| format!("{:.1}", r.secs)).collect::<Vec<_>>()
    );
    assert_all_correct(&results, &nodes, &swarm);
    let page = swarm.registry_metrics();
    assert_eq!(metric_value(&page, "damselfly_p2p_agents"), nodes.len() as f64, "every agent registered again\n{page}");
    assert!(peer > seed, "agents received {peer} bytes from peers and {seed} from the seed\n{}", swarm.logs());
}

/// Three replicas on PostgreSQL and S3 behind HAProxy serve the swarm; four
/// seconds in, the replica scheduling the cluster dies without warning. A
/// survivor takes the cluster's lease over within seconds and the agents'
/// calls go there, the seed's pieces come from any replica, and every agent
/// finishes with verified bytes while the registry's node sends the image
/// about once.
#[test]
fn a_replica_killed_mid_swarm_costs_no_pull_and_the_registry_sends_the_image_about_once() {
    const AGENTS: usize = 6;
    let _serial = serial();
    let mut swarm = Swarm::start_replicated(AGENTS, Some(TREE_PIECE_KIB));
    let layers = swarm.push_image(3, 24 * MIB);
    let image: usize = layers.iter().map(|l| l.len).sum();
    let token = swarm.limited(40);
    let holder = swarm.scheduling_replica().expect("a replica schedules the cluster");
    let mut victim = swarm.replicated.as_mut().and_then(|r| r.replicas[holder].take()).expect("the holder");
    let nodes: Vec<usize> = (0..AGENTS).collect();
    let sent_before = swarm.registry_link_sent();
    let results = swarm.pull_through_agents(&nodes, &layers, &token, || {
        std::thread::sleep(Duration::from_secs(4));
        victim.kill();
    });
    let sent = swarm.registry_link_sent() - sent_before;
    let (peer, seed, pass) = swarm.agent_bytes(&nodes);
    let now_holder = swarm.scheduling_replica();
    eprintln!(
        "fault: replica {holder} (scheduling the cluster) killed at 4 s; replica {now_holder:?} took over; nodes \
         finished at {:?} s; the registry's node sent {sent} B for a {image} B image ({:.3}×); agents received \
         peer {peer} seed {seed} passthrough {pass}",
        results.iter().map(|r| format!("{:.1}", r.secs)).collect::<Vec<_>>(),
        sent / image as f64,
    );
    assert_all_correct(&results, &nodes, &swarm);
    assert!(now_holder.is_some_and(|h| h != holder), "a surviving replica schedules the cluster: {now_holder:?}");
    assert!(
        sent <= 1.2 * image as f64,
        "the registry's node sent {sent} bytes for a {image} byte image ({:.2}×)\n{}",
        sent / image as f64,
        swarm.logs()
    );
}

/// The scenarios are heavy (a registry, six agents, shaped links): one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The queue (ms) of the registry's uplink during the direct baseline of `bench_swarm`.
const DIRECT_QUEUE_MS: u64 = 500;

/// A benchmark setting from the environment, or its default.
fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A benchmark's link rates in Mbit/s: the registry's node (the seed), and every agent's node up and down.
struct Links {
    seed: u32,
    up: u32,
    down: u32,
}

impl Links {
    /// SWARM_MBIT (else `default`) for every link, each overridden by
    /// SWARM_SEED_MBIT, SWARM_UP_MBIT and SWARM_DOWN_MBIT.
    fn from_env(default: usize) -> Links {
        let mbit = setting("SWARM_MBIT", default);
        let rate = |name: &str| setting(name, mbit) as u32;
        Links { seed: rate("SWARM_SEED_MBIT"), up: rate("SWARM_UP_MBIT"), down: rate("SWARM_DOWN_MBIT") }
    }

    /// Bytes per second of `mbit`.
    fn bytes(mbit: u32) -> f64 {
        mbit as f64 * 1e6 / 8.0
    }

    /// The least time in which `n` nodes can all receive `s` bytes from the seed and each
    /// other (Kumar & Ross): max(S/u_seed, S/d_min, N·S/(u_seed + Σu_peers)).
    fn p2p_bound(&self, n: usize, s: f64) -> f64 {
        let (u_seed, d_min, u_peers) =
            (Self::bytes(self.seed), Self::bytes(self.down), n as f64 * Self::bytes(self.up));
        (s / u_seed).max(s / d_min).max(n as f64 * s / (u_seed + u_peers))
    }

    /// The least time in which `n` nodes can all receive `s` bytes from the seed alone: max(N·S/u_seed, S/d_min).
    fn direct_bound(&self, n: usize, s: f64) -> f64 {
        (n as f64 * s / Self::bytes(self.seed)).max(s / Self::bytes(self.down))
    }

    fn describe(&self) -> String {
        if self.seed == self.up && self.up == self.down {
            format!("{} Mbit/s per node up and down (registry node too)", self.seed)
        } else {
            format!("agents {} Mbit/s up and {} down, registry node {} Mbit/s", self.up, self.down, self.seed)
        }
    }
}

/// CPU seconds used so far: the machine's by kind, from /proc/stat, and the
/// registry's, each agent's and the clients' (user + system), from /proc/<pid>/stat.
struct CpuTimes {
    /// user (with nice), system, softirq, idle (with iowait), irq and steal.
    machine: [f64; 5],
    registry: f64,
    agents: Vec<f64>,
    /// This test's children that have ended: the pulls' curl and SHA-256 (and a few curl calls for metrics).
    clients: f64,
}

impl CpuTimes {
    fn now(swarm: &Swarm) -> CpuTimes {
        let tick = run(Command::new("getconf").arg("CLK_TCK")).trim().parse::<f64>().expect("CLK_TCK");
        let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
        let f: Vec<f64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .expect("/proc/stat's cpu line")
            .split_whitespace()
            .map(|v| v.parse::<f64>().expect("a count") / tick)
            .collect();
        // user nice system idle iowait irq softirq steal
        let machine = [f[0] + f[1], f[2], f[6], f[3] + f[4], f[5] + f[7]];
        // After the command's name in parentheses: state is field 3, utime 14, stime 15, and the
        // same for ended children, cutime 16 and cstime 17.
        let seconds = |pid: String, first: usize| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (ticks(first) + ticks(first + 1)) / tick
        };
        let process =
            |p: Option<&NsProcess>| p.and_then(NsProcess::pid).map_or(0.0, |pid| seconds(pid.to_string(), 11));
        CpuTimes {
            machine,
            registry: process(Some(&swarm.registry)),
            agents: swarm.agents.iter().map(|a| process(a.as_ref())).collect(),
            clients: seconds("self".into(), 13),
        }
    }

    /// Where the machine's CPU went between `before` and now, as a line for the benchmark's report.
    fn since(&self, before: &CpuTimes, phase: &str) -> String {
        let d: Vec<f64> = self.machine.iter().zip(before.machine).map(|(a, b)| a - b).collect();
        let total: f64 = d.iter().sum();
        let registry = self.registry - before.registry;
        let agents: Vec<f64> = self.agents.iter().zip(&before.agents).map(|(a, b)| a - b).collect();
        let all_agents: f64 = agents.iter().sum();
        let busiest = agents.iter().copied().fold(0.0, f64::max);
        let clients = self.clients - before.clients;
        // A process's system time includes the softirq work done while it was interrupted
        // (CPU time is counted by ticks), so the rest is the other processes and softirq done elsewhere.
        let rest = d[0] + d[1] + d[2] - registry - all_agents - clients;
        let pct = |v: f64| 100.0 * v / total;
        format!(
            "CPU during {phase}: {total:.1} core-s on {} cores; registry {registry:.1} ({:.0} %), agents \
             {all_agents:.1} ({:.0} %; busiest {busiest:.1}), clients (curl, openssl dgst) {clients:.1} ({:.0} %), the \
             rest {rest:.1} ({:.0} %: other processes, softirq outside these), idle {:.1} ({:.0} %), irq and steal \
             {:.1}; softirq in all {:.1} ({:.0} %)",
            std::thread::available_parallelism().map_or(0, usize::from),
            pct(registry),
            pct(all_agents),
            pct(clients),
            pct(rest),
            d[3],
            pct(d[3]),
            d[4],
            d[2],
            pct(d[2])
        )
    }
}

/// The benchmark behind `scripts/bench-swarm.sh`: SWARM_NODES agents (default 8),
/// SWARM_MBIT per node up and down (default 50, the registry's node too; see
/// [`Links::from_env`]), SWARM_IMAGE_MIB (default 64) in SWARM_LAYERS layers
/// (default 4). P2P pull through the agents, then the same nodes pulling
/// straight from the registry. SWARM_ZONES=2 puts half the agents in a second
/// zone behind one link of SWARM_ZONE_MBIT each way (default twice
/// SWARM_MBIT), the registry in the first zone, and counts the bytes that
/// cross it.
#[test]
#[ignore = "benchmark; run scripts/bench-swarm.sh"]
fn bench_swarm() {
    let n = setting("SWARM_NODES", 8);
    let links = Links::from_env(50);
    let image_mib = setting("SWARM_IMAGE_MIB", 64);
    let nlayers = setting("SWARM_LAYERS", 4).max(1);
    let zones = setting("SWARM_ZONES", 1);
    assert!(zones == 1 || zones == 2 && n % 2 == 0, "SWARM_ZONES is 1 or 2, and 2 needs an even number of agents");
    let pipe = (zones == 2).then(|| setting("SWARM_ZONE_MBIT", 2 * setting("SWARM_MBIT", 50)) as u32);
    let _serial = serial();
    let swarm = match pipe {
        Some(mbit) => Swarm::start_in_two_zones(n / 2, mbit),
        None => Swarm::start(n),
    };
    let layers = swarm.push_image(nlayers, image_mib * MIB / nlayers);
    let s: f64 = layers.iter().map(|l| l.len as f64).sum();
    let token = swarm.limited_to(&links);
    // With two zones the second receives the image through the link between them at least once,
    // and directly, once per node.
    let pipe_secs = |copies: f64| pipe.map_or(0.0, |mbit| copies * s / Links::bytes(mbit));
    let bound = links.p2p_bound(n, s).max(pipe_secs(1.0));
    let direct_ideal = links.direct_bound(n, s).max(pipe_secs((n / 2) as f64));
    let crossed = || if pipe.is_some() { swarm.net.between_zones_bytes() as f64 } else { f64::NAN };
    let timeout = Duration::from_secs_f64(direct_ideal * 3.0 + 120.0);
    let nodes: Vec<usize> = (0..n).collect();

    let before = swarm.registry_blob_bytes();
    let crossed0 = crossed();
    let cpu0 = CpuTimes::now(&swarm);
    let p2p =
        swarm.pull_all(&nodes, &layers, &token, |i| format!("http://{}:65001", swarm.agent_ip(i)), timeout, || {});
    let cpu1 = CpuTimes::now(&swarm);
    let after = swarm.registry_blob_bytes();
    let crossed1 = crossed();
    let (peer, seed, pass) = swarm.agent_bytes(&nodes);
    let p2p_egress = (after.0 - before.0) + (after.1 - before.1);

    let reg_url = swarm.reg_url.clone();
    // SWARM_DIRECT=0 skips the baseline, for quick comparisons of P2P settings only.
    let direct = if setting("SWARM_DIRECT", 1) == 0 {
        Vec::new()
    } else {
        // Every node pulls every layer at once: N × layers flows through the
        // tbf on the registry's own interface. When that queue is full for
        // seconds on end, the registry's kernel gives up on a flow that has
        // nothing in flight (its probe timer counts each locally dropped
        // packet as a failed probe) and resets it, as it does for any TCP
        // sender: at 20 Mbit/s, 64 flows and a 50 ms queue, 18 to 21 of 64
        // pulls were reset. A 500 ms queue keeps them going; the baseline is
        // bound by the link's rate, which the queue does not change.
        swarm.net.limit_queued(REG, links.seed, links.seed, DIRECT_QUEUE_MS);
        swarm.pull_all(&nodes, &layers, &token, |_| reg_url.clone(), timeout, || {})
    };
    let cpu2 = CpuTimes::now(&swarm);
    let after2 = swarm.registry_blob_bytes();
    let direct_egress = (after2.0 - after.0) + (after2.1 - after.1);
    let crossed2 = crossed();

    let stats = |r: &[NodePull]| {
        let mut t: Vec<f64> = r.iter().map(|x| x.secs).collect();
        if t.is_empty() {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        t.sort_by(f64::total_cmp);
        let pct = |p: f64| t[((p * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1];
        (pct(0.5), pct(0.95), t[t.len() - 1])
    };
    let bad = |r: &[NodePull]| r.iter().flat_map(|x| &x.layers).filter(|(d, s, ok, _)| !ok || d != s).count();
    let (p50, p95, pmax) = stats(&p2p);
    let (d50, d95, dmax) = stats(&direct);
    let mib = |b: f64| b / MIB as f64;
    println!();
    // New namespaces took the host's congestion control when they were made.
    let cc = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap_or_default();
    println!(
        "swarm benchmark: N={n} agents, {}, image {:.1} MiB in {nlayers} layers, {} pieces, TCP {}",
        links.describe(),
        mib(s),
        std::env::var("SWARM_PIECE_KIB")
            .map_or_else(|_| "per-blob (the registry's rule)".to_owned(), |k| format!("{k} KiB")),
        cc.trim()
    );
    println!("| mode   | makespan s | p50 s | p95 s | max s | registry egress MiB | egress / image | bad layers |");
    println!("|--------|-----------:|------:|------:|------:|--------------------:|---------------:|-----------:|");
    println!(
        "| p2p    | {pmax:10.1} | {p50:5.1} | {p95:5.1} | {pmax:5.1} | {:19.1} | {:14.2} | {:10} |",
        mib(p2p_egress),
        p2p_egress / s,
        bad(&p2p)
    );
    println!(
        "| direct | {dmax:10.1} | {d50:5.1} | {d95:5.1} | {dmax:5.1} | {:19.1} | {:14.2} | {:10} |",
        mib(direct_egress),
        direct_egress / s,
        bad(&direct)
    );
    println!(
        "P2P lower bound (Kumar & Ross, max(S/u_seed, S/d_min, N·S/(u_seed+Σu_peers))) = {bound:.1} s; makespan/bound = {:.2}",
        pmax / bound
    );
    println!("direct lower bound max(N·S/u_seed, S/d_min) = {direct_ideal:.1} s");
    if let Some(mbit) = pipe {
        println!(
            "two zones of {} agents, the registry in the first; between them {mbit} Mbit/s each way (both bounds \
             include the image crossing it: once for P2P, once per second-zone node direct)",
            n / 2
        );
        println!(
            "bytes between the zones, both ways, frames' headers included: p2p {:.1} MiB ({:.2}× the image), \
             direct {:.1} MiB ({:.2}×)",
            mib(crossed1 - crossed0),
            (crossed1 - crossed0) / s,
            mib(crossed2 - crossed1),
            (crossed2 - crossed1) / s
        );
    }
    println!("makespan p2p / direct = {:.3} ({pmax:.3} s / {dmax:.3} s)", pmax / dmax);
    println!("agents received: peer {:.1} MiB, seed {:.1} MiB, passthrough {:.1} MiB", mib(peer), mib(seed), mib(pass));
    println!("{}", cpu1.since(&cpu0, "p2p"));
    if !direct.is_empty() {
        println!("{}", cpu2.since(&cpu1, "direct"));
    }
    for (mode, pulls) in [("p2p", &p2p), ("direct", &direct)] {
        for (i, r) in pulls.iter().enumerate() {
            for (d, s, ok, e) in &r.layers {
                if !ok || d != s {
                    println!("{mode}, node {i}: {d} -> {s} ok={ok} {e}");
                }
            }
        }
    }
    if bad(&p2p) > 0 {
        println!("{}", swarm.logs());
    }
}

/// `damselfly-agent get` benchmark (run by scripts/bench-get.sh): one file of
/// GET_FILE_MIB MiB (default 1024) to N=SWARM_NODES nodes (default 8) at
/// SWARM_MBIT per node up and down (default 200, the registry's node too; see [`Links::from_env`]).
/// Every node runs `get` through its own agent at the same moment; then every
/// node runs `get` straight from the registry (no agent, no cluster token). Both
/// write to standard output into `openssl dgst -sha256`, so the disk holds only the caches.
#[test]
#[ignore = "benchmark; run scripts/bench-get.sh"]
fn bench_get() {
    let n = setting("SWARM_NODES", 8);
    let links = Links::from_env(200);
    let file_mib = setting("GET_FILE_MIB", 1024);
    let _serial = serial();
    let swarm = Swarm::start(n);
    let (digest, size) = swarm.push_file(file_mib * MIB, "big", "big.bin");
    let size = size as f64;
    let token = swarm.limited_to(&links);
    let bound = links.p2p_bound(n, size);
    let direct_ideal = links.direct_bound(n, size);
    let nodes: Vec<usize> = (0..n).collect();
    // `agent`: the node's own agent's mirror, or a closed port, so that get downloads directly.
    let run = |agent: &dyn Fn(usize) -> String| {
        let cmds = nodes
            .iter()
            .map(|&i| {
                let mut cmd = swarm.net.command(FIRST_AGENT + i, "bash");
                cmd.args([
                    "-c",
                    "set -o pipefail; \"$GET\" get \"$REF\" --file big.bin -o - | openssl dgst -sha256 -r",
                ])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("GET", binary("damselfly-agent"))
                .env("REF", format!("{REPO}:big"))
                .env("DAMSELFLY_AGENT_REGISTRY", &swarm.reg_url)
                .env("DAMSELFLY_AGENT_MIRROR", agent(i))
                .env("DAMSELFLY_AGENT_TOKEN", &token);
                (i, String::new(), cmd)
            })
            .collect();
        let before = swarm.registry_blob_bytes();
        let results = run_at_once(cmds, || {});
        let after = swarm.registry_blob_bytes();
        let mut times: Vec<f64> = Vec::new();
        for (i, _, secs, out) in &results {
            let sum = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && sum.split_whitespace().next() == Some(digest.hex().as_str()),
                "node {i}: get failed after {secs:.1} s: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                swarm.logs()
            );
            times.push(*secs);
        }
        times.sort_by(f64::total_cmp);
        let egress = (after.0 - before.0) + (after.1 - before.1);
        (times, egress)
    };
    let (p2p, p2p_egress) = run(&|i| format!("{}:65001", swarm.agent_ip(i)));
    let (peer, seed, pass) = swarm.agent_bytes(&nodes);
    // SWARM_DIRECT=0 skips the baseline, for quick comparisons of P2P settings only.
    let (direct, direct_egress) =
        if setting("SWARM_DIRECT", 1) == 0 { (vec![f64::NAN], f64::NAN) } else { run(&|_| "127.0.0.1:9".to_owned()) };
    let pct = |t: &[f64], p: f64| t[((p * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1];
    let mib = |b: f64| b / MIB as f64;
    println!();
    println!("get benchmark: N={n} nodes, {}, one file of {:.0} MiB", links.describe(), mib(size));
    println!("| mode | makespan s | p50 s | p95 s | makespan / bound | registry egress MiB | egress / file |");
    println!("|------|-----------:|------:|------:|-----------------:|--------------------:|--------------:|");
    for (mode, t, egress) in
        [("get via agents (P2P)", &p2p, p2p_egress), ("get direct from the registry", &direct, direct_egress)]
    {
        let max = t[t.len() - 1];
        println!(
            "| {mode} | {max:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} |",
            pct(t, 0.5),
            pct(t, 0.95),
            max / bound,
            mib(egress),
            egress / size
        );
    }
    println!(
        "| P2P lower bound max(S/u_seed, S/d_min, N·S/(u_seed+Σu_peers)) | {bound:.1} | | | 1.00 | {:.1} | 1.00 |",
        mib(size)
    );
    println!(
        "| direct lower bound max(N·S/u_seed, S/d_min) | {direct_ideal:.1} | | | {:.2} | {:.1} | {n}.00 |",
        direct_ideal / bound,
        mib(size) * n as f64
    );
    println!(
        "direct / P2P makespan: {:.2}×; agents received: peer {:.1} MiB, seed {:.1} MiB, passthrough {:.1} MiB",
        direct[direct.len() - 1] / p2p[p2p.len() - 1],
        mib(peer),
        mib(seed),
        mib(pass)
    );
}
