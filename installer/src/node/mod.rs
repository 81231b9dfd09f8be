//! Node runtime configuration: what `damselfly-agent node-setup` writes so
//! that container runtimes pull the acceleration host through the local
//! agent, and the exact undoing of it.
//!
//! Every file is computed from what is on disk (merging, never clobbering),
//! and the first content each file had is kept in a state file under the
//! root, so that uninstalling restores every file byte for byte and removes
//! the directories node-setup created.

pub mod containerd;
pub mod containers;
pub mod docker;
mod state;
mod toml_text;

use std::fmt;
use std::path::{Path, PathBuf};

pub use state::STATE_FILE;
use state::{FileRecord, State};

/// Everything that can go wrong while configuring a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file we must merge into cannot be understood.
    #[error("{path} is not valid: {reason}; fix or remove it, then run node-setup again")]
    Invalid {
        /// The file, as on the node.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A setting given on the command line is wrong.
    #[error("{0}")]
    Usage(String),
}

/// A container runtime node-setup knows how to configure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// containerd (and so kubelet with containerd, `ctr`, `nerdctl`).
    Containerd,
    /// CRI-O, podman, buildah and skopeo, which share `/etc/containers`.
    Containers,
    /// Docker Engine.
    Docker,
}

impl Runtime {
    /// Every runtime, in the order they are configured.
    pub const ALL: [Runtime; 3] = [Runtime::Containerd, Runtime::Containers, Runtime::Docker];

    /// The directory whose presence under the root says the runtime is installed.
    pub fn config_dir(self) -> &'static str {
        match self {
            Runtime::Containerd => "/etc/containerd",
            Runtime::Containers => "/etc/containers",
            Runtime::Docker => "/etc/docker",
        }
    }

    /// The runtimes whose configuration directory exists under `root`.
    pub fn detect(root: &Path) -> Vec<Runtime> {
        Runtime::ALL.into_iter().filter(|r| on_root(root, r.config_dir()).is_dir()).collect()
    }
}

impl std::str::FromStr for Runtime {
    type Err = Error;

    fn from_str(s: &str) -> Result<Runtime, Error> {
        match s {
            "containerd" => Ok(Runtime::Containerd),
            "containers" | "crio" | "cri-o" | "podman" => Ok(Runtime::Containers),
            "docker" => Ok(Runtime::Docker),
            other => Err(Error::Usage(format!(
                "unknown runtime `{other}`: choose containerd, crio (also podman), or docker"
            ))),
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Containerd => "containerd",
            Runtime::Containers => "crio",
            Runtime::Docker => "docker",
        })
    }
}

/// The registry, as runtimes address it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
}

