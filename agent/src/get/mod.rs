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

mod args;
mod oneshot;
mod resolve;
mod transfer;

use std::time::Duration;

pub use self::args::GetArgs;
use crate::error::{Error, Report, Result};
use crate::supernode::Challenge;

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
    let result = tokio::runtime::Runtime::new().map_err(Error::Runtime).and_then(|runtime| {
        let r = runtime.block_on(get(args));
        // The one-shot peer's tasks (heartbeat, piece server) end with the runtime.
        runtime.shutdown_timeout(Duration::from_secs(1));
        r
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("damselfly-agent get: {}", Report(&e));
            1
        }
    }
}

async fn get(args: GetArgs) -> Result<()> {
    let target = resolve::Target::parse(&args.reference, args.registry.as_deref())?;
    let http = crate::daemon::registry_client(args.registry_ca.as_deref(), true)?;
    let (challenge, token) = resolve::pull_token(&http, &target, &args).await?;
    let blob = resolve::blob(&http, &target, token.as_deref(), &args).await?;
    let output = transfer::Output::choose(args.output.as_deref(), &blob);

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
