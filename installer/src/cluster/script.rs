//! The POSIX `sh` setup script: the template in `setup.sh` with the
//! cluster's values filled in as shell-quoted strings, and the manifests
//! embedded as here-documents.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::rbac::{self, SecretAccess};
use super::{cleanup_manifest, config_hash, manifests, ClusterSetup};
use crate::webhook::MANAGED_BY;

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
    // The secrets and the RBAC are filled in when the script runs: the
    // token is hidden by a dry run, the TLS material is made or read back,
    // and the RBAC follows --webhook-rbac.
    let objects = heredoc_escaped(manifests(setup).trim_end())
        .replace("@@CLUSTER_TOKEN@@", "${cluster_token}")
        .replace("@@TLS_CRT@@", "${tls_crt}")
        .replace("@@TLS_KEY@@", "${tls_key}")
        .replace("@@CA_CRT@@", "${ca_crt}")
        .replace("@@WEBHOOK_RBAC@@", "$(webhook_rbac)");
    let node_config = format!(
        "{}cluster_token = {}",
        setup.agent_toml("/var/lib/damselfly/cache"),
        serde_json::Value::String(setup.cluster_token.clone())
    );
    let cluster_wide = rbac::stream(&[rbac::cluster_role(SecretAccess::Cluster), rbac::cluster_role_binding()]);
    let per_namespace = rbac::stream(&[rbac::cluster_role(SecretAccess::Namespaces), rbac::cluster_role_binding()]);
    let namespace_role = heredoc_escaped(&rbac::stream(&rbac::namespace_role("@@NS@@"))).replace("@@NS@@", "$1");
    TEMPLATE
        .replace("@@CLUSTER_TEXT@@", &comment_text(&setup.cluster))
        .replace("@@REGISTRY_TEXT@@", &comment_text(&setup.registry_url))
        .replace("@@REGISTRY_URL@@", &shell_quoted(&setup.registry_url))
        .replace("@@CLUSTER@@", &shell_quoted(&setup.cluster))
        .replace("@@ACCELERATION_HOST@@", &shell_quoted(&setup.acceleration_host))
        .replace("@@AGENT_IMAGE@@", &shell_quoted(&setup.agent_image))
        .replace("@@CONFIG_HASH@@", &shell_quoted(&config_hash(setup)))
        .replace("@@COPIED_SECRETS@@", &shell_quoted(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)))
        .replace("@@CLUSTER_TOKEN@@", &shell_quoted(&STANDARD.encode(&setup.cluster_token)))
        .replace("@@REGISTRY_CA@@", &shell_quoted(setup.registry_ca.as_deref().unwrap_or_default().trim_end()))
        .replace("@@RBAC_CLUSTER@@", &cluster_wide)
        .replace("@@RBAC_NAMESPACES@@", &per_namespace)
        .replace("@@RBAC_NAMESPACE@@", &namespace_role)
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
