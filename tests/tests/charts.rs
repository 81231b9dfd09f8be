//! The Helm charts in charts/, with several sets of values: linted by real
//! Helm (`helm lint --strict`, Helm v4's library from the helm-sdkpy package,
//! through tests/helm_lint.py), and rendered to YAML by tests/render_chart.py
//! (the template subset the charts keep to, as `helm template` renders it:
//! helm-sdkpy offers no rendering without a cluster), the result validated
//! against the Kubernetes schemas.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use damselfly_tests::kubernetes::{pyenv_bin, validate};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `tests/<tool>` (a Python script of the venv) on `chart` with `values` (YAML) in a file.
fn with_values(tool: &str, chart: &str, values: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("dir");
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, values).expect("write values");
    Command::new(pyenv_bin("python"))
        .arg(workspace().join("tests").join(tool))
        .arg(workspace().join("charts").join(chart))
        .arg("-f")
        .arg(&values_file)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"))
}

/// Renders `chart` with `values` as release `dfly` in `damselfly-system`.
fn render(chart: &str, values: &str) -> Output {
    with_values("render_chart.py", chart, values, &["--name", "dfly", "--namespace", "damselfly-system"])
}

/// Runs real `helm lint --strict` on `chart` with `values` (helm-sdkpy, in the venv).
fn helm_lint(chart: &str, values: &str) -> Output {
    with_values("helm_lint.py", chart, values, &[])
}

/// The chart rendered with the values, after real Helm has linted it with them.
fn rendered(chart: &str, values: &str) -> String {
    let lint = helm_lint(chart, values);
    let report = format!("{}{}", String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));
    assert!(lint.status.success(), "helm lint {chart} failed:\n{report}");
    assert!(report.contains("1 chart(s) linted") && !report.contains("missing required values"), "{report}");
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
        [
            "deployment/dfly",
            "poddisruptionbudget/dfly",
            "persistentvolumeclaim/dfly-data",
            "service/dfly",
            "serviceaccount/dfly"
        ]
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
    assert!(!yaml.contains("DAMSELFLY_STORAGE"), "blobs on the volume by default");
    // One replica: the budget blocks no drain.
    assert!(yaml.contains("kind: PodDisruptionBudget\nmetadata:\n  name: dfly\n"), "{yaml}");
    assert!(yaml.contains("  maxUnavailable: 1\n"), "{yaml}");
}

#[test]
fn the_registry_chart_with_replicas_on_postgres_and_s3_renders_valid_objects_and_claims_no_volume() {
    let values = format!(
        "{REGISTRY}replicas: 3\ndatabase:\n  existingSecret: pg\n\
         s3:\n  enabled: true\n  bucket: damselfly-blobs\n  prefix: prod/\n  endpoint: http://seaweedfs-s3:8333\n  \
         pathStyle: true\n  credentials:\n    existingSecret: s3-keys\n\
         podDisruptionBudget:\n  maxUnavailable: 2\n"
    );
    let yaml = rendered("damselfly", &values);
    assert_eq!(
        validate(&yaml),
        ["deployment/dfly", "poddisruptionbudget/dfly", "service/dfly", "serviceaccount/dfly"],
        "no claim: blobs in the bucket, metadata in PostgreSQL"
    );
    for wanted in [
        "replicas: 3",
        "name: DAMSELFLY_STORAGE\n              value: s3",
        "name: DAMSELFLY_S3_BUCKET\n              value: \"damselfly-blobs\"",
        "name: DAMSELFLY_S3_PREFIX\n              value: \"prod/\"",
        "name: DAMSELFLY_S3_ENDPOINT\n              value: \"http://seaweedfs-s3:8333\"",
        "name: DAMSELFLY_S3_REGION\n              value: \"us-east-1\"",
        "name: DAMSELFLY_S3_PATH_STYLE\n              value: \"true\"",
        "name: AWS_ACCESS_KEY_ID\n              valueFrom:\n                secretKeyRef:\n                  name: s3-keys\n                  key: access-key-id",
        "name: AWS_SECRET_ACCESS_KEY\n              valueFrom:\n                secretKeyRef:\n                  name: s3-keys\n                  key: secret-access-key",
        "name: POD_IP\n              valueFrom:\n                fieldRef:\n                  fieldPath: status.podIP",
        "name: DAMSELFLY_INTERNAL_URL\n              value: \"http://$(POD_IP):5000\"",
        "- name: data\n          # Blobs are in the bucket and metadata in PostgreSQL: nothing here outlives the Pod.\n          emptyDir: {}",
        "  maxUnavailable: 2\n",
    ] {
        assert!(yaml.contains(wanted), "{wanted:?} missing:\n{yaml}");
    }
    assert!(!yaml.contains("DAMSELFLY_S3_REDIRECT") && !yaml.contains("persistentVolumeClaim"), "{yaml}");
    // Without a bucket or credentials, rendering says which is missing.
    let no_keys = values.replace("  credentials:\n    existingSecret: s3-keys\n", "");
    refused(&no_keys, "s3.credentials.existingSecret is required with s3.enabled");
    // Replicas that could not share their metadata or blobs are refused, saying what to set.
    refused(&values.replace("database:\n  existingSecret: pg\n", ""), "replicas above 1 need PostgreSQL");
    refused(&values.replace("s3:\n  enabled: true\n", "s3:\n  enabled: false\n"), "set s3.enabled");
}

