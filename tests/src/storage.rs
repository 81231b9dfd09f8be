//! Storage lifecycle scenarios' helpers: images of several layers pushed as
//! a client pushes them (asking first which blobs the registry lacks),
//! garbage collection runs through the management API, and the set of blobs
//! actually kept in the store (files on disk, or objects in the bucket).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::http::{Cred, Http, Reply};
use crate::image::{push_manifest, Blob, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use crate::{seaweedfs, Registry};

/// An image as pushed: its config and layers, and its manifest.
#[derive(Clone)]
pub struct PushedImage {
    /// `<namespace>/<repository>`.
    pub repo: String,
    /// Its tag.
    pub tag: String,
    /// Its config.
    pub config: Blob,
    /// Its layers, in order.
    pub layers: Vec<Blob>,
    /// The manifest's bytes.
    pub manifest: String,
    /// The manifest's digest.
    pub digest: String,
}

impl PushedImage {
    /// The image's manifest for `config` and `layers` (not pushed).
    pub fn new(repo: &str, tag: &str, config: Blob, layers: Vec<Blob>) -> PushedImage {
        let manifest = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": layers.iter().map(|l| l.descriptor(OCI_LAYER)).collect::<Vec<_>>(),
        })
        .to_string();
        let digest = crate::sha256_digest(manifest.as_bytes());
        PushedImage { repo: repo.to_owned(), tag: tag.to_owned(), config, layers, manifest, digest }
    }

    /// Its config and layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

/// What pushing a blob took.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The registry had it: nothing was sent.
    Present,
    /// Uploaded.
    Uploaded,
}

/// Pushes a blob as clients do: a HEAD first, and only if it is missing, one `POST …?digest=`.
/// Panics on anything but the answers the registry may give.
pub async fn push_blob_if_missing(http: &Http, cred: &Cred, repo: &str, blob: &Blob) -> Sent {
    let head = http.send(http.request(cred, Method::HEAD, &format!("/v2/{repo}/blobs/{}", blob.digest))).await;
    if head.status == 200 {
        return Sent::Present;
    }
    assert_eq!(head.status, 404, "HEAD {repo}@{}: {}", blob.digest, head.text());
    let path = format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest);
    let reply = http.send(http.request(cred, Method::POST, &path).body(blob.bytes.clone())).await;
    assert_eq!(reply.status, 201, "upload of {} to {repo}: {}", blob.digest, reply.text());
    Sent::Uploaded
}

/// Pushes the image: its missing blobs, then its manifest. A manifest PUT
/// refused with `MANIFEST_BLOB_UNKNOWN` (a collection took a blob between the
/// HEAD and the PUT) is retried, as clients retry, after pushing the blobs
/// again; returns how many retries it took.
pub async fn push_image(http: &Http, cred: &Cred, image: &PushedImage) -> u32 {
    let mut retries = 0;
    loop {
        for b in image.blobs() {
            push_blob_if_missing(http, cred, &image.repo, b).await;
        }
        let reply = push_manifest(http, cred, &image.repo, &image.tag, OCI_MANIFEST, &image.manifest).await;
        if reply.status == 201 {
            return retries;
        }
        assert_eq!(
            reply.status_and_code(),
            (400, Some("MANIFEST_BLOB_UNKNOWN".to_owned())),
            "PUT {}:{}: {}",
            image.repo,
            image.tag,
            reply.text()
        );
        retries += 1;
        assert!(retries < 10, "the manifest of {}:{} was refused {retries} times", image.repo, image.tag);
    }
}

/// Runs garbage collection to the end (`POST /api/v1/gc` with `wait`); the run's record.
pub async fn collect(http: &Http, dry_run: bool) -> Value {
    let reply = http.api(&Cred::admin(), Method::POST, "/api/v1/gc", json!({ "dry_run": dry_run, "wait": true })).await;
    let run = reply.expect(200).json();
    assert_eq!(run["state"], "done", "{run}");
    run
}

/// Starts garbage collection without waiting; the answer.
pub async fn start_collection(http: &Http) -> Reply {
    http.api(&Cred::admin(), Method::POST, "/api/v1/gc", json!({})).await
}

/// Waits (at most a minute) until the run has finished; its record.
pub async fn finished_run(http: &Http, id: i64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let run = http.api(&Cred::admin(), Method::GET, &format!("/api/v1/gc/runs/{id}"), Value::Null).await;
        let run = run.expect(200).json();
        if run["state"] != "running" {
            return run;
        }
        assert!(std::time::Instant::now() < deadline, "run {id} did not finish within a minute: {run}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The digests of every blob the registry's store holds: files under
/// `blobs/sha256/` of its data directory, or objects under that prefix in its bucket.
pub fn stored_blobs(reg: &Registry) -> BTreeSet<String> {
    let from_key = |key: &str| key.rsplit('/').next().filter(|h| h.len() == 64).map(|h| format!("sha256:{h}"));
    if let Some(bucket) = &reg.bucket {
        let s3 = seaweedfs::SeaweedFs::shared();
        return s3
            .objects(bucket)
            .into_iter()
            .filter(|(key, _)| key.starts_with("blobs/sha256/"))
            .filter_map(|(key, _)| from_key(&key))
            .collect();
    }
    let mut out = BTreeSet::new();
    let root = reg.data_dir.join("blobs/sha256");
    for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            if let Some(d) = from_key(&file.file_name().to_string_lossy()) {
                out.insert(d);
            }
        }
    }
    out
}

