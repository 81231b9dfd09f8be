//! containerd: a `hosts.toml` per acceleration host, and `config_path` in
//! `config.toml` so that the CRI plugin reads those files at all.

use super::toml_text::{join_blocks, quoted, string_assignment, Sections};
use super::Error;

/// Where containerd looks for `hosts.toml` files when `config_path` names it.
pub const DEFAULT_HOSTS_DIR: &str = "/etc/containerd/certs.d";

/// containerd's main configuration file.
pub const CONFIG_TOML: &str = "/etc/containerd/config.toml";

/// The `hosts.toml` for the acceleration host: the local agent first, then,
/// when it does not answer, the registry itself as `server`. A file already
/// there keeps its top-level keys (its own `server` wins) and its other hosts,
/// after ours.
pub fn hosts_toml(existing: Option<&str>, acceleration_host: &str, registry_url: &str, mirror_url: &str) -> String {
    let header = format!("[host.{}]", quoted(mirror_url));
    let ours = format!("{header}\n  capabilities = [\"pull\", \"resolve\"]\n");
    let Some(existing) = existing.filter(|e| !e.trim().is_empty()) else {
        let preamble = format!(
            "# Written by damselfly-agent node-setup: {acceleration_host} is pulled through the\n\
             # local Damselfly agent, and straight from the registry when the agent is down.\n\
             server = {}\n",
            quoted(registry_url)
        );
        return join_blocks([preamble.as_str(), ours.as_str()]);
    };
    let sections = Sections::parse(existing);
    let has_server = sections.preamble.lines().any(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == "server"));
    let mut preamble = sections.preamble.clone();
    if !has_server {
        preamble = join_blocks([preamble.as_str(), &format!("server = {}", quoted(registry_url))]);
    }
    // Our host's table and its sub-tables (e.g. `.header`) are replaced, not repeated.
    let own_prefix = format!("[host.{}", quoted(mirror_url));
    let others: Vec<&str> = sections
        .tables
        .iter()
        .filter(|t| !(t.header == header || t.header.starts_with(&format!("{own_prefix}."))))
        .map(|t| t.text.as_str())
        .collect();
    join_blocks([preamble.as_str(), ours.as_str()].into_iter().chain(others))
}

/// What enabling `config_path` in `config.toml` came to.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigPath {
    /// Already set: `hosts.toml` files go to the first directory it names.
    AlreadySet(String),
    /// The new content of `config.toml`; containerd must restart to read it.
    Enabled(String),
    /// Left alone, for the reason given, which says what to do.
    Blocked(String),
}

/// Turns on `config_path` for the CRI plugin in `config.toml` if it is missing,
/// keeping everything else in the file as it was.
pub fn enable_config_path(existing: Option<&str>) -> Result<ConfigPath, Error> {
    let line = format!("  config_path = {}", quoted(DEFAULT_HOSTS_DIR));
    let Some(existing) = existing.filter(|e| !e.trim().is_empty()) else {
        let header = registry_header(2);
        return Ok(ConfigPath::Enabled(format!("version = 2\n\n{header}\n{line}\n")));
    };
    let table: toml::Table =
        toml::from_str(existing).map_err(|e| Error::Invalid { path: CONFIG_TOML.into(), reason: format!("{e}") })?;
    let version = table.get("version").and_then(toml::Value::as_integer).unwrap_or(1);
    let registry = registry_table(&table, version);
    if let Some(path) = registry.and_then(|r| r.get("config_path")).and_then(toml::Value::as_str) {
        if let Some(first) = path.split(':').find(|p| !p.is_empty()) {
            return Ok(ConfigPath::AlreadySet(first.to_owned()));
        }
    }
    // containerd refuses config_path beside mirrors, or beside TLS settings in
    // configs; the empty tables of its default configuration are harmless.
    let non_empty =
        |key: &str| registry.and_then(|r| r.get(key)).and_then(toml::Value::as_table).is_some_and(|t| !t.is_empty());
    let tls_configs = registry
        .and_then(|r| r.get("configs"))
        .and_then(toml::Value::as_table)
        .is_some_and(|t| t.values().any(|c| c.get("tls").is_some()));
    if non_empty("mirrors") || tls_configs {
        return Ok(ConfigPath::Blocked(format!(
            "{CONFIG_TOML} configures registry mirrors or TLS in registry configs, which containerd does not allow \
             together with config_path: move them to hosts.toml files under {DEFAULT_HOSTS_DIR} and run node-setup again"
        )));
    }
    let header = registry_header(version);
    let mut out = String::with_capacity(existing.len() + 100);
    let mut inserted = false;
    // `containerd config default` writes `config_path = ""` in the table: set that line.
    let mut in_table = false;
    for l in existing.split_inclusive('\n') {
        if l.trim_start().starts_with('[') {
            in_table = l.trim() == header;
        }
        if !inserted && in_table && string_assignment(l, "config_path").as_deref() == Some("") {
            let indent = &l[..l.len() - l.trim_start().len()];
            out.push_str(&format!("{indent}config_path = {}\n", quoted(DEFAULT_HOSTS_DIR)));
            inserted = true;
            continue;
        }
        out.push_str(l);
        if !inserted && l.trim() == header && !registry.is_some_and(|r| r.contains_key("config_path")) {
            if !l.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&line);
            out.push('\n');
            inserted = true;
        }
    }
    if !inserted {
        out = join_blocks([out.as_str(), &format!("{header}\n{line}")]);
    }
    // The table may be spelled another way (dotted keys, an inline table); then
    // our edit does not parse, or does not land, and a person must do it.
    let landed = toml::from_str::<toml::Table>(&out).ok().is_some_and(|t| {
        registry_table(&t, version).and_then(|r| r.get("config_path")).and_then(toml::Value::as_str)
            == Some(DEFAULT_HOSTS_DIR)
    });
    if !landed {
        return Ok(ConfigPath::Blocked(format!(
            "could not add config_path to {CONFIG_TOML}: set config_path = \"{DEFAULT_HOSTS_DIR}\" in {header} \
             by hand, restart containerd, and run node-setup again"
        )));
    }
    Ok(ConfigPath::Enabled(out))
}

