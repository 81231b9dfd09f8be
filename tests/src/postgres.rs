//! A throwaway PostgreSQL server of a test's own, as `scripts/test.sh`
//! starts one: for a test whose registry runs where the shared server is
//! out of reach (inside a network namespace), and for tests that stop and
//! start the database under a running registry (the shared server named by
//! `DAMSELFLY_TEST_POSTGRES_URL` must never be stopped). Durability is off;
//! the server is stopped and its directory removed on drop.
//!
//! PostgreSQL refuses to run as root: as root, the cluster belongs to the
//! `postgres` user the Debian package creates.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A running server on 127.0.0.1 (of its namespace).
pub struct PrivatePostgres {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub url: String,
    netns: Option<String>,
    pg_ctl: PathBuf,
    data: PathBuf,
    /// The `-o` options the server is started with (its port among them).
    options: String,
    _tmp: tempfile::TempDir,
}

/// The newest server binaries installed by Debian's packages.
fn server_binaries() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).filter(|b| b.join("pg_ctl").exists()).collect())
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    found.pop().expect("no PostgreSQL server under /usr/lib/postgresql: install the postgresql package")
}

impl PrivatePostgres {
    /// Starts a fresh server on a free loopback port of this namespace.
    pub fn start() -> PrivatePostgres {
        Self::start_in(None, crate::free_port())
    }

    /// Starts a fresh server on 127.0.0.1:`port`, inside network namespace `netns` if given.
    pub fn start_in(netns: Option<&str>, port: u16) -> PrivatePostgres {
        let bin = server_binaries();
        let tmp = tempfile::Builder::new().prefix("damselfly-postgres-").tempdir().expect("temp dir");
        let dir = tmp.path().to_owned();
        let status = Command::new("chown").args(["postgres:", &dir.display().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "chown postgres {}: run the test as root", dir.display());
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{}' -c max_connections=200 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir.display()
        );
        let server = PrivatePostgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            netns: netns.map(str::to_owned),
            pg_ctl: bin.join("pg_ctl"),
            data: dir.join("data"),
            options,
            _tmp: tmp,
        };
        let data = server.data.display().to_string();
        server.as_postgres(
            &bin.join("initdb"),
            &["-D", &data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"],
        );
        server.start_again();
        server
    }

    /// Starts the server again on the same cluster and port, and waits until it accepts connections.
    pub fn start_again(&self) {
        let data = self.data.display().to_string();
        let log = self.log_path().display().to_string();
        self.as_postgres(&self.pg_ctl, &["-D", &data, "-l", &log, "-w", "-t", "60", "-o", &self.options, "start"]);
    }

    /// Stops the server the way a crash would: `immediate` mode, no
    /// checkpoint, every connection cut.
    pub fn crash(&self) {
        let data = self.data.display().to_string();
        self.as_postgres(&self.pg_ctl, &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.data.with_file_name("server.log")
    }

    fn command(&self, program: &std::path::Path) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                c.arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    fn as_postgres(&self, program: &std::path::Path, args: &[&str]) {
        let mut cmd = self.command(std::path::Path::new("runuser"));
        cmd.args(["-u", "postgres", "--"]).arg(program).args(args);
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let out = self
            .command(std::path::Path::new("psql"))
            .args([&self.url, "-v", "ON_ERROR_STOP=1", "-q", "-c", &format!("CREATE DATABASE {name}")])
            .output()
            .expect("run psql (is postgresql-client installed?)");
        assert!(out.status.success(), "CREATE DATABASE {name}: {}", String::from_utf8_lossy(&out.stderr));
        let (prefix, _) = self.url.rsplit_once('/').expect("a URL with a database");
        format!("{prefix}/{name}")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let mut cmd = self.command(std::path::Path::new("runuser"));
        cmd.args(["-u", "postgres", "--"]).arg(&self.pg_ctl).args(["-D", &data, "-m", "immediate", "-w", "stop"]);
        let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}
