//! `damselfly-agent image push`: packs this very agent into a one-layer OCI
//! image and pushes it into the registry, so that clusters pull the agent
//! from the registry they accelerate. No Docker, no build daemon. A static
//! agent (scripts/build-static-agent.sh) goes in alone; a dynamically
//! linked one with the shared libraries it loads, found with `ldd`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use damselfly_installer::image::{self, LayerFile, ENTRYPOINT, MANIFEST_MEDIA_TYPE};
use damselfly_installer::node::RegistryUrl;
use reqwest::{Client, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// What to do with the agent's image.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build the agent's image from this executable and push it into the registry.
    Push(PushArgs),
}

/// Flags of `damselfly-agent image push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// The registry's URL, e.g. https://registry.example.com.
    #[arg(long, env = "DAMSELFLY_AGENT_REGISTRY")]
    pub registry: String,
    /// Repository to push to; its namespace must exist or be creatable by the user.
    #[arg(long, default_value = "damselfly/agent")]
    pub repository: String,
    /// Tag to push [default: the agent's version].
    #[arg(long)]
    pub tag: Option<String>,
    /// User (or robot login) allowed to push; the same variable `get` reads.
    #[arg(long, env = "DAMSELFLY_AGENT_USERNAME")]
    pub username: String,
    /// Its password or robot token.
    #[arg(long, env = "DAMSELFLY_AGENT_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// Make the repository's namespace public, so nodes pull the agent without credentials.
    #[arg(long)]
    pub public: bool,
    /// The agent executable to pack [default: this one].
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

/// Runs the subcommand.
pub async fn run(command: ImageCommand) -> Result<()> {
    let ImageCommand::Push(args) = command;
    let registry = RegistryUrl::parse(&args.registry)?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(Error::CurrentExe)?,
    };
    let tag = args.tag.clone().unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
    let files = image_files(&binary)?;
    let layer_path = std::env::temp_dir().join(format!("damselfly-agent-layer-{}.tar", std::process::id()));
    let layer = build_layer(&files, &layer_path);
    let result = match layer {
        Ok((layer_digest, layer_size)) => {
            push(&args, &registry, &tag, &layer_path, &layer_digest, layer_size, files.len()).await
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&layer_path);
    result
}

/// `(path in the image, path on this machine)`: the agent, then its libraries.
fn image_files(binary: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = vec![(ENTRYPOINT.to_owned(), binary.to_path_buf())];
    let out = std::process::Command::new("ldd").arg(binary).output().map_err(Error::Ldd)?;
    // A static executable needs nothing beside it; ldd says so and fails.
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            files.push((path.to_owned(), PathBuf::from(path)));
        }
    }
    Ok(files)
}

/// Writes the layer to `path`; returns its digest and size.
fn build_layer(files: &[(String, PathBuf)], path: &Path) -> Result<(String, u64)> {
    let file_error = |action: &str, path: &Path| {
        let (action, path) = (action.to_owned(), path.to_owned());
        move |source| Error::File { action, path, source }
    };
    let mut inputs = Vec::new();
    for (in_image, source) in files {
        let file = std::fs::File::open(source).map_err(file_error("read", source))?;
        let size = file.metadata().map_err(file_error("read", source))?.len();
        // Executable, libraries and the dynamic loader alike: the loader must be executable.
        inputs.push(LayerFile { path: in_image.clone(), mode: 0o755, size, content: file });
    }
    let out = std::fs::File::create(path).map_err(file_error("write", path))?;
    let mut writer = HashingWriter { inner: std::io::BufWriter::new(out), hasher: Sha256::new(), size: 0 };
    image::write_layer(inputs, &mut writer).map_err(Error::Layer)?;
    writer.inner.flush().map_err(file_error("write", path))?;
    Ok((format!("sha256:{}", hex::encode(writer.hasher.finalize())), writer.size))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[allow(clippy::too_many_arguments)]
async fn push(
    args: &PushArgs,
    registry: &RegistryUrl,
    tag: &str,
    layer_path: &Path,
    layer_digest: &str,
    layer_size: u64,
    file_count: usize,
) -> Result<()> {
    let http =
        Client::builder().connect_timeout(std::time::Duration::from_secs(10)).build().map_err(Error::HttpClient)?;
    let base = registry.url();
    let repo = &args.repository;
    let token = bearer_token(&http, &base, repo, &args.username, &args.password).await?;
    let config = image::config(layer_digest, tag);
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(config.as_bytes())));

    let layer_file = tokio::fs::File::open(layer_path).await.map_err(|source| Error::File {
        action: "read".into(),
        path: layer_path.to_owned(),
        source,
    })?;
    let layer_body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(layer_file));
    upload_blob(&http, &base, repo, &token, layer_digest, layer_size, layer_body).await?;
    upload_blob(&http, &base, repo, &token, &config_digest, config.len() as u64, config.clone().into()).await?;

    let manifest = image::manifest(&config_digest, config.len() as u64, layer_digest, layer_size);
    let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(manifest.as_bytes())));
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .bearer_auth(&token)
        .header("content-type", MANIFEST_MEDIA_TYPE)
        .body(manifest)
        .send()
        .await
        .map_err(failed("pushing the manifest"))?;
    expect(r, StatusCode::CREATED, "pushing the manifest").await?;
    if args.public {
        let namespace = repo.split('/').next().unwrap_or(repo);
        let r = http
            .patch(format!("{base}/api/v1/namespaces/{namespace}"))
            .basic_auth(&args.username, Some(&args.password))
            .json(&serde_json::json!({"public": true}))
            .send()
            .await
            .map_err(failed(&format!("making {namespace} public")))?;
        expect(r, StatusCode::OK, &format!("making the namespace {namespace} public")).await?;
    }
    println!("pushed {}/{repo}:{tag}@{manifest_digest} ({file_count} files, {layer_size} bytes)", registry.host);
    Ok(())
}

