//! Cluster setup: the Kubernetes manifests of the agent DaemonSet and the
//! image-rewrite webhook, and the POSIX `sh` script the registry serves to
//! install, upgrade or remove them (or, with `--node`, to set up a host
//! without Kubernetes).

mod manifests;
pub mod rbac;
mod script;

pub use manifests::{cleanup_manifest, config_hash, manifests};
pub use script::script;

/// The Kubernetes namespace everything is installed in.
pub const NAMESPACE: &str = "damselfly-system";

/// The label that turns acceleration on for a Kubernetes namespace.
pub const ACCELERATION_LABEL: &str = "damselfly.io/acceleration";

/// The label's value.
pub const ACCELERATION_LABEL_VALUE: &str = "p2p";

/// The port the webhook serves HTTPS on inside its Pod.
pub const WEBHOOK_PORT: u16 = 8443;

/// Where the agent finds the registry's CA, on a node and in its Pod.
pub const REGISTRY_CA_PATH: &str = "/etc/damselfly/registry-ca.pem";

/// Everything a setup script is rendered from.
#[derive(Clone, Debug)]
pub struct ClusterSetup {
    /// The registry's public URL, e.g. `https://registry.example.com`.
    pub registry_url: String,
    /// PEM of the CA behind the registry's certificate, if it is a private one.
    pub registry_ca: Option<String>,
    /// `tenant/cluster`, for people reading the script.
    pub cluster: String,
    /// The cluster token the agents authenticate with.
    pub cluster_token: String,
    /// The address workloads pull from, e.g. `p2p.registry.example.com:65001`.
    pub acceleration_host: String,
    /// The agent's container image.
    pub agent_image: String,
    /// The agent's cache on each node is kept under this many bytes.
    pub cache_max_bytes: u64,
}

impl ClusterSetup {
    /// The agent's configuration file, as the ConfigMap and `--node` install it.
    pub fn agent_toml(&self, cache_dir: &str) -> String {
        let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let ca = match self.registry_ca {
            Some(_) => format!("registry_ca = {}\n", q(REGISTRY_CA_PATH)),
            None => String::new(),
        };
        format!(
            "# The Damselfly agent's settings; the cluster token comes from the environment.\n\
             registry = {}\n\
             listen = \"127.0.0.1:65001\"\n\
             peer_listen = \"0.0.0.0:65002\"\n\
             metrics_listen = \"0.0.0.0:65003\"\n\
             cache_dir = {}\n\
             cache_max_bytes = {}\n\
             # Past this share of the node's disk, least recently used blobs go until the low mark.\n\
             cache_high_watermark = 85\n\
             cache_low_watermark = 75\n",
            q(&self.registry_url),
            q(cache_dir),
            self.cache_max_bytes
        ) + &ca
    }
}

/// A short, stable fingerprint of some text (64-bit FNV-1a), so that a Pod
/// template changes, and its Pods roll, exactly when their configuration does.
pub fn fingerprint(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
