//! `damselfly-agent node-setup`, run as a node runs it: the files it writes
//! under a root, merged into what was there and undone byte for byte, and
//! real runtimes (containerd's `ctr`, podman) pulling the acceleration host
//! through a running agent, then straight from the registry once the agent
//! is down.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use damselfly_tests::containerd::Containerd;
use damselfly_tests::workstation::Workstation;
use damselfly_tests::{binary, metric_value, pseudo_random, run, Agent, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// The address workloads pull from in these tests; nothing ever resolves it.
const ACCEL: &str = "p2p.damselfly.test:65001";

fn node_setup(root: &Path, args: &[&str]) -> Output {
    let out = Command::new(binary("damselfly-agent"))
        .arg("node-setup")
        .arg("--root")
        .arg(root)
        .args(args)
        .env_clear()
        .output()
        .expect("run damselfly-agent node-setup");
    assert!(
        out.status.success(),
        "node-setup {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write(root: &Path, path: &str, content: &str) {
    let full = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    fs::write(&full, content).unwrap_or_else(|e| panic!("write {}: {e}", full.display()));
}

fn read(root: &Path, path: &str) -> String {
    let full = root.join(path.trim_start_matches('/'));
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// Every directory and file under `root`, files with their bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            if path.is_dir() {
                out.insert(rel, None);
                stack.push(path);
            } else {
                out.insert(rel, Some(fs::read(&path).expect("read file")));
            }
        }
    }
    out
}

