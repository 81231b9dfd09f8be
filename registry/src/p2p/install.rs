//! `GET /p2p/v1/install.sh`: the setup script a cluster owner pipes to `sh`.
//! The cluster is named by its token in `Authorization: Cluster <token>`, a
//! header, so the token never lands in a URL and from there in access logs.
//! The script holds the token (it creates the agents' Secret), so it is
//! never cached.
//!
//! A request the registry refuses is answered with a script too, one that
//! prints the reason and exits 1, with the refusal's status: piped to `sh`
//! without `curl -f`, a wrong or missing token fails loudly instead of
//! running nothing and exiting 0.
//!
//! `GET /p2p/v1/agent.tar`: the agent image's layer, for `--node` on a host
//! that has no `damselfly-agent` yet (the rule is `services::agent_image`).

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use damselfly_core::p2p::CLUSTER_AUTH_SCHEME;
use damselfly_installer::cluster::{script, ClusterSetup};
use damselfly_installer::node::{NodeSetup, RegistryUrl};
use serde::Deserialize;

use super::routes::scheme_value;
use crate::auth::password::token_sha256;
use crate::metadata::Cluster;
use crate::services::{self, agent_image};
use crate::state::AppState;

/// The agents' cache limit unless the cluster owner asks for another: 20 GiB.
const DEFAULT_CACHE_MAX_BYTES: u64 = 20 << 30;

/// The installer routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/p2p/v1/install.sh", get(install_script)).route("/p2p/v1/agent.tar", get(agent_layer))
}

/// Why a script-facing request was refused: its status and a sentence for the person at the terminal.
#[derive(Debug)]
pub struct Refusal(StatusCode, String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}

impl Refusal {
    fn bad_choice(message: String) -> Refusal {
        Refusal(StatusCode::BAD_REQUEST, message)
    }

    fn failed(detail: impl std::fmt::Display) -> Refusal {
        tracing::error!(error = %detail, "cluster setup request failed");
        Refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the registry failed to answer; try again in a moment, and if it keeps failing ask its operator to look \
             at the registry's log"
                .to_owned(),
        )
    }
}

impl From<services::Error> for Refusal {
    fn from(e: services::Error) -> Refusal {
        use services::Error as E;
        match e {
            E::Denied(m) => Refusal(StatusCode::FORBIDDEN, m),
            E::NotFound(p) => Refusal(StatusCode::NOT_FOUND, p.message),
            E::Invalid(p) => Refusal(StatusCode::BAD_REQUEST, p.message),
            E::Conflict(p) => Refusal(StatusCode::CONFLICT, p.message),
            E::Database(e) => Refusal::failed(e),
            E::Internal(e) => Refusal::failed(e),
        }
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Refusal {
        Refusal::failed(e)
    }
}

/// The script a refusal is answered with: it says why on standard error and exits 1.
fn refusal_script(Refusal(status, message): Refusal) -> Response {
    let quoted = format!("'{}'", format!("damselfly setup: {message}").replace('\'', r"'\''"));
    let body = format!(
        "#!/bin/sh\n# The registry refused to hand out the setup script ({status}).\nprintf '%s\\n' {quoted} >&2\nexit 1\n"
    );
    let headers = [(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"), (header::CACHE_CONTROL, "no-store")];
    (status, headers, body).into_response()
}

/// The query's parameters, read once the caller is known (a token put in
/// the URL by mistake is then refused as a missing token, not as a parameter).
fn parsed<T: serde::de::DeserializeOwned>(query: Option<&str>) -> Result<T, Refusal> {
    serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|e| Refusal::bad_choice(format!("the query could not be read: {e}")))
}

/// The cluster whose token the request carries, or why there is none.
async fn cluster_of(state: &AppState, headers: &HeaderMap) -> Result<(Cluster, String), Refusal> {
    let console = format!("{}/console", state.config.public_url());
    let Some(token) = scheme_value(headers, CLUSTER_AUTH_SCHEME) else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            format!(
                "no cluster token was sent: copy the setup command from the cluster's page in the console ({console}, \
                 Clusters); it sends the token as `Authorization: Cluster <token>`"
            ),
        ));
    };
    match state.db.clusters().by_token(&token_sha256(token)).await? {
        Some(cluster) => Ok((cluster, token.to_owned())),
        None => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            format!(
                "the registry does not know this cluster token: it was copied wrong, or its cluster was deleted or \
                 given a new token. Re-issue the cluster's token on its Clusters page in the console ({console}) and \
                 run the command shown there"
            ),
        )),
    }
}

/// What the cluster owner may choose, as query parameters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Choices {
    /// The address workloads pull from [default: the registry's `acceleration_host`].
    acceleration_host: Option<String>,
    /// The agent's image [default: <registry host>/damselfly/agent:<version>].
    agent_image: Option<String>,
    /// The agents' cache limit in bytes [default: 20 GiB].
    cache_max_bytes: Option<u64>,
}

