//! Harness for the end-to-end tests: starts the real `damselfly-registry`
//! binary on a free port with its own data directory and database, and
//! offers small helpers to talk to it and to the OCI clients installed on
//! the machine (podman, skopeo).
//!
//! Build the binaries first (`cargo build --workspace --bins`); the test
//! script in `scripts/test.sh` does that.

pub mod containerd;
pub mod fuzz;
pub mod http;
pub mod image;
pub mod jwt;
pub mod kubernetes;
pub mod load;
pub mod netns;
pub mod postgres;
pub mod scaled;
pub mod seaweedfs;
pub mod storage;
pub mod workstation;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The system administrator every registry under test has.
pub const ADMIN_USER: &str = "admin";

/// The password every registry under test gives its `admin` user.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// An `Authorization` header value for Basic credentials, e.g. for raw HTTP requests.
pub fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Which metadata database a registry under test uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a SQLite file in the data directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server named by `DAMSELFLY_TEST_POSTGRES_URL`.
    Postgres,
}

impl Backend {
    /// Both backends, for tests that must pass on each.
    pub const ALL: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

    /// The blob store the API and client suites pair with this database:
    /// SQLite with the filesystem (the embedded default), PostgreSQL with S3
    /// (a fleet's shape). Each suite thus covers both stores and both
    /// databases without running twice per store.
    pub fn paired_storage(self) -> Storage {
        match self {
            Backend::Sqlite => Storage::Filesystem,
            Backend::Postgres => Storage::S3,
        }
    }
}

/// Where a registry under test keeps blob bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Files in its data directory.
    Filesystem,
    /// A fresh bucket of this test process's SeaweedFS server.
    S3,
}

/// Path of a workspace binary in the shared `target/` directory.
pub fn binary(name: &str) -> PathBuf {
    let env_key = format!("DAMSELFLY_{}_BIN", name.trim_start_matches("damselfly-").to_uppercase());
    if let Ok(p) = std::env::var(&env_key) {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile> directory");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first (scripts/test.sh does), or set {env_key}",
        path.display()
    );
    path
}

/// A port on loopback that was free a moment ago, for a server a test starts.
///
/// It comes from below the kernel's ephemeral range: a port the kernel
/// handed out for binding to port 0 is in that range, and once released it
/// may be given to any outgoing connection on the machine (a client, the
/// Docker engine, a server's own requests) before the test's server binds it.
/// Each test process walks its own stretch of the ports below the range.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const LOWEST: u32 = 10_000;
    if ephemeral_from <= LOWEST + 1_000 {
        return TcpListener::bind("127.0.0.1:0")
            .expect("bind an ephemeral port")
            .local_addr()
            .expect("local addr")
            .port();
    }
    let span = ephemeral_from - LOWEST;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let port = (LOWEST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {LOWEST} and {ephemeral_from}");
}

/// Creates an empty PostgreSQL database for one test and returns its URL.
pub fn fresh_postgres_database() -> String {
    let base = std::env::var("DAMSELFLY_TEST_POSTGRES_URL").expect(
        "DAMSELFLY_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL, \
         or point it at a server, e.g. postgres://postgres@127.0.0.1:5432/postgres",
    );
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| drop_databases_of_finished_runs(&base));
    let name = format!("damselfly_test_{}", uuid_like());
    let status = Command::new("psql")
        .arg(&base)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("run psql (is postgresql-client installed?)");
    assert!(status.success(), "could not create database {name} on {base}");
    let (prefix, _) = base.rsplit_once('/').expect("postgres URL with a database path");
    format!("{prefix}/{name}")
}

