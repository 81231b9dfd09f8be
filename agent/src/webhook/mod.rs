//! `damselfly-agent webhook`: the mutating admission webhook that points
//! Pods of namespaces labelled `damselfly.io/acceleration=p2p` at the
//! acceleration address, for the registry namespaces whose P2P switch is
//! on, and copies their pull secrets for that address. Whatever fails, the
//! Pod is admitted unchanged: acceleration is never a reason not to run.

mod kube;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use damselfly_core::p2p::CLUSTER_AUTH_SCHEME;
use damselfly_installer::node::{NodeSetup, RegistryUrl};
use damselfly_installer::webhook::{
    namespace_is_labelled, parse_review, pull_secret_patch, response, secret_write, Request, Rewriter, SecretWrite,
};
use serde_json::Value;

/// How long a registry namespace's P2P switch is believed.
const SWITCH_TTL: Duration = Duration::from_secs(10);

/// Flags of `damselfly-agent webhook`.
#[derive(Args, Debug)]
pub struct WebhookArgs {
    /// Address to serve HTTPS on.
    #[arg(long, env = "DAMSELFLY_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate (chain) to serve with.
    #[arg(long, env = "DAMSELFLY_WEBHOOK_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of that certificate.
    #[arg(long, env = "DAMSELFLY_WEBHOOK_TLS_KEY")]
    pub tls_key: PathBuf,
    /// The registry's URL, e.g. http://registry.example.com:5000; images it serves are the ones rewritten.
    #[arg(long, env = "DAMSELFLY_AGENT_REGISTRY")]
    pub registry: String,
    /// The cluster token, to ask the registry which namespaces have P2P on.
    #[arg(long, env = "DAMSELFLY_AGENT_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: String,
    /// The address images are rewritten to [default: p2p.<registry host>:65001; 127.0.0.1:65001 for a registry addressed by IP].
    #[arg(long, env = "DAMSELFLY_AGENT_ACCELERATION_HOST")]
    pub acceleration_host: Option<String>,
    /// The Kubernetes API [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT].
    #[arg(long, env = "DAMSELFLY_WEBHOOK_KUBERNETES_API")]
    pub kubernetes_api: Option<String>,
    /// The service account's token and CA.
    #[arg(
        long,
        env = "DAMSELFLY_WEBHOOK_SERVICE_ACCOUNT",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount"
    )]
    pub service_account: PathBuf,
    /// Log format: `text` for people, `json` for log pipelines (one object a line).
    #[arg(long, env = "DAMSELFLY_AGENT_LOG_FORMAT", value_enum, default_value_t = crate::config::LogFormat::Text)]
    pub log_format: crate::config::LogFormat,
}

struct Webhook {
    rewriter: Rewriter,
    registry_url: String,
    cluster_token: String,
    http: reqwest::Client,
    kube: Result<kube::Kube, String>,
    switches: Mutex<HashMap<String, (bool, Instant)>>,
}

/// Serves until SIGTERM or Ctrl-C.
pub async fn run(args: WebhookArgs) -> Result<(), String> {
    let registry = RegistryUrl::parse(&args.registry).map_err(|e| e.to_string())?;
    let setup = NodeSetup::new(&args.registry, args.acceleration_host.as_deref(), "127.0.0.1:65001", Vec::new())
        .map_err(|e| e.to_string())?;
    let tls = tls::server_config(&args.tls_cert, &args.tls_key)?;
    let api = args.kubernetes_api.clone().unwrap_or_else(|| {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").unwrap_or_else(|_| "kubernetes.default.svc".into());
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        }
    });
    // Without the API the webhook still answers, admitting Pods unchanged and saying why.
    let kube = kube::Kube::new(&api, &args.service_account);
    if let Err(e) = &kube {
        tracing::warn!("{e}; Pods will be admitted unchanged");
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let webhook = Arc::new(Webhook {
        rewriter: Rewriter { registry_host: registry.host.clone(), acceleration_host: setup.acceleration_host.clone() },
        registry_url: registry.url(),
        cluster_token: args.cluster_token,
        http,
        kube,
        switches: Mutex::new(HashMap::new()),
    });
    let app =
        Router::new().route("/healthz", get(|| async { "ok\n" })).route("/mutate", post(mutate)).with_state(webhook);
    let tcp = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {} for the webhook: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, registry = %registry.url(), acceleration_host = setup.acceleration_host, "webhook serving");
    let listener = tls::TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(tls) };
    axum::serve(listener, app).with_graceful_shutdown(crate::daemon::shutdown_signal()).await.map_err(|e| e.to_string())
}

async fn mutate(State(webhook): State<Arc<Webhook>>, body: Bytes) -> Response {
    let review: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}\n")).into_response(),
    };
    let request = match parse_review(&review) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let (patch, warnings) = webhook.decide(&request).await;
    for w in &warnings {
        tracing::warn!(namespace = request.namespace, uid = request.uid, "{w}");
    }
    if !patch.is_empty() {
        tracing::info!(
            namespace = request.namespace,
            changes = patch.len(),
            "Pod images moved to the acceleration address"
        );
    }
    Json(response(&request.uid, &patch, &warnings)).into_response()
}

