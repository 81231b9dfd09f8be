//! The Kubernetes objects of a cluster setup, as one YAML stream.
//!
//! The webhook's TLS material is made on the cluster owner's machine when
//! the script runs, and a dry run hides the secrets, so the stream holds
//! placeholders for them: `@@TLS_CRT@@`, `@@TLS_KEY@@`, `@@CA_CRT@@` (base64
//! of PEM) and `@@CLUSTER_TOKEN@@` (base64 of the token). The
//! webhook's RBAC depends on the script's options, so the stream holds
//! `@@WEBHOOK_RBAC@@` where it goes (see [`super::rbac`]).
//!
//! Secrets carry `data` (base64), not `stringData`: applied server-side,
//! an unchanged Secret is then not written again.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{fingerprint, ClusterSetup, ACCELERATION_LABEL, ACCELERATION_LABEL_VALUE, NAMESPACE, WEBHOOK_PORT};

/// A YAML (and JSON) string literal.
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

const LABELS: &str = "app.kubernetes.io/part-of: damselfly\n    app.kubernetes.io/managed-by: damselfly-installer";

/// Every object, in the order `kubectl apply` should create them.
pub fn manifests(setup: &ClusterSetup) -> String {
    let agent_toml = setup.agent_toml("/var/lib/damselfly/cache");
    let config_hash = config_hash(setup);
    let image = q(&setup.agent_image);
    let registry = q(&setup.registry_url);
    let accel = q(&setup.acceleration_host);
    let indented_toml: String = agent_toml.lines().map(|l| format!("    {l}\n")).collect();
    let cluster = q(&setup.cluster);
    // The registry's private CA, if any, beside the token; the agent reads it from its config directory.
    let registry_ca = match &setup.registry_ca {
        Some(pem) => format!("  registry-ca.pem: {}\n", STANDARD.encode(pem)),
        None => String::new(),
    };
    format!(
        r#"# Damselfly cluster setup for {cluster_plain}: the agent on every node, and
# the webhook that points Pods of labelled namespaces at {accel_plain}.
{namespace}---
apiVersion: v1
kind: Secret
metadata:
  name: damselfly-cluster
  namespace: {NAMESPACE}
  labels:
    {LABELS}
  annotations:
    damselfly.io/cluster: {cluster}
type: Opaque
data:
  cluster-token: "@@CLUSTER_TOKEN@@"
{registry_ca}---
apiVersion: v1
kind: ConfigMap
metadata:
  name: damselfly-agent
  namespace: {NAMESPACE}
  labels:
    {LABELS}
data:
  agent.toml: |
{indented_toml}---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: damselfly-agent
  namespace: {NAMESPACE}
  labels:
    {LABELS}
automountServiceAccountToken: false
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: damselfly-webhook
  namespace: {NAMESPACE}
  labels:
    {LABELS}
---
# The webhook reads the Pod's namespace labels, and copies the Pod's pull
# secrets for the acceleration host in the Pod's namespace.
@@WEBHOOK_RBAC@@
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: damselfly-agent
  namespace: {NAMESPACE}
  labels:
    app.kubernetes.io/name: damselfly-agent
    {LABELS}
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: damselfly-agent
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: "10%"
  template:
    metadata:
      labels:
        app.kubernetes.io/name: damselfly-agent
        app.kubernetes.io/part-of: damselfly
      annotations:
        damselfly.io/config: "{config_hash}"
    spec:
      serviceAccountName: damselfly-agent
      automountServiceAccountToken: false
      # Runtimes on the node reach the mirror on the node's loopback, and
      # peers reach the piece server on the node's address.
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      priorityClassName: system-node-critical
      # Every node pulls images, tainted or not.
      tolerations:
        - operator: Exists
      initContainers:
        - name: node-setup
          image: {image}
          args: ["node-setup", "--root", "/host", "--registry", {registry}, "--acceleration-host", {accel}, "--mirror", "127.0.0.1:65001"]
          securityContext:
            runAsUser: 0
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          resources:
            requests:
              cpu: 10m
              memory: 16Mi
            limits:
              cpu: 100m
              memory: 64Mi
          volumeMounts:
            - name: host-etc
              mountPath: /host/etc
            - name: state
              mountPath: /host/var/lib/damselfly
      containers:
        - name: agent
          image: {image}
          args: ["run"]
          env:
            - name: DAMSELFLY_AGENT_CONFIG
              value: /etc/damselfly/agent.toml
            - name: DAMSELFLY_AGENT_CLUSTER_TOKEN
              valueFrom:
                secretKeyRef:
                  name: damselfly-cluster
                  key: cluster-token
            - name: DAMSELFLY_AGENT_NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            - name: DAMSELFLY_AGENT_ADVERTISE_IP
              valueFrom:
                fieldRef:
                  fieldPath: status.hostIP
          ports:
            - name: mirror
              containerPort: 65001
              hostPort: 65001
              protocol: TCP
            - name: peer
              containerPort: 65002
              hostPort: 65002
              protocol: TCP
            - name: metrics
              containerPort: 65003
              hostPort: 65003
              protocol: TCP
          # Ready once registered with the registry; alive while it answers at all.
          readinessProbe:
            httpGet:
              path: /healthz
              port: 65003
            periodSeconds: 10
          livenessProbe:
            tcpSocket:
              port: 65003
            initialDelaySeconds: 10
            periodSeconds: 20
            failureThreshold: 3
          resources:
            requests:
              cpu: 100m
              memory: 128Mi
            limits:
              cpu: "2"
              memory: 1Gi
          securityContext:
            runAsUser: 0
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: config
              mountPath: /etc/damselfly
              readOnly: true
            - name: cache
              mountPath: /var/lib/damselfly/cache
      volumes:
        - name: config
          projected:
            sources:
              - configMap:
                  name: damselfly-agent
              - secret:
                  name: damselfly-cluster
                  optional: true
                  items:
                    - key: registry-ca.pem
                      path: registry-ca.pem
        - name: host-etc
          hostPath:
            path: /etc
            type: Directory
        - name: state
          hostPath:
            path: /var/lib/damselfly
            type: DirectoryOrCreate
        - name: cache
          hostPath:
            path: /var/lib/damselfly/cache
            type: DirectoryOrCreate
---
apiVersion: v1
kind: Secret
metadata:
  name: damselfly-webhook-tls
  namespace: {NAMESPACE}
  labels:
    {LABELS}
type: kubernetes.io/tls
data:
  tls.crt: "@@TLS_CRT@@"
  tls.key: "@@TLS_KEY@@"
  ca.crt: "@@CA_CRT@@"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: damselfly-webhook
  namespace: {NAMESPACE}
  labels:
    app.kubernetes.io/name: damselfly-webhook
    {LABELS}
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: damselfly-webhook
  template:
    metadata:
      labels:
        app.kubernetes.io/name: damselfly-webhook
        app.kubernetes.io/part-of: damselfly
      annotations:
        damselfly.io/config: "{config_hash}"
    spec:
      serviceAccountName: damselfly-webhook
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: webhook
          image: {image}
          args: ["webhook", "--listen", "0.0.0.0:{WEBHOOK_PORT}", "--tls-cert", "/tls/tls.crt", "--tls-key", "/tls/tls.key", "--registry", {registry}, "--acceleration-host", {accel}]
          env:
            - name: DAMSELFLY_AGENT_CLUSTER_TOKEN
              valueFrom:
                secretKeyRef:
                  name: damselfly-cluster
                  key: cluster-token
          ports:
            - name: https
              containerPort: {WEBHOOK_PORT}
              protocol: TCP
          readinessProbe:
            httpGet:
              path: /healthz
              port: {WEBHOOK_PORT}
              scheme: HTTPS
            periodSeconds: 10
          livenessProbe:
            httpGet:
              path: /healthz
              port: {WEBHOOK_PORT}
              scheme: HTTPS
            periodSeconds: 20
          resources:
            requests:
              cpu: 10m
              memory: 32Mi
            limits:
              cpu: 500m
              memory: 128Mi
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: tls
              mountPath: /tls
              readOnly: true
      volumes:
        - name: tls
          secret:
            secretName: damselfly-webhook-tls
---
apiVersion: v1
kind: Service
metadata:
  name: damselfly-webhook
  namespace: {NAMESPACE}
  labels:
    {LABELS}
spec:
  selector:
    app.kubernetes.io/name: damselfly-webhook
  ports:
    - name: https
      port: 443
      targetPort: https
      protocol: TCP
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: damselfly-image-rewrite
  labels:
    {LABELS}
webhooks:
  - name: image-rewrite.damselfly.io
    admissionReviewVersions: ["v1"]
    # Never block a Pod: if the webhook is down, the Pod keeps its images.
    failurePolicy: Ignore
    timeoutSeconds: 5
    # It writes pull secrets, but not for dry-run requests.
    sideEffects: NoneOnDryRun
    reinvocationPolicy: Never
    namespaceSelector:
      matchLabels:
        {ACCELERATION_LABEL}: {ACCELERATION_LABEL_VALUE}
    rules:
      - operations: ["CREATE"]
        apiGroups: [""]
        apiVersions: ["v1"]
        resources: ["pods"]
        scope: Namespaced
    clientConfig:
      service:
        namespace: {NAMESPACE}
        name: damselfly-webhook
        path: /mutate
        port: 443
      caBundle: "@@CA_CRT@@"
"#,
        namespace = namespace_object(),
        cluster_plain = setup.cluster.replace('\n', " "),
        accel_plain = setup.acceleration_host.replace('\n', " "),
    )
}