impl RegistryUrl {
    /// Parses `http(s)://host[:port]` (a trailing slash is allowed, a path is not).
    pub fn parse(url: &str) -> Result<RegistryUrl, Error> {
        let bad = || {
            Error::Usage(format!(
                "the registry URL `{url}` is not valid: give it as http(s)://host[:port], e.g. https://registry.example.com"
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        if scheme != "http" && scheme != "https" {
            return Err(bad());
        }
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
            return Err(bad());
        }
        Ok(RegistryUrl { scheme: scheme.to_owned(), host: host.to_owned() })
    }

    /// `scheme://host[:port]`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }

    /// The host name without its port (IPv6 brackets kept).
    pub fn hostname(&self) -> &str {
        host_without_port(&self.host)
    }
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The acceleration host workloads pull from when none is chosen, for a
/// registry reached at `host[:port]`: `p2p.<host name>:65001`, a name the
/// platform team points at the nodes (node-setup maps it on each node too).
///
/// A registry addressed by an IP literal gets `127.0.0.1:65001` instead:
/// `p2p.10.0.0.5` is a name no resolver knows, so a Pod rewritten to it
/// could not pull on a node whose runtime does not read node-setup's files
/// yet (before its agent starts, or before containerd is restarted to read
/// `certs.d`), while every runtime reaches the node's own agent on its
/// loopback without any configuration (containerd and Docker speak plain
/// HTTP to a loopback registry by default).
pub fn default_acceleration_host(registry_host: &str) -> String {
    let name = host_without_port(registry_host);
    if name.starts_with('[') || name.parse::<std::net::IpAddr>().is_ok() {
        return format!("127.0.0.1:{MIRROR_PORT}");
    }
    format!("p2p.{name}:{MIRROR_PORT}")
}

/// What to configure on a node.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    /// The registry; runtimes fall back to it when the agent is down.
    pub registry: RegistryUrl,
    /// The address workloads pull from, e.g. `p2p.registry.example.com:65001`.
    pub acceleration_host: String,
    /// The local agent's mirror, `ip:port`.
    pub mirror: String,
    /// The runtimes to configure.
    pub runtimes: Vec<Runtime>,
}

/// The port of the agent's mirror, and of the default acceleration host.
pub const MIRROR_PORT: u16 = 65001;

impl NodeSetup {
    /// The default acceleration host for a registry: see [`default_acceleration_host`].
    pub fn default_acceleration_host(registry: &RegistryUrl) -> String {
        default_acceleration_host(&registry.host)
    }

    /// Checks the settings.
    pub fn new(
        registry: &str,
        acceleration_host: Option<&str>,
        mirror: &str,
        runtimes: Vec<Runtime>,
    ) -> Result<NodeSetup, Error> {
        let registry = RegistryUrl::parse(registry)?;
        let acceleration_host =
            acceleration_host.map_or_else(|| NodeSetup::default_acceleration_host(&registry), str::to_owned);
        let valid_host = |h: &str| {
            !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c)) && !h.starts_with('.')
        };
        if !valid_host(&acceleration_host) {
            return Err(Error::Usage(format!(
                "the acceleration host `{acceleration_host}` is not valid: give it as host[:port], e.g. p2p.registry.example.com:65001"
            )));
        }
        if mirror.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::Usage(format!(
                "the mirror address `{mirror}` is not valid: give the agent's mirror as ip:port, e.g. 127.0.0.1:65001"
            )));
        }
        Ok(NodeSetup { registry, acceleration_host, mirror: mirror.to_owned(), runtimes })
    }

    /// The files to write under `root`, from what is there now.
    pub fn plan(&self, root: &Path) -> Result<Plan, Error> {
        let mut plan = Plan::default();
        let mirror_url = format!("http://{}", self.mirror);
        for runtime in &self.runtimes {
            match runtime {
                Runtime::Containerd => {
                    let existing = read_optional(root, containerd::CONFIG_TOML)?;
                    let hosts_dir = match containerd::enable_config_path(existing.as_deref())? {
                        containerd::ConfigPath::AlreadySet(dir) => dir,
                        containerd::ConfigPath::Enabled(content) => {
                            plan.changes.push(Change { path: containerd::CONFIG_TOML.into(), content });
                            plan.notes.push(Note::if_written(
                                containerd::CONFIG_TOML,
                                format!(
                                    "containerd: config_path was added to {}; restart containerd (systemctl restart containerd) so that it reads {}",
                                    containerd::CONFIG_TOML,
                                    containerd::DEFAULT_HOSTS_DIR
                                ),
                            ));
                            containerd::DEFAULT_HOSTS_DIR.to_owned()
                        }
                        containerd::ConfigPath::Blocked(reason) => {
                            plan.notes.push(Note::always(format!("containerd: {reason}")));
                            containerd::DEFAULT_HOSTS_DIR.to_owned()
                        }
                    };
                    let path = format!("{}/{}/hosts.toml", hosts_dir.trim_end_matches('/'), self.acceleration_host);
                    let existing = read_optional(root, &path)?;
                    let content = containerd::hosts_toml(
                        existing.as_deref(),
                        &self.acceleration_host,
                        &self.registry.url(),
                        &mirror_url,
                    );
                    plan.changes.push(Change { path, content });
                }
                Runtime::Containers => {
                    let path =
                        format!("{}/{}", containers::DROP_IN_DIR, containers::drop_in_name(&self.acceleration_host));
                    let existing = read_optional(root, &path)?;
                    let content = containers::registries_conf(
                        existing.as_deref(),
                        &self.acceleration_host,
                        &self.registry.host,
                        self.registry.scheme == "http",
                        &self.mirror,
                    );
                    plan.changes.push(Change { path, content });
                }
                Runtime::Docker => {
                    let existing = read_optional(root, docker::DAEMON_JSON)?;
                    let content = docker::daemon_json(existing.as_deref(), &self.acceleration_host)?;
                    plan.changes.push(Change { path: docker::DAEMON_JSON.into(), content });
                    let hostname = host_without_port(&self.acceleration_host);
                    if hostname.parse::<std::net::IpAddr>().is_err() && !hostname.starts_with('[') {
                        let ip = match self.mirror.parse::<std::net::SocketAddr>().map(|a| a.ip()) {
                            Ok(ip) if !ip.is_unspecified() => ip.to_string(),
                            _ => "127.0.0.1".to_owned(),
                        };
                        let existing = read_optional(root, docker::HOSTS)?;
                        let content = docker::hosts_file(existing.as_deref(), hostname, &ip);
                        plan.changes.push(Change { path: docker::HOSTS.into(), content });
                    }
                    plan.notes.push(Note::if_written(
                        docker::DAEMON_JSON,
                        format!(
                            "docker: restart Docker (systemctl restart docker) to read {}; Docker pulls of {} need the agent running",
                            docker::DAEMON_JSON,
                            self.acceleration_host
                        ),
                    ));
                }
            }
        }
        Ok(plan)
    }

    /// Writes the plan under `root`, recording what each file was before.
    pub fn install(&self, root: &Path) -> Result<Report, Error> {
        let plan = self.plan(root)?;
        let mut state = State::load(root)?;
        let mut report = Report::default();
        for change in plan.changes {
            let current = read_optional(root, &change.path)?;
            if current.as_deref() == Some(change.content.as_str()) {
                report.unchanged.push(change.path);
                continue;
            }
            if !state.files.iter().any(|f| f.path == change.path) {
                state.files.push(FileRecord { path: change.path.clone(), original: current, written: String::new() });
            }
            create_parents(root, &change.path, &mut state.dirs)?;
            write_file(&on_root(root, &change.path), &change.content)?;
            if let Some(record) = state.files.iter_mut().find(|f| f.path == change.path) {
                record.written = change.content;
            }
            report.written.push(change.path);
        }
        report.notes = plan
            .notes
            .into_iter()
            .filter(|n| n.if_written.as_ref().is_none_or(|p| report.written.contains(p)))
            .map(|n| n.text)
            .collect();
        if !report.written.is_empty() {
            create_parents(root, STATE_FILE, &mut state.dirs)?;
            state.save(root)?;
        }
        Ok(report)
    }
}

