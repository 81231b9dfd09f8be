//! The registry's settings: one serde struct with a documented default per
//! field, read from an optional TOML file and overridden by `DAMSELFLY_*`
//! environment variables and command-line flags (flags win).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

/// Every setting of `damselfly-registry`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API, console and metrics listen on. Default `127.0.0.1:5000`.
    pub listen: SocketAddr,
    /// Directory for blobs, upload sessions and the embedded SQLite database. Default `./damselfly-data`.
    pub data_dir: PathBuf,
    /// Metadata database: `sqlite://<file>` or `postgres://…`. Default: `sqlite://<data_dir>/metadata.db`.
    pub database_url: Option<String>,
    /// URL clients use to reach the registry, used in `Location` headers that
    /// leave the request's host. Default: `http://<listen>`.
    pub public_url: Option<String>,
    /// Largest manifest accepted, in bytes; larger ones get `413`. Default 4 MiB.
    pub max_manifest_bytes: usize,
    /// Size of the pieces whose SHA-256 is recorded for every blob. Default 4 MiB.
    pub piece_size: u64,
    /// Stripe trees the P2P scheduler places the agents of a swarm in, for
    /// blobs whose pieces are 512 KiB or smaller, or that have 32 pieces or
    /// more: each agent forwards one
    /// stripe of the blob's pieces to this many children and takes every
    /// stripe from one parent. 0 turns the trees off, leaving every agent to
    /// pull pieces from the parents it is given. Default 2.
    pub p2p_stripes: usize,
    /// Most connections held open to the metadata database. Default 16.
    pub database_max_connections: u32,
    /// Log format: `text` for people, `json` for log pipelines. Default `text`.
    pub log_format: LogFormat,
    /// Seconds an upload session may sit idle before it is discarded. Default 86400 (one day).
    pub upload_ttl_secs: u64,
    /// Service name in token challenges and the tokens' audience. Default `damselfly`.
    pub token_service: String,
    /// Lifetime of access tokens in seconds. Default 300.
    pub token_ttl_secs: u64,
    /// Lifetime of refresh tokens (OAuth2 `access_type=offline`) in seconds. Default 604800 (a week).
    pub refresh_token_ttl_secs: u64,
    /// Password of the `admin` user created on first start. Default: generated and printed once.
    #[serde(skip_serializing)]
    pub admin_password: Option<String>,
    /// Failed logins allowed per username and per address within a minute before `429`. Default 10.
    pub login_failures_per_minute: usize,
    /// `host:port` workloads pull through P2P at (the agents' mirror), shown in the console's pull commands.
    /// Default: `p2p.<host of public_url>:65001`.
    pub acceleration_host: Option<String>,
    /// PEM file of an ES256 (P-256, PKCS#8) private key that signs tokens,
    /// e.g. from a Kubernetes Secret. It becomes the active key the first time
    /// it is seen; without it, the registry generates and rotates its own.
    pub signing_key_file: Option<PathBuf>,
    /// PEM file of the CA that signed the certificate behind `public_url`,
    /// when it is not a public one: cluster setup hands it to the agents.
    pub public_ca_file: Option<PathBuf>,
    /// Hours a console sign-in lasts. Default 12.
    pub console_session_hours: u64,
    /// Seconds between the points of the acceleration dashboard's traffic chart. Default 60.
    pub traffic_sample_secs: u64,
    /// Where blob bytes live: the `[storage]` table.
    pub storage: crate::storage::StorageConfig,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines with `key=value` fields.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("damselfly-data"),
            database_url: None,
            public_url: None,
            max_manifest_bytes: 4 * 1024 * 1024,
            piece_size: damselfly_core::PIECE_SIZE,
            p2p_stripes: crate::p2p::DEFAULT_STRIPES,
            database_max_connections: 16,
            log_format: LogFormat::Text,
            upload_ttl_secs: 86_400,
            token_service: "damselfly".into(),
            token_ttl_secs: 300,
            refresh_token_ttl_secs: 7 * 86_400,
            admin_password: None,
            login_failures_per_minute: 10,
            acceleration_host: None,
            public_ca_file: None,
            signing_key_file: None,
            console_session_hours: 12,
            traffic_sample_secs: 60,
            storage: Default::default(),
        }
    }
}

