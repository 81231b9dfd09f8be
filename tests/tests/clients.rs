//! The OCI clients people use against a real `damselfly-registry`: podman and
//! skopeo push to it and pull from it over plain HTTP on loopback, and get
//! back exactly the bytes they sent, on both metadata backends and across a
//! restart.
//!
//! Every client runs on a throwaway [`Workstation`]: its own image storage,
//! configuration and credentials in a temporary directory, so tests share
//! nothing with each other or with the machine's own podman, but for one
//! thing: as root, podman 4 and skopeo keep their blob-info cache in
//! /var/lib/containers/cache and offer no setting to move it. It only holds
//! hints (which registry and repository already have a blob, under which
//! compressed digest), keyed by registry address, and each test's registry
//! listens on a fresh port; a stale hint only makes a client try a HEAD or a
//! cross-repository mount that a registry must answer correctly anyway.
//!
//! Each workstation logs in to the registry as its system administrator
//! (`podman login`, into the workstation's own credentials file, which
//! skopeo reads too): the registry serves nobody anonymously.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use damselfly_tests::workstation::Workstation;
use damselfly_tests::{on_both_backends, run, sha256_digest, Backend, Registry};
use serde_json::{json, Value};

on_both_backends!(
    blocking: podman_push_then_pull_round_trips,
    podman_push_in_docker_format_round_trips,
    skopeo_inspect_reports_exactly_what_was_pushed,
    skopeo_copy_between_repositories_keeps_every_digest,
    skopeo_copy_to_an_oci_layout_returns_the_pushed_bytes,
    skopeo_list_tags_lists_each_repository_own_tags_in_order,
    multi_platform_index_round_trips_and_podman_pulls_its_own_platform,
    restart_loses_nothing_that_was_pushed,
);

fn podman_push_then_pull_round_trips(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let ws = Workstation::logged_in_to(&reg);
    let files = sample_files("web 1.0");
    let image = format!("{}/team/app/web:1.0", reg.host);

    run(ws.podman().args(["import", "--quiet"]).arg(ws.rootfs_tar("rootfs", &files)).arg(&image));
    let imported_id = ws.image_id(&image);
    let pushed_digest = ws.podman_push(&image);

    run(ws.podman().args(["rmi", &image]));
    assert_eq!(run(ws.podman().args(["images", "--all", "--quiet"])), "", "the local image is gone before the pull");

    run(ws.podman().args(["pull", "--quiet", "--tls-verify=false", &image]));
    assert_eq!(ws.image_id(&image), imported_id, "image ID (config digest) after the pull");
    assert_eq!(ws.podman_repo_digests(&image), [format!("{}/team/app/web@{pushed_digest}", reg.host)]);
    assert_podman_image_holds(&ws, &image, &files);
}

/// `docker push` sends Docker's own manifest and layer media types (schema 2);
/// podman does the same with `--format v2s2`. They must come back as sent.
fn podman_push_in_docker_format_round_trips(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let pusher = Workstation::logged_in_to(&reg);
    let files = sample_files("docker format");
    let image = format!("{}/team/app/legacy:1.0", reg.host);
    run(pusher.podman().args(["import", "--quiet"]).arg(pusher.rootfs_tar("rootfs", &files)).arg(&image));
    let imported_id = pusher.image_id(&image);
    let digest_file = pusher.path("pushed.digest");
    run(pusher
        .podman()
        .args(["push", "--quiet", "--tls-verify=false", "--format", "v2s2", "--digestfile"])
        .arg(&digest_file)
        .arg(&image));
    let pushed_digest = fs::read_to_string(&digest_file).expect("podman wrote the digest file");

    let remote = format!("docker://{image}");
    let manifest = pusher.skopeo_inspect(&["--raw"], &remote);
    assert_eq!(sha256_digest(manifest.as_bytes()), pushed_digest.trim(), "the manifest bytes podman pushed");
    let manifest: Value = serde_json::from_str(&manifest).expect("manifest is JSON");
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");

    let puller = Workstation::logged_in_to(&reg);
    run(puller.podman().args(["pull", "--quiet", "--tls-verify=false", &image]));
    assert_eq!(puller.image_id(&image), imported_id);
    assert_eq!(puller.podman_repo_digests(&image), [format!("{}/team/app/legacy@{}", reg.host, pushed_digest.trim())]);
    assert_podman_image_holds(&puller, &image, &files);
}