/// Undoes every `install` under `root`: each file node-setup wrote goes back
/// to what it was, byte for byte, unless someone changed it since (then it
/// is left alone and a note says so), and the directories it created go.
pub fn uninstall(root: &Path) -> Result<Report, Error> {
    let state = State::load(root)?;
    let mut report = Report::default();
    for record in state.files.iter().rev() {
        let path = on_root(root, &record.path);
        let current = read_optional(root, &record.path)?;
        if current.as_deref() != Some(record.written.as_str()) {
            report.notes.push(format!(
                "{} changed after node-setup wrote it, so it was left as it is: remove the Damselfly entries by hand",
                record.path
            ));
            continue;
        }
        match &record.original {
            Some(original) => write_file(&path, original)?,
            None => std::fs::remove_file(&path).map_err(|source| Error::Io { action: "remove", path, source })?,
        }
        report.written.push(record.path.clone());
    }
    let state_path = on_root(root, STATE_FILE);
    if state_path.exists() {
        std::fs::remove_file(&state_path).map_err(|source| Error::Io { action: "remove", path: state_path, source })?;
    }
    for dir in state.dirs.iter().rev() {
        // Only if empty: a directory someone has since put files in stays.
        let _ = std::fs::remove_dir(on_root(root, dir));
    }
    Ok(report)
}

