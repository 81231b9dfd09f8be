//! `GET /p2p/v1/install.sh`: the setup script a cluster owner pipes to `sh`.
//! The cluster is named by its token in `Authorization: Cluster <token>`, a
//! header, so the token never lands in a URL and from there in access logs.
//! The script holds the token (it creates the agents' Secret), so it is
//! never cached.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use damselfly_core::p2p::CLUSTER_AUTH_SCHEME;
use damselfly_core::ErrorCode;
use damselfly_installer::cluster::{script, ClusterSetup};
use damselfly_installer::node::{NodeSetup, RegistryUrl};
use serde::Deserialize;

use super::routes::{scheme_value, ClusterCaller};
use crate::error::{RegistryError, Result};
use crate::state::AppState;

/// The agents' cache limit unless the cluster owner asks for another: 20 GiB.
const DEFAULT_CACHE_MAX_BYTES: u64 = 20 << 30;

/// The installer route.
pub fn router() -> Router<AppState> {
    Router::new().route("/p2p/v1/install.sh", get(install_script))
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

fn bad_choice(message: String) -> RegistryError {
    RegistryError::oci(ErrorCode::Unsupported, message).with_status(StatusCode::BAD_REQUEST)
}

async fn install_script(
    State(state): State<AppState>,
    ClusterCaller(cluster): ClusterCaller,
    headers: axum::http::HeaderMap,
    Query(choices): Query<Choices>,
) -> Result<Response> {
    let token = scheme_value(&headers, CLUSTER_AUTH_SCHEME).unwrap_or_default().to_owned();
    let registry_url = state.auth.issuer.trim_end_matches('/').to_owned();
    let registry = RegistryUrl::parse(&registry_url).map_err(|e| {
        RegistryError::Io(std::io::Error::other(format!("the registry's public URL cannot be used: {e}")))
    })?;
    // The registry's own acceleration host (its console shows pull commands for it) unless the owner chose one.
    let acceleration_host = choices.acceleration_host.unwrap_or_else(|| state.config.acceleration_host());
    // Checked the way node-setup checks it, so a script never fails on the nodes for it.
    NodeSetup::new(&registry_url, Some(&acceleration_host), "127.0.0.1:65001", Vec::new())
        .map_err(|e| bad_choice(format!("acceleration_host: {e}")))?;
    let agent_image = choices
        .agent_image
        .unwrap_or_else(|| format!("{}/damselfly/agent:{}", registry.host, env!("CARGO_PKG_VERSION")));
    let image_ok = !agent_image.is_empty()
        && agent_image.chars().all(|c| c.is_ascii_alphanumeric() || "./:@_-".contains(c))
        && !agent_image.starts_with(['.', '-', '/']);
    if !image_ok {
        return Err(bad_choice(format!(
            "agent_image `{agent_image}` is not an image reference: give it as host/repository:tag or host/repository@sha256:…"
        )));
    }
    let registry_ca = match &state.config.public_ca_file {
        Some(path) => Some(tokio::fs::read_to_string(path).await.map_err(|e| {
            RegistryError::Io(std::io::Error::other(format!(
                "cannot read the public CA file {} (public_ca_file): {e}",
                path.display()
            )))
        })?),
        None => None,
    };
    let setup = ClusterSetup {
        registry_url,
        registry_ca,
        cluster: format!("{}/{}", cluster.tenant, cluster.name),
        cluster_token: token,
        acceleration_host,
        agent_image,
        cache_max_bytes: choices.cache_max_bytes.unwrap_or(DEFAULT_CACHE_MAX_BYTES),
    };
    tracing::info!(cluster = setup.cluster, "setup script served");
    Ok((
        [(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        script(&setup),
    )
        .into_response())
}