fn skopeo_inspect_reports_exactly_what_was_pushed(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let ws = Workstation::logged_in_to(&reg);
    let layout = OciLayout::create(ws.path("layout"));
    let image = layout.add_image(&ws, "1.0", &sample_files("web 1.0"), host_architecture());
    layout.write_index(&[("1.0", &image.descriptor())]);
    let target = format!("docker://{}/team/app/web:1.0", reg.host);

    let pushed = ws.skopeo_copy(&[], &layout.reference("1.0"), &target);
    assert_eq!(pushed, image.manifest_digest, "digest skopeo reports for the push");

    assert_eq!(ws.skopeo_inspect(&["--raw"], &target), image.manifest_json(), "manifest bytes");
    assert_eq!(ws.skopeo_inspect(&["--config", "--raw"], &target), image.config_json(), "config bytes");
    let inspected: Value = serde_json::from_str(&ws.skopeo_inspect(&[], &target)).expect("inspect output is JSON");
    assert_eq!(inspected["Name"], format!("{}/team/app/web", reg.host));
    assert_eq!(inspected["Digest"], image.manifest_digest);
    assert_eq!(inspected["RepoTags"], json!(["1.0"]));
    assert_eq!(inspected["Layers"], json!([image.layer_digest]));
    assert_eq!(inspected["Architecture"], host_architecture());
    assert_eq!(inspected["Os"], "linux");
}

fn skopeo_copy_between_repositories_keeps_every_digest(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let ws = Workstation::logged_in_to(&reg);
    let layout = OciLayout::create(ws.path("layout"));
    let image = layout.add_image(&ws, "1.0", &sample_files("web 1.0"), host_architecture());
    layout.write_index(&[("1.0", &image.descriptor())]);
    let source_repository = format!("docker://{}/team/app/web", reg.host);
    let copy_repository = format!("docker://{}/mirror/copies/web", reg.host);
    let source = format!("{source_repository}:1.0");
    let copy = format!("{copy_repository}:copied");
    ws.skopeo_copy(&[], &layout.reference("1.0"), &source);

    let copied = ws.skopeo_copy(&[], &source, &copy);

    assert_eq!(copied, image.manifest_digest);
    assert_eq!(ws.skopeo_inspect(&["--raw"], &copy), image.manifest_json(), "manifest bytes in the copy");
    assert_eq!(ws.skopeo_inspect(&["--config", "--raw"], &copy), image.config_json(), "config bytes in the copy");
    assert_eq!(ws.skopeo_inspect(&["--raw"], &source), image.manifest_json(), "the source is unchanged");
    assert_eq!(ws.skopeo_list_tags(&copy_repository), ["copied"]);
    assert_eq!(ws.skopeo_list_tags(&source_repository), ["1.0"]);
}

fn skopeo_copy_to_an_oci_layout_returns_the_pushed_bytes(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let ws = Workstation::logged_in_to(&reg);
    let layout = OciLayout::create(ws.path("layout"));
    let files = sample_files("web 1.0");
    let image = layout.add_image(&ws, "1.0", &files, host_architecture());
    layout.write_index(&[("1.0", &image.descriptor())]);
    let remote = format!("docker://{}/team/app/web:1.0", reg.host);
    ws.skopeo_copy(&[], &layout.reference("1.0"), &remote);

    let pulled = OciLayout { dir: ws.path("pulled") };
    let digest = ws.skopeo_copy(&[], &remote, &pulled.reference("pulled"));

    assert_eq!(digest, image.manifest_digest);
    assert_eq!(pulled.tagged_manifest_digests(), vec![image.manifest_digest.clone()]);
    assert_eq!(pulled.blob_digests(), layout.blob_digests(), "the same blobs, byte for byte");
    assert_files_unpacked(&pulled.blob_path(&image.layer_digest), &ws.path("unpacked"), &files);
}

