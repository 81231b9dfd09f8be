//! A PostgreSQL server of a test's own, for tests that stop and start the
//! database under a running registry (the shared server named by
//! `DAMSELFLY_TEST_POSTGRES_URL` must never be stopped). Its cluster lives in
//! a temporary directory that is deleted, with the server stopped, on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A private PostgreSQL server on a free loopback port.
pub struct PrivatePostgres {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub url: String,
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
}

/// The newest PostgreSQL server binaries installed (Debian keeps them off `PATH`).
fn server_binaries() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("pg_ctl").exists()).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.parent().and_then(Path::file_name).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
    });
    versions
        .pop()
        .expect("PostgreSQL server binaries in /usr/lib/postgresql/<version>/bin: install the postgresql package")
}

/// True when the tests run as root.
fn root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
}

/// Runs a PostgreSQL program as the `postgres` user when we are root (the server refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    if root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl PrivatePostgres {
    /// Makes a fresh cluster and starts it.
    pub fn start() -> PrivatePostgres {
        let bin = server_binaries();
        let dir = tempfile::Builder::new().prefix("damselfly-postgres-").tempdir().expect("temp dir");
        if root() {
            let chowned = Command::new("chown").arg("postgres:").arg(dir.path()).status();
            assert!(chowned.is_ok_and(|s| s.success()), "could not give the cluster's directory to postgres");
        }
        let data = dir.path().join("data");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"])
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = crate::free_port();
        let pg = PrivatePostgres { url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), bin, port, dir };
        pg.start_again();
        pg
    }

    /// Starts the server again on the same cluster and port, and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories='{}' -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(out.status.success(), "PostgreSQL did not start:\n{}", self.log());
    }

    /// Stops the server the way a crash would: `immediate` mode, no
    /// checkpoint, every connection cut.
    pub fn crash(&self) {
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(out.status.success(), "PostgreSQL did not stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