/// Files to write, with the content each must have.
#[derive(Debug, Default)]
pub struct Plan {
    /// Every file, as on the node (absolute), with its new content.
    pub changes: Vec<Change>,
    /// What a person should know or do next.
    pub notes: Vec<Note>,
}

/// Something a person should know or do next.
#[derive(Debug)]
pub struct Note {
    /// Only worth saying if this file (as on the node) is written.
    pub if_written: Option<String>,
    /// The advice.
    pub text: String,
}

impl Note {
    fn always(text: String) -> Note {
        Note { if_written: None, text }
    }

    fn if_written(path: &str, text: String) -> Note {
        Note { if_written: Some(path.to_owned()), text }
    }
}

/// One file's new content.
#[derive(Debug)]
pub struct Change {
    /// The file, as on the node, e.g. `/etc/hosts`.
    pub path: String,
    /// Its full new content.
    pub content: String,
}

/// What an install or uninstall did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files written (or restored, or removed).
    pub written: Vec<String>,
    /// Files that already had the right content.
    pub unchanged: Vec<String>,
    /// What a person should know or do next.
    pub notes: Vec<String>,
}

/// `path` (absolute, as on the node) under `root`.
pub fn on_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn read_optional(root: &Path, path: &str) -> Result<Option<String>, Error> {
    let full = on_root(root, path);
    match std::fs::read(&full) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::Invalid { path: path.to_owned(), reason: "it is not UTF-8 text".into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { action: "read", path: full, source }),
    }
}

/// Creates the missing parent directories of `path`, recording each, outermost first.
fn create_parents(root: &Path, path: &str, created: &mut Vec<String>) -> Result<(), Error> {
    let mut missing = Vec::new();
    let mut dir = Path::new(path).parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() || d == Path::new("/") || on_root(root, &d.display().to_string()).is_dir() {
            break;
        }
        missing.push(d.display().to_string());
        dir = d.parent();
    }
    for d in missing.into_iter().rev() {
        let full = on_root(root, &d);
        std::fs::create_dir(&full).map_err(|source| Error::Io {
            action: "create the directory",
            path: full,
            source,
        })?;
        created.push(d);
    }
    Ok(())
}

/// Replaces a file's content through a temporary file and a rename, so a
/// runtime never reads half a file; the old file's permissions are kept.
fn write_file(path: &Path, content: &str) -> Result<(), Error> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.damselfly-tmp"));
    let io = |action, source| Error::Io { action, path: path.to_owned(), source };
    std::fs::write(&tmp, content).map_err(|e| io("write", e))?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions()).map_err(|e| io("set the permissions of", e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io("replace", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_acceleration_host_is_p2p_dot_a_registry_name_or_the_local_agent_for_an_ip() {
        assert_eq!(default_acceleration_host("registry.example.com"), "p2p.registry.example.com:65001");
        assert_eq!(default_acceleration_host("registry.example.com:5000"), "p2p.registry.example.com:65001");
        assert_eq!(default_acceleration_host("10.0.0.5:5000"), "127.0.0.1:65001");
        assert_eq!(default_acceleration_host("127.0.0.1"), "127.0.0.1:65001");
        assert_eq!(default_acceleration_host("[fd00::5]:5000"), "127.0.0.1:65001");
        let registry = RegistryUrl::parse("http://192.168.1.20:5000").expect("URL");
        assert_eq!(NodeSetup::default_acceleration_host(&registry), "127.0.0.1:65001");
    }
}
