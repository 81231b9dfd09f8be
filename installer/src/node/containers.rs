//! CRI-O, podman, buildah and skopeo: a `registries.conf.d` drop-in that maps
//! the acceleration host to the registry, with the local agent as a mirror.
//! The containers tools try mirrors in order and then the location itself,
//! so pulls keep working while the agent is down.

use super::toml_text::{join_blocks, quoted, Sections};

/// The drop-in directory the containers tools read after `registries.conf`.
pub const DROP_IN_DIR: &str = "/etc/containers/registries.conf.d";

/// The drop-in's file name for an acceleration host (`:` is kept out of file names).
pub fn drop_in_name(acceleration_host: &str) -> String {
    let safe: String = acceleration_host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    format!("50-damselfly-{safe}.conf")
}

/// The drop-in's content. A file already there keeps everything but a
/// `[[registry]]` for the same prefix, which ours replaces.
pub fn registries_conf(
    existing: Option<&str>,
    acceleration_host: &str,
    registry_host: &str,
    registry_insecure: bool,
    mirror_host: &str,
) -> String {
    let mut ours =
        format!("[[registry]]\nprefix = {}\nlocation = {}\n", quoted(acceleration_host), quoted(registry_host));
    if registry_insecure {
        ours.push_str("insecure = true\n");
    }
    // The agent's mirror speaks plain HTTP on the node itself.
    ours.push_str(&format!("\n[[registry.mirror]]\nlocation = {}\ninsecure = true\n", quoted(mirror_host)));
    let Some(existing) = existing.filter(|e| !e.trim().is_empty()) else {
        let comment = format!(
            "# Written by damselfly-agent node-setup: {acceleration_host} is pulled through the\n\
             # local Damselfly agent first, then straight from the registry."
        );
        return join_blocks([comment.as_str(), ours.as_str()]);
    };
    let sections = Sections::parse(existing);
    let mut kept: Vec<&str> = vec![sections.preamble.as_str()];
    let mut in_ours = false;
    for table in &sections.tables {
        if table.header == "[[registry]]" {
            in_ours = table.string_value("prefix").as_deref() == Some(acceleration_host);
        } else if !table.header.starts_with("[[registry.") {
            in_ours = false;
        }
        if !in_ours {
            kept.push(table.text.as_str());
        }
    }
    kept.push(ours.as_str());
    join_blocks(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_drop_in_maps_the_acceleration_host_to_the_registry_with_the_agent_as_mirror() {
        assert_eq!(drop_in_name("p2p.registry.example.com:65001"), "50-damselfly-p2p.registry.example.com_65001.conf");
        assert_eq!(
            registries_conf(None, "p2p.registry.example.com:65001", "registry.example.com", false, "127.0.0.1:65001"),
            "# Written by damselfly-agent node-setup: p2p.registry.example.com:65001 is pulled through the\n\
             # local Damselfly agent first, then straight from the registry.\n\
             \n\
             [[registry]]\n\
             prefix = \"p2p.registry.example.com:65001\"\n\
             location = \"registry.example.com\"\n\
             \n\
             [[registry.mirror]]\n\
             location = \"127.0.0.1:65001\"\n\
             insecure = true\n"
        );
    }

    #[test]
    fn merging_keeps_other_registries_and_replaces_our_own_entry() {
        let existing = "# site policy\nshort-name-mode = \"enforcing\"\n\n\
                        [[registry]]\nprefix = \"p2p.x:65001\"\nlocation = \"old\"\n\n[[registry.mirror]]\nlocation = \"old-mirror\"\n\n\
                        [[registry]]\nlocation = \"quay.io\"\n\n[[registry.mirror]]\nlocation = \"quay-cache:5000\"\n";
        let text = registries_conf(Some(existing), "p2p.x:65001", "r:5000", true, "127.0.0.1:65001");
        assert_eq!(
            text,
            "# site policy\nshort-name-mode = \"enforcing\"\n\n\
             [[registry]]\nlocation = \"quay.io\"\n\n[[registry.mirror]]\nlocation = \"quay-cache:5000\"\n\n\
             [[registry]]\nprefix = \"p2p.x:65001\"\nlocation = \"r:5000\"\ninsecure = true\n\n\
             [[registry.mirror]]\nlocation = \"127.0.0.1:65001\"\ninsecure = true\n"
        );
        assert_eq!(registries_conf(Some(&text), "p2p.x:65001", "r:5000", true, "127.0.0.1:65001"), text);
    }
}