/// Rendering the registry chart with `values` fails, saying `why`, here and in real Helm's lint.
fn refused(values: &str, why: &str) {
    let out = render("damselfly", values);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains(why), "rendering did not fail with {why:?}: {said}");
    let lint = helm_lint("damselfly", values);
    let report = format!("{}{}", String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));
    // Helm's lint reports what `required` and `fail` stop at without failing itself.
    assert!(report.contains(why), "helm lint did not report {why:?}: {report}");
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
    assert_eq!(
        validate(&yaml),
        ["deployment/dfly", "ingress/dfly", "poddisruptionbudget/dfly", "service/dfly", "serviceaccount/dfly"]
    );
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
fn the_agent_chart_can_give_the_webhook_secrets_in_named_namespaces_only() {
    let values = format!("{AGENT}clusterToken:\n  value: dfc_token\n")
        .replace("webhook:\n", "webhook:\n  secretNamespaces: [team-a, team-b]\n");
    let yaml = rendered("damselfly-agent", &values);
    let objects = validate(&yaml);
    let rbac: Vec<&str> = objects.iter().map(String::as_str).filter(|o| o.contains("role")).collect();
    assert_eq!(
        rbac,
        [
            "clusterrole/dfly-webhook",
            "clusterrolebinding/dfly-webhook",
            "role/dfly-webhook",
            "rolebinding/dfly-webhook",
            "role/dfly-webhook",
            "rolebinding/dfly-webhook",
        ]
    );
    let cluster_role = yaml.split("kind: ClusterRole\n").nth(1).expect("ClusterRole").split("---").next().expect("end");
    assert!(
        cluster_role
            .ends_with("rules:\n  - apiGroups: [\"\"]\n    resources: [\"namespaces\"]\n    verbs: [\"get\"]\n"),
        "{cluster_role}"
    );
    for ns in ["team-a", "team-b"] {
        assert!(
            yaml.contains(&format!("kind: Role\nmetadata:\n  name: dfly-webhook\n  namespace: {ns}\n  labels:\n    app.kubernetes.io/name: damselfly-webhook\n    app.kubernetes.io/instance: dfly\nrules:\n  - apiGroups: [\"\"]\n    resources: [\"secrets\"]\n    verbs: [\"get\", \"create\", \"update\"]\n")),
            "{yaml}"
        );
    }
    // By default the ClusterRole holds the Secrets, and no Role is made.
    let default = rendered("damselfly-agent", &format!("{AGENT}clusterToken:\n  value: dfc_token\n"));
    assert!(default.contains("    verbs: [\"get\"]\n  - apiGroups: [\"\"]\n    resources: [\"secrets\"]\n    verbs: [\"get\", \"create\", \"update\"]\n"), "{default}");
    assert!(!default.contains("kind: Role\n"), "{default}");
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
    // Real Helm reports the chart's own message too.
    let lint = helm_lint(
        "damselfly-agent",
        "registry:\n  url: https://r.example.com\nimage:\n  repository: r.example.com/a\n",
    );
    let report = String::from_utf8_lossy(&lint.stderr);
    assert!(
        report.contains(
            "missing required values message=\"accelerationHost is required, e.g. p2p.registry.example.com:65001\""
        ),
        "{report}"
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
