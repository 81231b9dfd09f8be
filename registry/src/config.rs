//! The registry's settings: one struct that is both the command line (clap,
//! with a `DAMSELFLY_*` environment variable per flag) and the TOML file
//! (serde). Each field states its default once, in its `#[arg]`, and its
//! doc comment is at once the rustdoc, the `--help` line and the README row.
//!
//! Precedence is file < environment < flag: the file is read first (its
//! gaps filled with the defaults), then whatever the environment or the
//! command line set, and only that, is laid over it.
//!
//! A group of settings (object storage, say) is a struct deriving
//! `clap::Args`, `Deserialize`, `Clone`, `Debug` and `PartialEq`, with
//! `#[serde(default, deny_unknown_fields)]` and `impl Default` by
//! [`defaults`]; [`Config`] takes it as a field marked
//! `#[command(flatten, next_help_heading = "…")]` and `#[serde(default)]`.
//! Its flags then sit among the others and its keys in a TOML table named
//! after the field (`[storage]`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

use crate::metadata::redact_url;

/// Every setting of `damselfly-registry`.
#[derive(Clone, Debug, PartialEq, Parser, Deserialize)]
#[command(
    name = "damselfly-registry",
    version,
    about = "Damselfly: a multi-tenant OCI registry and P2P supernode.",
    after_help = "Every setting can also be put in the TOML file given by --config, under the flag's name with \
                  underscores (listen = \"0.0.0.0:5000\"); the blob storage settings go in a [storage] table, \
                  named without their s3- prefix (bucket = \"damselfly\"), and the garbage collection settings in a \
                  [gc] table, without their gc- prefix (grace_secs = 3600). Flags win over the environment, which \
                  wins over the file. The README's section \"Configuration\" lists them all."
)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// TOML file with settings, keys named as the flags with underscores (e.g. `listen = "0.0.0.0:5000"`)
    /// [default: none].
    #[arg(long, short = 'c', env = "DAMSELFLY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address the HTTP API, console and metrics listen on.
    #[arg(long, env = "DAMSELFLY_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Directory for blobs, upload sessions and the embedded SQLite database.
    #[arg(long, env = "DAMSELFLY_DATA_DIR", default_value = "damselfly-data")]
    pub data_dir: PathBuf,
    /// Metadata database: `sqlite://<file>` or `postgres://user:pass@host/db` [default: sqlite://<data-dir>/metadata.db].
    #[arg(long, env = "DAMSELFLY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// URL clients reach the registry at, used in `Location` headers that leave the request's host [default: http://<listen>].
    #[arg(long, env = "DAMSELFLY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// URL the other registry replicas reach this one at, to pass it the P2P calls of the clusters it schedules;
    /// with an unspecified listen address (0.0.0.0, ::) the machine's host name stands in [default: http://<listen>].
    #[arg(long, env = "DAMSELFLY_INTERNAL_URL")]
    pub internal_url: Option<String>,
    /// Largest manifest accepted, in bytes; larger ones get `413`.
    #[arg(long, env = "DAMSELFLY_MAX_MANIFEST_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_manifest_bytes: usize,
    /// Seconds a client has to send a request's headers (and an idle keep-alive connection is kept); a
    /// client that takes longer is disconnected, so trickled headers cannot hold connections open.
    #[arg(long, env = "DAMSELFLY_HEADER_READ_TIMEOUT_SECS", default_value_t = 30)]
    pub header_read_timeout_secs: u64,
    /// Size in bytes of every blob's pieces in the P2P network, each with its SHA-256 recorded [default: chosen
    /// per blob from its length, a power of two from 256 KiB to 4 MiB that makes about 128 pieces].
    #[arg(long, env = "DAMSELFLY_PIECE_SIZE")]
    pub piece_size: Option<u64>,
    /// Stripe trees per P2P swarm of a blob with pieces up to 512 KiB or with 32 pieces or more: each agent
    /// forwards one stripe of the pieces to this many children and takes every stripe from one parent; 0 turns
    /// the trees off, leaving every agent to pull from the parents it is given.
    #[arg(long, env = "DAMSELFLY_P2P_STRIPES", default_value_t = crate::p2p::DEFAULT_STRIPES)]
    pub p2p_stripes: usize,
    /// Most connections held open to the metadata database.
    #[arg(long, env = "DAMSELFLY_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// Log format: `text` for people, `json` for log pipelines. Verbosity follows RUST_LOG (default `info`).
    #[arg(long, env = "DAMSELFLY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seconds an upload session may sit idle before it is discarded.
    #[arg(long, env = "DAMSELFLY_UPLOAD_TTL_SECS", default_value_t = 86_400)]
    pub upload_ttl_secs: u64,
    /// Service name in token challenges and the tokens' audience.
    #[arg(long, env = "DAMSELFLY_TOKEN_SERVICE", default_value = "damselfly")]
    pub token_service: String,
    /// Lifetime of access tokens in seconds.
    #[arg(long, env = "DAMSELFLY_TOKEN_TTL_SECS", default_value_t = 300)]
    pub token_ttl_secs: u64,
    /// Lifetime of refresh tokens (OAuth2 `access_type=offline`) in seconds.
    #[arg(long, env = "DAMSELFLY_REFRESH_TOKEN_TTL_SECS", default_value_t = 7 * 86_400)]
    pub refresh_token_ttl_secs: u64,
    /// Password of the `admin` user created on first start [default: generated and printed once].
    #[arg(long, env = "DAMSELFLY_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Failed logins allowed per username and per address within a minute before `429`.
    #[arg(long, env = "DAMSELFLY_LOGIN_FAILURES_PER_MINUTE", default_value_t = 10)]
    pub login_failures_per_minute: usize,
    /// `host:port` workloads pull through P2P at (the agents' mirror), shown in the console's pull commands
    /// and installed by the setup script; `127.0.0.1:65001` (each node's own agent) when the public URL
    /// names an IP address [default: p2p.<public host>:65001].
    #[arg(long, env = "DAMSELFLY_ACCELERATION_HOST")]
    pub acceleration_host: Option<String>,
    /// PEM file of an ES256 (P-256, PKCS#8) private key that signs tokens, e.g. from a Kubernetes Secret; it
    /// becomes the active key the first time it is seen [default: keys generated and kept in the database].
    #[arg(long, env = "DAMSELFLY_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// PEM file of the CA that signed the certificate behind the public URL, when it is not a public one;
    /// cluster setup hands it to the agents [default: none].
    #[arg(long, env = "DAMSELFLY_PUBLIC_CA_FILE")]
    pub public_ca_file: Option<PathBuf>,
    /// Hours a console sign-in lasts.
    #[arg(long, env = "DAMSELFLY_CONSOLE_SESSION_HOURS", default_value_t = 12)]
    pub console_session_hours: u64,
    /// Seconds between the points of the acceleration dashboard's traffic chart.
    #[arg(long, env = "DAMSELFLY_TRAFFIC_SAMPLE_SECS", default_value_t = 60)]
    pub traffic_sample_secs: u64,
    /// Export each tenant's and namespace's storage use and quota on `/metrics`, labelled with their names.
    /// `/metrics` asks for no credentials, so this tells whoever reaches it every tenant's name: turn it on
    /// only where the metrics port is the operator's alone.
    #[arg(long, env = "DAMSELFLY_METRICS_TENANT_LABELS", action = clap::ArgAction::Set, default_value_t = false)]
    pub metrics_tenant_labels: bool,
    /// Where blob bytes live: the `[storage]` table of the file.
    #[command(flatten, next_help_heading = "Blob storage")]
    #[serde(default)]
    pub storage: crate::storage::StorageConfig,
    /// When garbage collection runs and what it spares: the `[gc]` table of the file.
    #[command(flatten, next_help_heading = "Garbage collection")]
    #[serde(default)]
    pub gc: crate::services::gc::config::GcConfig,
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
        defaults()
    }
}