/// The use the registry reports for a namespace: `(used_bytes, used_repositories)`.
pub async fn namespace_use(http: &Http, namespace: &str) -> (i64, i64) {
    let q = http.admin_api(Method::GET, &format!("/api/v1/namespaces/{namespace}/quota"), Value::Null).await;
    (q["used_bytes"].as_i64().expect("used_bytes"), q["used_repositories"].as_i64().expect("used_repositories"))
}

/// Pulls `repo:tag` with skopeo into a directory and checks the manifest
/// and every blob are exactly the bytes pushed.
pub fn pull_with_skopeo_and_compare(reg: &Registry, image: &PushedImage) {
    let dir = tempfile::Builder::new().prefix("damselfly-skopeo-").tempdir().expect("temp dir");
    crate::run(std::process::Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--src-creds",
        &format!("{}:{}", crate::ADMIN_USER, crate::ADMIN_PASSWORD),
        &format!("docker://{}/{}:{}", reg.host, image.repo, image.tag),
        &format!("dir:{}", dir.path().display()),
    ]));
    let manifest = std::fs::read(dir.path().join("manifest.json")).expect("manifest.json");
    assert_eq!(manifest, image.manifest.as_bytes(), "{}:{} manifest", image.repo, image.tag);
    for b in image.blobs() {
        let hex = b.digest.trim_start_matches("sha256:");
        let got = std::fs::read(dir.path().join(hex))
            .unwrap_or_else(|e| panic!("{}:{} blob {hex}: {e}", image.repo, image.tag));
        assert!(got == b.bytes, "{}:{}: blob {} differs from what was pushed", image.repo, image.tag, b.digest);
    }
}

/// A console sign-in, held as a browser holds it, for pages and forms over plain HTTP.
pub struct ConsoleSession {
    client: reqwest::Client,
    base: String,
    cookie: String,
    /// The session's form token.
    pub csrf: String,
}

/// A console page's status, redirect target and body.
pub struct ConsolePage {
    /// HTTP status.
    pub status: u16,
    /// `Location`, for a redirect.
    pub location: Option<String>,
    /// The HTML.
    pub body: String,
}

fn field_value(html: &str, marker: &str) -> Option<String> {
    let at = html.find(marker)? + marker.len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_owned())
}

impl ConsoleSession {
    /// Signs `user` in through the sign-in form.
    pub async fn sign_in(reg: &Registry, user: &str, password: &str) -> ConsoleSession {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let form = client.get(format!("{}/console/login", reg.url)).send().await.expect("sign-in page");
        let login = form
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("damselfly_login="))
            .and_then(|v| v.split(';').next())
            .expect("login cookie")
            .to_owned();
        let csrf = field_value(&form.text().await.unwrap_or_default(), "name=\"csrf\" value=\"").expect("form token");
        let signed = client
            .post(format!("{}/console/login", reg.url))
            .header(reqwest::header::COOKIE, login)
            .form(&[("username", user), ("password", password), ("csrf", &csrf)])
            .send()
            .await
            .expect("sign in");
        assert_eq!(signed.status(), 303, "signing in as {user} failed");
        let cookie = signed
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("damselfly_session="))
            .and_then(|v| v.split(';').next())
            .expect("session cookie")
            .to_owned();
        let mut session = ConsoleSession { client, base: reg.url.clone(), cookie, csrf: String::new() };
        let page = session.get("/console/tenants").await;
        session.csrf = field_value(&page.body, "name=\"csrf\" value=\"").expect("the session's form token");
        session
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> ConsolePage {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .expect("GET");
        page(r).await
    }

    /// Posts a form with the session's token; the answer (a redirect, usually).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> ConsolePage {
        let mut all = fields.to_vec();
        all.push(("csrf", &self.csrf));
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .form(&all)
            .send()
            .await
            .expect("POST");
        page(r).await
    }

    /// Posts a form and follows its redirect; the page it lands on.
    pub async fn post_and_follow(&self, path: &str, fields: &[(&str, &str)]) -> ConsolePage {
        let posted = self.post(path, fields).await;
        assert_eq!(posted.status, 303, "POST {path}: {} {}", posted.status, posted.body);
        self.get(posted.location.as_deref().expect("Location")).await
    }
}

async fn page(r: reqwest::Response) -> ConsolePage {
    let status = r.status().as_u16();
    let location = r.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    ConsolePage { status, location, body: r.text().await.unwrap_or_default() }
}
