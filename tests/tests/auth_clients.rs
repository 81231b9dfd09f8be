//! The OCI clients (podman, skopeo, ctr) logging in to a real
//! `damselfly-registry` as a robot account, pushing and pulling what its
//! scopes allow and refused the rest, on both metadata backends.
//!
//! Tenants, namespaces, users, roles and robots are made through the
//! management API (`/api/v1/…`) as the system administrator `admin`; the
//! HTTP client and those calls are `damselfly_tests::http`'s.
//!
//! Each scenario is an `async fn(Backend)`; `on_both_backends!` turns it into
//! `<scenario>::sqlite` and `<scenario>::postgres`.

use std::fs;
use std::process::Command;

use damselfly_tests::containerd::Containerd;
use damselfly_tests::http::{
    audit, create_namespace, create_robot, create_tenant, management_api_is_up, summary, Cred, Http,
};
use damselfly_tests::image::OCI_MANIFEST;
use damselfly_tests::workstation::Workstation;
use damselfly_tests::{on_both_backends, run, Backend, Registry};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(podman_skopeo_and_ctr_push_and_pull_as_a_robot_account,);

/// Runs a command that must fail; returns its stderr, lowercased.
fn run_failing(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(!out.status.success(), "{cmd:?} succeeded but must fail:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).to_lowercase()
}

/// The `Docker-Content-Digest` of a manifest, as the admin sees it.
async fn manifest_digest(http: &Http, repo: &str, reference: &str) -> String {
    let reply = http
        .send(
            http.request(&Cred::admin(), Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
                .header("accept", format!("{OCI_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json")),
        )
        .await
        .expect(200);
    reply.header("docker-content-digest").expect("Docker-Content-Digest").to_owned()
}

async fn podman_skopeo_and_ctr_push_and_pull_as_a_robot_account(backend: Backend) {
    // PostgreSQL with S3, as the clients suite runs: ctr pulls from the bucket too.
    let reg = Registry::start_paired(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "apps", false).await;
    // Admin on the namespace: it creates the repositories it pushes to.
    let Cred::Basic(login, secret) =
        create_robot(&http, "acme", "builder", json!([{ "namespace": "apps", "role": "admin" }])).await
    else {
        unreachable!()
    };
    let Cred::Basic(reader, reader_secret) =
        create_robot(&http, "acme", "reader", json!([{ "namespace": "apps", "role": "viewer" }])).await
    else {
        unreachable!()
    };
    let creds = format!("{login}:{secret}");
    let ws = Workstation::new();
    let web = format!("{}/apps/web:1.0", reg.host);

    // podman: login, push, pull back.
    run(ws.podman().args(["login", "--tls-verify=false", "-u", &login, "-p", &secret, &reg.host]));
    run(ws
        .podman()
        .args(["import", "--quiet"])
        .arg(ws.rootfs_tar("rootfs", &[("srv/hello.txt".to_owned(), b"built by the robot\n".to_vec())]))
        .arg(&web));
    let id = run(ws.podman().args(["image", "inspect", "--format", "{{.Id}}", &web])).trim().to_owned();
    let digest_file = ws.path("pushed.digest");
    run(ws.podman().args(["push", "--quiet", "--tls-verify=false", "--digestfile"]).arg(&digest_file).arg(&web));
    let pushed = fs::read_to_string(&digest_file).expect("digest file").trim().to_owned();
    assert_eq!(manifest_digest(&http, "apps/web", "1.0").await, pushed);
    run(ws.podman().args(["rmi", &web]));
    run(ws.podman().args(["pull", "--quiet", "--tls-verify=false", &web]));
    assert_eq!(run(ws.podman().args(["image", "inspect", "--format", "{{.Id}}", &web])).trim(), id);
    run(ws.podman().args(["logout", &reg.host]));
    let refused = run_failing(ws.podman().args(["pull", "--quiet", "--tls-verify=false", &web]));
    assert!(refused.contains("unauthorized") || refused.contains("authentication required"), "{refused}");

    // skopeo with credentials on the command line: copy within the registry, inspect, copy out.
    let source = format!("docker://{web}");
    let copy = format!("docker://{}/apps/copy:1.0", reg.host);
    let skopeo_digest = ws.path("skopeo.digest");
    run(ws
        .skopeo()
        .args(["copy", "--quiet", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .args(["--src-creds", &creds, "--dest-creds", &creds, "--digestfile"])
        .arg(&skopeo_digest)
        .args([&source, &copy]));
    assert_eq!(fs::read_to_string(&skopeo_digest).expect("digest file").trim(), pushed);
    let inspected: Value =
        serde_json::from_str(&run(ws.skopeo().args(["inspect", "--tls-verify=false", "--creds", &creds, &copy])))
            .expect("JSON");
    assert_eq!(inspected["Digest"], pushed.as_str());
    let reader_creds = format!("{reader}:{reader_secret}");
    let layout = format!("oci:{}:pulled", ws.path("layout").display());
    run(ws.skopeo().args(["copy", "--quiet", "--src-tls-verify=false", "--src-creds", &reader_creds, &copy, &layout]));
    let refused = run_failing(
        ws.skopeo()
            .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", &reader_creds, &layout])
            .arg(format!("docker://{}/apps/by-reader:1.0", reg.host)),
    );
    assert!(refused.contains("denied") || refused.contains("unauthorized"), "a viewer robot cannot push: {refused}");

    // ctr, through its own containerd.
    let containerd = Containerd::start();
    let ctr_ref = format!("{}/apps/web:1.0", reg.host);
    let refused =
        run_failing(containerd.ctr().args(["images", "pull", "--plain-http", "--snapshotter", "native", &ctr_ref]));
    assert!(refused.contains("pull access denied"), "no credentials: {refused}");
    run(containerd.ctr().args([
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        "--user",
        &creds,
        &ctr_ref,
    ]));
    let listed = run(containerd.ctr().args(["images", "ls", "--quiet"]));
    assert_eq!(listed.lines().collect::<Vec<_>>(), [ctr_ref.as_str()]);
    let retagged = format!("{}/apps/from-ctr:1.0", reg.host);
    run(containerd.ctr().args(["images", "tag", &ctr_ref, &retagged]));
    run(containerd.ctr().args(["images", "push", "--plain-http", "--user", &creds, &retagged]));
    assert_eq!(manifest_digest(&http, "apps/from-ctr", "1.0").await, pushed, "ctr pushed the same manifest");
    // A viewer robot pushes nothing. (Pushing what is already there under the
    // same tag is no push at all: ctr finds it present and writes nothing.)
    let by_reader = format!("{}/apps/from-ctr:by-reader", reg.host);
    run(containerd.ctr().args(["images", "tag", &ctr_ref, &by_reader]));
    // The registry answers the manifest PUT with 401 insufficient_scope and
    // closes the connection before reading the body; ctr then reports either
    // that or "read/write on closed pipe", so only the outcome is checked.
    run_failing(containerd.ctr().args(["images", "push", "--plain-http", "--user", &reader_creds, &by_reader]));
    let tags = http.get(&Cred::admin(), "/v2/apps/from-ctr/tags/list").await.expect(200).json();
    assert_eq!(tags["tags"], json!(["1.0"]));
    let pushes = summary(&audit(&http, &[("action", "manifest.push")]).await);
    assert_eq!(
        pushes.iter().map(|(actor, _, object, ..)| (actor.as_str(), object.as_str())).collect::<Vec<_>>(),
        [(login.as_str(), "apps/web:1.0"), (login.as_str(), "apps/copy:1.0"), (login.as_str(), "apps/from-ctr:1.0"),]
    );
}
