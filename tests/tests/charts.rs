//! The Helm charts in charts/: rendered with several sets of values (by
//! tests/render_chart.py, which renders the template subset the charts keep
//! to exactly as `helm template` does; no helm binary can be installed here),
//! and the result validated against the Kubernetes schemas.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use damselfly_tests::kubernetes::{pyenv_bin, validate};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Renders `chart` with `values` (YAML) as release `agent`/`registry` in `namespace`.
fn render(chart: &str, values: &str) -> Output {
    let dir = tempfile::tempdir().expect("dir");
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, values).expect("write values");
    Command::new(pyenv_bin("python"))
        .arg(workspace().join("tests/render_chart.py"))
        .arg(workspace().join("charts").join(chart))
        .arg("-f")
        .arg(&values_file)
        .args(["--name", "dfly", "--namespace", "damselfly-system"])
        .output()
        .expect("run render_chart.py")
}

fn rendered(chart: &str, values: &str) -> String {
    let out = render(chart, values);
    assert!(out.status.success(), "rendering {chart} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

const REGISTRY: &str =
    "image:\n  repository: registry.example.com/damselfly/registry\npublicUrl: https://registry.example.com\n";

const AGENT: &str =
    "registry:\n  url: https://registry.example.com\naccelerationHost: p2p.registry.example.com:65001\n\
                     image:\n  repository: registry.example.com/damselfly/agent\n\
                     webhook:\n  tls:\n    certificate: Y2VydA==\n    key: a2V5\n    ca: Y2E=\n";

#[test]
fn the_registry_chart_renders_valid_objects_with_its_defaults() {
    let yaml = rendered("damselfly", REGISTRY);
    assert_eq!(
        validate(&yaml),
        ["deployment/dfly", "persistentvolumeclaim/dfly-data", "service/dfly", "serviceaccount/dfly"]
    );
    for secure in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "automountServiceAccountToken: false",
        "type: RuntimeDefault",
        "value: \"https://registry.example.com\"",
    ] {
        assert!(yaml.contains(secure), "{secure} missing:\n{yaml}");
    }
    assert!(!yaml.contains("DAMSELFLY_DATABASE_URL"), "SQLite on the volume by default");
}

#[test]
fn the_registry_chart_with_postgres_an_ingress_and_an_existing_claim_renders_valid_objects() {
    let values = format!(
        "{REGISTRY}replicas: 3\ndatabase:\n  existingSecret: pg\nadmin:\n  existingSecret: admin\n\
         signingKey:\n  existingSecret: token-key\n\
         persistence:\n  existingClaim: shared-blobs\n\
         ingress:\n  enabled: true\n  className: nginx\n  host: registry.example.com\n  \
         annotations:\n    nginx.ingress.kubernetes.io/proxy-body-size: \"0\"\n  tls:\n    secretName: registry-tls\n"
    );
    let yaml = rendered("damselfly", &values);
    assert_eq!(validate(&yaml), ["deployment/dfly", "ingress/dfly", "service/dfly", "serviceaccount/dfly"]);
    for wanted in [
        "replicas: 3",
        "name: DAMSELFLY_DATABASE_URL\n              valueFrom:\n                secretKeyRef:\n                  name: pg\n                  key: url",
        "name: DAMSELFLY_ADMIN_PASSWORD\n              valueFrom:\n                secretKeyRef:\n                  name: admin\n                  key: password",
        "claimName: shared-blobs",
        "name: DAMSELFLY_SIGNING_KEY_FILE\n              value: /etc/damselfly/signing-key/key.pem",
        "secretName: token-key\n            defaultMode: 0440\n            items:\n              - key: signing-key.pem\n                path: key.pem",
        "nginx.ingress.kubernetes.io/proxy-body-size: '0'",
        "secretName: registry-tls",
    ] {
        assert!(yaml.contains(wanted), "{wanted:?} missing:\n{yaml}");
    }
}

#[test]
fn the_agent_chart_renders_the_daemonset_and_the_webhook_as_the_script_installs_them() {
    let yaml = rendered("damselfly-agent", &format!("{AGENT}clusterToken:\n  value: dfc_token\n"));
    assert_eq!(
        validate(&yaml),
        [
            "configmap/dfly",
            "serviceaccount/dfly",
            "daemonset/dfly",
            "secret/dfly-cluster",
            "serviceaccount/dfly-webhook",
            "clusterrole/dfly-webhook",
            "clusterrolebinding/dfly-webhook",
            "secret/dfly-webhook-tls",
            "deployment/dfly-webhook",
            "service/dfly-webhook",
            "mutatingwebhookconfiguration/dfly-image-rewrite",
        ]
    );
    for wanted in [
        "hostNetwork: true",
        "hostPort: 65001",
        "hostPort: 65002",
        "hostPort: 65003",
        "tolerations:\n        - operator: Exists",
        "priorityClassName: system-node-critical",
        "failurePolicy: Ignore",
        "cluster-token: \"dfc_token\"",
        "cache_max_bytes = 21474836480",
        "cache_high_watermark = 85\n    cache_low_watermark = 75",
        "\"--acceleration-host\", \"p2p.registry.example.com:65001\"",
    ] {
        assert!(yaml.contains(wanted), "{wanted:?} missing:\n{yaml}");
    }
}

#[test]
fn the_agent_chart_hands_a_private_registry_ca_to_the_agents() {
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";
    let with_token = format!("{AGENT}clusterToken:\n  value: dfc_token\n");
    let values =
        with_token.replacen("registry:\n", &format!("registry:\n  ca: {}\n", serde_json::Value::String(ca.into())), 1);
    let yaml = rendered("damselfly-agent", &values);
    validate(&yaml);
    assert!(
        yaml.contains("    cache_low_watermark = 75\n    registry_ca = \"/etc/damselfly/registry-ca.pem\"\n"),
        "{yaml}"
    );
    assert!(yaml.contains(&format!("  registry-ca.pem: {}\n", serde_json::Value::String(ca.into()))), "{yaml}");
    let without = rendered("damselfly-agent", &with_token);
    assert!(!without.contains("registry_ca") && !without.contains("registry-ca.pem"), "{without}");
}

#[test]
fn the_agent_chart_takes_the_token_from_an_existing_secret_and_can_leave_the_webhook_out() {
    let values = format!("{AGENT}clusterToken:\n  existingSecret: from-vault\n")
        .replace("webhook:\n", "webhook:\n  enabled: false\n");
    let yaml = rendered("damselfly-agent", &values);
    assert_eq!(validate(&yaml), ["configmap/dfly", "serviceaccount/dfly", "daemonset/dfly"]);
    assert!(yaml.contains("name: from-vault\n                  key: cluster-token"), "{yaml}");
}

#[test]
fn a_chart_missing_a_required_value_says_which_and_what_it_is() {
    let out =
        render("damselfly-agent", "registry:\n  url: https://r.example.com\nimage:\n  repository: r.example.com/a\n");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "Error: {}/templates/daemonset.yaml: accelerationHost is required, e.g. p2p.registry.example.com:65001",
            workspace().join("charts/damselfly-agent").display()
        )
    );
    let out = render("damselfly", "image:\n  repository: r.example.com/x\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "Error: {}/templates/deployment.yaml: publicUrl is required: the URL clients reach the registry at, e.g. https://registry.example.com",
            workspace().join("charts/damselfly").display()
        )
    );
}