fn skopeo_list_tags_lists_each_repository_own_tags_in_order(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let ws = Workstation::logged_in_to(&reg);
    let layout = OciLayout::create(ws.path("layout"));
    let image = layout.add_image(&ws, "1.0", &sample_files("web"), host_architecture());
    layout.write_index(&[("1.0", &image.descriptor())]);
    // `team/app` is a prefix of `team/app/web`: its tags must not leak into the longer name, nor back.
    let web = format!("docker://{}/team/app/web", reg.host);
    let app = format!("docker://{}/team/app", reg.host);
    for tag in ["latest", "1.9", "1.10", "1.1", "V2", "a_b", "aB", "a.b", "a-b"] {
        ws.skopeo_copy(&[], &layout.reference("1.0"), &format!("{web}:{tag}"));
    }
    ws.skopeo_copy(&[], &layout.reference("1.0"), &format!("{app}:stable"));

    // Byte-wise order, as the README promises, whatever the database's
    // collation: not push order, not version order, and not the order of a
    // natural-language collation ("a_b a-b a.b aB latest V2").
    assert_eq!(ws.skopeo_list_tags(&web), ["1.1", "1.10", "1.9", "V2", "a-b", "a.b", "aB", "a_b", "latest"]);
    assert_eq!(ws.skopeo_list_tags(&app), ["stable"]);
}

fn multi_platform_index_round_trips_and_podman_pulls_its_own_platform(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let ws = Workstation::logged_in_to(&reg);
    let layout = OciLayout::create(ws.path("layout"));
    let here = host_architecture();
    let other = if here == "arm64" { "amd64" } else { "arm64" };
    let native_files = sample_files(&format!("multi for {here}"));
    let native = layout.add_image(&ws, here, &native_files, here);
    let foreign = layout.add_image(&ws, other, &sample_files(&format!("multi for {other}")), other);
    let index = layout.add_index(&[&native, &foreign]);
    layout.write_index(&[("multi", &index)]);
    let remote = format!("docker://{}/team/app/multi:1.0", reg.host);

    let pushed = ws.skopeo_copy(&["--all"], &layout.reference("multi"), &remote);

    assert_eq!(pushed, index.digest, "digest of the index skopeo pushed");
    assert_eq!(ws.skopeo_inspect(&["--raw"], &remote), String::from_utf8(index.bytes.clone()).expect("utf-8"));
    for image in [&native, &foreign] {
        let inspected: Value =
            serde_json::from_str(&ws.skopeo_inspect(&["--override-arch", &image.architecture], &remote))
                .expect("inspect output is JSON");
        assert_eq!(inspected["Layers"], json!([image.layer_digest]), "{} layers through the index", image.architecture);
        let by_digest = format!("docker://{}/team/app/multi@{}", reg.host, image.manifest_digest);
        assert_eq!(
            ws.skopeo_inspect(&["--raw"], &by_digest),
            image.manifest_json(),
            "{} manifest by digest",
            image.architecture
        );
    }

    let pulled = OciLayout { dir: ws.path("pulled") };
    ws.skopeo_copy(&["--all"], &remote, &pulled.reference("multi"));
    assert_eq!(pulled.tagged_manifest_digests(), vec![index.digest.clone()]);
    assert_eq!(pulled.blob_digests(), layout.blob_digests(), "both platforms, byte for byte");

    let image = format!("{}/team/app/multi:1.0", reg.host);
    run(ws.podman().args(["pull", "--quiet", "--tls-verify=false", &image]));
    assert_eq!(format!("sha256:{}", ws.image_id(&image)), native.config_digest, "podman picks this machine's platform");
    // podman records both names of what it pulled: the index, and the manifest it chose from it.
    let repository = format!("{}/team/app/multi", reg.host);
    let mut expected = [format!("{repository}@{}", index.digest), format!("{repository}@{}", native.manifest_digest)];
    expected.sort();
    assert_eq!(ws.podman_repo_digests(&image), expected);
    assert_podman_image_holds(&ws, &image, &native_files);
}

