//! The image-rewrite webhook's decisions, apart from any I/O: which images
//! of a Pod move to the acceleration address, the JSON patch that says so,
//! and the copy of a pull secret for that address. The agent's `webhook`
//! subcommand feeds these from the API server, the registry and Kubernetes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::cluster::{ACCELERATION_LABEL, ACCELERATION_LABEL_VALUE};

/// Appended to a pull secret's name for its copy for the acceleration host.
pub const SECRET_SUFFIX: &str = "-damselfly-p2p";

/// The label every Secret the webhook writes carries, and the only Secrets
/// it will ever overwrite; the uninstall deletes what carries it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "damselfly-webhook");

/// Whether `name` is a Kubernetes object name (an RFC 1123 subdomain), so
/// that it can go into an API path as it is. The webhook runs before the API
/// server validates the Pod, so the names a Pod gives are checked here.
pub fn is_object_name(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    name.len() <= 253
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.split('.').all(|label| !label.is_empty() && label.len() <= 63)
}

/// The containers of a Pod spec whose images may be rewritten.
const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// What an `AdmissionReview` asks about.
#[derive(Debug, PartialEq)]
pub struct Request {
    /// Echoed in the response.
    pub uid: String,
    /// The Kubernetes namespace of the Pod.
    pub namespace: String,
    /// The Pod.
    pub pod: Value,
    /// A dry run: nothing may be written (no secrets copied).
    pub dry_run: bool,
}

/// Reads an `admission.k8s.io/v1` `AdmissionReview` for a Pod.
pub fn parse_review(review: &Value) -> Result<Request, String> {
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err("expected an admission.k8s.io/v1 AdmissionReview".into());
    }
    let request = &review["request"];
    let uid = request["uid"].as_str().ok_or("the AdmissionReview has no request.uid")?.to_owned();
    let namespace = request["namespace"].as_str().unwrap_or_default().to_owned();
    if !is_object_name(&namespace) {
        return Err(format!("request.namespace {:?} is not a Kubernetes namespace name", namespace));
    }
    if request["kind"]["kind"] != "Pod" {
        return Err(format!("expected a Pod, got {}", request["kind"]["kind"]));
    }
    Ok(Request { uid, namespace, pod: request["object"].clone(), dry_run: request["dryRun"] == true })
}

/// Whether a Kubernetes namespace's labels ask for acceleration.
pub fn namespace_is_labelled(namespace: &Value) -> bool {
    namespace["metadata"]["labels"][ACCELERATION_LABEL] == ACCELERATION_LABEL_VALUE
}

