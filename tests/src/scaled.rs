//! Several registry replicas behind HAProxy, as a fleet runs them: one
//! PostgreSQL database, one S3 bucket (SeaweedFS), N `damselfly-registry`
//! processes on loopback and Debian's `haproxy` in front of them, round
//! robin, with health checks on `/readyz`. `scripts/run-scaled.sh` starts
//! the same shape for a person.
//!
//! Every process is killed on drop; the replicas' data directory and the
//! load balancer's configuration are removed with their temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, metric_value, Backend, Registry};

/// HAProxy in front of some backends, round robin.
pub struct HaProxy {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    /// `127.0.0.1:<port>`
    pub host: String,
    child: Option<Child>,
    log_path: PathBuf,
    _tmp: tempfile::TempDir,
}

/// The configuration of a round-robin HTTP balancer on `listen` over
/// `backends` (`host:port`), each checked on `/readyz` every 500 ms and
/// taken out after two failures. A request that cannot connect is sent to
/// another backend; one that reached a backend is never sent twice.
pub fn haproxy_config(listen: &str, backends: &[String]) -> String {
    let mut cfg = format!(
        "global\n    maxconn 4096\n\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 600s\n    timeout server 600s\n    \
         timeout http-request 30s\n    retries 2\n    option redispatch\n\n\
         frontend registry\n    bind {listen}\n    default_backend replicas\n\n\
         backend replicas\n    balance roundrobin\n    option httpchk GET /readyz\n    http-check expect status 200\n    \
         default-server inter 500ms fall 2 rise 1\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!("    server replica{i} {b} check\n"));
    }
    cfg
}

/// Path of `haproxy`: `DAMSELFLY_HAPROXY_BIN`, else `/usr/sbin/haproxy`, else `PATH`.
pub fn haproxy_binary() -> PathBuf {
    if let Ok(p) = std::env::var("DAMSELFLY_HAPROXY_BIN") {
        return PathBuf::from(p);
    }
    let debian = Path::new("/usr/sbin/haproxy");
    if debian.exists() {
        return debian.to_owned();
    }
    PathBuf::from("haproxy")
}

impl HaProxy {
    /// Starts HAProxy on a free loopback port over `backends` and waits until it answers.
    pub fn start(backends: &[String]) -> HaProxy {
        HaProxy::start_on(free_port(), backends)
    }

    /// Starts HAProxy on loopback port `port` over `backends` and waits until it answers.
    pub fn start_on(port: u16, backends: &[String]) -> HaProxy {
        let tmp = tempfile::Builder::new().prefix("damselfly-haproxy-").tempdir().expect("temp dir");
        let host = format!("127.0.0.1:{port}");
        let cfg = tmp.path().join("haproxy.cfg");
        std::fs::write(&cfg, haproxy_config(&host, backends)).expect("write haproxy.cfg");
        let log_path = tmp.path().join("haproxy.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(haproxy_binary())
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start haproxy: {e}; install it (apt-get install haproxy), scripts/test.sh does")
            });
        let mut proxy = HaProxy { url: format!("http://{host}"), host, child: Some(child), log_path, _tmp: tmp };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(status))) = proxy.child.as_mut().map(Child::try_wait) {
                panic!("haproxy exited with {status}:\n{}", proxy.log());
            }
            let ok = Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", &format!("{}/readyz", proxy.url)])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return proxy;
            }
            assert!(Instant::now() < deadline, "haproxy did not serve in 20 s:\n{}", proxy.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// N replicas on PostgreSQL and S3 behind HAProxy.
pub struct Scaled {
    /// The load balancer: where clients and agents go.
    pub front: HaProxy,
    /// The replicas; the first owns the data directory, database and bucket.
    pub replicas: Vec<Registry>,
}

impl Scaled {
    /// Starts `n` replicas on a fresh PostgreSQL database and S3 bucket, each
    /// with `env`, and HAProxy in front of them. Every replica's public URL
    /// is the load balancer's, as in a fleet: tokens name it as their issuer,
    /// and joins send agents there for seed pieces.
    pub fn start(n: usize, env: &[(&str, &str)]) -> Scaled {
        assert!(n >= 1);
        let port = free_port();
        let public = format!("http://127.0.0.1:{port}");
        let mut env: Vec<(&str, &str)> = env.to_vec();
        env.push(("DAMSELFLY_PUBLIC_URL", &public));
        let first = Registry::start_paired_with(Backend::Postgres, &env);
        let mut replicas = vec![first];
        for _ in 1..n {
            let next = Registry::start_sharing(&replicas[0], &env);
            replicas.push(next);
        }
        let backends: Vec<String> = replicas.iter().map(|r| r.host.clone()).collect();
        let front = HaProxy::start_on(port, &backends);
        Scaled { front, replicas }
    }

    /// Replica `i`'s `/metrics` page (empty if it does not answer).
    pub fn metrics(&self, i: usize) -> String {
        let out = Command::new("curl")
            .args(["-fsS", "--max-time", "5", &format!("{}/metrics", self.replicas[i].url)])
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Per replica, the requests it answered on `route` with `method` (any status).
    pub fn requests(&self, route: &str, method: &str) -> Vec<f64> {
        (0..self.replicas.len())
            .map(|i| {
                let page = self.metrics(i);
                page.lines()
                    .filter(|l| l.starts_with("damselfly_http_requests_total{"))
                    .filter(|l| {
                        l.contains(&format!("route=\"{route}\"")) && l.contains(&format!("method=\"{method}\""))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            })
            .collect()
    }

    /// The replica that schedules the P2P clusters (holds a lease), if one does.
    pub fn scheduler(&self) -> Option<usize> {
        (0..self.replicas.len()).find(|&i| metric_value(&self.metrics(i), "damselfly_p2p_clusters_scheduled") >= 1.0)
    }
}

impl Drop for Scaled {
    fn drop(&mut self) {
        // Those sharing the first replica's directory go first.
        while let Some(r) = self.replicas.pop() {
            drop(r);
        }
    }
}
