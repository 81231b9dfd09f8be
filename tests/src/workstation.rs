//! A machine with podman and skopeo and nothing else on it, for the tests
//! that drive real OCI clients: its own image storage, registries,
//! credentials and temporary files in one temporary directory, configured
//! through the files and variables the containers tools read, so every
//! command looks like what a person types. Tests share nothing with each
//! other or with the machine's own podman, but for one thing: as root,
//! podman 4 and skopeo keep a blob-info cache in /var/lib/containers/cache
//! with no setting to move it; it holds only hints (which registry has which
//! blob), keyed by registry address, and a registry must answer a stale hint
//! correctly anyway.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::{run, Registry, ADMIN_PASSWORD, ADMIN_USER};

/// Longest any one client command may run, in seconds.
const COMMAND_TIMEOUT_SECS: &str = "300";

/// A throwaway client machine.
pub struct Workstation {
    dir: tempfile::TempDir,
}

impl Default for Workstation {
    fn default() -> Self {
        Self::new()
    }
}

impl Workstation {
    /// A fresh workstation with no images and no credentials.
    pub fn new() -> Workstation {
        let dir = tempfile::Builder::new().prefix("damselfly-workstation-").tempdir().expect("temp dir");
        let root = dir.path().display().to_string();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()))
        };
        // vfs copies layers instead of mounting them: slower, but it works as
        // root or not, inside any sandbox and on any filesystem, and test images are small.
        write(
            "storage.conf",
            format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{root}/storage\"\nrunroot = \"{root}/run\"\n"),
        );
        // Keep libpod's state, events and network configuration out of /run,
        // /var and /etc, and off systemd, which a CI machine may not run.
        write(
            "containers.conf",
            format!(
                "[engine]\ntmp_dir = \"{root}/libpod\"\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n\n\
                 [network]\nnetwork_config_dir = \"{root}/networks\"\n"
            ),
        );
        // Only fully qualified names: nothing may reach out to a public registry.
        write("registries.conf", "unqualified-search-registries = []\n".into());
        write("auth.json", "{\"auths\": {}}\n".into());
        fs::create_dir(dir.path().join("tmp")).expect("tmp dir");
        Workstation { dir }
    }

    /// A workstation whose user has run `podman login` to `reg` as its administrator.
    pub fn logged_in_to(reg: &Registry) -> Workstation {
        let ws = Workstation::new();
        ws.login(&reg.host, ADMIN_USER, ADMIN_PASSWORD);
        ws
    }

    /// `podman login` (its credentials serve skopeo too).
    pub fn login(&self, host: &str, user: &str, password: &str) {
        run(self.podman().args(["login", "--tls-verify=false", "-u", user, "-p", password, host]));
    }

    /// A path inside the workstation's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client command with the workstation's configuration, bounded in time.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args([COMMAND_TIMEOUT_SECS, program])
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("REGISTRY_AUTH_FILE", self.path("auth.json"))
            .env("TMPDIR", self.path("tmp"));
        cmd
    }

    /// podman.
    pub fn podman(&self) -> Command {
        self.command("podman")
    }

    /// skopeo with the trust policy switched off: the machine's
    /// /etc/containers/policy.json is not ours to rely on, and nothing is signed.
    pub fn skopeo(&self) -> Command {
        let mut cmd = self.command("skopeo");
        cmd.arg("--insecure-policy");
        cmd
    }

    /// The local image ID (the config digest's hex) of an image in this workstation's storage.
    pub fn image_id(&self, image: &str) -> String {
        run(self.podman().args(["image", "inspect", "--format", "{{.Id}}", image])).trim().to_owned()
    }

    /// The image's layers (diff IDs) as podman prints them.
    pub fn layers(&self, image: &str) -> String {
        run(self.podman().args(["image", "inspect", "--format", "{{json .RootFS.Layers}}", image])).trim().to_owned()
    }

    /// Pushes over plain HTTP and returns the manifest digest podman pushed.
    pub fn podman_push(&self, image: &str) -> String {
        let digest_file = self.path("pushed.digest");
        run(self.podman().args(["push", "--quiet", "--tls-verify=false", "--digestfile"]).arg(&digest_file).arg(image));
        fs::read_to_string(&digest_file).expect("podman wrote the digest file").trim().to_owned()
    }

    /// `<repository>@<digest>` names podman recorded for an image when it pulled it, sorted.
    pub fn podman_repo_digests(&self, image: &str) -> Vec<String> {
        let out = run(self.podman().args(["image", "inspect", "--format", "{{json .RepoDigests}}", image]));
        let mut digests: Vec<String> = serde_json::from_str(&out).expect("RepoDigests JSON");
        digests.sort();
        digests
    }

    /// Copies an image with digests kept exactly, and returns the digest of what was written.
    pub fn skopeo_copy(&self, flags: &[&str], from: &str, to: &str) -> String {
        let digest_file = self.path("copied.digest");
        run(self
            .skopeo()
            .args(["copy", "--quiet", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false"])
            .args(flags)
            .arg("--digestfile")
            .arg(&digest_file)
            .args([from, to]));
        fs::read_to_string(&digest_file).expect("skopeo wrote the digest file").trim().to_owned()
    }

    /// `skopeo inspect` over plain HTTP.
    pub fn skopeo_inspect(&self, flags: &[&str], image: &str) -> String {
        run(self.skopeo().args(["inspect", "--tls-verify=false"]).args(flags).arg(image))
    }

    /// Tags of `docker://<host>/<name>`, in the order the registry lists them.
    pub fn skopeo_list_tags(&self, repository: &str) -> Vec<String> {
        let listed: serde_json::Value =
            serde_json::from_str(&run(self.skopeo().args(["list-tags", "--tls-verify=false", repository])))
                .expect("JSON");
        listed["Tags"].as_array().expect("Tags").iter().map(|t| t.as_str().expect("tag").to_owned()).collect()
    }

    /// An uncompressed tarball of a root filesystem holding `files` (path, content).
    pub fn rootfs_tar(&self, name: &str, files: &[(String, Vec<u8>)]) -> PathBuf {
        let dir = self.path(name);
        for (path, content) in files {
            let path = dir.join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, content).expect("write file");
        }
        let tar = self.path(&format!("{name}.tar"));
        let top_level: BTreeSet<&str> = files.iter().map(|(p, _)| p.split('/').next().expect("path")).collect();
        run(Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "-C"])
            .arg(&dir)
            .arg("-cf")
            .arg(&tar)
            .args(top_level));
        tar
    }
}
