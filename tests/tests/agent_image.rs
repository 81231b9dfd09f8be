//! The agent's container image, built without Docker by the agent itself
//! (`damselfly-agent image push`) and pushed into the registry, so that
//! clusters pull their agent from the registry they accelerate.

use std::process::Command;

use damselfly_tests::workstation::Workstation;
use damselfly_tests::{binary, run, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};

fn push(reg: &Registry) -> String {
    run(Command::new(binary("damselfly-agent"))
        .args(["image", "push", "--registry", &reg.url, "--tag", "test", "--public"])
        .env("DAMSELFLY_AGENT_USERNAME", ADMIN_USER)
        .env("DAMSELFLY_AGENT_PASSWORD", ADMIN_PASSWORD))
}

#[test]
fn the_agent_image_is_pushed_into_the_registry_pulled_anonymously_and_runs_the_agent() {
    let reg = Registry::start(Backend::Sqlite);
    let pushed = push(&reg);
    let prefix = format!("pushed {}/damselfly/agent:test@sha256:", reg.host);
    assert!(pushed.starts_with(&prefix), "{pushed}");
    let digest = pushed[prefix.len() - "sha256:".len()..].split_whitespace().next().expect("digest").to_owned();
    // The same executable makes the same image, byte for byte.
    assert_eq!(push(&reg), pushed);

    // Nodes pull it without credentials: the namespace was made public.
    let ws = Workstation::new();
    let image = format!("{}/damselfly/agent:test", reg.host);
    run(ws.podman().args(["pull", "--quiet", "--tls-verify=false", &image]));
    assert_eq!(ws.podman_repo_digests(&image), [format!("{}/damselfly/agent@{digest}", reg.host)]);
    let inspected: serde_json::Value =
        serde_json::from_str(&ws.skopeo_inspect(&["--config"], &format!("docker://{image}"))).expect("config JSON");
    assert_eq!(inspected["config"]["Entrypoint"], serde_json::json!(["/damselfly-agent"]));
    assert_eq!(inspected["os"], "linux");

    // The layer holds the agent and exactly what it loads: unpacked alone, it
    // runs with nothing else around it. (A chroot rather than `podman run`:
    // this machine's sandbox lets crun set neither rlimits nor cgroups.)
    let copy = ws.path("copy");
    run(ws
        .skopeo()
        .args(["copy", "--quiet", "--src-tls-verify=false", &format!("docker://{image}")])
        .arg(format!("dir:{}", copy.display())));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("manifest.json")).expect("manifest")).expect("JSON");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    let layer = copy.join(layers[0]["digest"].as_str().expect("digest").trim_start_matches("sha256:"));
    let rootfs = ws.path("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir");
    run(Command::new("tar").arg("-xf").arg(&layer).arg("-C").arg(&rootfs));
    let out = run(Command::new("chroot").arg(&rootfs).args(["/damselfly-agent", "--version"]));
    assert_eq!(out.trim(), format!("damselfly-agent {}", env!("CARGO_PKG_VERSION")));
    let help = run(Command::new("chroot").arg(&rootfs).args(["/damselfly-agent", "node-setup", "--help"]));
    assert!(help.contains("--acceleration-host"), "{help}");
}

/// The static agent (scripts/build-static-agent.sh, which scripts/test.sh runs).
fn static_agent() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("DAMSELFLY_AGENT_STATIC_BIN") {
        return p.into();
    }
    let dynamic = binary("damselfly-agent");
    let target = dynamic.parent().and_then(std::path::Path::parent).expect("target/");
    let path = target.join("static").join("damselfly-agent");
    assert!(path.exists(), "{} not found: run scripts/build-static-agent.sh first", path.display());
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_static_agent_image_holds_one_file_and_finds_its_registry_by_name_without_any_library() {
    let agent = static_agent();
    let ldd = Command::new("ldd").arg(&agent).output().expect("run ldd");
    let said = String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(said.contains("not a dynamic executable") || said.contains("statically linked"), "ldd: {said}");

    let reg = Registry::start(Backend::Sqlite);
    let pushed = run(Command::new(&agent)
        .args(["image", "push", "--registry", &reg.url, "--tag", "static", "--public"])
        .env("DAMSELFLY_AGENT_USERNAME", ADMIN_USER)
        .env("DAMSELFLY_AGENT_PASSWORD", ADMIN_PASSWORD));
    assert!(pushed.starts_with(&format!("pushed {}/damselfly/agent:static@sha256:", reg.host)), "{pushed}");

    let ws = Workstation::new();
    let copy = ws.path("copy");
    run(ws
        .skopeo()
        .args(["copy", "--quiet", "--src-tls-verify=false", &format!("docker://{}/damselfly/agent:static", reg.host)])
        .arg(format!("dir:{}", copy.display())));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("manifest.json")).expect("manifest")).expect("JSON");
    let layer = copy.join(manifest["layers"][0]["digest"].as_str().expect("digest").trim_start_matches("sha256:"));
    let listing = run(Command::new("tar").arg("-tf").arg(&layer));
    assert_eq!(listing.lines().collect::<Vec<_>>(), ["damselfly-agent"], "the layer holds the agent alone");

    // Unpacked alone, with only the /etc and /dev files a container runtime provides, the agent reaches the
    // registry by a name from /etc/hosts and registers: no libc, no NSS module, nothing else.
    let rootfs = ws.path("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
    run(Command::new("tar").arg("-xf").arg(&layer).arg("-C").arg(&rootfs));
    // Both families, as there is no DNS server here to say that the name has no AAAA record.
    let hosts = "127.0.0.1 localhost registry.damselfly.test\n::1 localhost registry.damselfly.test\n";
    std::fs::write(rootfs.join("etc/hosts"), hosts).expect("hosts");
    std::fs::write(rootfs.join("etc/resolv.conf"), "nameserver 127.0.0.1\n").expect("resolv.conf");
    std::fs::create_dir_all(rootfs.join("dev")).expect("mkdir");
    for (name, minor) in [("null", "3"), ("random", "8"), ("urandom", "9")] {
        run(Command::new("mknod").arg(rootfs.join("dev").join(name)).args(["c", "1", minor]));
    }
    let token = reg.register_cluster("static").await;
    let port = reg.url.rsplit(':').next().expect("port").to_owned();
    let free = || damselfly_tests::free_port().to_string();
    let mut child = Command::new("chroot")
        .arg(&rootfs)
        .args(["/damselfly-agent", "run", "--registry", &format!("http://registry.damselfly.test:{port}")])
        .args(["--listen", &format!("127.0.0.1:{}", free()), "--peer-listen", &format!("127.0.0.1:{}", free())])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free()), "--cache-dir", "/cache"])
        .args(["--node-name", "static-node"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DAMSELFLY_AGENT_CLUSTER_TOKEN", &token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the static agent in its root");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let registered = loop {
        let (_, clusters) =
            reg.admin(reqwest::Method::GET, "/api/v1/tenants/default/clusters", serde_json::Value::Null).await;
        if clusters[0]["agents"][0]["node"] == "static-node" {
            break true;
        }
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            break false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let _ = child.kill();
    let out = child.wait_with_output().expect("agent output");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(registered, "the static agent did not register:\n{said}");
}