/// The `AdmissionReview` answer: always allowed (the webhook never blocks a
/// Pod), with a JSON patch if there is anything to change.
pub fn response(uid: &str, patch: &[Value], warnings: &[String]) -> Value {
    let mut response = json!({"uid": uid, "allowed": true});
    if !patch.is_empty() {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(STANDARD.encode(Value::Array(patch.to_vec()).to_string()));
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// Rewrites image references from the registry's address to the acceleration address.
#[derive(Clone, Debug)]
pub struct Rewriter {
    /// The registry as image references name it, e.g. `registry.example.com`.
    pub registry_host: String,
    /// The acceleration address, e.g. `p2p.registry.example.com:65001`.
    pub acceleration_host: String,
}

/// The rewrite planned for one Pod.
#[derive(Debug, Default, PartialEq)]
pub struct PodPlan {
    /// JSON patch operations for the images.
    pub patch: Vec<Value>,
    /// Names of the Pod's pull secrets, to copy for the acceleration host:
    /// the only Secrets the webhook reads.
    pub pull_secrets: Vec<String>,
}

/// What to do about the copy of a pull secret, given the Secret of that
/// name that exists (if any).
#[derive(Debug, PartialEq)]
pub enum SecretWrite {
    /// None exists: create the copy.
    Create(Value),
    /// The webhook's own copy is out of date: replace it (the copy carries
    /// the existing `resourceVersion`, so a concurrent change is not lost).
    Update(Value),
    /// The webhook's own copy is already right: write nothing.
    Unchanged,
    /// A Secret of that name exists that the webhook did not write: it is
    /// left alone, and the reason says so.
    Refuse(String),
}

/// Decides how to write `copy` (from [`Rewriter::accelerated_secret`]) next
/// to what exists. Only a Secret carrying the [`MANAGED_BY`] label is ever
/// overwritten: the webhook's RBAC cannot express that rule, so it keeps it.
pub fn secret_write(existing: Option<&Value>, copy: &Value) -> SecretWrite {
    let Some(existing) = existing else {
        return SecretWrite::Create(copy.clone());
    };
    let (key, value) = MANAGED_BY;
    let name = copy["metadata"]["name"].as_str().unwrap_or_default();
    if existing["metadata"]["labels"][key] != value {
        return SecretWrite::Refuse(format!(
            "a Secret {name} exists without the label {key}={value}, so it is not Damselfly's to overwrite; \
             rename or remove it"
        ));
    }
    let same = |field: &str| existing[field] == copy[field];
    let labelled = copy["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| existing["metadata"]["labels"][k] == *v);
    let annotated = copy["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| existing["metadata"]["annotations"][k] == *v);
    if same("type") && same("data") && labelled && annotated {
        return SecretWrite::Unchanged;
    }
    let mut update = copy.clone();
    update["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
    SecretWrite::Update(update)
}

impl Rewriter {
    /// `(registry namespace, same image at the acceleration address)` if
    /// `image` is in the registry; `None` for images from anywhere else.
    pub fn rewrite(&self, image: &str) -> Option<(String, String)> {
        let (domain, rest) = image.split_once('/')?;
        if !domain.eq_ignore_ascii_case(&self.registry_host) || rest.is_empty() {
            return None;
        }
        let first = rest.split('/').next().unwrap_or(rest);
        let namespace = first.split([':', '@']).next().unwrap_or(first);
        // An OCI path component, so it can go into the registry's URL as it is.
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let component = alnum(namespace.chars().next())
            && alnum(namespace.chars().last())
            && namespace.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !component {
            return None;
        }
        Some((namespace.to_owned(), format!("{}/{rest}", self.acceleration_host)))
    }

    /// The registry namespaces a Pod's images come from, each once, in order.
    pub fn registry_namespaces(&self, pod: &Value) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, image) in images(pod) {
            if let Some((ns, _)) = self.rewrite(&image) {
                if !out.contains(&ns) {
                    out.push(ns);
                }
            }
        }
        out
    }

    /// What to change in a Pod of a namespace (`labelled` for acceleration
    /// or not): the images from registry namespaces whose P2P switch is on
    /// (`p2p_on`) move to the acceleration address; nothing else changes.
    pub fn plan(&self, pod: &Value, labelled: bool, p2p_on: &dyn Fn(&str) -> bool) -> PodPlan {
        let mut plan = PodPlan::default();
        if !labelled {
            return plan;
        }
        for (path, image) in images(pod) {
            if let Some((ns, rewritten)) = self.rewrite(&image) {
                if p2p_on(&ns) {
                    plan.patch.push(json!({"op": "replace", "path": path, "value": rewritten}));
                }
            }
        }
        if !plan.patch.is_empty() {
            plan.pull_secrets = pod["spec"]["imagePullSecrets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["name"].as_str())
                .filter(|name| is_object_name(name) && !name.ends_with(SECRET_SUFFIX))
                .map(str::to_owned)
                .collect();
        }
        plan
    }

    /// A copy of a `kubernetes.io/dockerconfigjson` pull secret holding the
    /// registry's credentials for the acceleration address instead; `None` if
    /// it holds none for the registry.
    pub fn accelerated_secret(&self, secret: &Value) -> Option<Value> {
        if secret["type"] != "kubernetes.io/dockerconfigjson" {
            return None;
        }
        let encoded = secret["data"][".dockerconfigjson"].as_str()?;
        let config: Value = serde_json::from_slice(&STANDARD.decode(encoded).ok()?).ok()?;
        let entry = config["auths"].as_object()?.iter().find_map(|(key, entry)| {
            let host = key.trim_start_matches("https://").trim_start_matches("http://");
            let host = host.split('/').next().unwrap_or(host);
            host.eq_ignore_ascii_case(&self.registry_host).then(|| entry.clone())
        })?;
        let copied = json!({"auths": {self.acceleration_host.clone(): entry}});
        let name = secret["metadata"]["name"].as_str()?;
        Some(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": format!("{name}{SECRET_SUFFIX}"),
                "namespace": secret["metadata"]["namespace"],
                "labels": {MANAGED_BY.0: MANAGED_BY.1},
                "annotations": {"damselfly.io/copied-from": name},
            },
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": STANDARD.encode(copied.to_string())},
        }))
    }
}

/// The JSON patch operations that add pull secrets (by name) to a Pod,
/// leaving the ones it already lists.
pub fn pull_secret_patch(pod: &Value, names: &[String]) -> Vec<Value> {
    let listed: Vec<&str> =
        pod["spec"]["imagePullSecrets"].as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
    let new: Vec<&String> = names.iter().filter(|n| !listed.contains(&n.as_str())).collect();
    if new.is_empty() {
        return Vec::new();
    }
    if pod["spec"]["imagePullSecrets"].is_array() {
        new.iter().map(|n| json!({"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": n}})).collect()
    } else {
        let list: Vec<Value> = new.iter().map(|n| json!({"name": n})).collect();
        vec![json!({"op": "add", "path": "/spec/imagePullSecrets", "value": list})]
    }
}

/// `(JSON pointer, image)` of every container of a Pod.
fn images(pod: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for list in CONTAINER_LISTS {
        for (i, container) in pod["spec"][list].as_array().into_iter().flatten().enumerate() {
            if let Some(image) = container["image"].as_str() {
                out.push((format!("/spec/{list}/{i}/image"), image.to_owned()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
