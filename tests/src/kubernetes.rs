//! Kubernetes without a cluster: `kubernetes-validate` (from PyPI, in the
//! venv scripts/test.sh makes under target/pyenv) validates YAML streams
//! against the schemas of a Kubernetes release, and [`KubectlStandin`] puts a
//! recording stand-in for the `kubectl` command in front of a script.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Kubernetes release whose schemas objects are checked against.
pub const KUBERNETES_VERSION: &str = "1.37.0";

/// A program of the venv scripts/test.sh makes (`python`, `kubernetes-validate`).
pub fn pyenv_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin").join(name);
    assert!(
        path.exists(),
        "{} not found: run scripts/test.sh (it installs it), or \
         `python3 -m venv target/pyenv && target/pyenv/bin/pip install kubernetes-validate==1.37.0 && \
         target/pyenv/bin/pip install --ignore-requires-python helm-sdkpy==0.1.32`",
        path.display()
    );
    path
}

/// Validates a YAML stream strictly (an unknown field is an error) and
/// returns `kind/name` of every object, in order; panics with the report otherwise.
pub fn validate(yaml: &str) -> Vec<String> {
    let mut child = Command::new(pyenv_bin("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubernetes-validate");
    child.stdin.take().expect("stdin").write_all(yaml.as_bytes()).expect("feed YAML");
    let out = child.wait_with_output().expect("kubernetes-validate output");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubernetes-validate refused:\n{report}\n{yaml}");
    report
        .lines()
        .filter_map(|l| l.split(" passed for resource ").nth(1))
        .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

/// A `kubectl` on PATH that is `tests/kubectl/standin.py`: a test double of
/// the command, answering from API objects kept in a state file (canned
/// answers in the API's own shapes, from `tests/kubectl/*.json`), changing
/// them as apply, delete, label and annotate would, and recording every call.
/// It stands in for a cluster's answers; it proves nothing about a cluster.
pub struct KubectlStandin {
    dir: tempfile::TempDir,
}

/// One recorded `kubectl` call.
#[derive(Debug, Clone)]
pub struct KubectlCall {
    /// Its arguments.
    pub args: Vec<String>,
    /// What it read on standard input (`-f -`), if anything.
    pub stdin: Option<String>,
}

impl KubectlCall {
    /// The command (`get`, `apply`, …), after a leading `-n <namespace>`.
    pub fn verb(&self) -> &str {
        let skip = if self.args.first().is_some_and(|a| a == "-n") { 2 } else { 0 };
        self.args.get(skip).map_or("", String::as_str)
    }

    /// The arguments as one line, for assertions and messages.
    pub fn line(&self) -> String {
        self.args.join(" ")
    }
}

fn standin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kubectl")
}

impl KubectlStandin {
    /// A cluster made of the objects in these fixture files of `tests/kubectl/` (without `.json`).
    pub fn new(fixtures: &[&str]) -> KubectlStandin {
        let mut objects = Vec::new();
        for name in fixtures {
            let path = standin_dir().join(format!("{name}.json"));
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let list: serde_json::Value = serde_json::from_str(&text).expect("a fixture is a JSON list");
            objects.extend(list.as_array().expect("a list").iter().cloned());
        }
        let dir = tempfile::tempdir().expect("dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let real = Command::new("sh").args(["-c", "command -v kubectl"]).output().expect("which kubectl");
        let real = String::from_utf8_lossy(&real.stdout).trim().to_owned();
        assert!(
            !real.is_empty(),
            "the stand-in formats output with the real kubectl: install it (scripts/test.sh does)"
        );
        let wrapper = format!(
            "#!/bin/sh\nKUBECTL_STANDIN_STATE='{state}' KUBECTL_STANDIN_LOG='{log}' KUBECTL_STANDIN_REAL='{real}' \
             exec '{python}' '{standin}' \"$@\"\n",
            state = dir.path().join("state.json").display(),
            log = dir.path().join("calls.jsonl").display(),
            python = pyenv_bin("python").display(),
            standin = standin_dir().join("standin.py").display(),
        );
        std::fs::write(bin.join("kubectl"), wrapper).expect("write the wrapper");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(bin.join("kubectl"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let standin = KubectlStandin { dir };
        standin.write_state(&serde_json::json!({"objects": objects}));
        std::fs::write(standin.dir.path().join("calls.jsonl"), "").expect("log");
        standin
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("state.json")).expect("state"))
            .expect("state JSON")
    }

    fn write_state(&self, state: &serde_json::Value) {
        std::fs::write(self.dir.path().join("state.json"), state.to_string()).expect("write state");
    }

    /// Sets a top-level entry of the state: `logs` (`{"pod/container[/previous]": text}`),
    /// `denied` (`["verb:resource"]` that `auth can-i` refuses) or `unreachable` (`true`).
    pub fn set(&self, key: &str, value: serde_json::Value) -> &Self {
        let mut state = self.state();
        state[key] = value;
        self.write_state(&state);
        self
    }

    /// Adds objects to the cluster.
    pub fn add(&self, objects: &[serde_json::Value]) -> &Self {
        let mut state = self.state();
        state["objects"].as_array_mut().expect("objects").extend(objects.iter().cloned());
        self.write_state(&state);
        self
    }

    /// Changes the objects in place.
    pub fn edit(&self, change: impl Fn(&mut serde_json::Value)) -> &Self {
        let mut state = self.state();
        for object in state["objects"].as_array_mut().expect("objects") {
            change(object);
        }
        self.write_state(&state);
        self
    }

    /// The objects of the cluster now.
    pub fn objects(&self) -> Vec<serde_json::Value> {
        self.state()["objects"].as_array().expect("objects").clone()
    }

    /// The object of this kind and name (and namespace, for a namespaced one), if the cluster has it.
    pub fn object(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<serde_json::Value> {
        self.objects().into_iter().find(|o| {
            o["kind"] == kind && o["metadata"]["name"] == name && o["metadata"]["namespace"].as_str() == namespace
        })
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<KubectlCall> {
        std::fs::read_to_string(self.dir.path().join("calls.jsonl"))
            .expect("log")
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                KubectlCall {
                    args: v["args"]
                        .as_array()
                        .expect("args")
                        .iter()
                        .map(|a| a.as_str().unwrap_or_default().into())
                        .collect(),
                    stdin: v["stdin"].as_str().map(str::to_owned),
                }
            })
            .collect()
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        std::fs::write(self.dir.path().join("calls.jsonl"), "").expect("log");
    }

    /// Runs `sh script args…` with the stand-in first on PATH and nothing else of the environment.
    pub fn run(&self, script: &Path, args: &[&str]) -> std::process::Output {
        let path = format!("{}:{}", self.dir.path().join("bin").display(), std::env::var("PATH").unwrap_or_default());
        Command::new("sh")
            .arg(script)
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path())
            .output()
            .expect("run sh")
    }
}
