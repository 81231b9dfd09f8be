//! The POSIX `sh` setup script: the template in `setup.sh` with the
//! cluster's values filled in as shell-quoted strings, and the manifests
//! embedded as here-documents.

use super::{cleanup_manifest, manifests, ClusterSetup};

const TEMPLATE: &str = include_str!("setup.sh");

/// `s` as one single-quoted shell word.
fn shell_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Text safe inside an unquoted here-document: no expansions but ours.
fn heredoc_escaped(s: &str) -> String {
    s.replace('\\', r"\\").replace('$', r"\$").replace('`', r"\`")
}

/// Text safe on a `#` comment line.
fn comment_text(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The setup script for a cluster.
pub fn script(setup: &ClusterSetup) -> String {
    let objects = heredoc_escaped(manifests(setup).trim_end())
        .replace("@@TLS_CRT@@", "${tls_crt}")
        .replace("@@TLS_KEY@@", "${tls_key}")
        .replace("@@CA_CRT@@", "${ca_crt}");
    let node_config = format!(
        "{}cluster_token = {}",
        setup.agent_toml("/var/lib/damselfly/cache"),
        serde_json::Value::String(setup.cluster_token.clone())
    );
    TEMPLATE
        .replace("@@CLUSTER_TEXT@@", &comment_text(&setup.cluster))
        .replace("@@REGISTRY_TEXT@@", &comment_text(&setup.registry_url))
        .replace("@@REGISTRY_URL@@", &shell_quoted(&setup.registry_url))
        .replace("@@CLUSTER@@", &shell_quoted(&setup.cluster))
        .replace("@@ACCELERATION_HOST@@", &shell_quoted(&setup.acceleration_host))
        .replace("@@REGISTRY_CA@@", &shell_quoted(setup.registry_ca.as_deref().unwrap_or_default().trim_end()))
        .replace("@@CLEANUP_MANIFEST@@", cleanup_manifest(setup).trim_end())
        .replace("@@NODE_CONFIG@@", &node_config)
        .replace("@@MANIFESTS@@", &objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_and_here_documents_cannot_be_broken_out_of() {
        assert_eq!(shell_quoted("it's"), r"'it'\''s'");
        assert_eq!(heredoc_escaped("a $(b) `c` \\d"), r"a \$(b) \`c\` \\d");
    }
}