/// Command line of `damselfly-registry`. Every flag can also be set through the
/// environment variable shown, and every setting through the TOML file.
#[derive(Debug, Parser)]
#[command(name = "damselfly-registry", version, about = "Damselfly: a multi-tenant OCI registry and P2P supernode.")]
pub struct Cli {
    /// TOML file with settings (keys as in the `Config` docs, e.g. `listen = "0.0.0.0:5000"`).
    #[arg(long, short = 'c', env = "DAMSELFLY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long, env = "DAMSELFLY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for blobs, uploads and the SQLite database [default: ./damselfly-data].
    #[arg(long, env = "DAMSELFLY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Metadata database, `sqlite://<file>` or `postgres://user:pass@host/db` [default: sqlite://<data-dir>/metadata.db].
    #[arg(long, env = "DAMSELFLY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// URL clients reach the registry at [default: http://<listen>].
    #[arg(long, env = "DAMSELFLY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest manifest accepted, in bytes [default: 4194304].
    #[arg(long, env = "DAMSELFLY_MAX_MANIFEST_BYTES")]
    pub max_manifest_bytes: Option<usize>,
    /// Piece size for per-piece digests, in bytes [default: 4194304].
    #[arg(long, env = "DAMSELFLY_PIECE_SIZE")]
    pub piece_size: Option<u64>,
    /// Stripe trees per P2P swarm of a blob with pieces up to 512 KiB or with 32 pieces or more, each agent forwarding one stripe to this many children; 0 turns them off [default: 2].
    #[arg(long, env = "DAMSELFLY_P2P_STRIPES")]
    pub p2p_stripes: Option<usize>,
    /// Most open connections to the metadata database [default: 16].
    #[arg(long, env = "DAMSELFLY_DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
    /// Log format [default: text]. Verbosity follows RUST_LOG (default `info`).
    #[arg(long, env = "DAMSELFLY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Seconds an idle upload session is kept before it is discarded [default: 86400].
    #[arg(long, env = "DAMSELFLY_UPLOAD_TTL_SECS")]
    pub upload_ttl_secs: Option<u64>,
    /// Service name in token challenges and token audiences [default: damselfly].
    #[arg(long, env = "DAMSELFLY_TOKEN_SERVICE")]
    pub token_service: Option<String>,
    /// Access token lifetime in seconds [default: 300].
    #[arg(long, env = "DAMSELFLY_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<u64>,
    /// Refresh token lifetime in seconds [default: 604800].
    #[arg(long, env = "DAMSELFLY_REFRESH_TOKEN_TTL_SECS")]
    pub refresh_token_ttl_secs: Option<u64>,
    /// Password for the `admin` user created on first start [default: generated and printed once].
    #[arg(long, env = "DAMSELFLY_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Failed logins allowed per user and per address per minute before 429 [default: 10].
    #[arg(long, env = "DAMSELFLY_LOGIN_FAILURES_PER_MINUTE")]
    pub login_failures_per_minute: Option<usize>,
    /// `host:port` workloads pull through P2P at, shown in the console [default: p2p.<public host>:65001].
    #[arg(long, env = "DAMSELFLY_ACCELERATION_HOST")]
    pub acceleration_host: Option<String>,
    /// PEM file of an ES256 (P-256, PKCS#8) token signing key to use [default: keys generated and kept in the database].
    #[arg(long, env = "DAMSELFLY_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// PEM file of the CA behind public_url's certificate, handed to agents by cluster setup [default: none].
    #[arg(long, env = "DAMSELFLY_PUBLIC_CA_FILE")]
    pub public_ca_file: Option<PathBuf>,
    /// Hours a console sign-in lasts [default: 12].
    #[arg(long, env = "DAMSELFLY_CONSOLE_SESSION_HOURS")]
    pub console_session_hours: Option<u64>,
    /// Seconds between the points of the acceleration dashboard's traffic chart [default: 60].
    #[arg(long, env = "DAMSELFLY_TRAFFIC_SAMPLE_SECS")]
    pub traffic_sample_secs: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub storage: crate::storage::StorageArgs,
}