async fn expect(r: reqwest::Response, status: StatusCode, what: &str) -> Result<reqwest::Response> {
    if r.status() == status {
        return Ok(r);
    }
    let got = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    Err(Error::PushRefused { step: what.to_owned(), status: got, body })
}

/// The error of a step of the push that did not reach the registry.
fn failed(step: &str) -> impl FnOnce(reqwest::Error) -> Error + '_ {
    move |source| Error::PushFailed { step: step.to_owned(), source }
}

/// A token for pull and push on `repo`, from the registry's token service.
async fn bearer_token(http: &Client, base: &str, repo: &str, user: &str, password: &str) -> Result<String> {
    let r = http.get(format!("{base}/v2/")).send().await.map_err(|source| Error::CannotReach {
        what: "the registry",
        url: base.to_owned(),
        source,
    })?;
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::NoChallenge { status: r.status().as_u16() })?
        .to_owned();
    let param = |name: &str| {
        challenge.split(',').find_map(|p| {
            let (k, v) = p.trim().trim_start_matches("Bearer ").split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_owned())
        })
    };
    let realm = param("realm").ok_or(Error::PushAnswer("the registry's challenge names no realm"))?;
    let service = param("service").unwrap_or_default();
    let r = http
        .get(realm)
        .query(&[("service", service.as_str()), ("scope", &format!("repository:{repo}:pull,push"))])
        .basic_auth(user, Some(password))
        .send()
        .await
        .map_err(failed("the token service"))?;
    let r = expect(r, StatusCode::OK, "logging in").await?;
    let body: serde_json::Value = r.json().await.map_err(Error::BadToken)?;
    body["token"].as_str().map(str::to_owned).ok_or(Error::PushAnswer("the token service sent no token"))
}

async fn upload_blob(
    http: &Client,
    base: &str,
    repo: &str,
    token: &str,
    digest: &str,
    size: u64,
    body: reqwest::Body,
) -> Result<()> {
    let exists = http.head(format!("{base}/v2/{repo}/blobs/{digest}")).bearer_auth(token).send().await;
    if exists.is_ok_and(|r| r.status() == StatusCode::OK) {
        return Ok(());
    }
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(failed("starting an upload"))?;
    let r = expect(r, StatusCode::ACCEPTED, &format!("starting the upload to {repo}")).await?;
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or(Error::PushAnswer("the upload has no Location"))?;
    let url = if location.starts_with('/') { format!("{base}{location}") } else { location.to_owned() };
    let separator = if url.contains('?') { '&' } else { '?' };
    let r = http
        .put(format!("{url}{separator}digest={digest}"))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .header("content-length", size)
        .body(body)
        .send()
        .await
        .map_err(failed(&format!("uploading {digest}")))?;
    expect(r, StatusCode::CREATED, &format!("uploading {digest}")).await.map(|_| ())
}