fn restart_loses_nothing_that_was_pushed(backend: Backend) {
    let mut reg = Registry::start_paired(backend);
    let pusher = Workstation::logged_in_to(&reg);
    let podman_files = sample_files("pushed by podman");
    let podman_image = format!("{}/team/app/web:1.0", reg.host);
    run(pusher.podman().args(["import", "--quiet"]).arg(pusher.rootfs_tar("rootfs", &podman_files)).arg(&podman_image));
    let podman_digest = pusher.podman_push(&podman_image);
    let podman_by_digest = format!("{}/team/app/web@{podman_digest}", reg.host);

    let layout = OciLayout::create(pusher.path("layout"));
    let native = layout.add_image(&pusher, "native", &sample_files("pushed by skopeo"), host_architecture());
    let foreign = layout.add_image(&pusher, "foreign", &sample_files("the other platform"), "s390x");
    let index = layout.add_index(&[&native, &foreign]);
    layout.write_index(&[("multi", &index)]);
    let skopeo_repository = format!("docker://{}/team/tools/multi", reg.host);
    let skopeo_image = format!("{skopeo_repository}:2.0");
    pusher.skopeo_copy(&["--all"], &layout.reference("multi"), &skopeo_image);
    let podman_repository = format!("docker://{}/team/app/web", reg.host);

    // Everything a fresh machine pulls before the restart...
    let before = Workstation::logged_in_to(&reg);
    run(before.podman().args(["pull", "--quiet", "--tls-verify=false", &podman_image]));
    let podman_id = before.image_id(&podman_image);
    let podman_repo_digests = before.podman_repo_digests(&podman_image);
    let pulled_before = OciLayout { dir: before.path("pulled") };
    before.skopeo_copy(&["--all"], &skopeo_image, &pulled_before.reference("multi"));
    assert_eq!(before.skopeo_list_tags(&podman_repository), ["1.0"]);
    assert_eq!(before.skopeo_list_tags(&skopeo_repository), ["2.0"]);

    reg.restart();

    // ...another pulls the same after it, by tag and by digest.
    let after = Workstation::logged_in_to(&reg);
    run(after.podman().args(["pull", "--quiet", "--tls-verify=false", &podman_image]));
    assert_eq!(after.image_id(&podman_image), podman_id, "podman image by tag after the restart");
    assert_eq!(after.podman_repo_digests(&podman_image), podman_repo_digests);
    assert_eq!(podman_repo_digests, [podman_by_digest.as_str()]);
    assert_podman_image_holds(&after, &podman_image, &podman_files);
    run(after.podman().args(["pull", "--quiet", "--tls-verify=false", &podman_by_digest]));
    assert_eq!(after.image_id(&podman_by_digest), podman_id, "podman image by digest after the restart");

    let pulled_after = OciLayout { dir: after.path("pulled") };
    let digest = after.skopeo_copy(&["--all"], &skopeo_image, &pulled_after.reference("multi"));
    assert_eq!(digest, index.digest);
    assert_eq!(pulled_after.tagged_manifest_digests(), vec![index.digest.clone()]);
    assert_eq!(pulled_after.blob_digests(), pulled_before.blob_digests(), "the same blobs as before the restart");
    assert_eq!(pulled_after.blob_digests(), layout.blob_digests(), "the blobs that were pushed");

    assert_eq!(after.skopeo_list_tags(&podman_repository), ["1.0"]);
    assert_eq!(after.skopeo_list_tags(&skopeo_repository), ["2.0"]);
}