/// The namespace everything goes in.
fn namespace_object() -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    {LABELS}
    # The agent uses the host's network and writes the runtimes' configuration.
    pod-security.kubernetes.io/enforce: privileged
"#
    )
}

/// The `damselfly.io/config` annotation of the agent's and the webhook's Pod
/// templates: it changes, and their Pods roll, exactly when what they run
/// with does; the script counts a node ready only once its agent Pod has it.
pub fn config_hash(setup: &ClusterSetup) -> String {
    fingerprint(&format!(
        "{}{}\n{}\n{}",
        setup.agent_toml("/var/lib/damselfly/cache"),
        setup.agent_image,
        setup.registry_url,
        setup.acceleration_host
    ))
}

/// The one-shot DaemonSet the uninstall runs (with its namespace, which an
/// earlier uninstall may have removed): on every node it puts the runtime
/// configuration back as it was, then idles until deleted.
pub fn cleanup_manifest(setup: &ClusterSetup) -> String {
    let image = q(&setup.agent_image);
    let namespace = namespace_object();
    format!(
        r#"{namespace}---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: damselfly-node-cleanup
  namespace: {NAMESPACE}
  labels:
    app.kubernetes.io/name: damselfly-node-cleanup
    {LABELS}
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: damselfly-node-cleanup
  template:
    metadata:
      labels:
        app.kubernetes.io/name: damselfly-node-cleanup
        app.kubernetes.io/part-of: damselfly
    spec:
      automountServiceAccountToken: false
      tolerations:
        - operator: Exists
      initContainers:
        - name: node-restore
          image: {image}
          args: ["node-setup", "--uninstall", "--root", "/host"]
          securityContext:
            runAsUser: 0
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: host-etc
              mountPath: /host/etc
            - name: state
              mountPath: /host/var/lib/damselfly
      containers:
        - name: done
          image: {image}
          args: ["node-setup", "--uninstall", "--root", "/host", "--hold"]
          securityContext:
            runAsUser: 0
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          resources:
            requests:
              cpu: 1m
              memory: 8Mi
            limits:
              cpu: 50m
              memory: 32Mi
          volumeMounts:
            - name: host-etc
              mountPath: /host/etc
            - name: state
              mountPath: /host/var/lib/damselfly
      volumes:
        - name: host-etc
          hostPath:
            path: /etc
            type: Directory
        - name: state
          hostPath:
            path: /var/lib/damselfly
            type: DirectoryOrCreate
"#
    )
}
