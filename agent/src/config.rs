//! The agent's configuration: flags, `DAMSELFLY_AGENT_*` environment
//! variables, and an optional TOML file, in that order of precedence.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "damselfly-agent",
    version,
    about = "The Damselfly node agent: a registry mirror that pulls blobs piece by piece from peers"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: the mirror, the peer piece server and the metrics endpoint.
    Run(RunArgs),
    /// Configure this node's container runtimes (containerd, CRI-O/podman, Docker) to pull the
    /// acceleration host through the agent, falling back to the registry; or undo it.
    NodeSetup(crate::node_setup::NodeSetupArgs),
    /// Serve the image-rewrite admission webhook over HTTPS: Pods of labelled Kubernetes
    /// namespaces pull images of P2P-enabled registry namespaces from the acceleration address.
    Webhook(crate::webhook::WebhookArgs),
    /// Fetch a file (a layer of an OCI artifact, or any blob) through this node's agent, or as a
    /// one-shot peer when no agent runs; resumes, verifies the digest, shows progress on a terminal.
    Get(crate::get::GetArgs),
    /// The agent's container image: build it from this executable and push it into the registry.
    #[command(subcommand)]
    Image(crate::image::ImageCommand),
}

/// Flags of `damselfly-agent run`. Every flag left out falls back to the
/// TOML file given with `--config`, then to the default shown.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// TOML file with the same settings (keys as the flags, with `_` for `-`).
    #[arg(long, env = "DAMSELFLY_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The registry's URL, e.g. http://registry.example.com:5000 (required).
    #[arg(long, env = "DAMSELFLY_AGENT_REGISTRY")]
    pub registry: Option<String>,
    /// PEM file of the CA that signed the registry's TLS certificate, when
    /// it is not in the system's store [default: the system's CAs only].
    #[arg(long, env = "DAMSELFLY_AGENT_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
    /// The cluster token the console showed when the cluster was registered (required).
    #[arg(long, env = "DAMSELFLY_AGENT_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// Address of the registry mirror container runtimes pull from [default: 127.0.0.1:65001].
    #[arg(long, env = "DAMSELFLY_AGENT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the piece server other agents fetch from [default: 0.0.0.0:65002].
    #[arg(long, env = "DAMSELFLY_AGENT_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// Address of /metrics and /healthz [default: 127.0.0.1:65003].
    #[arg(long, env = "DAMSELFLY_AGENT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// IP address other agents reach this node's piece server at [default: 127.0.0.1].
    #[arg(long, env = "DAMSELFLY_AGENT_ADVERTISE_IP")]
    pub advertise_ip: Option<std::net::IpAddr>,
    /// Node name shown in the console [default: the host name].
    #[arg(long, env = "DAMSELFLY_AGENT_NODE_NAME")]
    pub node_name: Option<String>,
    /// Topology zone; peers in the same zone are preferred [default: none].
    #[arg(long, env = "DAMSELFLY_AGENT_ZONE")]
    pub zone: Option<String>,
    /// Directory of the blob cache [default: ./damselfly-agent-cache].
    #[arg(long, env = "DAMSELFLY_AGENT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Concurrent piece uploads to other agents [default: 2].
    #[arg(long, env = "DAMSELFLY_AGENT_UPLOAD_SLOTS")]
    pub upload_slots: Option<u32>,
    /// Stripe feeds streamed to children in the stripe trees at once, all blobs together; one per child,
    /// blob and stripe; 0 streams none, and children pull instead [default: 32].
    #[arg(long, env = "DAMSELFLY_AGENT_FEED_SLOTS")]
    pub feed_slots: Option<u32>,
    /// Concurrent piece downloads from peers, all blobs together (seed pieces aside) [default: 2].
    #[arg(long, env = "DAMSELFLY_AGENT_FETCH_SLOTS")]
    pub fetch_slots: Option<u32>,
    /// Most bytes per second sent to other agents, all uploads together [default: 0, no limit].
    #[arg(long, env = "DAMSELFLY_AGENT_UPLOAD_RATE")]
    pub upload_rate: Option<u64>,
    /// Most bytes per second of pieces fetched from peers and the seed, all together [default: 0, no limit].
    #[arg(long, env = "DAMSELFLY_AGENT_DOWNLOAD_RATE")]
    pub download_rate: Option<u64>,
    /// Most bytes of completed blobs kept; least recently used ones go first [default: 0, no limit].
    #[arg(long, env = "DAMSELFLY_AGENT_CACHE_MAX_BYTES")]
    pub cache_max_bytes: Option<u64>,
    /// Use of the cache's filesystem, in percent, at which least recently used blobs start to be evicted [default: 85].
    #[arg(long, env = "DAMSELFLY_AGENT_CACHE_HIGH_WATERMARK", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub cache_high_watermark: Option<u8>,
    /// Use of the cache's filesystem, in percent, that eviction brings it back down to [default: 75].
    #[arg(long, env = "DAMSELFLY_AGENT_CACHE_LOW_WATERMARK", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub cache_low_watermark: Option<u8>,
    /// Testing only: flip a byte in every piece served to peers.
    #[arg(long, hide = true)]
    pub corrupt_pieces_for_testing: bool,
}