impl Webhook {
    /// The JSON patch for a Pod, and what a person should know about it.
    async fn decide(&self, request: &Request) -> (Vec<Value>, Vec<String>) {
        let mut warnings = Vec::new();
        let candidates = self.rewriter.registry_namespaces(&request.pod);
        if candidates.is_empty() {
            return (Vec::new(), warnings);
        }
        let kube = match &self.kube {
            Ok(k) => k,
            Err(e) => return (Vec::new(), vec![format!("damselfly: images left as they are: {e}")]),
        };
        let labelled = match kube.get(&format!("/api/v1/namespaces/{}", request.namespace)).await {
            Ok(Some(ns)) => namespace_is_labelled(&ns),
            Ok(None) => false,
            Err(e) => return (Vec::new(), vec![format!("damselfly: images left as they are: {e}")]),
        };
        if !labelled {
            return (Vec::new(), warnings);
        }
        let mut on = HashMap::new();
        for ns in candidates {
            let enabled = match self.p2p_enabled(&ns).await {
                Ok(b) => b,
                Err(e) => {
                    warnings.push(format!("damselfly: images of {ns} left as they are: {e}"));
                    false
                }
            };
            on.insert(ns, enabled);
        }
        let plan = self.rewriter.plan(&request.pod, true, &|ns| on.get(ns).copied().unwrap_or(false));
        if plan.patch.is_empty() {
            return (Vec::new(), warnings);
        }
        let mut copied = Vec::new();
        if !request.dry_run {
            for name in &plan.pull_secrets {
                match self.copy_secret(kube, &request.namespace, name).await {
                    Ok(Some(copy)) => copied.push(copy),
                    Ok(None) => {}
                    // Moved without its credentials, a private image could not be pulled: move nothing.
                    Err(e) => {
                        warnings
                            .push(format!("damselfly: images left as they are: pull secret {name} not copied: {e}"));
                        return (Vec::new(), warnings);
                    }
                }
            }
        }
        let mut patch = plan.patch;
        patch.extend(pull_secret_patch(&request.pod, &copied));
        (patch, warnings)
    }

    /// The registry namespace's P2P switch, from the registry, believed for [`SWITCH_TTL`].
    async fn p2p_enabled(&self, namespace: &str) -> Result<bool, String> {
        if let Ok(cache) = self.switches.lock() {
            if let Some((on, at)) = cache.get(namespace) {
                if at.elapsed() < SWITCH_TTL {
                    return Ok(*on);
                }
            }
        }
        let url = format!("{}/p2p/v1/namespaces/{namespace}/acceleration", self.registry_url);
        let r = self
            .http
            .get(&url)
            .header("authorization", format!("{CLUSTER_AUTH_SCHEME} {}", self.cluster_token))
            .send()
            .await
            .map_err(|e| format!("the registry did not answer: {e}"))?;
        let on = match r.status() {
            reqwest::StatusCode::OK => {
                let body: Value = r.json().await.map_err(|e| format!("the registry's answer: {e}"))?;
                body["p2p_enabled"] == true
            }
            reqwest::StatusCode::NOT_FOUND => false,
            s => return Err(format!("the registry answered {s} for {url}")),
        };
        if let Ok(mut cache) = self.switches.lock() {
            cache.insert(namespace.to_owned(), (on, Instant::now()));
        }
        Ok(on)
    }

    /// Creates or updates the copy of a pull secret for the acceleration
    /// address; its name, or `None` if the secret holds nothing for the registry.
    ///
    /// The webhook's RBAC lets it read and write any Secret of a namespace
    /// (RBAC cannot name Secrets that do not exist yet, nor select them by
    /// label), so the narrower rule is kept here: it reads only the pull
    /// secret the Pod names (a valid object name, in the Pod's namespace) and
    /// the copy's own name, and writes only a Secret carrying its label.
    async fn copy_secret(&self, kube: &kube::Kube, namespace: &str, name: &str) -> Result<Option<String>, String> {
        let collection = format!("/api/v1/namespaces/{namespace}/secrets");
        let Some(secret) = kube.get(&format!("{collection}/{name}")).await? else {
            return Ok(None);
        };
        let Some(copy) = self.rewriter.accelerated_secret(&secret) else {
            return Ok(None);
        };
        let copy_name = copy["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let existing = kube.get(&format!("{collection}/{copy_name}")).await?;
        let (status, body) = match secret_write(existing.as_ref(), &copy) {
            SecretWrite::Unchanged => return Ok(Some(copy_name)),
            SecretWrite::Refuse(reason) => return Err(reason),
            SecretWrite::Create(copy) => kube.call(Method::POST, &collection, Some(&copy)).await?,
            SecretWrite::Update(copy) => {
                kube.call(Method::PUT, &format!("{collection}/{copy_name}"), Some(&copy)).await?
            }
        };
        if !status.is_success() {
            return Err(format!("{status}: {}", body["message"].as_str().unwrap_or_default()));
        }
        Ok(Some(copy_name))
    }
}