/// Why the settings could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the file, then environment and flags.
    pub fn load(cli: Cli) -> Result<Config, ConfigError> {
        let mut config = match &cli.config {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = cli.$field { config.$field = v; } )* };
        }
        take!(
            listen,
            data_dir,
            max_manifest_bytes,
            piece_size,
            p2p_stripes,
            database_max_connections,
            log_format,
            upload_ttl_secs,
            token_service,
            token_ttl_secs,
            refresh_token_ttl_secs,
            login_failures_per_minute,
            console_session_hours,
            traffic_sample_secs
        );
        cli.storage.apply(&mut config.storage);
        if cli.acceleration_host.is_some() {
            config.acceleration_host = cli.acceleration_host;
        }
        if cli.public_ca_file.is_some() {
            config.public_ca_file = cli.public_ca_file;
        }
        if cli.signing_key_file.is_some() {
            config.signing_key_file = cli.signing_key_file;
        }
        if cli.admin_password.is_some() {
            config.admin_password = cli.admin_password;
        }
        if cli.database_url.is_some() {
            config.database_url = cli.database_url;
        }
        if cli.public_url.is_some() {
            config.public_url = cli.public_url;
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.storage.validate().map_err(ConfigError::Invalid)?;
        if self.piece_size < 64 * 1024 {
            return Err(ConfigError::Invalid(format!(
                "piece_size {} is too small: use at least 65536 bytes (the default is 4194304)",
                self.piece_size
            )));
        }
        if self.p2p_stripes > 16 {
            return Err(ConfigError::Invalid(format!(
                "p2p_stripes {} is too many: each agent would forward to that many children at once; use 0 or 2 to 16 (the default is 2)",
                self.p2p_stripes
            )));
        }
        if self.p2p_stripes == 1 {
            return Err(ConfigError::Invalid(
                "p2p_stripes 1 would queue every agent behind the one before it; use 0 to turn the trees off, or 2 to 16".into(),
            ));
        }
        if self.token_ttl_secs == 0 || self.refresh_token_ttl_secs == 0 {
            return Err(ConfigError::Invalid("token lifetimes must be positive".into()));
        }
        if self.admin_password.as_deref().is_some_and(|p| p.len() < 8) {
            return Err(ConfigError::Invalid("admin_password must be at least 8 characters".into()));
        }
        if self.upload_ttl_secs == 0 {
            return Err(ConfigError::Invalid("upload_ttl_secs must be positive".into()));
        }
        if self.traffic_sample_secs == 0 {
            return Err(ConfigError::Invalid("traffic_sample_secs must be positive".into()));
        }
        if self.console_session_hours == 0 {
            return Err(ConfigError::Invalid("console_session_hours must be positive".into()));
        }
        if self.acceleration_host.as_deref().is_some_and(|h| h.is_empty() || h.contains('/')) {
            return Err(ConfigError::Invalid(
                "acceleration_host is a host and port such as p2p.registry.example.com:65001, without a scheme or path"
                    .into(),
            ));
        }
        if self.max_manifest_bytes == 0 {
            return Err(ConfigError::Invalid("max_manifest_bytes must be positive".into()));
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::Invalid(format!(
                    "database_url must start with sqlite:// or postgres://, got {:?}",
                    redact_url(url)
                )));
            }
        }
        Ok(())
    }

    /// The database URL in use, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}/metadata.db", self.data_dir.display()))
    }

    /// The registry's `host[:port]` as image references name it.
    pub fn registry_host(&self) -> String {
        let url = self.public_url();
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest).to_owned()
    }

    /// The `host:port` workloads pull through P2P at.
    pub fn acceleration_host(&self) -> String {
        if let Some(h) = &self.acceleration_host {
            return h.clone();
        }
        let host = self.registry_host();
        // Drop the registry's port; a bracketed IPv6 literal keeps its brackets.
        let bare = match host.rsplit_once(':') {
            Some((h, port)) if !h.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
            _ => host.as_str(),
        };
        format!("p2p.{bare}:65001")
    }

    /// True when clients reach the registry over TLS, so cookies must be `Secure`.
    pub fn behind_tls(&self) -> bool {
        self.public_url().starts_with("https://")
    }

    /// The URL clients reach the registry at, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// A URL with any password replaced by `***`, safe to log.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:6000\"\npiece_size = 1048576\n").unwrap();
        let cli =
            Cli::parse_from(["damselfly-registry", "--config", file.to_str().unwrap(), "--listen", "127.0.0.1:7000"]);
        let c = Config::load(cli).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(c.piece_size, 1048576);
        assert_eq!(c.database_url(), "sqlite://damselfly-data/metadata.db");
        assert_eq!(c.p2p_stripes, 2);
        let c = Config::load(Cli::parse_from(["r", "--p2p-stripes", "0"])).unwrap();
        assert_eq!(c.p2p_stripes, 0);
        let err = Config::load(Cli::parse_from(["r", "--p2p-stripes", "40"])).unwrap_err();
        assert!(err.to_string().contains("p2p_stripes 40 is too many"), "{err}");
        let err = Config::load(Cli::parse_from(["r", "--p2p-stripes", "1"])).unwrap_err();
        assert!(err.to_string().contains("use 0 to turn the trees off"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_urls_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let err = Config::load(Cli::parse_from(["r", "-c", file.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = Config::load(Cli::parse_from(["r", "--database-url", "mysql://u:secret@h/db"])).unwrap_err();
        assert!(err.to_string().contains("u:***@h"), "{err}");
    }

    #[test]
    fn acceleration_host_defaults_to_p2p_dot_the_registry_host_on_the_agent_port() {
        let with = |public: &str| Config { public_url: Some(public.to_owned()), ..Config::default() };
        assert_eq!(with("https://registry.example.com").acceleration_host(), "p2p.registry.example.com:65001");
        assert_eq!(with("http://registry.example.com:5000/").acceleration_host(), "p2p.registry.example.com:65001");
        assert_eq!(with("http://registry.example.com:5000").registry_host(), "registry.example.com:5000");
        assert!(with("https://registry.example.com").behind_tls());
        assert!(!Config::default().behind_tls());
        let set = Config { acceleration_host: Some("mirror.local:65001".into()), ..Config::default() };
        assert_eq!(set.acceleration_host(), "mirror.local:65001");
    }
}