/// Checks that a one-layer image in local storage holds exactly `files`,
/// by saving it (`podman save`, into an OCI layout) and unpacking its layer.
/// podman compresses layers anew when it saves, so the layer's digest
/// need not be the one in the registry; its content must be the same.
fn assert_podman_image_holds(ws: &Workstation, image: &str, files: &[(String, Vec<u8>)]) {
    let saved = OciLayout { dir: ws.path("saved") };
    let _ = fs::remove_dir_all(&saved.dir);
    run(ws.podman().args(["save", "--format", "oci-dir", "--output"]).arg(&saved.dir).arg(image));
    let manifests = saved.tagged_manifest_digests();
    assert_eq!(manifests.len(), 1, "podman saved one image");
    let manifest = saved.manifest(&manifests[0]);
    assert_eq!(manifest["config"]["digest"], format!("sha256:{}", ws.image_id(image)));
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{image} has one layer");
    let layer = saved.blob_path(layers[0]["digest"].as_str().expect("layer digest"));
    let unpacked = ws.path("unpacked");
    let _ = fs::remove_dir_all(&unpacked);
    assert_files_unpacked(&layer, &unpacked, files);
}

/// A directory in the OCI image layout (`oci:<dir>:<tag>` to skopeo), built
/// here from known bytes so every digest a client reports can be checked, or
/// written by a client so its content can be read back.
struct OciLayout {
    dir: PathBuf,
}

/// An image put into a layout: what a registry must hand back.
struct BuiltImage {
    architecture: String,
    manifest: Vec<u8>,
    manifest_digest: String,
    config: Vec<u8>,
    config_digest: String,
    layer_digest: String,
}

/// Media type, digest and size of some content, as a manifest or index refers to it.
struct Descriptor {
    media_type: &'static str,
    digest: String,
    bytes: Vec<u8>,
    platform: Option<String>,
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

impl BuiltImage {
    fn manifest_json(&self) -> String {
        String::from_utf8(self.manifest.clone()).expect("utf-8")
    }

    fn config_json(&self) -> String {
        String::from_utf8(self.config.clone()).expect("utf-8")
    }

    fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: MANIFEST,
            digest: self.manifest_digest.clone(),
            bytes: self.manifest.clone(),
            platform: Some(self.architecture.clone()),
        }
    }
}

impl Descriptor {
    fn to_json(&self) -> Value {
        let mut d = json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len() });
        if let Some(arch) = &self.platform {
            d["platform"] = json!({ "architecture": arch, "os": "linux" });
        }
        d
    }
}

impl OciLayout {
    fn create(dir: PathBuf) -> OciLayout {
        fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dir");
        write(&dir.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}");
        OciLayout { dir }
    }