#[test]
fn node_setup_writes_exactly_these_files_and_uninstall_restores_the_node_byte_for_byte() {
    let root = tempfile::tempdir().expect("root");
    let root = root.path();
    fs::create_dir_all(root.join("etc/containerd")).expect("mkdir");
    let before = tree(root);
    node_setup(root, &["--registry", "https://registry.example.com", "--runtime", "containerd,crio,docker"]);

    let accel = "p2p.registry.example.com:65001";
    assert_eq!(
        read(root, "/etc/containerd/config.toml"),
        "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"
    );
    assert_eq!(
        read(root, &format!("/etc/containerd/certs.d/{accel}/hosts.toml")),
        format!(
            "# Written by damselfly-agent node-setup: {accel} is pulled through the\n\
             # local Damselfly agent, and straight from the registry when the agent is down.\n\
             server = \"https://registry.example.com\"\n\n\
             [host.\"http://127.0.0.1:65001\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        )
    );
    assert_eq!(
        read(root, "/etc/containers/registries.conf.d/50-damselfly-p2p.registry.example.com_65001.conf"),
        format!(
            "# Written by damselfly-agent node-setup: {accel} is pulled through the\n\
             # local Damselfly agent first, then straight from the registry.\n\n\
             [[registry]]\nprefix = \"{accel}\"\nlocation = \"registry.example.com\"\n\n\
             [[registry.mirror]]\nlocation = \"127.0.0.1:65001\"\ninsecure = true\n"
        )
    );
    assert_eq!(read(root, "/etc/docker/daemon.json"), format!("{{\n  \"insecure-registries\": [\"{accel}\"]\n}}\n"));
    assert_eq!(
        read(root, "/etc/hosts"),
        "127.0.0.1 p2p.registry.example.com # damselfly-agent node-setup: the local Damselfly agent\n"
    );

    // Running it again changes nothing.
    let written = tree(root);
    let again =
        node_setup(root, &["--registry", "https://registry.example.com", "--runtime", "containerd,crio,docker"]);
    assert!(!String::from_utf8_lossy(&again.stdout).contains("wrote"), "{}", String::from_utf8_lossy(&again.stdout));
    assert_eq!(tree(root), written);

    node_setup(root, &["--uninstall"]);
    assert_eq!(tree(root), before, "only /etc/containerd, empty, as before");
}

#[test]
fn a_registry_addressed_by_ip_is_pulled_through_the_node_s_own_agent_with_no_hosts_entry() {
    let root = tempfile::tempdir().expect("root");
    let root = root.path();
    let before = tree(root);
    let out = node_setup(root, &["--registry", "http://10.0.0.9:5000", "--runtime", "containerd,crio,docker"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:65001"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let hosts = read(root, "/etc/containerd/certs.d/127.0.0.1:65001/hosts.toml");
    assert!(hosts.contains("server = \"http://10.0.0.9:5000\"\n\n[host.\"http://127.0.0.1:65001\"]"), "{hosts}");
    let drop_in = read(root, "/etc/containers/registries.conf.d/50-damselfly-127.0.0.1_65001.conf");
    assert!(drop_in.contains("prefix = \"127.0.0.1:65001\"\nlocation = \"10.0.0.9:5000\""), "{drop_in}");
    assert!(!root.join("etc/hosts").exists(), "an address needs no hosts entry");
    node_setup(root, &["--uninstall"]);
    assert_eq!(tree(root), before);
}

#[test]
fn merging_keeps_what_the_files_held_and_uninstall_puts_back_the_originals() {
    let root = tempfile::tempdir().expect("root");
    let root = root.path();
    let drop_in = format!("/etc/containers/registries.conf.d/50-damselfly-{}.conf", ACCEL.replace(':', "_"));
    let originals = [
        ("/etc/containerd/config.toml", "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"),
        (
            "/etc/containerd/certs.d/p2p.damselfly.test:65001/hosts.toml",
            "server = \"https://mirror-of-choice.example.com\"\n\n[host.\"https://cache.example.com\"]\n  capabilities = [\"pull\"]\n",
        ),
        ("/etc/containers/registries.conf", "unqualified-search-registries = [\"registry.example.com\"]\n"),
        (&drop_in, "[[registry]]\nlocation = \"quay.io\"\nblocked = true\n"),
        ("/etc/docker/daemon.json", "{\n\t\"log-driver\": \"journald\",\n\t\"insecure-registries\": [\"10.0.0.5:5000\"]\n}\n"),
        ("/etc/hosts", "127.0.0.1 localhost\n10.0.0.5 build-cache"),
    ];
    for (path, content) in originals {
        write(root, path, content);
    }
    let before = tree(root);
    node_setup(
        root,
        &["--registry", "http://10.0.0.9:5000", "--acceleration-host", ACCEL, "--mirror", "127.0.0.1:7001"],
    );

    assert_eq!(read(root, originals[0].0), originals[0].1, "config_path was already set");
    assert_eq!(
        read(root, originals[1].0),
        "server = \"https://mirror-of-choice.example.com\"\n\n\
         [host.\"http://127.0.0.1:7001\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
         [host.\"https://cache.example.com\"]\n  capabilities = [\"pull\"]\n"
    );
    assert_eq!(read(root, originals[2].0), originals[2].1, "registries.conf itself is never touched");
    assert_eq!(
        read(root, &drop_in),
        format!(
            "[[registry]]\nlocation = \"quay.io\"\nblocked = true\n\n\
             [[registry]]\nprefix = \"{ACCEL}\"\nlocation = \"10.0.0.9:5000\"\ninsecure = true\n\n\
             [[registry.mirror]]\nlocation = \"127.0.0.1:7001\"\ninsecure = true\n"
        )
    );
    assert_eq!(
        read(root, originals[4].0),
        format!(
            "{{\n\t\"log-driver\": \"journald\",\n\t\"insecure-registries\": [\"{ACCEL}\", \"10.0.0.5:5000\"]\n}}\n"
        )
    );
    assert_eq!(
        read(root, originals[5].0),
        "127.0.0.1 localhost\n10.0.0.5 build-cache\n\
         127.0.0.1 p2p.damselfly.test # damselfly-agent node-setup: the local Damselfly agent\n"
    );

    node_setup(root, &["--uninstall"]);
    assert_eq!(tree(root), before);
}

#[test]
fn uninstall_leaves_a_file_changed_since_setup_and_says_so() {
    let root = tempfile::tempdir().expect("root");
    let root = root.path();
    write(root, "/etc/docker/daemon.json", "{}\n");
    node_setup(root, &["--registry", "http://10.0.0.9:5000"]);
    let edited = "{\"debug\": true, \"insecure-registries\": [\"127.0.0.1:65001\"]}\n";
    write(root, "/etc/docker/daemon.json", edited);
    let out = node_setup(root, &["--uninstall"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("/etc/docker/daemon.json changed after node-setup wrote it"), "{stdout}");
    assert_eq!(read(root, "/etc/docker/daemon.json"), edited);
}

#[test]
fn node_setup_with_nothing_to_configure_says_what_to_pass() {
    let root = tempfile::tempdir().expect("root");
    let out = Command::new(binary("damselfly-agent"))
        .args(["node-setup", "--registry", "https://r.example.com", "--root"])
        .arg(root.path())
        .env_clear()
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no container runtime found") && stderr.contains("--runtime"), "{stderr}");
}

// ----- real runtimes -----

/// A registry holding `accel/app:1.0` (P2P on for `accel`), a cluster, and an agent of that cluster.
struct World {
    reg: Registry,
    http: Client,
    agent: Option<Agent>,
    /// Bytes of the image's config and layers.
    blob_bytes: f64,
    /// The image's config digest: its ID in Docker.
    config_digest: String,
}

impl World {
    async fn new() -> World {
        let reg = Registry::start(Backend::Sqlite);
        let http = Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let token = reg.register_cluster("edge").await;
        tokio::task::block_in_place(|| push_image(&reg));
        let r = http
            .patch(format!("{}/api/v1/namespaces/accel", reg.url))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .json(&json!({"p2p_enabled": true}))
            .send()
            .await
            .expect("switch P2P on");
        assert_eq!(r.status(), StatusCode::OK);
        // The registry caches namespaces for two seconds.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let manifest: Value = http
            .get(format!("{}/v2/accel/app/manifests/1.0", reg.url))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .header(
                "accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .await
            .expect("manifest")
            .json()
            .await
            .expect("manifest JSON");
        let layers = manifest["layers"].as_array().expect("layers");
        let blob_bytes = layers.iter().chain([&manifest["config"]]).map(|d| d["size"].as_f64().expect("size")).sum();
        let config_digest = manifest["config"]["digest"].as_str().expect("config digest").to_owned();
        let agent = Agent::start(&reg.url, &token, &[]);
        World { reg, http, agent: Some(agent), blob_bytes, config_digest }
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent running")
    }

    /// Blob bytes the agent received, from any source.
    async fn agent_received(&self) -> f64 {
        let page = self.metrics(&self.agent().metrics_url).await;
        ["seed", "peer", "passthrough"]
            .iter()
            .map(|s| metric_value(&page, &format!("damselfly_agent_bytes_received_total{{source=\"{s}\"}}")))
            .sum()
    }

    /// Blob bytes the registry sent, as blobs or as seed pieces.
    async fn registry_sent(&self) -> f64 {
        let page = self.metrics(&self.reg.url).await;
        metric_value(&page, "damselfly_bytes_sent_total{kind=\"blob\"}")
            + metric_value(&page, "damselfly_bytes_sent_total{kind=\"seed\"}")
    }

    async fn metrics(&self, base: &str) -> String {
        self.http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text")
    }

    /// Runs node-setup for one runtime under `root`, for this world's agent.
    fn node_setup(&self, root: &Path, runtime: &str) {
        node_setup(
            root,
            &[
                "--registry",
                &self.reg.url,
                "--acceleration-host",
                ACCEL,
                "--mirror",
                &self.agent().mirror_host,
                "--runtime",
                runtime,
            ],
        );
    }
}

/// Pushes a one-layer image of 3 MiB, `accel/app:1.0`, with podman.
fn push_image(reg: &Registry) {
    let ws = Workstation::logged_in_to(reg);
    let image = format!("{}/accel/app:1.0", reg.host);
    let tar = ws.rootfs_tar("rootfs", &[("srv/data.bin".to_owned(), pseudo_random(3 * 1024 * 1024, 61))]);
    run(ws.podman().args(["import", "--quiet"]).arg(tar).arg(&image));
    ws.podman_push(&image);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctr_pulls_the_acceleration_host_through_the_agent_and_from_the_registry_when_the_agent_is_down() {
    let mut w = World::new().await;
    let root = tempfile::tempdir().expect("node root");
    let root = root.path();
    let state = Containerd::directory();
    let config = root.join("etc/containerd/config.toml");
    write(root, "/etc/containerd/config.toml", &Containerd::config_toml(state.path()));
    w.node_setup(root, "containerd");
    assert!(read(root, "/etc/containerd/config.toml").contains("config_path = \"/etc/containerd/certs.d\""));
    // containerd starts on the configuration node-setup edited.
    let containerd = Containerd::start_with(state, &config);
    let hosts_dir = root.join("etc/containerd/certs.d");
    let image = format!("{ACCEL}/accel/app:1.0");
    let creds = format!("{ADMIN_USER}:{ADMIN_PASSWORD}");
    let pull = |containerd: &Containerd| {
        run(containerd
            .ctr()
            .args(["images", "pull", "--snapshotter", "native", "--user", &creds, "--hosts-dir"])
            .arg(&hosts_dir)
            .arg(&image));
    };

    tokio::task::block_in_place(|| pull(&containerd));
    assert_eq!(w.agent_received().await, w.blob_bytes, "every blob came through the agent");
    let listed = run(containerd.ctr().args(["images", "ls", "--quiet"]));
    assert_eq!(listed.trim(), image);

    // The agent goes down; the same pull, from nothing, goes to the registry.
    w.agent = None;
    run(containerd.ctr().args(["images", "rm", "--sync", &image]));
    let sent_before = w.registry_sent().await;
    tokio::task::block_in_place(|| pull(&containerd));
    assert_eq!(w.registry_sent().await - sent_before, w.blob_bytes, "every blob came straight from the registry");
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_pulls_the_acceleration_host_through_the_agent_and_from_the_registry_when_the_agent_is_down() {
    let mut w = World::new().await;
    let root = tempfile::tempdir().expect("node root");
    let root = root.path();
    fs::create_dir_all(root.join("etc/containers")).expect("mkdir");
    w.node_setup(root, "crio");
    // podman reads drop-ins from ~/.config/containers/registries.conf.d beside
    // the machine's own /etc/containers, as long as it is not told which
    // registries.conf to read: the node's /etc/containers stands in for that.
    let ws = Workstation::new();
    let home = ws.path("home");
    fs::create_dir_all(home.join(".config")).expect("mkdir");
    std::os::unix::fs::symlink(root.join("etc/containers"), home.join(".config/containers")).expect("symlink");
    let image = format!("{ACCEL}/accel/app:1.0");
    // podman looks credentials up by the address it actually contacts, the
    // mirror or the registry; CRI-O is handed the pull secret for all of them.
    ws.login(&w.agent().mirror_host, ADMIN_USER, ADMIN_PASSWORD);
    ws.login(&w.reg.host, ADMIN_USER, ADMIN_PASSWORD);
    let podman = || {
        let mut cmd = ws.podman();
        cmd.env_remove("CONTAINERS_REGISTRIES_CONF").env("HOME", &home);
        cmd
    };

    tokio::task::block_in_place(|| run(podman().args(["pull", "--quiet", &image])));
    assert_eq!(w.agent_received().await, w.blob_bytes, "every blob came through the agent");
    let id = ws.image_id(&image);

    w.agent = None;
    run(podman().args(["rmi", &image]));
    let sent_before = w.registry_sent().await;
    tokio::task::block_in_place(|| run(podman().args(["pull", "--quiet", &image])));
    assert_eq!(w.registry_sent().await - sent_before, w.blob_bytes, "every blob came straight from the registry");
    assert_eq!(ws.image_id(&image), id);
}

/// A Docker engine of the test's own (data root, socket, `daemon.json` from the
/// node root), in a mount namespace where the node root's `/etc/hosts` stands
/// in for the machine's. Stopped on drop.
struct DockerEngine {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl DockerEngine {
    fn start(root: &Path) -> DockerEngine {
        let dir = tempfile::Builder::new().prefix("damselfly-docker-").tempdir().expect("temp dir");
        let d = dir.path().display();
        let script = format!(
            "mount --bind {root}/etc/hosts /etc/hosts && exec dockerd --config-file {root}/etc/docker/daemon.json \
             --data-root {d}/data --exec-root {d}/exec --pidfile {d}/dockerd.pid --host unix://{d}/docker.sock \
             --iptables=false --bridge=none --storage-driver vfs",
            root = root.display()
        );
        let log = fs::File::create(dir.path().join("dockerd.log")).expect("log");
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd (apt-get install docker.io)");
        let engine = DockerEngine { child, dir };
        for _ in 0..300 {
            if engine.docker().arg("version").output().is_ok_and(|o| o.status.success()) {
                return engine;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "dockerd did not answer in 30 s:\n{}",
            fs::read_to_string(engine.dir.path().join("dockerd.log")).unwrap_or_default()
        );
    }

    /// The docker CLI, talking to this engine, with its own credentials store.
    fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("--host")
            .arg(format!("unix://{}/docker.sock", self.dir.path().display()))
            .env("DOCKER_CONFIG", self.dir.path().join("client"));
        cmd
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_pulls_the_acceleration_host_through_the_agent() {
    let w = World::new().await;
    let root = tempfile::tempdir().expect("node root");
    let root = root.path();
    fs::create_dir_all(root.join("etc/docker")).expect("mkdir");
    fs::copy("/etc/hosts", root.join("etc/hosts")).expect("the machine's hosts file");
    // Docker has no mirrors for other registries: it reaches the acceleration
    // host itself, by the hosts entry, on the port its name carries, which is
    // where the agent listens.
    let port = w.agent().mirror_host.rsplit(':').next().expect("port");
    let accel = format!("p2p.damselfly.test:{port}");
    node_setup(
        root,
        &[
            "--registry",
            &w.reg.url,
            "--acceleration-host",
            &accel,
            "--mirror",
            &w.agent().mirror_host,
            "--runtime",
            "docker",
        ],
    );
    let engine = tokio::task::block_in_place(|| DockerEngine::start(root));
    let mut login = engine.docker();
    login.args(["login", "--username", ADMIN_USER, "--password-stdin", &accel]).stdin(std::process::Stdio::piped());
    let mut child = login.stdout(std::process::Stdio::null()).spawn().expect("docker login");
    {
        use std::io::Write as _;
        child.stdin.take().expect("stdin").write_all(ADMIN_PASSWORD.as_bytes()).expect("password");
    }
    assert!(child.wait().expect("docker login").success(), "docker login to {accel} through the agent");

    let image = format!("{accel}/accel/app:1.0");
    tokio::task::block_in_place(|| run(engine.docker().args(["pull", "--quiet", &image])));
    assert_eq!(w.agent_received().await, w.blob_bytes, "every blob came through the agent");
    let id = run(engine.docker().args(["image", "inspect", "--format", "{{.Id}}", &image]));
    assert_eq!(id.trim(), w.config_digest, "Docker holds the pushed image");
}
