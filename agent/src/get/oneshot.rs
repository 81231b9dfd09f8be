//! A one-shot peer for `get` on a node without an agent: the agent's own
//! engine, mirror and piece server, in this process, on ephemeral ports. It
//! registers with the cluster token, joins the blob's swarm through its
//! mirror (the same path a container runtime's pull takes), serves pieces to
//! other peers while it downloads, and ends with the process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::args::GetArgs;
use crate::config::{hostname, Config};
use crate::daemon::{assemble, bind, local_port};
use crate::error::{Error, Result};
use crate::piece::Engine;
use crate::supernode::Supernode;

/// How long registering may take before `get` gives up.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long leaving waits for the last blob to be checked and kept.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running one-shot peer; its tasks stop with the runtime.
pub struct OneShot {
    /// `http://127.0.0.1:<port>` of its mirror.
    pub mirror_url: String,
    supernode: Arc<Supernode>,
    engine: Arc<Engine>,
}

impl OneShot {
    /// Starts the peer and waits until the registry has registered it.
    pub async fn start(registry: &str, cluster_token: &str, args: &GetArgs) -> Result<OneShot> {
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let config = Config {
            registry: registry.to_owned(),
            registry_ca: args.registry_ca.clone(),
            cluster_token: cluster_token.to_owned(),
            listen: loopback,
            peer_listen: args.peer_listen,
            metrics_listen: loopback,
            advertise_ip: args.advertise_ip.unwrap_or([127, 0, 0, 1].into()),
            // One name per run: two gets on one host are two peers.
            node_name: format!("{}-get-{}", hostname(), std::process::id()),
            zone: args.zone.clone().unwrap_or_default(),
            cache_dir: args.cache_dir.clone().unwrap_or_else(default_cache_dir),
            download_rate: args.download_rate,
            ..Config::default()
        };
        let node = assemble(&config)?;
        let mirror = bind(config.listen, "one-shot mirror").await?;
        let peer = bind(config.peer_listen, "one-shot piece server").await?;
        let mirror_url = format!("http://127.0.0.1:{}", local_port(&mirror, config.listen, "one-shot mirror")?);
        let peer_port = local_port(&peer, config.peer_listen, "one-shot piece server")?;
        tokio::spawn(async move { axum::serve(mirror, node.mirror).await });
        tokio::spawn(async move { crate::peer::serve(peer, node.peer).await });
        tokio::spawn(node.supernode.clone().start(peer_port));
        let deadline = Instant::now() + REGISTER_TIMEOUT;
        while !node.supernode.ready() {
            if Instant::now() > deadline {
                return Err(Error::OneShotNotRegistered {
                    registry: registry.to_owned(),
                    secs: REGISTER_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(OneShot { mirror_url, supernode: node.supernode, engine: node.engine })
    }

    /// Lets the downloads end (the blob verified and kept in the cache, so a
    /// later `get` finds it), then leaves the swarms, so that the registry
    /// stops naming this peer as a parent the moment the download is over.
    pub async fn leave(self) {
        if tokio::time::timeout(SETTLE_TIMEOUT, self.engine.settle()).await.is_err() {
            tracing::warn!("the cache still verifies a blob; a later get may fetch it again");
        }
        self.supernode.unregister().await;
    }
}

/// `$XDG_CACHE_HOME/damselfly-agent`, else `~/.cache/damselfly-agent`, else `./damselfly-agent-cache`.
fn default_cache_dir() -> PathBuf {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache"));
    match xdg.or(home) {
        Some(dir) => dir.join("damselfly-agent"),
        None => "damselfly-agent-cache".into(),
    }
}