/// The defaults a settings struct (or group) declares in its `#[arg]`s, read
/// without looking at the environment or the command line. `#[serde(default)]`
/// fills the gaps of a file with these.
pub fn defaults<T: Args>() -> T {
    let command = T::augment_args(clap::Command::new("defaults")).mut_args(|a| a.env(None));
    command
        .try_get_matches_from(["defaults"])
        .and_then(|m| T::from_arg_matches(&m))
        .unwrap_or_else(|e| panic!("every setting has a default or is optional, yet: {e}"))
}

/// Why the settings could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line or an environment variable did not parse, or `--help`
    /// or `--version` was asked for: clap prints it and picks the exit code.
    #[error(transparent)]
    CommandLine(#[from] clap::Error),
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
    /// The settings from this process's command line, environment and file.
    pub fn load() -> Result<Config, ConfigError> {
        Self::load_from(std::env::args_os())
    }

    /// Defaults, then the file, then the environment, then flags.
    pub fn load_from<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        // The full command answers --help and --version and refuses bad values.
        let matches = Config::command().try_get_matches_from(&args)?;
        let mut config = match matches.get_one::<PathBuf>("config") {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        // Parsed again without defaults, the command line holds only what the
        // environment or the flags set; clap lays exactly that over the file.
        let set = Config::command().mut_args(|a| a.default_value(None)).try_get_matches_from(&args)?;
        config.update_from_arg_matches(&set)?;
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        config.config = Some(path.to_owned());
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.storage.validate().map_err(ConfigError::Invalid)?;
        self.gc.validate().map_err(ConfigError::Invalid)?;
        if let Some(size) = self.piece_size.filter(|&size| size < 64 * 1024) {
            return Err(ConfigError::Invalid(format!(
                "piece_size {size} is too small: use at least 65536 bytes, or leave it out to have it chosen per blob"
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
        if let Some(url) = &self.internal_url {
            let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.trim_end_matches('/').contains('/')) {
                return Err(ConfigError::Invalid(format!(
                    "internal_url {url:?} is not a base URL: give http://<host>:<port> where the other replicas reach this one"
                )));
            }
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
        // The same default the setup script installs, so the console's pull commands match the cluster.
        damselfly_installer::node::default_acceleration_host(&self.registry_host())
    }

    /// True when clients reach the registry over TLS, so cookies must be `Secure`.
    pub fn behind_tls(&self) -> bool {
        self.public_url().starts_with("https://")
    }

    /// The URL other replicas reach this one at, without a trailing slash.
    pub fn internal_url(&self) -> String {
        if let Some(u) = &self.internal_url {
            return u.trim_end_matches('/').to_owned();
        }
        let (ip, port) = (self.listen.ip(), self.listen.port());
        if ip.is_unspecified() {
            // Listening everywhere: the host name is what others can resolve to this machine.
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            return format!("http://{host}:{port}");
        }
        format!("http://{}", self.listen)
    }

    /// The URL clients reach the registry at, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:6000\"\npiece_size = 1048576\n").unwrap();
        let c =
            Config::load_from(["damselfly-registry", "--config", file.to_str().unwrap(), "--listen", "127.0.0.1:7000"])
                .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(c.piece_size, Some(1048576));
        assert_eq!(c.database_url(), "sqlite://damselfly-data/metadata.db");
        assert_eq!(c.p2p_stripes, 2);
        let c = Config::load_from(["r", "--p2p-stripes", "0"]).unwrap();
        assert_eq!(c.p2p_stripes, 0);
        let err = Config::load_from(["r", "--p2p-stripes", "40"]).unwrap_err();
        assert!(err.to_string().contains("p2p_stripes 40 is too many"), "{err}");
        let err = Config::load_from(["r", "--p2p-stripes", "1"]).unwrap_err();
        assert!(err.to_string().contains("use 0 to turn the trees off"), "{err}");
        let c = Config::load_from(["r"]).unwrap();
        assert_eq!((c.gc.delete_batch, c.gc.delete_concurrency), (500, 8));
        let err = Config::load_from(["r", "--gc-delete-batch", "0"]).unwrap_err();
        assert!(err.to_string().contains("gc delete_batch 0 is out of range: use 1 to 10000"), "{err}");
        let err = Config::load_from(["r", "--gc-delete-concurrency", "1000"]).unwrap_err();
        assert!(err.to_string().contains("gc delete_concurrency 1000 is out of range: use 1 to 256"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_urls_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let err = Config::load_from(["r", "-c", file.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = Config::load_from(["r", "--database-url", "mysql://u:secret@h/db"]).unwrap_err();
        assert!(err.to_string().contains("u:***@h"), "{err}");
    }

    /// A file that sets every setting to something other than its default
    /// loads back exactly when no flag sets anything: no default, implicit
    /// or explicit, is laid over what the file says.
    #[test]
    fn every_setting_in_the_file_survives_when_no_flag_sets_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("all.toml");
        std::fs::write(
            &file,
            r#"
            listen = "0.0.0.0:6001"
            data_dir = "/var/lib/d"
            database_url = "postgres://d@db/d"
            public_url = "https://r.example.com"
            internal_url = "http://10.0.0.7:5000"
            max_manifest_bytes = 1234
            header_read_timeout_secs = 4
            piece_size = 65536
            p2p_stripes = 0
            database_max_connections = 3
            log_format = "json"
            upload_ttl_secs = 5
            token_service = "other"
            token_ttl_secs = 6
            refresh_token_ttl_secs = 7
            admin_password = "a-password"
            login_failures_per_minute = 8
            acceleration_host = "p2p.example.com:1"
            signing_key_file = "/k.pem"
            public_ca_file = "/ca.pem"
            console_session_hours = 9
            traffic_sample_secs = 11
            metrics_tenant_labels = true

            [storage]
            backend = "s3"
            bucket = "b"
            prefix = "p/"
            endpoint = "http://s3.example.com"
            region = "eu-1"
            path_style = true
            credentials_file = "/creds"
            profile = "other"
            part_size = 6291456
            redirect = true
            redirect_ttl_secs = 60

            [gc]
            interval_secs = 12
            grace_secs = 13
            delete_batch = 14
            delete_concurrency = 15
            test_hold_dir = "/hold"
            "#,
        )
        .unwrap();
        let all = Config {
            config: Some(file.clone()),
            listen: "0.0.0.0:6001".parse().unwrap(),
            data_dir: "/var/lib/d".into(),
            database_url: Some("postgres://d@db/d".into()),
            public_url: Some("https://r.example.com".into()),
            internal_url: Some("http://10.0.0.7:5000".into()),
            max_manifest_bytes: 1234,
            header_read_timeout_secs: 4,
            piece_size: Some(65536),
            p2p_stripes: 0,
            database_max_connections: 3,
            log_format: LogFormat::Json,
            upload_ttl_secs: 5,
            token_service: "other".into(),
            token_ttl_secs: 6,
            refresh_token_ttl_secs: 7,
            admin_password: Some("a-password".into()),
            login_failures_per_minute: 8,
            acceleration_host: Some("p2p.example.com:1".into()),
            signing_key_file: Some("/k.pem".into()),
            public_ca_file: Some("/ca.pem".into()),
            console_session_hours: 9,
            traffic_sample_secs: 11,
            metrics_tenant_labels: true,
            storage: crate::storage::StorageConfig {
                backend: crate::storage::StorageBackend::S3,
                bucket: Some("b".into()),
                prefix: "p/".into(),
                endpoint: Some("http://s3.example.com".into()),
                region: Some("eu-1".into()),
                path_style: true,
                credentials_file: Some("/creds".into()),
                profile: "other".into(),
                part_size: 6 * 1024 * 1024,
                redirect: true,
                redirect_ttl_secs: 60,
            },
            gc: crate::services::gc::config::GcConfig {
                interval_secs: 12,
                grace_secs: 13,
                delete_batch: 14,
                delete_concurrency: 15,
                test_hold_dir: Some("/hold".into()),
            },
        };
        // Destructured, so that a new setting cannot be left out of this test.
        let Config {
            config: _,
            listen,
            data_dir,
            database_url,
            public_url,
            internal_url,
            max_manifest_bytes,
            header_read_timeout_secs,
            piece_size,
            p2p_stripes,
            database_max_connections,
            log_format,
            upload_ttl_secs,
            token_service,
            token_ttl_secs,
            refresh_token_ttl_secs,
            admin_password,
            login_failures_per_minute,
            acceleration_host,
            signing_key_file,
            public_ca_file,
            console_session_hours,
            traffic_sample_secs,
            metrics_tenant_labels,
            storage,
            gc,
        } = Config::default();
        // Each differs from its default, or the test could not tell the file's value from it.
        assert_ne!(listen, all.listen);
        assert_ne!(data_dir, all.data_dir);
        assert_ne!(database_url, all.database_url);
        assert_ne!(public_url, all.public_url);
        assert_ne!(internal_url, all.internal_url);
        assert_ne!(max_manifest_bytes, all.max_manifest_bytes);
        assert_ne!(header_read_timeout_secs, all.header_read_timeout_secs);
        assert_ne!(piece_size, all.piece_size);
        assert_ne!(p2p_stripes, all.p2p_stripes);
        assert_ne!(database_max_connections, all.database_max_connections);
        assert_ne!(log_format, all.log_format);
        assert_ne!(upload_ttl_secs, all.upload_ttl_secs);
        assert_ne!(token_service, all.token_service);
        assert_ne!(token_ttl_secs, all.token_ttl_secs);
        assert_ne!(refresh_token_ttl_secs, all.refresh_token_ttl_secs);
        assert_ne!(admin_password, all.admin_password);
        assert_ne!(login_failures_per_minute, all.login_failures_per_minute);
        assert_ne!(acceleration_host, all.acceleration_host);
        assert_ne!(signing_key_file, all.signing_key_file);
        assert_ne!(public_ca_file, all.public_ca_file);
        assert_ne!(console_session_hours, all.console_session_hours);
        assert_ne!(traffic_sample_secs, all.traffic_sample_secs);
        assert_ne!(metrics_tenant_labels, all.metrics_tenant_labels);
        // Field by field, so that a new storage setting cannot be left out either.
        let crate::storage::StorageConfig {
            backend,
            bucket,
            prefix,
            endpoint,
            region,
            path_style,
            credentials_file,
            profile,
            part_size,
            redirect,
            redirect_ttl_secs,
        } = storage;
        assert_ne!(backend, all.storage.backend);
        assert_ne!(bucket, all.storage.bucket);
        assert_ne!(prefix, all.storage.prefix);
        assert_ne!(endpoint, all.storage.endpoint);
        assert_ne!(region, all.storage.region);
        assert_ne!(path_style, all.storage.path_style);
        assert_ne!(credentials_file, all.storage.credentials_file);
        assert_ne!(profile, all.storage.profile);
        assert_ne!(part_size, all.storage.part_size);
        assert_ne!(redirect, all.storage.redirect);
        assert_ne!(redirect_ttl_secs, all.storage.redirect_ttl_secs);
        let crate::services::gc::config::GcConfig {
            interval_secs,
            grace_secs,
            delete_batch,
            delete_concurrency,
            test_hold_dir,
        } = gc;
        assert_ne!(interval_secs, all.gc.interval_secs);
        assert_ne!(grace_secs, all.gc.grace_secs);
        assert_ne!(delete_batch, all.gc.delete_batch);
        assert_ne!(delete_concurrency, all.gc.delete_concurrency);
        assert_ne!(test_hold_dir, all.gc.test_hold_dir);
        assert_eq!(Config::load_from(["r", "--config", file.to_str().unwrap()]).unwrap(), all);
        // A flag still wins over the file.
        let c = Config::load_from(["r", "--config", file.to_str().unwrap(), "--token-ttl-secs", "60"]).unwrap();
        assert_eq!((c.token_ttl_secs, c.traffic_sample_secs), (60, 11));
    }

    #[test]
    fn internal_url_defaults_to_the_listen_address_and_must_be_a_base_url() {
        let c = Config::load_from(["r", "--listen", "10.1.2.3:5001"]).unwrap();
        assert_eq!(c.internal_url(), "http://10.1.2.3:5001");
        let c = Config::load_from(["r", "--internal-url", "http://registry-0.registry:5000/"]).unwrap();
        assert_eq!(c.internal_url(), "http://registry-0.registry:5000");
        let any = Config::load_from(["r", "--listen", "0.0.0.0:5000"]).unwrap().internal_url();
        assert!(any.starts_with("http://") && any.ends_with(":5000") && !any.contains("0.0.0.0"), "{any}");
        for bad in ["registry:5000", "http://", "http://h:1/p2p"] {
            let err = Config::load_from(["r", "--internal-url", bad]).unwrap_err();
            assert!(err.to_string().contains("is not a base URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn acceleration_host_defaults_to_p2p_dot_the_registry_host_on_the_agent_port() {
        let with = |public: &str| Config { public_url: Some(public.to_owned()), ..Config::default() };
        assert_eq!(with("https://registry.example.com").acceleration_host(), "p2p.registry.example.com:65001");
        assert_eq!(with("http://registry.example.com:5000/").acceleration_host(), "p2p.registry.example.com:65001");
        assert_eq!(with("http://10.0.0.5:5000").acceleration_host(), "127.0.0.1:65001", "no name for an IP");
        assert_eq!(with("http://registry.example.com:5000").registry_host(), "registry.example.com:5000");
        assert!(with("https://registry.example.com").behind_tls());
        assert!(!Config::default().behind_tls());
        let set = Config { acceleration_host: Some("mirror.local:65001".into()), ..Config::default() };
        assert_eq!(set.acceleration_host(), "mirror.local:65001");
    }
}
