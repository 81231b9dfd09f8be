//! A private test network made of Linux network namespaces: one "switch"
//! namespace holding a bridge, and N node namespaces, each joined to the
//! bridge by a veth pair and given an address in a /24 of 10.213.0.0/16.
//! Every address exists only inside these namespaces. Per-node bandwidth
//! limits are `tbf` qdiscs on both ends of the node's veth: the node's end
//! limits its upload, the switch's end its download.
//!
//! Needs root and `ip` from iproute2 (`tc` for limits). Names are unique per
//! process and call (pid + counter); everything is deleted on drop, also when
//! a test panics. Kill the processes you started inside the namespaces first
//! (a namespace lives on while a process is in it).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Panics with a clear message unless this process may build namespaces.
pub fn require_root_and_netns() {
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    assert_eq!(
        uid.as_deref().unwrap_or("?"),
        "0",
        "this test builds network namespaces and needs root: run it as root (e.g. `sudo -E cargo test …`)"
    );
    let ok = Command::new("ip").args(["netns", "list"]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(ok, "`ip netns` is not available: install iproute2 (apt-get install iproute2)");
    let ok = Command::new("tc").arg("-V").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(ok, "`tc` is not available: install iproute2 (apt-get install iproute2)");
}

/// One node namespace.
#[derive(Clone, Debug)]
pub struct Node {
    /// Namespace name, for `ip netns exec`.
    pub ns: String,
    /// The node's IPv4 address on the test network.
    pub ip: String,
    /// The switch-side veth (in the switch namespace).
    switch_if: String,
}

/// The test network; deleted on drop.
pub struct Net {
    /// Name of the switch namespace holding the bridge.
    pub switch_ns: String,
    /// The nodes, in creation order; node `i` has address `10.213.<k>.<i+1>`.
    pub nodes: Vec<Node>,
    /// The third octet chosen for this network.
    pub subnet: u8,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn must(r: Result<(), String>) {
    if let Err(e) = r {
        panic!("{e}");
    }
}

impl Net {
    /// Builds a switch and `n` nodes (at most 250), without bandwidth limits.
    pub fn new(n: usize) -> Net {
        assert!(n <= 250, "at most 250 nodes on a /24");
        require_root_and_netns();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let c = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{pid}-{c}");
        let subnet = ((pid.wrapping_mul(7).wrapping_add(c)) % 250 + 1) as u8;
        let mut net = Net { switch_ns: format!("dfsw-{tag}"), nodes: Vec::new(), subnet };
        // From here on, Drop cleans up whatever was created.
        must(ip(&["netns", "add", &net.switch_ns]));
        let sw = net.switch_ns.clone();
        must(ip(&["-n", &sw, "link", "set", "lo", "up"]));
        must(ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]));
        must(ip(&["-n", &sw, "link", "set", "br0", "up"]));
        for i in 0..n {
            let node = Node {
                ns: format!("dfn-{tag}-{i}"),
                ip: format!("10.213.{subnet}.{}", i + 1),
                // Interface names live inside namespaces, so they only need to be unique there (≤ 15 chars).
                switch_if: format!("p{i}"),
            };
            must(ip(&["netns", "add", &node.ns]));
            net.nodes.push(node.clone());
            must(ip(&["-n", &node.ns, "link", "set", "lo", "up"]));
            must(ip(&[
                "-n",
                &sw,
                "link",
                "add",
                &node.switch_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &node.ns,
            ]));
            must(ip(&["-n", &sw, "link", "set", &node.switch_if, "master", "br0"]));
            must(ip(&["-n", &sw, "link", "set", &node.switch_if, "up"]));
            must(ip(&["-n", &node.ns, "addr", "add", &format!("{}/24", node.ip), "dev", "eth0"]));
            must(ip(&["-n", &node.ns, "link", "set", "eth0", "up"]));
            if let Ok(setting) = std::env::var("SWARM_SYSCTL") {
                let ok = Command::new("ip").args(["netns", "exec", &node.ns, "sysctl", "-qw", &setting]).status();
                assert!(ok.is_ok_and(|s| s.success()), "sysctl {setting} failed");
            }
        }
        net
    }

    /// Limits node `i`'s upload to `up` and its download to `down` Mbit/s
    /// (tbf on both veth ends), each with a queue of SWARM_TBF_LATENCY_MS (50 ms).
    pub fn limit_each(&self, i: usize, up: u32, down: u32) {
        let queue_ms = std::env::var("SWARM_TBF_LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
        self.limit_queued(i, up, down, queue_ms);
    }

    /// Limits node `i`'s upload to `up` and its download to `down` Mbit/s, each with a queue of `queue_ms`.
    pub fn limit_queued(&self, i: usize, up: u32, down: u32, queue_ms: u64) {
        let node = &self.nodes[i];
        for (ns, dev, mbit) in [(&node.ns, "eth0", up), (&self.switch_ns, node.switch_if.as_str(), down)] {
            tbf(ns, dev, mbit, queue_ms);
        }
    }

    /// Makes two zones: nodes `second` move to a bridge of their own, joined
    /// to the first by one link of `mbit` Mbit/s each way (a veth pair in
    /// the switch namespace, `tbf` at both ends, queues of
    /// SWARM_TBF_LATENCY_MS), which everything between the zones crosses.
    /// [`Net::between_zones_bytes`] counts what did.
    pub fn split_zone(&self, second: &[usize], mbit: u32) {
        let sw = self.switch_ns.as_str();
        must(ip(&["-n", sw, "link", "add", "br1", "type", "bridge"]));
        must(ip(&["-n", sw, "link", "set", "br1", "up"]));
        for &i in second {
            must(ip(&["-n", sw, "link", "set", &self.nodes[i].switch_if, "master", "br1"]));
        }
        must(ip(&["-n", sw, "link", "add", "zp0", "type", "veth", "peer", "name", "zp1"]));
        for (end, bridge) in [("zp0", "br0"), ("zp1", "br1")] {
            must(ip(&["-n", sw, "link", "set", end, "master", bridge]));
            must(ip(&["-n", sw, "link", "set", end, "up"]));
        }
        let queue_ms = std::env::var("SWARM_TBF_LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
        for end in ["zp0", "zp1"] {
            tbf(sw, end, mbit, queue_ms);
        }
    }

    /// Bytes sent across the link between the zones of [`Net::split_zone`],
    /// both ways together, frames' headers included.
    pub fn between_zones_bytes(&self) -> u64 {
        ["zp0", "zp1"]
            .iter()
            .map(|end| {
                let out = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &self.switch_ns,
                        "cat",
                        &format!("/sys/class/net/{end}/statistics/tx_bytes"),
                    ])
                    .output()
                    .expect("run ip netns exec");
                let text = String::from_utf8_lossy(&out.stdout);
                text.trim().parse::<u64>().unwrap_or_else(|_| panic!("tx_bytes of {end}: {text:?}"))
            })
            .sum()
    }

    /// Removes node `i`'s bandwidth limits.
    pub fn unlimit(&self, i: usize) {
        let node = &self.nodes[i];
        for (ns, dev) in [(&node.ns, "eth0"), (&self.switch_ns, node.switch_if.as_str())] {
            let _ =
                Command::new("tc").args(["-n", ns, "qdisc", "del", "dev", dev, "root"]).stderr(Stdio::null()).status();
        }
    }

    /// A command that runs `program` inside node `i`'s namespace.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.nodes[i].ns]).arg(program);
        cmd
    }

    /// Runs `sh -c script` in node `i`'s namespace; returns (success, stdout, stderr).
    pub fn sh(&self, i: usize, script: &str) -> (bool, String, String) {
        let out = self.command(i, "bash").args(["-c", script]).output().expect("run ip netns exec");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Limits what `dev` in namespace `ns` sends to `mbit` Mbit/s, with a queue of `queue_ms`.
fn tbf(ns: &str, dev: &str, mbit: u32, queue_ms: u64) {
    let rate = format!("{mbit}mbit");
    // Burst must hold at least one timer tick's worth of bytes at this rate.
    let burst = format!("{}kb", (mbit as u64 * 1000 / 8 / 100).max(64));
    let latency = format!("{queue_ms}ms");
    let _ = Command::new("tc").args(["-n", ns, "qdisc", "del", "dev", dev, "root"]).stderr(Stdio::null()).status();
    let out = Command::new("tc")
        .args([
            "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst, "latency", &latency,
        ])
        .output()
        .expect("run tc");
    assert!(out.status.success(), "tc on {ns}/{dev} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the peer.
        for node in &self.nodes {
            let _ = ip(&["netns", "del", &node.ns]);
        }
        let _ = ip(&["netns", "del", &self.switch_ns]);
    }
}

/// A process started inside a namespace (`ip netns exec` execs it, so the
/// pid is the program's own); killed on drop.
pub struct NsProcess {
    child: Option<std::process::Child>,
    /// Where its stdout and stderr go.
    pub log_path: std::path::PathBuf,
}

impl NsProcess {
    /// Starts `cmd` (built with [`Net::command`]) with output appended to `log_path`.
    pub fn spawn(mut cmd: Command, log_path: std::path::PathBuf) -> NsProcess {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log file");
        let child = cmd
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        NsProcess { child: Some(child), log_path }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