fn cri_plugin(version: i64) -> &'static str {
    match version {
        1 => "cri",
        2 => "io.containerd.grpc.v1.cri",
        _ => "io.containerd.cri.v1.images",
    }
}

fn registry_header(version: i64) -> String {
    match version {
        1 => "[plugins.cri.registry]".to_owned(),
        v => format!("[plugins.\"{}\".registry]", cri_plugin(v)),
    }
}

fn registry_table(table: &toml::Table, version: i64) -> Option<&toml::Table> {
    table.get("plugins")?.get(cri_plugin(version))?.get("registry")?.as_table()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_hosts_toml_lists_the_agent_then_falls_back_to_the_registry() {
        let text = hosts_toml(
            None,
            "p2p.registry.example.com:65001",
            "https://registry.example.com",
            "http://127.0.0.1:65001",
        );
        assert_eq!(
            text,
            "# Written by damselfly-agent node-setup: p2p.registry.example.com:65001 is pulled through the\n\
             # local Damselfly agent, and straight from the registry when the agent is down.\n\
             server = \"https://registry.example.com\"\n\
             \n\
             [host.\"http://127.0.0.1:65001\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
    }

    #[test]
    fn merging_into_a_hosts_toml_keeps_its_server_and_other_hosts_after_the_agent() {
        let existing = "# ours, by hand\nserver = \"https://elsewhere.example.com\"\n\n\
                        [host.\"https://cache.example.com\"]\n  capabilities = [\"pull\"]\n  skip_verify = true\n\n\
                        [host.\"http://127.0.0.1:65001\"]\n  capabilities = [\"pull\"]\n";
        let text = hosts_toml(Some(existing), "p2p.x:65001", "https://x", "http://127.0.0.1:65001");
        assert_eq!(
            text,
            "# ours, by hand\nserver = \"https://elsewhere.example.com\"\n\n\
             [host.\"http://127.0.0.1:65001\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
             [host.\"https://cache.example.com\"]\n  capabilities = [\"pull\"]\n  skip_verify = true\n"
        );
        assert_eq!(hosts_toml(Some(&text), "p2p.x:65001", "https://x", "http://127.0.0.1:65001"), text);
    }

    #[test]
    fn a_hosts_toml_without_a_server_gets_the_registry_as_server() {
        let text = hosts_toml(Some("[host.\"https://a\"]\n"), "p", "http://r:5000", "http://127.0.0.1:65001");
        assert_eq!(
            text,
            "server = \"http://r:5000\"\n\n[host.\"http://127.0.0.1:65001\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
             [host.\"https://a\"]\n"
        );
    }

    #[test]
    fn config_path_is_created_inserted_or_left_as_it_is() {
        assert_eq!(
            enable_config_path(None).expect("fresh"),
            ConfigPath::Enabled(
                "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"
                    .into()
            )
        );
        let with_table =
            "version = 2\n# keep me\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n\n[debug]\n  level = \"info\"\n";
        assert_eq!(
            enable_config_path(Some(with_table)).expect("insert"),
            ConfigPath::Enabled(
                "version = 2\n# keep me\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n\n[debug]\n  level = \"info\"\n"
                    .into()
            )
        );
        let without_table = "version = 3\nroot = \"/var/lib/containerd\"\n";
        assert_eq!(
            enable_config_path(Some(without_table)).expect("append"),
            ConfigPath::Enabled(
                "version = 3\nroot = \"/var/lib/containerd\"\n\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"
                    .into()
            )
        );
        let set = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/k8s/certs.d:/etc/docker/certs.d\"\n";
        assert_eq!(enable_config_path(Some(set)).expect("set"), ConfigPath::AlreadySet("/etc/k8s/certs.d".into()));
    }

    #[test]
    fn the_empty_config_path_of_containerd_s_default_config_is_set() {
        let default = "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    sandbox_image = \"registry.k8s.io/pause:3.8\"\n\n    \
                       [plugins.\"io.containerd.grpc.v1.cri\".registry]\n      config_path = \"\"\n\n      \
                       [plugins.\"io.containerd.grpc.v1.cri\".registry.auths]\n\n      \
                       [plugins.\"io.containerd.grpc.v1.cri\".registry.configs]\n\n      \
                       [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors]\n";
        assert_eq!(
            enable_config_path(Some(default)).expect("set"),
            ConfigPath::Enabled(default.replace("config_path = \"\"", "config_path = \"/etc/containerd/certs.d\""))
        );
    }

    #[test]
    fn config_path_is_not_added_beside_legacy_mirrors() {
        let legacy = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"https://m\"]\n";
        let ConfigPath::Blocked(reason) = enable_config_path(Some(legacy)).expect("blocked") else {
            panic!("must be blocked");
        };
        assert!(reason.contains("move them to hosts.toml files"), "{reason}");
        assert!(matches!(enable_config_path(Some("version = ")), Err(Error::Invalid { .. })));
    }
}
