//! The daemon's settings (`damselfly-agent run`): one struct, read from an
//! optional TOML file (`--config`), overridden by `DAMSELFLY_AGENT_*`
//! environment variables, overridden by flags. Each setting's default is
//! stated once, in the constants below; `--help` prints it, and a key left
//! out of the file takes it too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Address of the registry mirror container runtimes pull from.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 65001));
/// Address of the piece server other agents fetch from.
pub const DEFAULT_PEER_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 65002));
/// Address of `/metrics` and `/healthz`.
pub const DEFAULT_METRICS_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 65003));
/// The address peers reach this node at, for a single machine.
pub const DEFAULT_ADVERTISE_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The cache directory, relative to the working directory.
pub const DEFAULT_CACHE_DIR: &str = "damselfly-agent-cache";
/// Piece uploads at once: a piece that leaves sooner is passed on sooner.
pub const DEFAULT_UPLOAD_SLOTS: u32 = 2;
/// Feeds streamed at once: a child takes each stripe from one parent, and
/// the trees give a parent at most one child per stripe and blob, so 32
/// covers several layers pulled together with room to spare.
pub const DEFAULT_FEED_SLOTS: u32 = 32;
/// Piece fetches one node runs at once, whatever the number of blobs it
/// pulls (seed pieces aside). Two, like the upload slots: a piece that
/// arrives sooner is passed on sooner, and a swarm grows fastest when each
/// transfer gets a large share of a link rather than a quarter of it.
pub const DEFAULT_FETCH_SLOTS: u32 = 2;
/// Filesystem use, in percent, at which eviction starts.
pub const DEFAULT_CACHE_HIGH_WATERMARK: u8 = 85;
/// Filesystem use, in percent, that eviction brings the cache back down to.
pub const DEFAULT_CACHE_LOW_WATERMARK: u8 = 75;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines with `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The settings of `damselfly-agent run`. The TOML file's keys are the
/// flags' names with `_` for `-`; a key it leaves out takes the default.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// TOML file with these settings (keys as the flags, with `_` for `-`).
    #[arg(long, env = "DAMSELFLY_AGENT_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The registry's URL, e.g. http://registry.example.com:5000 (required).
    #[arg(long, env = "DAMSELFLY_AGENT_REGISTRY", default_value_t, hide_default_value = true)]
    pub registry: String,
    /// PEM file of the CA that signed the registry's TLS certificate, when
    /// it is not in the system's store [default: the system's CAs only].
    #[arg(long, env = "DAMSELFLY_AGENT_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
    /// The cluster token the console showed when the cluster was registered (required).
    #[arg(
        long,
        env = "DAMSELFLY_AGENT_CLUSTER_TOKEN",
        hide_env_values = true,
        default_value_t,
        hide_default_value = true
    )]
    pub cluster_token: String,
    /// Address of the registry mirror container runtimes pull from.
    #[arg(long, env = "DAMSELFLY_AGENT_LISTEN", default_value_t = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Address of the piece server other agents fetch from.
    #[arg(long, env = "DAMSELFLY_AGENT_PEER_LISTEN", default_value_t = DEFAULT_PEER_LISTEN)]
    pub peer_listen: SocketAddr,
    /// Address of /metrics and /healthz.
    #[arg(long, env = "DAMSELFLY_AGENT_METRICS_LISTEN", default_value_t = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
    /// IP address other agents reach this node's piece server at.
    #[arg(long, env = "DAMSELFLY_AGENT_ADVERTISE_IP", default_value_t = DEFAULT_ADVERTISE_IP)]
    pub advertise_ip: IpAddr,
    /// Node name shown in the console [default: the host name].
    #[arg(long, env = "DAMSELFLY_AGENT_NODE_NAME", default_value_t, hide_default_value = true)]
    pub node_name: String,
    /// Topology zone; peers in the same zone are preferred [default: none].
    #[arg(long, env = "DAMSELFLY_AGENT_ZONE", default_value_t, hide_default_value = true)]
    pub zone: String,
    /// Directory of the blob cache.
    #[arg(long, env = "DAMSELFLY_AGENT_CACHE_DIR", default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
    /// Concurrent piece uploads to other agents.
    #[arg(long, env = "DAMSELFLY_AGENT_UPLOAD_SLOTS", default_value_t = DEFAULT_UPLOAD_SLOTS)]
    pub upload_slots: u32,
    /// Stripe feeds streamed to children in the stripe trees at once, all blobs together; one per child,
    /// blob and stripe; 0 streams none, and children pull instead.
    #[arg(long, env = "DAMSELFLY_AGENT_FEED_SLOTS", default_value_t = DEFAULT_FEED_SLOTS)]
    pub feed_slots: u32,
    /// Concurrent piece downloads from peers, all blobs together (seed pieces aside).
    #[arg(long, env = "DAMSELFLY_AGENT_FETCH_SLOTS", default_value_t = DEFAULT_FETCH_SLOTS)]
    pub fetch_slots: u32,
    /// Most bytes per second sent to other agents, all uploads together; 0 for no limit.
    #[arg(long, env = "DAMSELFLY_AGENT_UPLOAD_RATE", default_value_t = 0)]
    pub upload_rate: u64,
    /// Most bytes per second of pieces fetched from peers and the seed, all together; 0 for no limit.
    #[arg(long, env = "DAMSELFLY_AGENT_DOWNLOAD_RATE", default_value_t = 0)]
    pub download_rate: u64,
    /// Most bytes of completed blobs kept; least recently used ones go first; 0 for no limit.
    #[arg(long, env = "DAMSELFLY_AGENT_CACHE_MAX_BYTES", default_value_t = 0)]
    pub cache_max_bytes: u64,
    /// Use of the cache's filesystem, in percent, at which least recently used blobs start to be evicted.
    #[arg(
        long,
        env = "DAMSELFLY_AGENT_CACHE_HIGH_WATERMARK",
        default_value_t = DEFAULT_CACHE_HIGH_WATERMARK,
        value_parser = clap::value_parser!(u8).range(1..=100)
    )]
    pub cache_high_watermark: u8,
    /// Use of the cache's filesystem, in percent, that eviction brings it back down to.
    #[arg(
        long,
        env = "DAMSELFLY_AGENT_CACHE_LOW_WATERMARK",
        default_value_t = DEFAULT_CACHE_LOW_WATERMARK,
        value_parser = clap::value_parser!(u8).range(0..=100)
    )]
    pub cache_low_watermark: u8,
    /// Log format: `text` for people, `json` for log pipelines (one object a line). Verbosity follows
    /// RUST_LOG (default `info`).
    #[arg(long, env = "DAMSELFLY_AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Testing only: flip a byte in every piece served to peers.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub corrupt_pieces_for_testing: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            config: None,
            registry: String::new(),
            registry_ca: None,
            cluster_token: String::new(),
            listen: DEFAULT_LISTEN,
            peer_listen: DEFAULT_PEER_LISTEN,
            metrics_listen: DEFAULT_METRICS_LISTEN,
            advertise_ip: DEFAULT_ADVERTISE_IP,
            node_name: String::new(),
            zone: String::new(),
            cache_dir: DEFAULT_CACHE_DIR.into(),
            upload_slots: DEFAULT_UPLOAD_SLOTS,
            feed_slots: DEFAULT_FEED_SLOTS,
            fetch_slots: DEFAULT_FETCH_SLOTS,
            upload_rate: 0,
            download_rate: 0,
            cache_max_bytes: 0,
            cache_high_watermark: DEFAULT_CACHE_HIGH_WATERMARK,
            cache_low_watermark: DEFAULT_CACHE_LOW_WATERMARK,
            log_format: LogFormat::Text,
            corrupt_pieces_for_testing: false,
        }
    }
}

impl Config {
    /// The settings in force: `flags` (as clap parsed them, environment
    /// included, into `matches`) over the `--config` file over the defaults.
    pub fn load(flags: Config, matches: &ArgMatches) -> Result<Config> {
        match flags.config.clone() {
            None => flags.settled(),
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| Error::ConfigRead { path: path.clone(), source })?;
                Config::with_file(flags, matches, &path, &text)
            }
        }
    }

    /// The settings in force when the `--config` file at `path` holds
    /// `text`: [`Config::load`] once the file is read. Public so that the
    /// fuzz target `agent_config` can hand it any text.
    pub fn with_file(flags: Config, matches: &ArgMatches, path: &Path, text: &str) -> Result<Config> {
        let file: Config =
            toml::from_str(text).map_err(|source| Error::ConfigInvalid { path: path.to_path_buf(), source })?;
        file.overridden_by(flags, matches).settled()
    }

    /// These settings (from the file) with every value that `flags` took
    /// from the command line or the environment put over them.
    fn overridden_by(self, flags: Config, matches: &ArgMatches) -> Config {
        let (Ok(serde_json::Value::Object(mut merged)), Ok(serde_json::Value::Object(given))) =
            (serde_json::to_value(&self), serde_json::to_value(&flags))
        else {
            return flags;
        };
        for id in matches.ids().map(|id| id.as_str()) {
            let from_user =
                matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
            if let (true, Some(value)) = (from_user, given.get(id)) {
                merged.insert(id.to_owned(), value.clone());
            }
        }
        // Both halves are valid settings, and so is any mix of their fields.
        let mut config = serde_json::from_value(serde_json::Value::Object(merged)).unwrap_or(self);
        // What the file cannot say.
        config.config = flags.config;
        config.corrupt_pieces_for_testing = flags.corrupt_pieces_for_testing;
        config
    }

    /// Checks what must be given and fits together, and fills in the
    /// defaults that depend on the machine.
    fn settled(mut self) -> Result<Config> {
        if self.registry.is_empty() {
            return Err(Error::MissingSetting {
                what: "registry's URL",
                flag: "registry http://<registry>",
                env: "DAMSELFLY_AGENT_REGISTRY",
                hint: "",
            });
        }
        if self.cluster_token.is_empty() {
            return Err(Error::MissingSetting {
                what: "cluster token",
                flag: "cluster-token",
                env: "DAMSELFLY_AGENT_CLUSTER_TOKEN",
                hint: " (the console shows it when the cluster is registered)",
            });
        }
        let (high, low) = (self.cache_high_watermark, self.cache_low_watermark);
        if !(1..=100).contains(&high) || low >= high {
            return Err(Error::Watermarks { high, low });
        }
        self.registry = self.registry.trim_end_matches('/').to_owned();
        if self.node_name.is_empty() {
            self.node_name = hostname();
        }
        self.upload_slots = self.upload_slots.max(1);
        self.fetch_slots = self.fetch_slots.max(1);
        Ok(self)
    }

    /// Filesystem use (percent) that starts eviction, and where it stops.
    pub fn cache_watermarks(&self) -> (u8, u8) {
        (self.cache_high_watermark, self.cache_low_watermark)
    }
}

/// This machine's host name, for the node name.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn every_setting_has_a_flag_a_damselfly_agent_variable_and_a_key_in_the_file() {
        let defaults = serde_json::to_value(Config::default()).expect("the defaults as the file spells them");
        let command = Run::command();
        let mut settings = 0;
        let user_facing =
            |a: &&clap::Arg| !a.is_hide_set() && !["config", "help", "version"].contains(&a.get_id().as_str());
        for arg in command.get_arguments().filter(user_facing) {
            let id = arg.get_id().as_str();
            assert_eq!(arg.get_long(), Some(id.replace('_', "-").as_str()));
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert_eq!(env, format!("DAMSELFLY_AGENT_{}", id.to_uppercase()));
            assert!(defaults.get(id).is_some(), "the file has no key {id}");
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                !arg.get_default_values().is_empty() || help.contains("[default: ") || help.contains("(required)"),
                "--{id} says neither its default nor that it is required"
            );
            settings += 1;
        }
        assert_eq!(settings, defaults.as_object().map(|o| o.len()).unwrap_or_default(), "and nothing else in the file");
    }

    /// Parses `damselfly-agent run <args>` with the environment as it is, then loads.
    fn load(args: &[&str]) -> Result<Config> {
        let matches = Run::command().try_get_matches_from(std::iter::once("run").chain(args.iter().copied()));
        let matches = matches.expect("the flags parse");
        let flags = Run::from_arg_matches(&matches).expect("the flags parse").config;
        Config::load(flags, &matches)
    }

    // The only test that sets DAMSELFLY_AGENT_* variables: tests run side by side.
    #[test]
    fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
        let dir = std::env::temp_dir().join(format!("damselfly-agent-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("agent.toml");
        std::fs::write(
            &file,
            "registry = \"http://file:5000/\"\ncluster_token = \"file-token\"\nzone = \"file\"\nupload_slots = 5\n\
             fetch_slots = 6\ncache_dir = \"/from/file\"\n",
        )
        .expect("write the file");
        let file = file.to_string_lossy().into_owned();
        std::env::set_var("DAMSELFLY_AGENT_ZONE", "env");
        std::env::set_var("DAMSELFLY_AGENT_UPLOAD_SLOTS", "7");
        let loaded = load(&["--config", &file, "--upload-slots", "9"]);
        std::env::remove_var("DAMSELFLY_AGENT_ZONE");
        std::env::remove_var("DAMSELFLY_AGENT_UPLOAD_SLOTS");
        let c = loaded.expect("valid settings");
        assert_eq!(c.registry, "http://file:5000", "from the file, without its trailing slash");
        assert_eq!(c.zone, "env", "the environment beats the file");
        assert_eq!(c.upload_slots, 9, "a flag beats the environment");
        assert_eq!(c.fetch_slots, 6, "the file beats the default");
        assert_eq!(c.cache_dir, PathBuf::from("/from/file"));
        assert_eq!(c.listen, DEFAULT_LISTEN, "what nobody says is the default");
        assert_eq!(c.cache_watermarks(), (85, 75));
        assert!(!c.node_name.is_empty(), "the host name");

        std::fs::write(dir.join("bad.toml"), "registry = \"x\"\nlisten_port = 1\n").expect("write");
        let bad = dir.join("bad.toml").to_string_lossy().into_owned();
        let e = load(&["--config", &bad]).expect_err("an unknown key");
        assert!(e.to_string().contains("listen_port"), "{e}");
        let e = load(&["--registry", "http://r", "--cluster-token", "t", "--cache-low-watermark", "90"])
            .expect_err("low above high");
        assert!(matches!(e, Error::Watermarks { high: 85, low: 90 }), "{e}");
        let e = load(&["--cluster-token", "t"]).expect_err("no registry");
        assert_eq!(
            e.to_string(),
            "the registry's URL is missing: pass --registry http://<registry> or set DAMSELFLY_AGENT_REGISTRY"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
