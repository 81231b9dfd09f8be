//! The setup script the registry serves to a cluster owner
//! (`curl -fsSL -H "Authorization: Cluster <token>" …/p2p/v1/install.sh | sh`):
//! who may fetch it, that it is clean POSIX `sh`, and that what it would
//! apply validates against the Kubernetes schemas (with `kubernetes-validate`,
//! offline) and carries what the DaemonSet and the webhook need.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use damselfly_tests::{binary, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// A registry with a cluster `edge`, and its token.
async fn registry_with_cluster() -> (Registry, Client, String) {
    let reg = Registry::start(Backend::Sqlite);
    let http = Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let r = http
        .post(format!("{}/api/v1/tenants/default/clusters", reg.url))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .json(&json!({"name": "edge"}))
        .send()
        .await
        .expect("register cluster");
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = r.json::<Value>().await.expect("JSON")["token"].as_str().expect("token").to_owned();
    (reg, http, token)
}

async fn fetch_script(reg: &Registry, http: &Client, token: &str, query: &str) -> String {
    let r = http
        .get(format!("{}/p2p/v1/install.sh{query}", reg.url))
        .header("authorization", format!("Cluster {token}"))
        .send()
        .await
        .expect("fetch the script");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/x-shellscript; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "no-store", "the script holds the cluster token");
    r.text().await.expect("script text")
}