/// The same settings, as the TOML file spells them.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    registry: Option<String>,
    registry_ca: Option<PathBuf>,
    cluster_token: Option<String>,
    listen: Option<SocketAddr>,
    peer_listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    advertise_ip: Option<std::net::IpAddr>,
    node_name: Option<String>,
    zone: Option<String>,
    cache_dir: Option<PathBuf>,
    upload_slots: Option<u32>,
    feed_slots: Option<u32>,
    fetch_slots: Option<u32>,
    upload_rate: Option<u64>,
    download_rate: Option<u64>,
    cache_max_bytes: Option<u64>,
    cache_high_watermark: Option<u8>,
    cache_low_watermark: Option<u8>,
}

/// The settings in force.
#[derive(Clone, Debug)]
pub struct Config {
    /// Registry base URL, without a trailing slash.
    pub registry: String,
    /// Extra CA for the registry's certificate.
    pub registry_ca: Option<PathBuf>,
    /// Cluster token.
    pub cluster_token: String,
    /// Mirror address.
    pub listen: SocketAddr,
    /// Piece server address.
    pub peer_listen: SocketAddr,
    /// Metrics address.
    pub metrics_listen: SocketAddr,
    /// IP peers reach us at.
    pub advertise_ip: std::net::IpAddr,
    /// Node name.
    pub node_name: String,
    /// Zone.
    pub zone: String,
    /// Cache directory.
    pub cache_dir: PathBuf,
    /// Upload slots.
    pub upload_slots: u32,
    /// Stripe feeds streamed at once.
    pub feed_slots: u32,
    /// Piece fetches from peers at once.
    pub fetch_slots: u32,
    /// Upload limit in bytes per second, 0 for none.
    pub upload_rate: u64,
    /// Piece download limit in bytes per second, 0 for none.
    pub download_rate: u64,
    /// Cache limit in bytes, 0 for none.
    pub cache_max_bytes: u64,
    /// Filesystem use (percent) that starts eviction, and where it stops.
    pub cache_watermarks: (u8, u8),
    /// Testing only: corrupt served pieces.
    pub corrupt_pieces: bool,
}

impl Config {
    /// Merges flags and environment over the file over the defaults.
    pub fn load(args: RunArgs) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| format!("the config file {} is not valid: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let registry = args.registry.or(file.registry).ok_or(
            "the registry's URL is missing: pass --registry http://<registry> or set DAMSELFLY_AGENT_REGISTRY",
        )?;
        let cluster_token = args.cluster_token.or(file.cluster_token).ok_or(
            "the cluster token is missing: pass --cluster-token or set DAMSELFLY_AGENT_CLUSTER_TOKEN \
             (the console shows it when the cluster is registered)",
        )?;
        let parse = |s: &str| s.parse().map_err(|e| format!("{s}: {e}"));
        Ok(Config {
            registry: registry.trim_end_matches('/').to_owned(),
            registry_ca: args.registry_ca.or(file.registry_ca),
            cluster_token,
            listen: args.listen.or(file.listen).map_or_else(|| parse("127.0.0.1:65001"), Ok)?,
            peer_listen: args.peer_listen.or(file.peer_listen).map_or_else(|| parse("0.0.0.0:65002"), Ok)?,
            metrics_listen: args.metrics_listen.or(file.metrics_listen).map_or_else(|| parse("127.0.0.1:65003"), Ok)?,
            advertise_ip: args.advertise_ip.or(file.advertise_ip).unwrap_or([127, 0, 0, 1].into()),
            node_name: args.node_name.or(file.node_name).unwrap_or_else(hostname),
            zone: args.zone.or(file.zone).unwrap_or_default(),
            cache_dir: args.cache_dir.or(file.cache_dir).unwrap_or_else(|| "damselfly-agent-cache".into()),
            upload_slots: args.upload_slots.or(file.upload_slots).unwrap_or(2).max(1),
            feed_slots: args.feed_slots.or(file.feed_slots).unwrap_or(DEFAULT_FEED_SLOTS),
            fetch_slots: args.fetch_slots.or(file.fetch_slots).unwrap_or(crate::piece::NODE_FETCH_SLOTS as u32).max(1),
            upload_rate: args.upload_rate.or(file.upload_rate).unwrap_or(0),
            download_rate: args.download_rate.or(file.download_rate).unwrap_or(0),
            cache_max_bytes: args.cache_max_bytes.or(file.cache_max_bytes).unwrap_or(0),
            cache_watermarks: watermarks(
                args.cache_high_watermark.or(file.cache_high_watermark).unwrap_or(85),
                args.cache_low_watermark.or(file.cache_low_watermark).unwrap_or(75),
            )?,
            corrupt_pieces: args.corrupt_pieces_for_testing,
        })
    }
}

/// Feeds streamed at once by default: a child takes each stripe from one
/// parent, and the trees give a parent at most one child per stripe and
/// blob, so 32 covers several layers pulled together with room to spare.
pub const DEFAULT_FEED_SLOTS: u32 = 32;

fn watermarks(high: u8, low: u8) -> Result<(u8, u8), String> {
    if !(1..=100).contains(&high) || low >= high {
        return Err(format!(
            "cache watermarks {high}% (high) and {low}% (low) do not fit: the low watermark must be below the high \
             one, and the high one between 1 and 100, e.g. --cache-high-watermark 85 --cache-low-watermark 75"
        ));
    }
    Ok((high, low))
}

/// This machine's host name, for the node name.
pub(crate) fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