async fn install_script(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    match setup_script(&state, &headers, query.as_deref()).await {
        Ok(script) => {
            let headers =
                [(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"), (header::CACHE_CONTROL, "no-store")];
            (headers, script).into_response()
        }
        Err(refusal) => refusal_script(refusal),
    }
}

/// The setup a cluster owner asked for, checked: every value is one the
/// nodes and the script can use as it is.
#[derive(Debug, PartialEq, Eq)]
pub struct Chosen {
    /// The address workloads pull from.
    pub acceleration_host: String,
    /// The agent's image.
    pub agent_image: String,
    /// The agents' cache limit in bytes.
    pub cache_max_bytes: u64,
}

/// Reads and checks the query string of `GET /p2p/v1/install.sh` for the
/// registry at `registry_url`, whose own acceleration host is
/// `default_acceleration_host`. A query that does not parse or a value the
/// nodes could not use is a `400` refusal that says what to give instead.
pub fn choose(query: Option<&str>, registry_url: &str, default_acceleration_host: String) -> Result<Chosen, Refusal> {
    let choices: Choices = parsed(query)?;
    let registry = RegistryUrl::parse(registry_url)
        .map_err(|e| Refusal::failed(format!("the registry's public URL cannot be used: {e}")))?;
    // The registry's own acceleration host (its console shows pull commands for it) unless the owner chose one.
    let acceleration_host = choices.acceleration_host.unwrap_or(default_acceleration_host);
    // Checked the way node-setup checks it, so a script never fails on the nodes for it.
    NodeSetup::new(registry_url, Some(&acceleration_host), "127.0.0.1:65001", Vec::new())
        .map_err(|e| Refusal::bad_choice(format!("acceleration_host: {e}")))?;
    let agent_image = choices
        .agent_image
        .unwrap_or_else(|| format!("{}/damselfly/agent:{}", registry.host, env!("CARGO_PKG_VERSION")));
    let image_ok = !agent_image.is_empty()
        && agent_image.chars().all(|c| c.is_ascii_alphanumeric() || "./:@_-".contains(c))
        && !agent_image.starts_with(['.', '-', '/']);
    if !image_ok {
        return Err(Refusal::bad_choice(format!(
            "agent_image `{agent_image}` is not an image reference: give it as host/repository:tag or host/repository@sha256:…"
        )));
    }
    Ok(Chosen {
        acceleration_host,
        agent_image,
        cache_max_bytes: choices.cache_max_bytes.unwrap_or(DEFAULT_CACHE_MAX_BYTES),
    })
}

async fn setup_script(state: &AppState, headers: &HeaderMap, query: Option<&str>) -> Result<String, Refusal> {
    let (cluster, token) = cluster_of(state, headers).await?;
    let registry_url = state.auth.issuer.trim_end_matches('/').to_owned();
    let chosen = choose(query, &registry_url, state.config.acceleration_host())?;
    let registry_ca = match &state.config.public_ca_file {
        Some(path) => Some(tokio::fs::read_to_string(path).await.map_err(|e| {
            Refusal::failed(format!("cannot read the public CA file {} (public_ca_file): {e}", path.display()))
        })?),
        None => None,
    };
    let setup = ClusterSetup {
        registry_url,
        registry_ca,
        cluster: format!("{}/{}", cluster.tenant, cluster.name),
        cluster_token: token,
        acceleration_host: chosen.acceleration_host,
        agent_image: chosen.agent_image,
        cache_max_bytes: chosen.cache_max_bytes,
    };
    tracing::info!(cluster = setup.cluster, "setup script served");
    Ok(script(&setup))
}

/// Which agent image, for which processor.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentChoice {
    /// The agent image as the setup script names it: `<registry host>/<repository>:<tag>`.
    image: String,
    /// The host's processor as OCI platforms name it: `amd64`, `arm64`.
    #[serde(default = "amd64")]
    arch: String,
}

fn amd64() -> String {
    "amd64".to_owned()
}

/// `GET /p2p/v1/agent.tar?image=…&arch=…`: the agent image's layer, a tar
/// holding `damselfly-agent`. A refusal is one sentence of plain text, which
/// the script prints.
async fn agent_layer(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let sent = async {
        let (cluster, _) = cluster_of(&state, &headers).await?;
        let choice: AgentChoice = parsed(query.as_deref())?;
        let layer = agent_image::layer(&state, &cluster, &choice.image, &choice.arch).await?;
        let stream = state.blobs.read(&layer.digest, 0, layer.size).await.map_err(Refusal::failed)?;
        let stream =
            stream.ok_or_else(|| Refusal::failed(format!("blob {} is recorded but not stored", layer.digest)))?;
        tracing::info!(cluster = cluster.name, tenant = cluster.tenant, image = choice.image, "agent layer served");
        Ok::<_, Refusal>((layer, stream))
    };
    match sent.await {
        Ok((layer, stream)) => (
            [
                (header::CONTENT_TYPE, "application/x-tar".to_owned()),
                (header::CONTENT_LENGTH, layer.size.to_string()),
                (header::HeaderName::from_static("docker-content-digest"), layer.digest.to_string()),
            ],
            Body::from_stream(stream),
        )
            .into_response(),
        Err(Refusal(status, message)) => {
            (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
        }
    }
}
