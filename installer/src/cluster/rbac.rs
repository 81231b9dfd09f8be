//! What the image-rewrite webhook may do in the Kubernetes API.
//!
//! It reads the labels of the Pod's namespace and copies the Pod's pull
//! secrets for the acceleration host beside them. RBAC can grant no less
//! than `get`, `create` and `update` on Secrets for that: it cannot name a
//! Secret that does not exist yet (`create` ignores `resourceNames`), nor
//! choose Secrets by label. So the webhook keeps the narrower rule itself
//! (see `damselfly_installer::webhook::secret_write`): it reads only the
//! pull secrets a Pod names, and overwrites only Secrets carrying its
//! label. What is left to RBAC is where: in every namespace
//! ([`SecretAccess::Cluster`]), or only in the accelerated namespaces given
//! to the setup script ([`SecretAccess::Namespaces`]: a Role in each).
//!
//! The objects are built as JSON, which `kubectl` reads as YAML, so that
//! the tests can check every rule rather than a text.

use serde_json::{json, Value};

use super::NAMESPACE;

/// The name of the webhook's ServiceAccount, ClusterRole, Roles and bindings.
pub const WEBHOOK: &str = "damselfly-webhook";

/// Where the webhook may read and write Secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretAccess {
    /// In every namespace (a namespace labelled later needs nothing more).
    Cluster,
    /// Only in namespaces with a Role of their own.
    Namespaces,
}

impl SecretAccess {
    /// The word the setup script's `--webhook-rbac` takes, and the
    /// ClusterRole's `damselfly.io/secret-access` annotation records.
    pub fn word(self) -> &'static str {
        match self {
            SecretAccess::Cluster => "cluster",
            SecretAccess::Namespaces => "namespaces",
        }
    }
}

fn labels() -> Value {
    json!({"app.kubernetes.io/part-of": "damselfly", "app.kubernetes.io/managed-by": "damselfly-installer"})
}

fn secrets_rule() -> Value {
    json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update"]})
}

/// The ClusterRole: the namespaces' labels always, Secrets everywhere only with [`SecretAccess::Cluster`].
pub fn cluster_role(access: SecretAccess) -> Value {
    let mut rules = vec![json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]})];
    if access == SecretAccess::Cluster {
        rules.push(secrets_rule());
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": WEBHOOK,
            "labels": labels(),
            "annotations": {"damselfly.io/secret-access": access.word()},
        },
        "rules": rules,
    })
}

fn subjects() -> Value {
    json!([{"kind": "ServiceAccount", "name": WEBHOOK, "namespace": NAMESPACE}])
}

/// Binds the ClusterRole to the webhook's ServiceAccount.
pub fn cluster_role_binding() -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": WEBHOOK, "labels": labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": WEBHOOK},
        "subjects": subjects(),
    })
}

/// With [`SecretAccess::Namespaces`], the Role and RoleBinding that let the
/// webhook copy pull secrets in one accelerated namespace.
pub fn namespace_role(namespace: &str) -> [Value; 2] {
    let metadata = json!({"name": WEBHOOK, "namespace": namespace, "labels": labels()});
    [
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata,
            "rules": [secrets_rule()],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": WEBHOOK},
            "subjects": subjects(),
        }),
    ]
}

/// Objects as one YAML stream (each a JSON document).
pub fn stream(objects: &[Value]) -> String {
    objects.iter().map(|o| serde_json::to_string_pretty(o).unwrap_or_default()).collect::<Vec<_>>().join("\n---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(apiGroups, resources, verbs)` of each rule, as comma-separated words; no rule names resources or URLs.
    fn grants(role: &Value) -> Vec<(String, String, String)> {
        let words = |v: &Value| {
            v.as_array()
                .expect("a list")
                .iter()
                .map(|w| w.as_str().expect("a word").to_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        role["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .map(|r| {
                assert!(r.get("resourceNames").is_none() && r.get("nonResourceURLs").is_none(), "{r}");
                (words(&r["apiGroups"]), words(&r["resources"]), words(&r["verbs"]))
            })
            .collect()
    }

    fn grant(group: &str, resources: &str, verbs: &str) -> (String, String, String) {
        (group.into(), resources.into(), verbs.into())
    }

    #[test]
    fn cluster_wide_the_webhook_reads_namespaces_and_gets_creates_and_updates_secrets_and_nothing_else() {
        let role = cluster_role(SecretAccess::Cluster);
        assert_eq!(role["kind"], "ClusterRole");
        assert_eq!(role["metadata"]["annotations"]["damselfly.io/secret-access"], "cluster");
        assert_eq!(grants(&role), [grant("", "namespaces", "get"), grant("", "secrets", "get,create,update")]);
    }

    #[test]
    fn per_namespace_the_cluster_role_holds_no_secret_and_each_namespace_grants_its_own() {
        let role = cluster_role(SecretAccess::Namespaces);
        assert_eq!(role["metadata"]["annotations"]["damselfly.io/secret-access"], "namespaces");
        assert_eq!(grants(&role), [grant("", "namespaces", "get")]);

        let [role, binding] = namespace_role("team-a");
        assert_eq!((role["kind"].as_str(), role["metadata"]["namespace"].as_str()), (Some("Role"), Some("team-a")));
        assert_eq!(grants(&role), [grant("", "secrets", "get,create,update")]);
        assert_eq!(binding["kind"], "RoleBinding");
        assert_eq!(binding["metadata"]["namespace"], "team-a");
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "damselfly-webhook"})
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "damselfly-webhook", "namespace": "damselfly-system"}])
        );
    }

    #[test]
    fn no_rule_lists_watches_deletes_or_uses_a_wildcard() {
        let [role, _] = namespace_role("team-a");
        for role in [cluster_role(SecretAccess::Cluster), cluster_role(SecretAccess::Namespaces), role] {
            for (groups, resources, verbs) in grants(&role) {
                for word in verbs.split(',').chain(resources.split(',')).chain(groups.split(',')) {
                    assert!(
                        ![
                            "*",
                            "list",
                            "watch",
                            "delete",
                            "deletecollection",
                            "patch",
                            "escalate",
                            "bind",
                            "impersonate"
                        ]
                        .contains(&word),
                        "{word} in {role}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_binding_names_the_webhook_s_service_account_in_the_setup_s_namespace() {
        let binding = cluster_role_binding();
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
        assert_eq!(binding["roleRef"]["name"], "damselfly-webhook");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "damselfly-webhook", "namespace": "damselfly-system"}])
        );
    }
}
