//! The flags of `damselfly-agent get`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
use damselfly_core::Digest;

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
    /// One-shot peer: most bytes per second of pieces fetched; 0 for no limit.
    #[arg(long, env = "DAMSELFLY_AGENT_DOWNLOAD_RATE", default_value_t = 0)]
    pub download_rate: u64,
}
