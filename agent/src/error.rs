//! The agent's one error type. Each variant says what failed in words a
//! person can act on; where something else caused it, that cause is kept as
//! the error's source, and [`Report`] prints the whole chain (reqwest says
//! "error sending request" and keeps the untrusted certificate to its
//! sources).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use damselfly_core::{Digest, ErrorCode, RepositoryName};

/// Shorthand for the agent's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the agent can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Settings and start-up.
    /// A required setting was given nowhere.
    #[error("the {what} is missing: pass --{flag} or set {env}{hint}")]
    MissingSetting {
        /// What it is, in words.
        what: &'static str,
        /// The flag, without `--`.
        flag: &'static str,
        /// The environment variable.
        env: &'static str,
        /// Where to find it, when that is not obvious.
        hint: &'static str,
    },
    /// The cache's watermarks contradict each other.
    #[error(
        "cache watermarks {high}% (high) and {low}% (low) do not fit: the low watermark must be below the high \
         one, and the high one between 1 and 100, e.g. --cache-high-watermark 85 --cache-low-watermark 75"
    )]
    Watermarks {
        /// The high watermark given.
        high: u8,
        /// The low watermark given.
        low: u8,
    },
    /// The `--config` file cannot be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML of the agent's settings.
    #[error("the config file {} is not valid: {source}", path.display())]
    ConfigInvalid {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: toml::de::Error,
    },
    /// A port cannot be listened on.
    #[error("cannot listen on {addr} for the {what}: {source}; is another agent running?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which server.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A server stopped with an error.
    #[error("the {what} stopped: {source}")]
    Serve {
        /// Which server.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The async runtime cannot start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The cache directory cannot be used.
    #[error("cannot use the cache directory {}: {source}", path.display())]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--registry-ca` file cannot be read.
    #[error("cannot use the registry CA {}: {source}; pass a PEM file with --registry-ca", path.display())]
    RegistryCaRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--registry-ca` file holds no usable certificate.
    #[error("cannot use the registry CA {}: it holds no PEM certificate; pass a PEM file with --registry-ca", path.display())]
    RegistryCaPem {
        /// The file.
        path: PathBuf,
        /// What the parser said, if it said something.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The HTTP client cannot be built.
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),

    // The registry as supernode.
    /// The registry cannot be reached, or broke off.
    #[error("cannot reach the registry at {url}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The registry did not answer a call moments ago: the next one waits
    /// until the pause is over rather than for its timeout.
    #[error("the registry did not answer {} s ago; asking again in {} s", .since.as_secs(), .retry_in.as_secs())]
    RegistryDown {
        /// Since the failure.
        since: std::time::Duration,
        /// Until the next call.
        retry_in: std::time::Duration,
    },
    /// The registry failed a call (a 5xx): it may be restarting.
    #[error("the registry failed the {call} with {status}")]
    RegistryFailed {
        /// Which call.
        call: &'static str,
        /// Its status.
        status: u16,
    },
    /// The registry refused a call.
    #[error("the registry refused the {call} with {status}{}", code.map(|c| format!(" ({c})")).unwrap_or_default())]
    Refused {
        /// Which call.
        call: &'static str,
        /// Its status.
        status: u16,
        /// Its error code, if it sent one this version knows.
        code: Option<ErrorCode>,
    },
    /// The registry's answer is not what the call expects.
    #[error("the registry's answer to the {call} is not valid: {source}")]
    BadAnswer {
        /// Which call.
        call: &'static str,
        /// What is wrong with it.
        source: reqwest::Error,
    },
    /// The registry's `/v2/` sent no challenge to learn its token endpoint from.
    #[error("the registry's /v2/ answered {status} without a Bearer challenge")]
    NoChallenge {
        /// Its status.
        status: u16,
    },
    /// The scheduler does not know this agent (any more): it registers again.
    #[error("the registry does not know this agent")]
    AgentUnknown,
    /// The agent has not registered yet.
    #[error("the agent is not registered with the registry yet")]
    NotRegistered,

    // Downloads.
    /// A reader's blob could not be fetched; the download logged why.
    #[error("the blob could not be fetched completely and correctly")]
    DownloadFailed,
    /// The download's schedule gave up on the blob.
    #[error(transparent)]
    GaveUp(#[from] crate::schedule::GiveUp),
    /// A piece cannot be written to the cache.
    #[error("cannot write to the cache: {0}")]
    CacheWrite(#[source] std::io::Error),
    /// A blob cannot be kept in the cache.
    #[error("cannot cache {digest}: {source}")]
    Cache {
        /// The blob.
        digest: Digest,
        /// Why.
        source: std::io::Error,
    },
    /// The join's answer describes the blob's pieces wrongly.
    #[error("the scheduler's layout of {digest} is not valid: {source}")]
    Layout {
        /// The blob.
        digest: Digest,
        /// What is wrong with it.
        source: damselfly_core::p2p::LayoutError,
    },
    /// Preheating: the registry does not accelerate the repository.
    #[error("the registry does not accelerate {0}: P2P is off for its namespace")]
    NotAccelerated(String),
    /// Preheating: the swarm of a blob cannot be joined.
    #[error("cannot join the swarm of {digest}: {source}")]
    Join {
        /// The blob.
        digest: Digest,
        /// Why.
        source: Box<Error>,
    },
    /// Preheating: a blob's download failed.
    #[error("{digest}: {source}")]
    Blob {
        /// The blob.
        digest: Digest,
        /// Why.
        source: Box<Error>,
    },

    // `damselfly-agent get`.
    /// The reference names no registry, and none was given.
    #[error(
        "{0:?} names no registry: pass --registry http(s)://<registry> or set DAMSELFLY_AGENT_REGISTRY, or write the \
         reference as <registry-host>/{0}"
    )]
    NoRegistry(String),
    /// The reference does not parse.
    #[error("{reference:?}: {source}")]
    Reference {
        /// As given.
        reference: String,
        /// What is wrong with it.
        source: ReferenceProblem,
    },
    /// A host, the registry or its token endpoint cannot be reached.
    #[error("cannot reach {what} at {url}: {source}; is the URL right and the registry running?")]
    CannotReach {
        /// What: the registry, its token endpoint.
        what: &'static str,
        /// Where.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// Only one of the credentials was given.
    #[error("--{given} needs --{missing} (or DAMSELFLY_AGENT_{})", missing.to_uppercase())]
    HalfCredentials {
        /// The one given.
        given: &'static str,
        /// The one missing.
        missing: &'static str,
    },
    /// The token endpoint refused the credentials.
    #[error(
        "the registry refused the credentials ({}): check --username and --password (DAMSELFLY_AGENT_USERNAME/PASSWORD)",
        .0
    )]
    CredentialsRefused(Refusal),
    /// The token endpoint's answer is not valid.
    #[error("the registry's token answer is not valid: {0}")]
    BadToken(#[source] reqwest::Error),
    /// Both a tag or manifest digest and `--digest` were given.
    #[error("{0}: give either a tag or manifest digest in the reference, or --digest, not both")]
    DigestAndTag(String),
    /// Neither a tag nor `--digest` was given.
    #[error("{0} names no tag: write {0}:<tag>, {0}@sha256:<hex>, or pass --digest")]
    NoTag(String),
    /// The manifest does not exist.
    #[error("{shown} does not exist ({}: {}); check the repository and tag", .refusal.code, .refusal.message)]
    ManifestUnknown {
        /// The reference.
        shown: String,
        /// What the registry said.
        refusal: Refusal,
    },
    /// The caller may not pull.
    #[error(
        "no permission to pull {} ({}); sign in with --username/--password of an account that may pull it",
        repository.as_str(), .refusal
    )]
    NoPermission {
        /// The repository.
        repository: RepositoryName,
        /// What the registry said.
        refusal: Refusal,
    },
    /// The registry answered the manifest request with another error.
    #[error("the registry answered {shown} with {} (HTTP {}): {}", .refusal.code, .refusal.status, .refusal.message)]
    ManifestRefused {
        /// The reference.
        shown: String,
        /// What the registry said.
        refusal: Refusal,
    },
    /// The manifest could not be read.
    #[error("reading the manifest of {shown}: {source}")]
    ManifestRead {
        /// The reference.
        shown: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The manifest does not match the digest it was asked by.
    #[error("the manifest the registry sent for {0} does not match its digest")]
    ManifestDigest(String),
    /// The manifest is not valid JSON of a manifest.
    #[error("the manifest of {shown} is not valid: {source}")]
    ManifestInvalid {
        /// The reference.
        shown: String,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// The reference is an index, not one manifest.
    #[error("{shown} is an index of several manifests; get one of them by digest: {}", .manifests.join(", "))]
    Index {
        /// The reference.
        shown: String,
        /// The manifests' digests.
        manifests: Vec<String>,
    },
    /// `--file` names no file of the artifact.
    #[error("{shown} has no file named {name:?}; its files are: {}", .files.join(", "))]
    NoSuchFile {
        /// The reference.
        shown: String,
        /// The name asked for.
        name: String,
        /// The files it has.
        files: Vec<String>,
    },
    /// The artifact holds no file.
    #[error("{0} holds no files")]
    NoFiles(String),
    /// The artifact holds several files and none was chosen.
    #[error("{shown} holds {} files ({}): choose one with --file <name>", .files.len(), .files.join(", "))]
    SeveralFiles {
        /// The reference.
        shown: String,
        /// The files it has.
        files: Vec<String>,
    },
    /// The blob is not in the repository.
    #[error("blob {digest} is not in {} ({}); check the digest and the repository", repository.as_str(), .refusal.code)]
    BlobUnknown {
        /// The blob.
        digest: Digest,
        /// The repository.
        repository: RepositoryName,
        /// What the registry said.
        refusal: Refusal,
    },
    /// Fetching the blob was refused otherwise.
    #[error("fetching blob {digest} answered {} (HTTP {}): {}", .refusal.code, .refusal.status, .refusal.message)]
    BlobRefused {
        /// The blob.
        digest: Digest,
        /// What the registry said.
        refusal: Refusal,
    },
    /// The transfer broke off; the part file keeps what came.
    #[error(
        "the transfer of {digest} broke off after {received} bytes ({source}); run the same command again to resume"
    )]
    BrokeOff {
        /// The blob.
        digest: Digest,
        /// Bytes received in all.
        received: u64,
        /// Why.
        source: reqwest::Error,
    },
    /// A local file cannot be read, written or moved.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        /// What was being done: read, write, move … to.
        action: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Standard output cannot be written.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    /// What was written to standard output is not the blob.
    #[error("{0}: the bytes written to standard output are not the file; discard them")]
    WrongOnStdout(Mismatch),
    /// What was received is not the blob; the part file is gone.
    #[error("{0}; the partial file was removed, run the command again")]
    WrongFile(Mismatch),
    /// The one-shot peer could not register in time.
    #[error(
        "cannot join the swarm as a one-shot peer: the registry at {registry} did not register this node within \
         {secs}s; check the cluster token (--cluster-token, DAMSELFLY_AGENT_CLUSTER_TOKEN)"
    )]
    OneShotNotRegistered {
        /// The registry.
        registry: String,
        /// How long it waited.
        secs: u64,
    },

    // `damselfly-agent node-setup` and `image push`.
    /// Configuring the node's runtimes failed, or a registry URL is not valid.
    #[error(transparent)]
    Installer(#[from] damselfly_installer::node::Error),
    /// This executable cannot be found, to pack it.
    #[error("cannot find this executable: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// `ldd` cannot be run.
    #[error("cannot run ldd to find the agent's libraries: {0}; install it (libc-bin)")]
    Ldd(#[source] std::io::Error),
    /// The image's layer cannot be built.
    #[error("cannot build the layer: {0}")]
    Layer(#[source] std::io::Error),
    /// A step of `image push` was refused.
    #[error("{step}: the registry answered {status}: {body}")]
    PushRefused {
        /// The step.
        step: String,
        /// The status.
        status: u16,
        /// The body, as the registry sent it.
        body: String,
    },
    /// A step of `image push` failed to reach the registry.
    #[error("{step}: {source}")]
    PushFailed {
        /// The step.
        step: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The registry's answer to a step of `image push` lacks what the step needs.
    #[error("{0}")]
    PushAnswer(&'static str),

    /// The image-rewrite webhook stopped.
    #[error("{0}")]
    Webhook(String),
}

/// Why a reference does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceProblem {
    /// The manifest digest.
    #[error("the manifest digest is invalid: {0}")]
    Digest(#[from] damselfly_core::DigestError),
    /// The tag.
    #[error(transparent)]
    Tag(#[from] damselfly_core::ReferenceError),
    /// The repository name.
    #[error(transparent)]
    Name(#[from] damselfly_core::NameError),
}

/// An error the registry answered with: the first code and message of its
/// error body, or the status alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The code, or `HTTP <status>` when the body has none.
    pub code: String,
    /// The message.
    pub message: String,
}

impl Refusal {
    /// Reads a refusal from the registry's answer.
    pub async fn read(r: reqwest::Response) -> Refusal {
        let status = r.status().as_u16();
        let body: damselfly_core::ErrorBody = r.json().await.unwrap_or_default();
        match body.errors.into_iter().next() {
            Some(e) => Refusal { status, code: e.code, message: e.message },
            None => Refusal { status, code: format!("HTTP {status}"), message: String::new() },
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, HTTP {}: {}", self.code, self.status, self.message)
    }
}

/// How received bytes differ from the blob.
#[derive(Debug)]
pub enum Mismatch {
    /// Another digest.
    Digest {
        /// Bytes received.
        received: u64,
        /// Their digest.
        got: Digest,
        /// The blob's.
        want: Digest,
    },
    /// Another size.
    Size {
        /// Bytes received.
        received: u64,
        /// The size announced.
        announced: u64,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Digest { received, got, want } => {
                write!(f, "the {received} bytes received hash to {got}, not {want}")
            }
            Mismatch::Size { received, announced } => {
                write!(f, "received {received} bytes, not the {announced} announced")
            }
        }
    }
}

/// An error with its causes, for logs and for people: each cause the
/// error's own message does not already say is added after a colon.
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let more = c.to_string();
            if !text.contains(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            cause = c.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_adds_the_causes_the_message_leaves_out() {
        let inner = std::io::Error::other("disk full");
        let e = Error::CacheWrite(inner);
        assert_eq!(Report(&e).to_string(), "cannot write to the cache: disk full", "said once, not twice");
        let e = Error::Join { digest: Digest::of(b"x"), source: Box::new(Error::AgentUnknown) };
        assert_eq!(
            Report(&e).to_string(),
            format!("cannot join the swarm of {}: the registry does not know this agent", Digest::of(b"x"))
        );
        let e = Error::MissingSetting {
            what: "registry's URL",
            flag: "registry http://<registry>",
            env: "DAMSELFLY_AGENT_REGISTRY",
            hint: "",
        };
        assert_eq!(
            e.to_string(),
            "the registry's URL is missing: pass --registry http://<registry> or set DAMSELFLY_AGENT_REGISTRY"
        );
    }
}
