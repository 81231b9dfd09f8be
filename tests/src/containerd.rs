//! A containerd of its own for the tests that drive `ctr`: root, state and
//! sockets in a temporary directory, and no CRI plugin (nothing here runs
//! Kubernetes). Killed on drop.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running containerd.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    /// The configuration of a containerd whose root, state and sockets are all under `dir`.
    pub fn config_toml(dir: &Path) -> String {
        let root = dir.display();
        format!(
            "version = 2\nroot = \"{root}/root\"\nstate = \"{root}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n\
             [grpc]\n  address = \"{root}/containerd.sock\"\n\n\
             [ttrpc]\n  address = \"{root}/containerd.sock.ttrpc\"\n\n\
             [debug]\n  address = \"\"\n\n[metrics]\n  address = \"\"\n"
        )
    }

    /// A fresh directory for [`Containerd::start_with`].
    pub fn directory() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("damselfly-containerd-").tempdir().expect("temp dir")
    }

    /// Starts a containerd with [`Containerd::config_toml`] in a fresh directory.
    pub fn start() -> Containerd {
        let dir = Containerd::directory();
        let config = dir.path().join("config.toml");
        fs::write(&config, Containerd::config_toml(dir.path())).expect("write config.toml");
        Containerd::start_with(dir, &config)
    }

    /// Starts a containerd on `dir` reading `config` (which should place everything under `dir`).
    pub fn start_with(dir: tempfile::TempDir, config: &Path) -> Containerd {
        let log = fs::File::create(dir.path().join("containerd.log")).expect("log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("run containerd (as root)");
        let mut containerd = Containerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = containerd.child.try_wait() {
                panic!("containerd exited with {status}:\n{}", containerd.log());
            }
            if containerd.ctr().arg("version").output().is_ok_and(|o| o.status.success()) {
                return containerd;
            }
            assert!(Instant::now() < deadline, "containerd did not come up in 20 s:\n{}", containerd.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything containerd logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` talking to this containerd.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(self.dir.path().join("containerd.sock"));
        cmd
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