    /// `oci:<dir>:<tag>`, how skopeo names an image in this layout.
    fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }

    fn put_blob(&self, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        fs::write(self.blob_path(&digest), bytes).expect("write blob");
        digest
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.strip_prefix("sha256:").expect("a sha256 digest"))
    }

    /// A one-layer image whose layer is a gzipped tarball of `files`.
    fn add_image(&self, ws: &Workstation, name: &str, files: &[(String, Vec<u8>)], architecture: &str) -> BuiltImage {
        let tar = fs::read(ws.rootfs_tar(&format!("rootfs-{name}"), files)).expect("read tar");
        let layer = gzip(&tar);
        let layer_digest = self.put_blob(&layer);
        let config = serde_json::to_vec(&json!({
            "architecture": architecture,
            "os": "linux",
            "config": { "Env": [format!("IMAGE={name}")] },
            "rootfs": { "type": "layers", "diff_ids": [sha256_digest(&tar)] },
        }))
        .expect("config JSON");
        let config_digest = self.put_blob(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len() }],
        }))
        .expect("manifest JSON");
        let manifest_digest = self.put_blob(&manifest);
        BuiltImage {
            architecture: architecture.to_owned(),
            manifest,
            manifest_digest,
            config,
            config_digest,
            layer_digest,
        }
    }

    /// An image index over `images`, one entry per platform.
    fn add_index(&self, images: &[&BuiltImage]) -> Descriptor {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": images.iter().map(|i| i.descriptor().to_json()).collect::<Vec<_>>(),
        }))
        .expect("index JSON");
        let digest = self.put_blob(&index);
        Descriptor { media_type: INDEX, digest, bytes: index, platform: None }
    }

    /// Writes `index.json`, naming each `(tag, descriptor)`.
    fn write_index(&self, tagged: &[(&str, &Descriptor)]) {
        let manifests: Vec<Value> = tagged
            .iter()
            .map(|(tag, d)| {
                let mut entry = d.to_json();
                entry["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
                entry
            })
            .collect();
        let index = json!({ "schemaVersion": 2, "manifests": manifests });
        fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).expect("JSON")).expect("write index.json");
    }

    fn index_json(&self) -> Value {
        serde_json::from_slice(&fs::read(self.dir.join("index.json")).expect("read index.json"))
            .expect("index.json is JSON")
    }

    /// Digests of the manifests (or indexes) `index.json` names.
    fn tagged_manifest_digests(&self) -> Vec<String> {
        self.index_json()["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .map(|m| m["digest"].as_str().expect("digest").to_owned())
            .collect()
    }

    fn manifest(&self, digest: &str) -> Value {
        serde_json::from_slice(&fs::read(self.blob_path(digest)).expect("read manifest")).expect("manifest is JSON")
    }

    /// Every blob in the layout, checked to hold the bytes its name says.
    fn blob_digests(&self) -> Vec<String> {
        let mut digests = Vec::new();
        for entry in fs::read_dir(self.dir.join("blobs/sha256")).expect("read blobs") {
            let path = entry.expect("blob entry").path();
            let name = format!("sha256:{}", path.file_name().expect("name").to_string_lossy());
            assert_eq!(sha256_digest(&fs::read(&path).expect("read blob")), name, "content of {}", path.display());
            digests.push(name);
        }
        digests.sort();
        digests
    }
}

/// The files of a small root filesystem: text with known content, and 1 MiB
/// of incompressible bytes so that layers are more than a token size.
fn sample_files(label: &str) -> Vec<(String, Vec<u8>)> {
    vec![
        ("etc/damselfly-release".to_owned(), format!("{label}\n").into_bytes()),
        ("srv/hello.txt".to_owned(), b"hello from a damselfly\n".to_vec()),
        ("srv/data/random.bin".to_owned(), pseudo_random_bytes(1024 * 1024, label)),
    ]
}

/// Deterministic, incompressible bytes, different for each label.
fn pseudo_random_bytes(len: usize, label: &str) -> Vec<u8> {
    let seed = label.bytes().fold(0x9E37_79B9_7F4A_7C15_u64, |s, b| (s ^ u64::from(b)).wrapping_mul(0x100_0000_01B3));
    damselfly_tests::pseudo_random(len, seed)
}

/// Unpacks a layer tarball (compressed or not) and checks every file holds exactly what it was built with.
fn assert_files_unpacked(layer: &Path, into: &Path, files: &[(String, Vec<u8>)]) {
    fs::create_dir_all(into).expect("mkdir");
    run(Command::new("tar").arg("-xf").arg(layer).arg("-C").arg(into));
    for (path, content) in files {
        let unpacked = fs::read(into.join(path)).unwrap_or_else(|e| panic!("{path} is missing from the layer: {e}"));
        assert_eq!(unpacked.len(), content.len(), "size of {path}");
        assert_eq!(sha256_digest(&unpacked), sha256_digest(content), "content of {path}");
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .args(["-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().expect("gzip stdin");
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).expect("feed gzip"));
    let out = child.wait_with_output().expect("gzip output");
    writer.join().expect("gzip writer");
    assert!(out.status.success(), "gzip failed");
    out.stdout
}

/// This machine's architecture as OCI platforms name it; podman pulls this one from an index.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn write(path: &Path, content: impl AsRef<[u8]>) {
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
