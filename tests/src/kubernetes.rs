//! Kubernetes objects checked offline: `kubernetes-validate` (from PyPI, in
//! the venv scripts/test.sh makes under target/pyenv) validates YAML streams
//! against the schemas of a Kubernetes release.

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
         `python3 -m venv target/pyenv && target/pyenv/bin/pip install kubernetes-validate`",
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
