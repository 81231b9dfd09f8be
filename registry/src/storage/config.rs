//! Where blob bytes live: the `[storage]` table of the registry's settings,
//! with `DAMSELFLY_STORAGE` / `DAMSELFLY_S3_*` variables and `--storage` /
//! `--s3-*` flags over it.

use std::path::PathBuf;

use serde::Deserialize;

/// Smallest part S3 accepts in a multipart upload, except the last.
pub const S3_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest part S3 accepts.
pub const S3_MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// Blob storage settings: the `[storage]` table of the file, and the
/// `--storage` / `--s3-*` flags with their `DAMSELFLY_STORAGE` /
/// `DAMSELFLY_S3_*` variables.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where blobs live: `filesystem` (under the data directory) or `s3` (an S3-compatible bucket).
    #[arg(long = "storage", env = "DAMSELFLY_STORAGE", value_enum, default_value = "filesystem")]
    pub backend: StorageBackend,
    /// S3 bucket for blobs and upload parts; it must exist (required with `--storage s3`) [default: none].
    #[arg(long = "s3-bucket", env = "DAMSELFLY_S3_BUCKET")]
    pub bucket: Option<String>,
    /// Key prefix inside the bucket, so several registries can share one, e.g. `prod/` [default: none].
    #[arg(long = "s3-prefix", env = "DAMSELFLY_S3_PREFIX", default_value = "", hide_default_value = true)]
    pub prefix: String,
    /// S3 endpoint of a self-hosted store (SeaweedFS, MinIO, Ceph), e.g. `http://127.0.0.1:8333` [default: AWS, from the region].
    #[arg(long = "s3-endpoint", env = "DAMSELFLY_S3_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Region requests are signed for [default: AWS_REGION, else us-east-1].
    #[arg(long = "s3-region", env = "DAMSELFLY_S3_REGION")]
    pub region: Option<String>,
    /// Address the bucket as `<endpoint>/<bucket>/<key>` rather than `<bucket>.<endpoint>/<key>`;
    /// most self-hosted stores need this.
    #[arg(long = "s3-path-style", env = "DAMSELFLY_S3_PATH_STYLE", action = clap::ArgAction::Set, default_value_t = false)]
    pub path_style: bool,
    /// AWS shared credentials file (`[profile]` sections with `aws_access_key_id`, `aws_secret_access_key`,
    /// optionally `aws_session_token`) [default: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment].
    #[arg(long = "s3-credentials-file", env = "DAMSELFLY_S3_CREDENTIALS_FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Profile read from the credentials file.
    #[arg(long = "s3-profile", env = "DAMSELFLY_S3_PROFILE", default_value = "default")]
    pub profile: String,
    /// Size in bytes of the parts uploads are sent to S3 in: also the memory one upload holds at most,
    /// and 10,000 parts of it the largest blob; at least 5242880 (5 MiB).
    #[arg(long = "s3-part-size", env = "DAMSELFLY_S3_PART_SIZE", default_value_t = 8 * 1024 * 1024)]
    pub part_size: u64,
    /// Answer blob GETs with `307 Temporary Redirect` to a presigned URL of the object, so the bytes flow
    /// from the store to the client directly; clients must reach the endpoint.
    #[arg(long = "s3-redirect", env = "DAMSELFLY_S3_REDIRECT", action = clap::ArgAction::Set, default_value_t = false)]
    pub redirect: bool,
    /// Seconds a redirect's presigned URL stays valid.
    #[arg(long = "s3-redirect-ttl-secs", env = "DAMSELFLY_S3_REDIRECT_TTL_SECS", default_value_t = 300)]
    pub redirect_ttl_secs: u64,
}

/// Which store holds blob bytes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Files under the data directory: one process, or replicas sharing a volume.
    #[default]
    Filesystem,
    /// An S3-compatible bucket: what replicas share.
    S3,
}

impl Default for StorageConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

impl StorageConfig {
    /// Checks the settings make sense together; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.backend != StorageBackend::S3 {
            return Ok(());
        }
        if self.bucket.as_deref().is_none_or(str::is_empty) {
            return Err("storage backend s3 needs a bucket: set --s3-bucket or DAMSELFLY_S3_BUCKET".into());
        }
        if !(S3_MIN_PART_SIZE..=S3_MAX_PART_SIZE).contains(&self.part_size) {
            return Err(format!(
                "s3 part_size {} is outside what S3 accepts: use 5242880 (5 MiB) to 5368709120 (5 GiB); the default is 8388608",
                self.part_size
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(format!("s3 endpoint {endpoint:?} must be a URL such as http://127.0.0.1:8333"));
            }
        }
        if self.prefix.starts_with('/') || self.prefix.contains("//") {
            return Err(format!(
                "s3 prefix {:?} must not start with / or hold an empty segment, e.g. prod/",
                self.prefix
            ));
        }
        if self.redirect_ttl_secs == 0 || self.redirect_ttl_secs > 7 * 86_400 {
            return Err("s3 redirect_ttl_secs must be between 1 and 604800 (a week, the longest S3 signs for)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn flags_override_the_storage_table_and_s3_needs_a_bucket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("registry.toml");
        std::fs::write(
            &file,
            "[storage]\nbackend = \"s3\"\nbucket = \"from-file\"\nprefix = \"prod/\"\npath_style = true\n",
        )
        .expect("write");
        let file = file.to_str().expect("utf-8 path");
        let config = Config::load_from(["r", "-c", file, "--s3-bucket", "from-flag", "--s3-part-size", "6291456"])
            .expect("settings")
            .storage;
        assert_eq!(
            (config.backend, config.bucket.as_deref(), config.prefix.as_str(), config.path_style, config.part_size),
            (StorageBackend::S3, Some("from-flag"), "prod/", true, 6 * 1024 * 1024)
        );
        assert_eq!(config.validate(), Ok(()));

        let no_bucket = StorageConfig { backend: StorageBackend::S3, ..StorageConfig::default() };
        assert!(no_bucket.validate().unwrap_err().contains("--s3-bucket"));
        let small_parts = StorageConfig { part_size: 1024 * 1024, ..config.clone() };
        assert!(small_parts.validate().unwrap_err().contains("5242880 (5 MiB)"));
        let bare_host = StorageConfig { endpoint: Some("127.0.0.1:8333".into()), ..config.clone() };
        assert!(bare_host.validate().unwrap_err().contains("http://127.0.0.1:8333"));
        assert!(toml::from_str::<StorageConfig>("bucket_name = \"x\"\n").is_err(), "unknown keys are refused");
        assert_eq!(StorageConfig::default().validate(), Ok(()), "the filesystem needs nothing more");
        assert_eq!(StorageConfig::default().profile, "default");
        assert_eq!(StorageConfig::default().part_size, 8 * 1024 * 1024);
    }
}