/// Drops the databases of test processes that have ended. A test's database
/// name starts with its process id, and a run that was killed never cleans
/// up after itself; on a long-lived server they would otherwise pile up.
fn drop_databases_of_finished_runs(base: &str) {
    let Ok(out) = Command::new("psql")
        .arg(base)
        .args(["-qAt", "-c", "SELECT datname FROM pg_database WHERE datname LIKE 'damselfly\\_test\\_%'"])
        .output()
    else {
        return;
    };
    let finished = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|name| {
            let pid = name.trim_start_matches("damselfly_test_").split('_').next().unwrap_or("");
            pid.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .flat_map(|name| ["-c".to_owned(), format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")])
        .collect::<Vec<_>>();
    if !finished.is_empty() {
        // One `-c` per statement: DROP DATABASE cannot share a transaction.
        let _ = Command::new("psql").arg(base).arg("-q").args(&finished).status();
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{}_{}_{}", std::process::id(), nanos % 1_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

/// A running `damselfly-registry` process. Killed on drop.
pub struct Registry {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    /// `127.0.0.1:<port>`, the form OCI clients take.
    pub host: String,
    /// The data directory (blobs, uploads, SQLite file).
    pub data_dir: PathBuf,
    /// The database URL the process was started with.
    pub database_url: String,
    /// Which backend that is.
    pub backend: Backend,
    /// The S3 bucket holding its blobs, with the server's environment; `None` on the filesystem.
    pub bucket: Option<String>,
    /// Settings every start of this registry gets: where its blobs are.
    storage_env: Vec<(String, String)>,
    child: Option<Child>,
    log_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Registry {
    /// Starts a registry with a fresh data directory and database.
    pub fn start(backend: Backend) -> Registry {
        Self::start_with(backend, &[])
    }

    /// Starts a registry with extra `DAMSELFLY_*` environment settings.
    pub fn start_with(backend: Backend, env: &[(&str, &str)]) -> Registry {
        Self::start_on(backend, Storage::Filesystem, env)
    }

    /// Starts a registry with the blob store [`Backend::paired_storage`] names.
    pub fn start_paired(backend: Backend) -> Registry {
        Self::start_on(backend, backend.paired_storage(), &[])
    }

    /// [`Registry::start_paired`] with extra settings.
    pub fn start_paired_with(backend: Backend, env: &[(&str, &str)]) -> Registry {
        Self::start_on(backend, backend.paired_storage(), env)
    }

    /// Starts a registry on a database and blob store of its own, with extra settings.
    pub fn start_on(backend: Backend, storage: Storage, env: &[(&str, &str)]) -> Registry {
        match storage {
            Storage::Filesystem => Self::start_in(backend, None, Vec::new(), env),
            Storage::S3 => {
                let s3 = seaweedfs::SeaweedFs::shared();
                let bucket = s3.create_bucket();
                let storage_env = s3.registry_env(&bucket);
                Self::start_in(backend, Some(bucket), storage_env, env)
            }
        }
    }

    /// Starts a registry whose blobs are in `bucket`, reached with `storage_env`.
    pub fn start_in(
        backend: Backend,
        bucket: Option<String>,
        storage_env: Vec<(String, String)>,
        env: &[(&str, &str)],
    ) -> Registry {
        let tmp = tempfile::Builder::new().prefix("damselfly-e2e-").tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}/metadata.db", data_dir.display()),
            Backend::Postgres => fresh_postgres_database(),
        };
        let port = free_port();
        let mut reg = Registry {
            url: format!("http://127.0.0.1:{port}"),
            host: format!("127.0.0.1:{port}"),
            data_dir,
            database_url,
            backend,
            bucket,
            storage_env,
            child: None,
            log_path: tmp.path().join("registry.log"),
            _tmp: Some(tmp),
        };
        reg.spawn(env);
        reg
    }

    /// Starts a second process on another port over the same data directory,
    /// database and bucket as `other`, as another replica would run, with extra
    /// `DAMSELFLY_*` settings. Drop it before `other`, which owns the directory.
    pub fn start_sharing(other: &Registry, env: &[(&str, &str)]) -> Registry {
        let port = free_port();
        let log_dir = other.data_dir.parent().unwrap_or(&other.data_dir).to_path_buf();
        let mut reg = Registry {
            url: format!("http://127.0.0.1:{port}"),
            host: format!("127.0.0.1:{port}"),
            data_dir: other.data_dir.clone(),
            database_url: other.database_url.clone(),
            backend: other.backend,
            bucket: other.bucket.clone(),
            storage_env: other.storage_env.clone(),
            child: None,
            log_path: log_dir.join(format!("registry-{port}.log")),
            _tmp: None,
        };
        reg.spawn(env);
        reg
    }

    fn spawn(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("log file");
        let mut cmd = Command::new(binary("damselfly-registry"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DAMSELFLY_LISTEN", &self.host)
            .env("DAMSELFLY_DATA_DIR", &self.data_dir)
            .env("DAMSELFLY_DATABASE_URL", &self.database_url)
            .env("DAMSELFLY_LOG_FORMAT", "json")
            .env("DAMSELFLY_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log));
        for (k, v) in &self.storage_env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn damselfly-registry");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("registry exited during start with {status}; log:\n{}", self.log());
                }
            }
            if std::net::TcpStream::connect(&self.host).is_ok() {
                if let Ok(out) = Command::new("curl").args(["-fsS", &format!("{}/readyz", self.url)]).output() {
                    if out.status.success() {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "registry did not become ready in 30 s; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process (SIGTERM, then SIGKILL after 10 s) and starts it again on the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(&[]);
    }

    /// Stops the process gracefully.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs one SQL statement on the registry's metadata database behind its
    /// back, as an operator (or a bug) might; for changes no API makes.
    pub async fn sql(&self, statement: &str) {
        let db =
            damselfly_registry::metadata::Db::open(&self.database_url, 1).await.expect("open the metadata database");
        sqlx::query(statement).execute(db.pool()).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
        db.close().await;
    }

    /// Process id of the running registry.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The most memory the running process has held (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.pid().expect("the registry is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// Kills the process at once (SIGKILL), as a crash would: nothing of it runs after.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again after [`Registry::stop`] or [`Registry::kill`], with extra settings.
    pub fn start_again(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "the registry is running");
        self.spawn(env);
    }

    /// A map of every blob store file under the data directory (except the
    /// SQLite database and its journals) or, with S3, of every object in the
    /// bucket and every multipart upload open in it, to its SHA-256, for
    /// byte-for-byte before/after comparisons.
    pub fn snapshot_files(&self) -> std::collections::BTreeMap<String, String> {
        use sha2::Digest as _;
        let mut out = std::collections::BTreeMap::new();
        if let Some(bucket) = &self.bucket {
            let s3 = seaweedfs::SeaweedFs::shared();
            for (key, _) in s3.objects(bucket) {
                out.insert(key.clone(), hex_string(&sha2::Sha256::digest(s3.object(bucket, &key))));
            }
            for (key, upload_id) in s3.open_uploads(bucket) {
                out.insert(format!("multipart upload {upload_id} of {key}"), String::new());
            }
            return out;
        }
        let mut stack = vec![self.data_dir.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(&self.data_dir).unwrap_or(&p).display().to_string();
                    if rel.starts_with("metadata.db") {
                        continue;
                    }
                    let bytes = std::fs::read(&p).unwrap_or_default();
                    out.insert(rel, hex_string(&sha2::Sha256::digest(&bytes)));
                }
            }
        }
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    damselfly_core::Digest::of(bytes).to_string()
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Declares, for each scenario `fn name(backend: Backend)`, a module `name`
/// with one test per metadata backend: `name::sqlite` and `name::postgres`.
/// Scenarios are `async` unless the list starts with `blocking:`.
#[macro_export]
macro_rules! on_both_backends {
    (blocking: $($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::Backend::Sqlite)
            }

            #[test]
            fn postgres() {
                super::$name($crate::Backend::Postgres)
            }
        }
    )*};
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                super::$name($crate::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                super::$name($crate::Backend::Postgres).await
            }
        }
    )*};
}

/// A running `damselfly-agent run` process on free loopback ports, with its
/// own cache directory, registered with `registry` under a cluster token.
/// Killed on drop; [`Agent::restart`] keeps its ports and cache.
pub struct Agent {
    /// `http://127.0.0.1:<port>` of the registry mirror.
    pub mirror_url: String,
    /// `127.0.0.1:<port>` of the mirror, the form OCI clients take.
    pub mirror_host: String,
    /// `http://127.0.0.1:<port>` of the piece server.
    pub peer_url: String,
    /// `http://127.0.0.1:<port>` of `/metrics` and `/healthz`.
    pub metrics_url: String,
    /// The cache directory.
    pub cache_dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    log_path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Agent {
    /// Starts an agent for `registry_url` with `cluster_token` and extra flags,
    /// and waits until it has registered.
    pub fn start(registry_url: &str, cluster_token: &str, extra: &[&str]) -> Agent {
        let tmp = tempfile::Builder::new().prefix("damselfly-agent-").tempdir().expect("temp dir");
        let (mirror, peer, metrics) = (free_port(), free_port(), free_port());
        // `--cache-dir` among the extra flags replaces the throwaway one.
        let cache_dir = match extra.iter().position(|a| *a == "--cache-dir") {
            Some(i) => PathBuf::from(extra.get(i + 1).expect("--cache-dir needs a value")),
            None => tmp.path().join("cache"),
        };
        let mut args: Vec<String> = vec![
            "run".into(),
            "--registry".into(),
            registry_url.into(),
            "--listen".into(),
            format!("127.0.0.1:{mirror}"),
            "--peer-listen".into(),
            format!("127.0.0.1:{peer}"),
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics}"),
            "--advertise-ip".into(),
            "127.0.0.1".into(),
            "--node-name".into(),
            format!("node-{peer}"),
        ];
        if !extra.contains(&"--cache-dir") {
            args.extend(["--cache-dir".into(), cache_dir.display().to_string()]);
        }
        // Eviction by filesystem use would make a test's outcome depend on how
        // full the machine's disk is; the tests that exercise it set their own.
        if !extra.contains(&"--cache-high-watermark") {
            args.extend(["--cache-high-watermark", "100", "--cache-low-watermark", "99"].map(String::from));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut agent = Agent {
            mirror_url: format!("http://127.0.0.1:{mirror}"),
            mirror_host: format!("127.0.0.1:{mirror}"),
            peer_url: format!("http://127.0.0.1:{peer}"),
            metrics_url: format!("http://127.0.0.1:{metrics}"),
            cache_dir,
            args,
            child: None,
            log_path: tmp.path().join("agent.log"),
            _tmp: tmp,
        };
        agent.spawn(cluster_token);
        agent
    }

    fn spawn(&mut self, cluster_token: &str) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("log file");
        let child = Command::new(binary("damselfly-agent"))
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DAMSELFLY_AGENT_CLUSTER_TOKEN", cluster_token)
            // A benchmark may ask for more, e.g. "info,damselfly_agent::piece=debug".
            .env("RUST_LOG", std::env::var("DAMSELFLY_TEST_AGENT_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn damselfly-agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("agent exited during start with {status}; log:\n{}", self.log());
            }
            let ok = Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", &format!("{}/healthz", self.metrics_url)])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "agent did not register in 30 s; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process and starts it again with the same ports and cache directory.
    pub fn restart(&mut self, cluster_token: &str) {
        self.kill();
        self.spawn(cluster_token);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Registry {
    /// Registers a cluster `name` in the `default` tenant as the administrator; returns its token.
    pub async fn register_cluster(&self, name: &str) -> String {
        let body = http::Http::new(self)
            .admin_api(reqwest::Method::POST, "/api/v1/tenants/default/clusters", serde_json::json!({ "name": name }))
            .await;
        body["token"].as_str().expect("the cluster token").to_owned()
    }

    /// A management API call as the administrator; `body` is sent as JSON unless it is null.
    /// Returns the status and the JSON answer (null if there is none).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let reply = http::Http::new(self).api(&http::Cred::admin(), method, path, body).await;
        let status = reqwest::StatusCode::from_u16(reply.status).expect("an HTTP status");
        (status, serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null))
    }

    /// Pushes an OCI image manifest under `tag` as the administrator; returns its digest.
    pub async fn push_manifest(
        &self,
        repository: &str,
        tag: &str,
        manifest: &serde_json::Value,
    ) -> damselfly_core::Digest {
        let body = manifest.to_string();
        let http = http::Http::new(self);
        image::push_manifest(&http, &http::Cred::admin(), repository, tag, image::OCI_MANIFEST, &body)
            .await
            .expect(201);
        damselfly_core::Digest::of(body.as_bytes())
    }

    /// Pushes `blob` into `repository` as the administrator, in one monolithic upload; returns its digest.
    pub async fn push_blob(&self, repository: &str, blob: &[u8]) -> damselfly_core::Digest {
        let bytes = image::Blob::new(blob);
        image::push_blob(&http::Http::new(self), &http::Cred::admin(), repository, &bytes).await;
        bytes.digest.parse().expect("a digest")
    }
}

/// The value of one sample (`name{labels}`, exactly as exposed) in a Prometheus text page, 0 if absent.
pub fn metric_value(page: &str, sample: &str) -> f64 {
    page.lines()
        .filter_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
}

/// Deterministic, incompressible bytes (xorshift64*), for test blobs and layers.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    // Spread the seed over all 64 bits (an odd multiplier is a bijection), so
    // that neighbouring seeds give different bytes; xorshift needs a state other than 0.
    let mut state = seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}