fn save(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// Runs `sh script args…` with `env`, nothing else inherited but PATH.
fn sh(script: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(script).args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sh")
}

fn stdout_of(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `kubernetes-validate` that scripts/test.sh installs into target/pyenv.
fn kubernetes_validate() -> PathBuf {
    if let Ok(p) = std::env::var("DAMSELFLY_KUBERNETES_VALIDATE") {
        return PathBuf::from(p);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/kubernetes-validate");
    assert!(
        path.exists(),
        "{} not found: run scripts/test.sh (it installs it), or `python3 -m venv target/pyenv && \
         target/pyenv/bin/pip install kubernetes-validate`, or set DAMSELFLY_KUBERNETES_VALIDATE",
        path.display()
    );
    path
}

/// Validates a YAML stream strictly (unknown fields are errors) against
/// Kubernetes 1.33's schemas; returns `kind/name` of every object, in order.
fn validate(yaml: &str) -> Vec<String> {
    let mut child = Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", "1.33.0", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubernetes-validate");
    child.stdin.take().expect("stdin").write_all(yaml.as_bytes()).expect("feed YAML");
    let out = child.wait_with_output().expect("kubernetes-validate output");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubernetes-validate refused:\n{report}\n{yaml}");
    report
        .lines()
        .filter_map(|l| l.split(" passed for resource ").nth(1))
        .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

/// The value of the first `key:` in a YAML stream, unquoted.
fn yaml_value(yaml: &str, key: &str) -> String {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no `{key}:` in the manifests"))
        .trim_matches('"')
        .to_owned()
}

fn shellcheck(script: &Path) {
    let out = Command::new("shellcheck")
        .args(["--shell=sh", "--severity=style"])
        .arg(script)
        .output()
        .expect("run shellcheck (apt-get install shellcheck)");
    assert!(
        out.status.success(),
        "shellcheck found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_script_is_served_only_for_a_cluster_token_sent_in_the_authorization_header() {
    let (reg, http, token) = registry_with_cluster().await;
    let url = format!("{}/p2p/v1/install.sh", reg.url);
    let none = http.get(&url).send().await.expect("request");
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    let body = none.text().await.expect("body");
    assert!(body.contains("Authorization: Cluster <token>"), "{body}");
    let wrong = http.get(&url).header("authorization", "Cluster dfc_not-a-token").send().await.expect("request");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // A token in the URL is not how it is sent, and it is not taken.
    let in_url = http.get(format!("{url}?token={token}")).send().await.expect("request");
    assert_eq!(in_url.status(), StatusCode::UNAUTHORIZED);
    let bad_image = http
        .get(format!("{url}?agent_image=evil;rm%20-rf"))
        .header("authorization", format!("Cluster {token}"))
        .send()
        .await
        .expect("request");
    assert_eq!(bad_image.status(), StatusCode::BAD_REQUEST);
    assert!(bad_image.text().await.expect("body").contains("is not an image reference"));
    let script = fetch_script(&reg, &http, &token, "").await;
    assert!(script.starts_with("#!/bin/sh\n# Damselfly setup for cluster default/edge, generated by http://127.0.0.1:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scripts_pass_shellcheck() {
    let (reg, http, token) = registry_with_cluster().await;
    let dir = tempfile::tempdir().expect("dir");
    for (name, query) in [
        ("default.sh", ""),
        ("chosen.sh", "?acceleration_host=p2p.example.com:65001&agent_image=registry.example.com/ops/agent@sha256:0123&cache_max_bytes=1000"),
    ] {
        let script = fetch_script(&reg, &http, &token, query).await;
        tokio::task::block_in_place(|| shellcheck(&save(dir.path(), name, &script)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dry_run_prints_objects_that_validate_against_the_kubernetes_schemas() {
    let (reg, http, token) = registry_with_cluster().await;
    let query =
        "?acceleration_host=p2p.registry.example.com:65001&agent_image=registry.example.com/damselfly/agent:1.0";
    let script = fetch_script(&reg, &http, &token, query).await;
    let dir = tempfile::tempdir().expect("dir");
    let path = save(dir.path(), "setup.sh", &script);
    let yaml = stdout_of(&sh(&path, &["--dry-run", "--namespaces", "team-a,team-b"], &[]));
    let objects = tokio::task::block_in_place(|| validate(&yaml));
    assert_eq!(
        objects,
        [
            "namespace/damselfly-system",
            "secret/damselfly-cluster",
            "configmap/damselfly-agent",
            "serviceaccount/damselfly-agent",
            "serviceaccount/damselfly-webhook",
            "clusterrole/damselfly-webhook",
            "clusterrolebinding/damselfly-webhook",
            "daemonset/damselfly-agent",
            "secret/damselfly-webhook-tls",
            "deployment/damselfly-webhook",
            "service/damselfly-webhook",
            "mutatingwebhookconfiguration/damselfly-image-rewrite",
        ]
    );
    assert_eq!(yaml_value(&yaml, "cluster-token"), token);
    for needed in [
        "hostNetwork: true",
        "containerPort: 65001\n              hostPort: 65001",
        "containerPort: 65002\n              hostPort: 65002",
        "containerPort: 65003\n              hostPort: 65003",
        "tolerations:\n        - operator: Exists",
        "path: /var/lib/damselfly/cache\n            type: DirectoryOrCreate",
        "cache_max_bytes = 21474836480",
        "args: [\"node-setup\", \"--root\", \"/host\", \"--registry\", \"http://127.0.0.1:",
        "\"--acceleration-host\", \"p2p.registry.example.com:65001\"",
        "image: \"registry.example.com/damselfly/agent:1.0\"",
        "failurePolicy: Ignore",
        "matchLabels:\n        damselfly.io/acceleration: p2p",
        "# kubectl label namespace team-a damselfly.io/acceleration=p2p --overwrite",
        "# kubectl label namespace team-b damselfly.io/acceleration=p2p --overwrite",
    ] {
        assert!(yaml.contains(needed), "the manifests lack {needed:?}:\n{yaml}");
    }
    for probe in ["readinessProbe:", "livenessProbe:", "requests:", "limits:"] {
        assert_eq!(yaml.matches(probe).count(), if probe.ends_with("Probe:") { 2 } else { 3 }, "{probe}");
    }

    // The webhook's certificate, made by the script, is for its Service and signed by the caBundle's CA.
    let decode = |b64: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")
    };
    let ca = decode(&yaml_value(&yaml, "ca.crt"));
    assert_eq!(yaml_value(&yaml, "caBundle"), yaml_value(&yaml, "ca.crt"));
    std::fs::write(dir.path().join("ca.pem"), ca).expect("write");
    std::fs::write(dir.path().join("tls.pem"), decode(&yaml_value(&yaml, "tls.crt"))).expect("write");
    let verified = Command::new("openssl")
        .args([
            "verify",
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "damselfly-webhook.damselfly-system.svc",
            "-CAfile",
        ])
        .arg(dir.path().join("ca.pem"))
        .arg(dir.path().join("tls.pem"))
        .output()
        .expect("openssl verify");
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let key = String::from_utf8(decode(&yaml_value(&yaml, "tls.key"))).expect("PEM");
    assert!(key.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{key}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_uninstall_dry_run_prints_the_daemonset_that_restores_every_node() {
    let (reg, http, token) = registry_with_cluster().await;
    let script = fetch_script(&reg, &http, &token, "").await;
    let dir = tempfile::tempdir().expect("dir");
    let yaml = stdout_of(&sh(&save(dir.path(), "setup.sh", &script), &["--uninstall", "--dry-run"], &[]));
    assert_eq!(tokio::task::block_in_place(|| validate(&yaml)), ["daemonset/damselfly-node-cleanup"]);
    assert!(yaml.contains("args: [\"node-setup\", \"--uninstall\", \"--root\", \"/host\"]"), "{yaml}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_kubectl_or_a_reachable_cluster_the_script_says_what_to_do() {
    let (reg, http, token) = registry_with_cluster().await;
    let script = fetch_script(&reg, &http, &token, "").await;
    let dir = tempfile::tempdir().expect("dir");
    let path = save(dir.path(), "setup.sh", &script);

    // A PATH with the basic tools but no kubectl.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    for tool in ["tr", "cat", "rm", "mktemp"] {
        let found = String::from_utf8(
            Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().expect("which").stdout,
        )
        .expect("path");
        std::os::unix::fs::symlink(found.trim(), bin.join(tool)).expect("symlink");
    }
    let out = Command::new("/bin/sh").arg(&path).env_clear().env("PATH", &bin).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("damselfly setup: kubectl is not installed: install it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // kubectl, pointed at a cluster that is not there.
    let kubeconfig = save(
        dir.path(),
        "kubeconfig",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:9\n\
         contexts:\n- name: gone\n  context:\n    cluster: gone\n    user: nobody\ncurrent-context: gone\n\
         users:\n- name: nobody\n  user: {}\n",
    );
    let out = sh(
        &path,
        &[],
        &[("KUBECONFIG", &kubeconfig.display().to_string()), ("HOME", &dir.path().display().to_string())],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kubectl cannot reach the cluster (context: gone): make 'kubectl get nodes' work"),
        "{stderr}"
    );

    let out = sh(&path, &["--namespaces", "Team_A"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'Team_A' is not a Kubernetes namespace name"));
    let out = sh(&path, &["--frobnicate"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option '--frobnicate': see --help"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_dry_run_shows_the_unit_the_config_and_the_runtime_files() {
    let (reg, http, token) = registry_with_cluster().await;
    let script = fetch_script(&reg, &http, &token, "?acceleration_host=p2p.registry.example.com:65001").await;
    let dir = tempfile::tempdir().expect("dir");
    let path = save(dir.path(), "setup.sh", &script);
    let agent = binary("damselfly-agent").display().to_string();
    // node-setup reads the runtimes' files under DAMSELFLY_AGENT_NODE_ROOT: a node with containerd.
    let root = dir.path().join("node");
    std::fs::create_dir_all(root.join("etc/containerd")).expect("mkdir");
    let root = root.display().to_string();
    let out = stdout_of(&sh(
        &path,
        &["--node", "--dry-run"],
        &[("DAMSELFLY_AGENT_BIN", &agent), ("DAMSELFLY_AGENT_NODE_ROOT", &root)],
    ));
    assert!(!out.contains(&token), "the token is not printed");
    assert!(out.contains("cluster_token = \"(hidden)\""), "{out}");
    assert!(out.contains(&format!("ExecStart={agent} run --config /etc/damselfly/agent.toml")), "{out}");
    assert!(out.contains("--- /etc/containerd/certs.d/p2p.registry.example.com:65001/hosts.toml\n"), "{out}");
    assert!(out.contains("note: containerd: config_path was added"), "{out}");
    assert_eq!(std::fs::read_dir(&root).expect("root").count(), 1, "a dry run writes nothing");
    let out = sh(&path, &["--node", "--dry-run"], &[("DAMSELFLY_AGENT_BIN", "/nonexistent/damselfly-agent")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the damselfly-agent binary is not on this host"));
}

// ----- the registry's answer to the webhook -----

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_reads_the_p2p_switch_of_its_tenant_s_and_public_namespaces_only() {
    let (reg, http, token) = registry_with_cluster().await;
    let admin = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{}{path}", reg.url)).basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD)).json(&body)
    };
    for (tenant, ns, public) in [("default", "team-a", false), ("other", "secret", false), ("other", "shared", true)] {
        if tenant != "default" {
            admin(reqwest::Method::POST, "/api/v1/tenants", json!({"name": tenant})).send().await.expect("tenant");
        }
        let r = admin(
            reqwest::Method::POST,
            &format!("/api/v1/tenants/{tenant}/namespaces"),
            json!({"name": ns, "public": public}),
        )
        .send()
        .await
        .expect("namespace");
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap_or_default());
    }
    let ask = |ns: &str, tok: &str| {
        http.get(format!("{}/p2p/v1/namespaces/{ns}/acceleration", reg.url))
            .header("authorization", format!("Cluster {tok}"))
            .send()
    };
    let r = ask("team-a", &token).await.expect("ask");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("JSON"), json!({"namespace": "team-a", "p2p_enabled": false}));
    for ns in ["team-a", "shared"] {
        let r = admin(reqwest::Method::PATCH, &format!("/api/v1/namespaces/{ns}"), json!({"p2p_enabled": true}))
            .send()
            .await
            .expect("switch on");
        assert_eq!(r.status(), StatusCode::OK);
    }
    // The registry caches namespaces for two seconds.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = ask("team-a", &token).await.expect("ask");
    assert_eq!(r.json::<Value>().await.expect("JSON"), json!({"namespace": "team-a", "p2p_enabled": true}));
    let r = ask("shared", &token).await.expect("ask");
    assert_eq!(r.json::<Value>().await.expect("JSON"), json!({"namespace": "shared", "p2p_enabled": true}));
    for hidden in ["secret", "nowhere"] {
        let r = ask(hidden, &token).await.expect("ask");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{hidden}");
        let body = r.json::<Value>().await.expect("JSON");
        assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN");
        assert_eq!(body["errors"][0]["message"], format!("no namespace {hidden} that cluster default/edge may see"));
    }
    assert_eq!(ask("team-a", "dfc_wrong").await.expect("ask").status(), StatusCode::UNAUTHORIZED);
}

// ----- the webhook process -----

/// A running `damselfly-agent webhook`, killed on drop.
struct WebhookProcess {
    child: std::process::Child,
    host: String,
    ca: PathBuf,
    log: PathBuf,
}

impl WebhookProcess {
    /// `curl` to the webhook as the API server calls it: by its Service name, trusting the setup's CA.
    fn curl(&self, args: &[&str], path: &str) -> Output {
        let service = "damselfly-webhook.damselfly-system.svc";
        let port = self.host.rsplit_once(':').expect("port").1;
        Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&self.ca)
            .args(["--resolve", &format!("{service}:{port}:127.0.0.1")])
            .args(args)
            .arg(format!("https://{service}:{port}{path}"))
            .output()
            .expect("curl")
    }
}

impl Drop for WebhookProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the webhook with the TLS material a setup script's dry run made,
/// against a Kubernetes API address where nothing listens.
fn start_webhook(dir: &Path, yaml: &str, reg: &Registry, token: &str) -> WebhookProcess {
    use base64::Engine as _;
    let decode = |key: &str| base64::engine::general_purpose::STANDARD.decode(yaml_value(yaml, key)).expect("base64");
    let account = dir.join("serviceaccount");
    std::fs::create_dir_all(&account).expect("mkdir");
    std::fs::write(dir.join("tls.crt"), decode("tls.crt")).expect("write");
    std::fs::write(dir.join("tls.key"), decode("tls.key")).expect("write");
    std::fs::write(dir.join("ca.crt"), decode("ca.crt")).expect("write");
    std::fs::write(account.join("ca.crt"), decode("ca.crt")).expect("write");
    std::fs::write(account.join("token"), "not-a-real-token").expect("write");
    let host = format!("127.0.0.1:{}", damselfly_tests::free_port());
    let log = dir.join("webhook.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let child = Command::new(binary("damselfly-agent"))
        .args(["webhook", "--listen", &host, "--registry", &reg.url, "--acceleration-host", "p2p.damselfly.test:65001"])
        .args(["--kubernetes-api", &format!("https://127.0.0.1:{}", damselfly_tests::free_port())])
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .arg("--service-account")
        .arg(&account)
        .env_clear()
        .env("DAMSELFLY_AGENT_CLUSTER_TOKEN", token)
        .stdout(Stdio::from(log_file.try_clone().expect("dup")))
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("spawn the webhook");
    let mut webhook = WebhookProcess { child, host, ca: dir.join("ca.crt"), log };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = webhook.child.try_wait() {
            panic!("the webhook exited with {status}:\n{}", std::fs::read_to_string(&webhook.log).unwrap_or_default());
        }
        let out = webhook.curl(&[], "/healthz");
        if out.status.success() && out.stdout == b"ok\n" {
            return webhook;
        }
        assert!(std::time::Instant::now() < deadline, "the webhook did not answer over TLS in 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_serves_tls_with_the_setup_s_certificate_and_never_blocks_a_pod() {
    let (reg, http, token) = registry_with_cluster().await;
    let script = fetch_script(&reg, &http, &token, "").await;
    let dir = tempfile::tempdir().expect("dir");
    let yaml = stdout_of(&sh(&save(dir.path(), "setup.sh", &script), &["--dry-run"], &[]));
    let webhook = tokio::task::block_in_place(|| start_webhook(dir.path(), &yaml, &reg, &token));

    // A real Pod review, with images from this registry: the Kubernetes API
    // cannot be reached to read the namespace's labels, so the Pod is admitted
    // unchanged, with a warning the person creating it sees.
    let review = include_str!("../../installer/src/webhook/pod-review.json").replace("registry.example.com", &reg.host);
    let review_file = save(dir.path(), "review.json", &review);
    let post = |file: &Path| {
        let data = format!("@{}", file.display());
        webhook.curl(&["-X", "POST", "-H", "content-type: application/json", "--data-binary", &data], "/mutate")
    };
    let out = tokio::task::block_in_place(|| post(&review_file));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("an AdmissionReview");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["response"]["uid"], "7f0b2891-916f-4ed6-b7cd-27bff1815a8c");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"].get("patch"), None);
    let warning = answer["response"]["warnings"][0].as_str().expect("a warning");
    assert!(warning.starts_with("damselfly: images left as they are: cannot reach the Kubernetes API"), "{warning}");

    // A Pod with no image from the registry needs nobody: allowed, unchanged, silent.
    let elsewhere = save(dir.path(), "elsewhere.json", &review.replace(&reg.host, "quay.io"));
    let answer: Value = serde_json::from_slice(&tokio::task::block_in_place(|| post(&elsewhere)).stdout).expect("JSON");
    assert_eq!(answer["response"], json!({"uid": "7f0b2891-916f-4ed6-b7cd-27bff1815a8c", "allowed": true}), "{answer}");

    let not_a_review = save(dir.path(), "bad.json", "{\"kind\": \"Pod\"}");
    let out = tokio::task::block_in_place(|| {
        let data = format!("@{}", not_a_review.display());
        webhook.curl(&["-w", "%{http_code}", "-X", "POST", "--data-binary", &data], "/mutate")
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout), "expected an admission.k8s.io/v1 AdmissionReview\n400");
}
