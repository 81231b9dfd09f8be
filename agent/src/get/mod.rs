//! `damselfly-agent get`: any file pushed as an OCI artifact (or any blob),
//! fetched through this node's P2P engine.
//!
//! The reference is resolved against the registry with the caller's own
//! credentials (a pull token from its token endpoint), so `get` can read
//! nothing the caller may not pull. The bytes then come from the first of:
//! the node's agent (its mirror already joins swarms, verifies pieces and
//! streams in order); a one-shot peer started inside this process when a
//! cluster token is at hand (it serves pieces to others while it downloads);
//! the registry itself. The file is written to `<out>.part`, resumed from
//! there with a Range request, and renamed into place only once the whole
//! content matches its digest.

mod oneshot;
mod resolve;
mod transfer;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use damselfly_core::Digest;

use crate::registry::Challenge;

/// Flags of `damselfly-agent get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// What to fetch: `<namespace>/<repo>:<tag>` or `<namespace>/<repo>@sha256:<hex>` (an artifact's
    /// manifest), or `<namespace>/<repo>` with --digest (one blob). May start with the registry's host.
    pub reference: String,
    /// Where to write: a file path, or `-` for standard output [default: the file's title in the
    /// artifact, else the blob digest's hex, in the current directory].
    #[arg(short, long)]
    pub output: Option<String>,
    /// The registry's URL, e.g. http://registry.example.com:5000 [default: http(s)://<host> of the reference].
    #[arg(long, env = "DAMSELFLY_AGENT_REGISTRY")]
    pub registry: Option<String>,
    /// PEM file of the CA behind the registry's certificate, when it is not in the system's store.
    #[arg(long, env = "DAMSELFLY_AGENT_REGISTRY_CA")]
    pub registry_ca: Option<std::path::PathBuf>,
    /// User or robot login to pull with (anonymous without it: public namespaces only).
    #[arg(long, env = "DAMSELFLY_AGENT_USERNAME")]
    pub username: Option<String>,
    /// Password or robot token of --username.
    #[arg(long, env = "DAMSELFLY_AGENT_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A bearer token from the registry's token endpoint, instead of --username/--password.
    #[arg(long, env = "DAMSELFLY_AGENT_TOKEN", hide_env_values = true, conflicts_with_all = ["username", "password"])]
    pub token: Option<String>,
    /// The file to take from a multi-file artifact, by its `org.opencontainers.image.title` annotation.
    #[arg(long, conflicts_with = "digest")]
    pub file: Option<String>,
    /// Fetch this blob of the repository (sha256:<hex>) instead of resolving a manifest.
    #[arg(long)]
    pub digest: Option<Digest>,
    /// The local agent's registry mirror; used when it answers for the same registry.
    #[arg(long, env = "DAMSELFLY_AGENT_MIRROR", default_value = "127.0.0.1:65001")]
    pub agent: String,
    /// Cluster token: with no local agent, join the swarm as a one-shot peer instead of
    /// downloading straight from the registry.
    #[arg(long, env = "DAMSELFLY_AGENT_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// One-shot peer: cache directory, where an interrupted download resumes from
    /// [default: $XDG_CACHE_HOME/damselfly-agent, else ~/.cache/damselfly-agent].
    #[arg(long, env = "DAMSELFLY_AGENT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// One-shot peer: address of the piece server that serves other peers while this one downloads.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub peer_listen: SocketAddr,
    /// One-shot peer: IP address other agents reach its piece server at [default: 127.0.0.1].
    #[arg(long, env = "DAMSELFLY_AGENT_ADVERTISE_IP")]
    pub advertise_ip: Option<IpAddr>,
    /// One-shot peer: topology zone; peers in the same zone are preferred.
    #[arg(long, env = "DAMSELFLY_AGENT_ZONE")]
    pub zone: Option<String>,
    /// One-shot peer: most bytes per second of pieces fetched [default: 0, no limit].
    #[arg(long, env = "DAMSELFLY_AGENT_DOWNLOAD_RATE", default_value_t = 0)]
    pub download_rate: u64,
}

/// Runs `get`; returns the process's exit code.
pub fn main(args: GetArgs) -> i32 {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the async runtime: {e}")).and_then(
        |runtime| {
            let r = runtime.block_on(get(args));
            // The one-shot peer's tasks (heartbeat, piece server) end with the runtime.
            runtime.shutdown_timeout(Duration::from_secs(1));
            r
        },
    );
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("damselfly-agent get: {e}");
            1
        }
    }
}

async fn get(args: GetArgs) -> Result<(), String> {
    let target = resolve::Target::parse(&args.reference, args.registry.as_deref())?;
    let http = crate::registry_client(args.registry_ca.as_deref(), true)?;
    let (challenge, token) = resolve::pull_token(&http, &target, &args).await?;
    let blob = resolve::blob(&http, &target, token.as_deref(), &args).await?;
    let output = transfer::Output::choose(args.output.as_deref(), &blob)?;

    let mut one_shot = None;
    let base = match mirror_of(&http, &args.agent, challenge.as_ref()).await {
        Some(url) => url,
        None => match &args.cluster_token {
            Some(cluster_token) => {
                let peer = oneshot::OneShot::start(&target.registry, cluster_token, &args).await?;
                let url = peer.mirror_url.clone();
                one_shot = Some(peer);
                url
            }
            None => {
                eprintln!(
                    "damselfly-agent get: no agent answers at {} and no cluster token is set \
                     (--cluster-token or DAMSELFLY_AGENT_CLUSTER_TOKEN): downloading straight from the registry",
                    args.agent
                );
                target.registry.clone()
            }
        },
    };
    let fetched = transfer::fetch(&http, &base, &target.repository, &blob, token.as_deref(), &output).await;
    if let Some(peer) = one_shot {
        peer.leave().await;
    }
    fetched
}

/// The agent's mirror URL if one answers at `addr` for the same registry:
/// its `/v2/` relays the registry's own challenge, whose realm must match.
async fn mirror_of(http: &reqwest::Client, addr: &str, registry: Option<&Challenge>) -> Option<String> {
    let url = if addr.contains("://") { addr.trim_end_matches('/').to_owned() } else { format!("http://{addr}") };
    let r = http.get(format!("{url}/v2/")).timeout(Duration::from_secs(3)).send().await.ok()?;
    let theirs =
        r.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(Challenge::parse);
    match (theirs, registry) {
        (Some(a), Some(b)) if a.realm == b.realm => Some(url),
        (None, None) if r.status().is_success() => Some(url),
        _ => {
            eprintln!("damselfly-agent get: the agent at {addr} mirrors another registry; not using it");
            None
        }
    }
}
