//! The agent's container image, built without Docker by the agent itself
//! (`damselfly-agent image push`) and pushed into the registry, so that
//! clusters pull their agent from the registry they accelerate.

use std::process::Command;

use damselfly_tests::workstation::Workstation;
use damselfly_tests::{binary, run, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};

fn push(reg: &Registry) -> String {
    run(Command::new(binary("damselfly-agent"))
        .args(["image", "push", "--registry", &reg.url, "--tag", "test", "--public"])
        .env("DAMSELFLY_REGISTRY_USER", ADMIN_USER)
        .env("DAMSELFLY_REGISTRY_PASSWORD", ADMIN_PASSWORD))
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
