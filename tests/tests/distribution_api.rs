//! The OCI Distribution API of a real `damselfly-registry`, spoken by hand
//! over HTTP: every status code, error code and header a client relies on,
//! on both metadata backends. Every request carries the system
//! administrator's Basic credentials, whose first push to a namespace
//! creates it; who may do what is the subject of the `auth_*.rs` tests.
//!
//! Each scenario is an `async fn(Backend)`; `on_both_backends!` turns it into
//! `<scenario>::sqlite` and `<scenario>::postgres`.

use std::io::{Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use damselfly_tests::{
    basic_authorization, on_both_backends, sha256_digest, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER,
};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};
use sha2::Digest as _;

on_both_backends!(
    base_endpoint_challenges_anonymous_clients_and_answers_200_with_the_api_version,
    monolithic_push_then_pull_serves_exact_bytes_and_ranges,
    post_then_put_with_the_body_creates_the_blob,
    chunked_upload_assembles_in_order_chunks_and_refuses_others_without_losing_bytes,
    streamed_patch_then_empty_put_creates_the_blob,
    cross_repository_mount_links_the_blob_or_falls_back_to_an_upload,
    manifests_of_all_four_media_types_round_trip_byte_for_byte,
    manifest_over_the_size_limit_is_refused_with_413,
    rejected_manifests_leave_tags_and_stored_manifests_untouched,
    tag_list_is_byte_sorted_and_pages_through_link_headers,
    catalog_is_byte_sorted_and_pages_through_link_headers,
    deletes_remove_exactly_what_they_name,
    referrers_list_artifacts_by_subject_and_filter_by_artifact_type,
    errors_carry_the_spec_status_and_code,
    failed_pushes_leave_nothing_behind_byte_for_byte,
    restart_loses_nothing_and_open_uploads_resume,
    health_and_metrics_report_exact_traffic_and_storage,
);

/// Pushing and pulling a layer far bigger than the memory budget; one
/// backend is enough, the bytes never touch the database.
mod a_256_mib_blob_streams_through_in_bounded_memory {
    use damselfly_tests::Backend;

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite() {
        super::a_256_mib_blob_streams_through_in_bounded_memory(Backend::Sqlite).await;
    }
}

// ---------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------

const MIB: usize = 1024 * 1024;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// How long the registry gets to notice a client hanging up.
const SETTLE: Duration = Duration::from_secs(3);

/// Some bytes and their digest.
struct Blob {
    bytes: Vec<u8>,
    digest: String,
}

impl Blob {
    fn new(bytes: impl Into<Vec<u8>>) -> Blob {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        Blob { bytes, digest }
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// An OCI descriptor of this blob.
    fn descriptor(&self, media_type: &str) -> Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.len() })
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so big blobs need no fixtures.
struct Pattern(u64);

impl Pattern {
    fn new(seed: u64) -> Pattern {
        Pattern(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let word = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// `len` pattern bytes from `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    Pattern::new(seed).fill(&mut out);
    out
}

/// An image manifest (OCI or Docker) over a config and layers, as compact JSON.
fn image_manifest(media_type: &str, config: Value, layers: Vec<Value>) -> String {
    json!({ "schemaVersion": 2, "mediaType": media_type, "config": config, "layers": layers }).to_string()
}

/// An image manifest laid out the way no serializer would: keys out of
/// order, odd spacing, tabs, a trailing newline. Only its exact bytes hash
/// to its digest, so a registry that re-serializes it is caught.
fn oddly_formatted_image_manifest(media_type: &str, config: (&str, &Blob), layers: &[(&str, &Blob)]) -> String {
    let descriptor = |(mt, b): (&str, &Blob)| {
        format!("{{ \"size\" :{},\"digest\":  \"{}\", \"mediaType\":\"{mt}\"}}", b.len(), b.digest)
    };
    let layers: Vec<String> = layers.iter().map(|l| descriptor(*l)).collect();
    format!(
        "{{\n   \"layers\" : [ {} ],\n\t\"config\":{},  \"schemaVersion\" :2,\"mediaType\":  \"{media_type}\"\n}}\n",
        layers.join(" ,\n\t "),
        descriptor(config)
    )
}

/// An index (OCI index or Docker manifest list) over child manifests, laid out oddly like the above.
fn oddly_formatted_index(media_type: &str, children: &[(&str, &str)]) -> String {
    let entries: Vec<String> = children
        .iter()
        .map(|(mt, body)| {
            format!(
                "{{\"platform\":{{ \"os\":\"linux\" , \"architecture\":\"amd64\"}},\"size\": {}, \"mediaType\" : \"{mt}\",\"digest\":\"{}\"}}",
                body.len(),
                sha256_digest(body.as_bytes())
            )
        })
        .collect();
    format!(
        "{{ \"mediaType\":\"{media_type}\",\n \"manifests\":[\n  {}\n ] , \"schemaVersion\":  2 }}",
        entries.join(",\n  ")
    )
}

// ---------------------------------------------------------------------------
// Talking to the registry
// ---------------------------------------------------------------------------

/// An HTTP client aimed at one registry, logged in as the system administrator.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(reg: &Registry) -> Api {
        // A fresh connection per request: after an error answered before the
        // body was read, the server may close a connection the pool still
        // holds, and the next request would fail for a reason under no test.
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("HTTP client");
        Api { http, base: reg.url.clone() }
    }

    /// A request to a path (`/v2/…`) or to a `Location` the registry sent, with the admin's Basic credentials.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.anonymous(method, path).basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
    }

    /// The same request without credentials.
    fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        self.http.request(method, url)
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    fn head(&self, path: &str) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }

    fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path).header("content-type", "application/octet-stream")
    }

    fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// Pushes a blob with one `POST …?digest=` and checks it was created.
    async fn push_blob(&self, name: &str, blob: &Blob) {
        let resp =
            send(self.post(&format!("/v2/{name}/blobs/uploads/?digest={}", blob.digest)).body(blob.bytes.clone()))
                .await;
        expect_status(resp, 201).await;
    }

    /// Pushes a manifest under a tag or digest and returns its digest.
    async fn push_manifest(&self, name: &str, reference: &str, media_type: &str, body: &str) -> String {
        let resp = send(
            self.put(&format!("/v2/{name}/manifests/{reference}"))
                .header("content-type", media_type)
                .body(body.to_owned()),
        )
        .await;
        let resp = expect_status(resp, 201).await;
        header(&resp, "docker-content-digest").expect("Docker-Content-Digest").to_owned()
    }

    /// Starts an upload session and returns its `Location`.
    async fn start_upload(&self, name: &str) -> String {
        let resp = expect_status(send(self.post(&format!("/v2/{name}/blobs/uploads/"))).await, 202).await;
        header(&resp, "location").expect("Location of the upload").to_owned()
    }

    /// The `Range` an upload session reports on `GET`.
    async fn upload_range(&self, location: &str) -> String {
        let resp = expect_status(send(self.get(location)).await, 204).await;
        header(&resp, "range").expect("Range of the upload").to_owned()
    }

    /// A blob's bytes, which must be there.
    async fn pull_blob(&self, name: &str, digest: &str) -> Vec<u8> {
        let resp = expect_status(send(self.get(&format!("/v2/{name}/blobs/{digest}"))).await, 200).await;
        resp.bytes().await.expect("blob body").to_vec()
    }

    /// A manifest's `Content-Type` and body, which must be there.
    async fn pull_manifest(&self, name: &str, reference: &str) -> (String, String) {
        let resp = expect_status(send(self.get(&format!("/v2/{name}/manifests/{reference}"))).await, 200).await;
        let content_type = header(&resp, "content-type").unwrap_or_default().to_owned();
        (content_type, resp.text().await.expect("manifest body"))
    }

    /// A `200` JSON document.
    async fn json(&self, path: &str) -> Value {
        let resp = expect_status(send(self.get(path)).await, 200).await;
        resp.json().await.expect("JSON body")
    }

    /// The Prometheus text at `/metrics`.
    async fn metrics(&self) -> String {
        expect_status(send(self.get("/metrics")).await, 200).await.text().await.expect("metrics text")
    }
}

/// Sends a request; only a registry that does not answer at all fails here.
async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("the registry answers")
}

/// Passes the response on if it has `status`; otherwise fails with its URL and body.
async fn expect_status(resp: Response, status: u16) -> Response {
    if resp.status().as_u16() != status {
        let (url, got) = (resp.url().clone(), resp.status());
        panic!("{url}: expected {status}, got {got}: {}", resp.text().await.unwrap_or_default());
    }
    resp
}

/// Checks an OCI error response's status and `errors[0].code`; returns its headers.
async fn expect_error(resp: Response, status: u16, code: &str) -> HeaderMap {
    let (url, got, headers) = (resp.url().clone(), resp.status().as_u16(), resp.headers().clone());
    let body = resp.text().await.expect("error body");
    let parsed: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: error body is not JSON ({e}): {body:?}"));
    assert_eq!((got, parsed["errors"][0]["code"].as_str()), (status, Some(code)), "{url}: {body}");
    headers
}

/// A response header as text.
fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Asserts each named header has exactly the given value.
fn assert_headers(headers: &HeaderMap, expected: &[(&str, &str)]) {
    let got: Vec<(&str, Option<&str>)> =
        expected.iter().map(|(n, _)| (*n, headers.get(*n).and_then(|v| v.to_str().ok()))).collect();
    let want: Vec<(&str, Option<&str>)> = expected.iter().map(|(n, v)| (*n, Some(*v))).collect();
    assert_eq!(got, want);
}

/// The value of one series in Prometheus text, e.g. `damselfly_blob_store_blobs`; `None` if absent.
fn metric(text: &str, series: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))?;
    Some(line[series.len()..].trim().parse().unwrap_or_else(|e| panic!("{line}: {e}")))
}

/// `Range` header value for an upload holding `len` bytes.
fn held(len: usize) -> String {
    format!("0-{}", len.saturating_sub(1))
}

/// A session location with `digest=` added to its query.
fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// A request body sent with chunked transfer encoding: no `Content-Length`,
/// so the registry learns its length only by reading it.
fn streamed(bytes: &[u8]) -> reqwest::Body {
    let mut file = tempfile::tempfile().expect("temp file");
    file.write_all(bytes).expect("write temp file");
    file.seek(SeekFrom::Start(0)).expect("rewind temp file");
    reqwest::Body::from(tokio::fs::File::from_std(file))
}

/// Sends a request head that announces more body than follows, and part of
/// the body, over a raw connection. Dropping the stream hangs up mid-request.
fn send_unfinished(host: &str, head: &str, partial_body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(host).expect("connect to the registry");
    stream.write_all(head.as_bytes()).expect("send request head");
    stream.write_all(partial_body).expect("send part of the body");
    stream.flush().expect("flush");
    stream
}

/// Polls `condition` until it holds or `SETTLE` passes; returns whether it held.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + SETTLE;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

async fn base_endpoint_challenges_anonymous_clients_and_answers_200_with_the_api_version(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);

    let headers = expect_error(send(api.anonymous(Method::GET, "/v2/")).await, 401, "UNAUTHORIZED").await;
    assert_headers(
        &headers,
        &[
            ("www-authenticate", &format!("Bearer realm=\"{}/auth/token\",service=\"damselfly\"", reg.url)),
            ("docker-distribution-api-version", "registry/2.0"),
        ],
    );

    let resp = expect_status(send(api.get("/v2/")).await, 200).await;

    assert_headers(resp.headers(), &[("docker-distribution-api-version", "registry/2.0")]);
}

async fn monolithic_push_then_pull_serves_exact_bytes_and_ranges(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    // Deep, and with a segment that is an API word.
    let name = "team/a/b/c/d/e/f/g/h/blobs/app";
    let blob = Blob::new(pattern(2, 1000));
    let path = format!("/v2/{name}/blobs/{}", blob.digest);

    let resp =
        send(api.post(&format!("/v2/{name}/blobs/uploads/?digest={}", blob.digest)).body(blob.bytes.clone())).await;
    let resp = expect_status(resp, 201).await;
    assert_headers(resp.headers(), &[("location", &path), ("docker-content-digest", &blob.digest)]);

    let resp = expect_status(send(api.get(&path)).await, 200).await;
    assert_headers(resp.headers(), &[("content-length", "1000"), ("docker-content-digest", &blob.digest)]);
    assert_eq!(resp.bytes().await.expect("body").as_ref(), &blob.bytes[..]);

    let resp = expect_status(send(api.head(&path)).await, 200).await;
    assert_headers(resp.headers(), &[("content-length", "1000"), ("docker-content-digest", &blob.digest)]);
    assert_eq!(resp.bytes().await.expect("body").len(), 0);

    for (range, first, last) in [("bytes=1-3", 1, 3), ("bytes=-2", 998, 999), ("bytes=2-", 2, 999)] {
        let resp = expect_status(send(api.get(&path).header("range", range)).await, 206).await;
        assert_headers(
            resp.headers(),
            &[
                ("content-range", &format!("bytes {first}-{last}/1000")),
                ("content-length", &(last - first + 1).to_string()),
                ("docker-content-digest", &blob.digest),
            ],
        );
        assert_eq!(resp.bytes().await.expect("body").as_ref(), &blob.bytes[first..=last], "{range}");
    }

    let resp = send(api.get(&path).header("range", "bytes=1000-")).await;
    assert_eq!(resp.status().as_u16(), 416);
    assert_headers(resp.headers(), &[("content-range", "bytes */1000")]);
}

async fn post_then_put_with_the_body_creates_the_blob(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let blob = Blob::new(pattern(3, 5000));

    let location = api.start_upload("two/step").await;
    let resp = send(api.put(&with_digest(&location, &blob.digest)).body(blob.bytes.clone())).await;

    let resp = expect_status(resp, 201).await;
    assert_headers(
        resp.headers(),
        &[("location", &format!("/v2/two/step/blobs/{}", blob.digest)), ("docker-content-digest", &blob.digest)],
    );
    assert_eq!(api.pull_blob("two/step", &blob.digest).await, blob.bytes);
}

async fn chunked_upload_assembles_in_order_chunks_and_refuses_others_without_losing_bytes(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let name = "chunked/app";
    // Bigger than one 4 MiB piece, sent in 3 MiB chunks, so pieces straddle chunks.
    const CHUNK: usize = 3 * MIB;
    let blob = Blob::new(pattern(4, 10 * MIB + 17));
    let chunks: Vec<&[u8]> = blob.bytes.chunks(CHUNK).collect();

    let resp = expect_status(send(api.post(&format!("/v2/{name}/blobs/uploads/"))).await, 202).await;
    let uuid = header(&resp, "docker-upload-uuid").expect("Docker-Upload-UUID").to_owned();
    let location = format!("/v2/{name}/blobs/uploads/{uuid}");
    assert_headers(resp.headers(), &[("location", &location), ("range", "0-0")]);

    let resp =
        send(api.patch(&location).header("content-range", format!("0-{}", CHUNK - 1)).body(chunks[0].to_vec())).await;
    let resp = expect_status(resp, 202).await;
    assert_headers(resp.headers(), &[("location", &location), ("range", &held(CHUNK)), ("docker-upload-uuid", &uuid)]);
    assert_eq!(api.upload_range(&location).await, held(CHUNK));

    // A chunk that skips ahead, and one that rewinds: refused with where to resume.
    for (first, last) in [(CHUNK + 10, CHUNK + 19), (0, 9)] {
        let resp =
            send(api.patch(&location).header("content-range", format!("{first}-{last}")).body(vec![7u8; 10])).await;
        let headers = expect_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
        assert_headers(&headers, &[("range", &held(CHUNK)), ("location", &location)]);
        assert_eq!(api.upload_range(&location).await, held(CHUNK), "after the chunk at {first}");
    }

    // A Content-Range whose length disagrees with the body: caught from
    // Content-Length up front, and by counting a streamed body.
    let range = format!("{CHUNK}-{}", CHUNK + 99);
    let resp = send(api.patch(&location).header("content-range", &range).body(vec![7u8; 50])).await;
    expect_error(resp, 400, "SIZE_INVALID").await;
    assert_eq!(api.upload_range(&location).await, held(CHUNK));
    let resp = send(api.patch(&location).header("content-range", &range).body(streamed(&[7u8; 50]))).await;
    expect_error(resp, 400, "SIZE_INVALID").await;
    assert_eq!(api.upload_range(&location).await, held(CHUNK));

    let mut offset = CHUNK;
    for chunk in &chunks[1..chunks.len() - 1] {
        let range = format!("{offset}-{}", offset + chunk.len() - 1);
        let resp =
            expect_status(send(api.patch(&location).header("content-range", range).body(chunk.to_vec())).await, 202)
                .await;
        offset += chunk.len();
        assert_headers(resp.headers(), &[("range", &held(offset))]);
    }
    let last = chunks[chunks.len() - 1].to_vec();
    let resp = expect_status(send(api.put(&with_digest(&location, &blob.digest)).body(last)).await, 201).await;
    assert_headers(
        resp.headers(),
        &[("location", &format!("/v2/{name}/blobs/{}", blob.digest)), ("docker-content-digest", &blob.digest)],
    );

    let pulled = api.pull_blob(name, &blob.digest).await;
    assert_eq!((pulled.len(), sha256_digest(&pulled)), (blob.len(), blob.digest.clone()));
    expect_error(send(api.get(&location)).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

async fn streamed_patch_then_empty_put_creates_the_blob(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let blob = Blob::new(pattern(5, 2 * MIB + 333));
    let (front, back) = blob.bytes.split_at(MIB + 1);

    let location = api.start_upload("streamed/app").await;
    let resp = expect_status(send(api.patch(&location).body(streamed(front))).await, 202).await;
    assert_headers(resp.headers(), &[("range", &held(front.len()))]);
    let resp = expect_status(send(api.patch(&location).body(streamed(back))).await, 202).await;
    assert_headers(resp.headers(), &[("range", &held(blob.len()))]);

    let resp = expect_status(send(api.put(&with_digest(&location, &blob.digest))).await, 201).await;
    assert_headers(resp.headers(), &[("docker-content-digest", &blob.digest)]);
    assert_eq!(api.pull_blob("streamed/app", &blob.digest).await, blob.bytes);
}

async fn cross_repository_mount_links_the_blob_or_falls_back_to_an_upload(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let blob = Blob::new(pattern(6, 4096));
    api.push_blob("source/app", &blob).await;
    // A repository that exists but does not hold the blob.
    api.push_blob("lacking/app", &Blob::new(b"something else")).await;

    let resp = send(api.post(&format!("/v2/target/app/blobs/uploads/?mount={}&from=source/app", blob.digest))).await;
    let resp = expect_status(resp, 201).await;
    assert_headers(
        resp.headers(),
        &[("location", &format!("/v2/target/app/blobs/{}", blob.digest)), ("docker-content-digest", &blob.digest)],
    );
    assert_eq!(api.pull_blob("target/app", &blob.digest).await, blob.bytes);

    for (mount, from) in [
        (blob.digest.as_str(), "lacking/app"),
        (&blob.digest, "no/such/repository"),
        (&blob.digest, "Not/A/Valid/Name"),
        ("sha256:not-a-digest", "source/app"),
    ] {
        let resp = send(api.post(&format!("/v2/fallback/app/blobs/uploads/?mount={mount}&from={from}"))).await;
        let resp = expect_status(resp, 202).await;
        let uuid = header(&resp, "docker-upload-uuid").expect("Docker-Upload-UUID").to_owned();
        assert_headers(
            resp.headers(),
            &[("location", &format!("/v2/fallback/app/blobs/uploads/{uuid}")), ("range", "0-0")],
        );
        let blob_path = format!("/v2/fallback/app/blobs/{}", blob.digest);
        expect_error(send(api.get(&blob_path)).await, 404, "BLOB_UNKNOWN").await;
    }

    // The fallback session is a real one: the client can upload through it.
    let resp = send(api.post(&format!("/v2/fallback/app/blobs/uploads/?mount={}&from=lacking/app", blob.digest))).await;
    let location = header(&expect_status(resp, 202).await, "location").expect("Location").to_owned();
    expect_status(send(api.put(&with_digest(&location, &blob.digest)).body(blob.bytes.clone())).await, 201).await;
    assert_eq!(api.pull_blob("fallback/app", &blob.digest).await, blob.bytes);
}

async fn manifests_of_all_four_media_types_round_trip_byte_for_byte(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let name = "formats/app";
    let config = Blob::new(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#);
    let layer = Blob::new(pattern(7, 3000));
    api.push_blob(name, &config).await;
    api.push_blob(name, &layer).await;

    let oci_image = oddly_formatted_image_manifest(OCI_MANIFEST, (OCI_CONFIG, &config), &[(OCI_LAYER, &layer)]);
    let docker_image =
        oddly_formatted_image_manifest(DOCKER_MANIFEST, (DOCKER_CONFIG, &config), &[(DOCKER_LAYER, &layer)]);
    let oci_index = oddly_formatted_index(OCI_INDEX, &[(OCI_MANIFEST, &oci_image), (DOCKER_MANIFEST, &docker_image)]);
    let docker_list = oddly_formatted_index(DOCKER_LIST, &[(DOCKER_MANIFEST, &docker_image)]);

    // Children first: an index may only reference manifests already pushed.
    for (tag, media_type, body) in [
        ("oci-image", OCI_MANIFEST, &oci_image),
        ("docker-image", DOCKER_MANIFEST, &docker_image),
        ("oci-index", OCI_INDEX, &oci_index),
        ("docker-list", DOCKER_LIST, &docker_list),
    ] {
        let digest = sha256_digest(body.as_bytes());
        let length = body.len().to_string();
        for reference in [tag, digest.as_str()] {
            let put = api.put(&format!("/v2/{name}/manifests/{reference}")).header("content-type", media_type);
            let resp = expect_status(send(put.body(body.clone())).await, 201).await;
            assert_headers(
                resp.headers(),
                &[("location", &format!("/v2/{name}/manifests/{digest}")), ("docker-content-digest", &digest)],
            );
        }
        for reference in [tag, digest.as_str()] {
            let path = format!("/v2/{name}/manifests/{reference}");
            let expected =
                [("content-type", media_type), ("docker-content-digest", &digest), ("content-length", &length)];
            let resp = expect_status(send(api.get(&path)).await, 200).await;
            assert_headers(resp.headers(), &expected);
            assert_eq!(&resp.text().await.expect("manifest body"), body, "GET {path}");
            let resp = expect_status(send(api.head(&path)).await, 200).await;
            assert_headers(resp.headers(), &expected);
            assert_eq!(resp.bytes().await.expect("HEAD body").len(), 0, "HEAD {path}");
        }
    }
}

async fn manifest_over_the_size_limit_is_refused_with_413(backend: Backend) {
    let reg = Registry::start_paired_with(backend, &[("DAMSELFLY_MAX_MANIFEST_BYTES", "2048")]);
    let api = Api::new(&reg);
    let name = "limited/app";
    let config = Blob::new(b"{}");
    let layer = Blob::new(pattern(8, 100));
    api.push_blob(name, &config).await;
    api.push_blob(name, &layer).await;
    let manifest_of_length = |len: usize| {
        let with_pad = |pad: &str| {
            json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": config.descriptor(OCI_CONFIG), "layers": [layer.descriptor(OCI_LAYER)],
                "annotations": { "pad": pad },
            })
            .to_string()
        };
        let body = with_pad(&"x".repeat(len - with_pad("").len()));
        assert_eq!(body.len(), len);
        body
    };
    let over = manifest_of_length(2049);

    let resp =
        send(api.put(&format!("/v2/{name}/manifests/big")).header("content-type", OCI_MANIFEST).body(over.clone()))
            .await;
    expect_error(resp, 413, "SIZE_INVALID").await;
    // Without Content-Length the registry must count while reading.
    let put = api.put(&format!("/v2/{name}/manifests/big")).header("content-type", OCI_MANIFEST);
    expect_error(send(put.body(streamed(over.as_bytes()))).await, 413, "SIZE_INVALID").await;
    expect_error(send(api.get(&format!("/v2/{name}/manifests/big"))).await, 404, "MANIFEST_UNKNOWN").await;

    let at_limit = manifest_of_length(2048);
    api.push_manifest(name, "big", OCI_MANIFEST, &at_limit).await;
    assert_eq!(api.pull_manifest(name, "big").await, (OCI_MANIFEST.to_owned(), at_limit));
}

async fn rejected_manifests_leave_tags_and_stored_manifests_untouched(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let name = "strict/app";
    let config = Blob::new(b"{\"os\":\"linux\"}");
    let layer = Blob::new(pattern(9, 2000));
    let elsewhere = Blob::new(pattern(10, 2000));
    api.push_blob(name, &config).await;
    api.push_blob(name, &layer).await;
    api.push_blob("other/app", &elsewhere).await;
    let good = image_manifest(OCI_MANIFEST, config.descriptor(OCI_CONFIG), vec![layer.descriptor(OCI_LAYER)]);
    api.push_manifest(name, "stable", OCI_MANIFEST, &good).await;

    let with_layer = |l: Value| image_manifest(OCI_MANIFEST, config.descriptor(OCI_CONFIG), vec![l]);
    let mut wrong_size = layer.descriptor(OCI_LAYER);
    wrong_size["size"] = json!(layer.len() + 1);
    let unknown_child = json!({ "mediaType": OCI_MANIFEST, "digest": sha256_digest(b"never pushed"), "size": 10 });
    let cases = [
        ("not JSON", "{\"schemaVersion\": 2, \"config\"".to_owned(), OCI_MANIFEST, "MANIFEST_INVALID"),
        (
            "a layer never pushed",
            with_layer(Blob::new(b"never pushed").descriptor(OCI_LAYER)),
            OCI_MANIFEST,
            "MANIFEST_BLOB_UNKNOWN",
        ),
        (
            "a layer only another repository holds",
            with_layer(elsewhere.descriptor(OCI_LAYER)),
            OCI_MANIFEST,
            "MANIFEST_BLOB_UNKNOWN",
        ),
        ("a layer descriptor with the wrong size", with_layer(wrong_size), OCI_MANIFEST, "MANIFEST_INVALID"),
        (
            "an index over a manifest never pushed",
            json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [unknown_child] }).to_string(),
            OCI_INDEX,
            "MANIFEST_BLOB_UNKNOWN",
        ),
        (
            "a Content-Type other than the body's mediaType",
            with_layer(layer.descriptor(OCI_LAYER))
                .replace("\"schemaVersion\"", "\"annotations\":{\"x\":\"y\"},\"schemaVersion\""),
            DOCKER_MANIFEST,
            "MANIFEST_INVALID",
        ),
    ];
    for (what, body, content_type, code) in cases {
        for tag in ["stable", "fresh"] {
            let put = api.put(&format!("/v2/{name}/manifests/{tag}")).header("content-type", content_type);
            expect_error(send(put.body(body.clone())).await, 400, code).await;
        }
        assert_eq!(api.pull_manifest(name, "stable").await, (OCI_MANIFEST.to_owned(), good.clone()), "after {what}");
        for reference in ["fresh".to_owned(), sha256_digest(body.as_bytes())] {
            let resp = send(api.get(&format!("/v2/{name}/manifests/{reference}"))).await;
            expect_error(resp, 404, "MANIFEST_UNKNOWN").await;
        }
    }

    // Pushed by a digest its bytes do not have.
    let other = with_layer(layer.descriptor(OCI_LAYER))
        .replace("\"schemaVersion\"", "\"annotations\":{\"a\":\"b\"},\"schemaVersion\"");
    let claimed = sha256_digest(format!("{other} ").as_bytes());
    let put = api.put(&format!("/v2/{name}/manifests/{claimed}")).header("content-type", OCI_MANIFEST);
    expect_error(send(put.body(other.clone())).await, 400, "DIGEST_INVALID").await;
    for reference in [claimed, sha256_digest(other.as_bytes())] {
        expect_error(send(api.get(&format!("/v2/{name}/manifests/{reference}"))).await, 404, "MANIFEST_UNKNOWN").await;
    }

    // A push names what it creates: a malformed name is the client's mistake. A read or a
    // delete names what exists, and nothing can exist under such a name: it is unknown.
    for tag in ["-leading-dash", ".leading-dot", ".INVALID_MANIFEST_NAME", "t".repeat(129).as_str()] {
        let path = format!("/v2/{name}/manifests/{tag}");
        let put = api.put(&path).header("content-type", OCI_MANIFEST).body(good.clone());
        expect_error(send(put).await, 400, "TAG_INVALID").await;
        expect_error(send(api.get(&path)).await, 404, "MANIFEST_UNKNOWN").await;
        expect_status(send(api.request(Method::HEAD, &path)).await, 404).await;
        expect_error(send(api.request(Method::DELETE, &path)).await, 404, "MANIFEST_UNKNOWN").await;
    }
    for digest in ["sha256:nothex", "md5:0123abcd", "sha256:"] {
        let path = format!("/v2/{name}/manifests/{digest}");
        let put = api.put(&path).header("content-type", OCI_MANIFEST).body(good.clone());
        expect_error(send(put).await, 400, "DIGEST_INVALID").await;
        expect_error(send(api.get(&path)).await, 404, "MANIFEST_UNKNOWN").await;
        expect_status(send(api.request(Method::HEAD, &path)).await, 404).await;
    }
    expect_error(send(api.get(&format!("/v2/{name}/manifests/nope"))).await, 404, "MANIFEST_UNKNOWN").await;

    assert_eq!(api.json(&format!("/v2/{name}/tags/list")).await, json!({ "name": name, "tags": ["stable"] }));
}

async fn tag_list_is_byte_sorted_and_pages_through_link_headers(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let name = "tagged/app";
    let config = Blob::new(b"{}");
    api.push_blob(name, &config).await;
    let manifest = image_manifest(OCI_MANIFEST, config.descriptor(OCI_CONFIG), vec![]);
    // Pushed out of order; a locale-aware collation would sort these differently.
    for tag in ["b", "a_1", "_x", "9", "a.1", "Z9", "a", "10", "B", "a-1", "A"] {
        api.push_manifest(name, tag, OCI_MANIFEST, &manifest).await;
    }
    let sorted = ["10", "9", "A", "B", "Z9", "_x", "a", "a-1", "a.1", "a_1", "b"];
    let list = format!("/v2/{name}/tags/list");

    let resp = expect_status(send(api.get(&list)).await, 200).await;
    assert_eq!(resp.headers().get("link"), None);
    assert_eq!(resp.json::<Value>().await.expect("JSON"), json!({ "name": name, "tags": sorted }));

    let mut pages = Vec::new();
    let mut next = Some(format!("{list}?n=3"));
    while let Some(path) = next {
        let resp = expect_status(send(api.get(&path)).await, 200).await;
        next = header(&resp, "link").map(|l| {
            let (target, rel) = l.split_once(">; ").expect("Link: <…>; rel=\"next\"");
            assert_eq!(rel, "rel=\"next\"");
            target.trim_start_matches('<').to_owned()
        });
        pages.push((path, resp.json::<Value>().await.expect("JSON")["tags"].clone()));
    }
    let page = |path: String, tags: &[&str]| (path, json!(tags));
    assert_eq!(
        pages,
        [
            page(format!("{list}?n=3"), &["10", "9", "A"]),
            page(format!("{list}?n=3&last=A"), &["B", "Z9", "_x"]),
            page(format!("{list}?n=3&last=_x"), &["a", "a-1", "a.1"]),
            page(format!("{list}?n=3&last=a.1"), &["a_1", "b"]),
        ]
    );

    assert_eq!(api.json(&format!("{list}?last=Z9")).await["tags"], json!(["_x", "a", "a-1", "a.1", "a_1", "b"]));
    let resp = expect_status(send(api.get(&format!("{list}?n=11"))).await, 200).await;
    assert_eq!(resp.headers().get("link"), None, "a page that ends exactly at the last tag has no next");
    assert_eq!(resp.json::<Value>().await.expect("JSON")["tags"], json!(sorted));
    assert_eq!(api.json(&format!("{list}?n=0")).await, json!({ "name": name, "tags": [] }));
    expect_error(send(api.get(&format!("{list}?n=abc"))).await, 400, "PAGINATION_NUMBER_INVALID").await;
    expect_error(send(api.get("/v2/never/pushed/tags/list")).await, 404, "NAME_UNKNOWN").await;
}

async fn catalog_is_byte_sorted_and_pages_through_link_headers(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let blob = Blob::new(b"shared layer");
    // '-' < '.' < '/' < '0' < '_' < 'a' byte-wise; a locale collation ignores punctuation.
    for name in ["ns/b", "ns/a_b", "ns/a/b", "ns/ab", "ns/a.b", "ns/a", "ns/a0", "ns/a-b"] {
        api.push_blob(name, &blob).await;
    }
    let sorted = ["ns/a", "ns/a-b", "ns/a.b", "ns/a/b", "ns/a0", "ns/a_b", "ns/ab", "ns/b"];

    let resp = expect_status(send(api.get("/v2/_catalog")).await, 200).await;
    assert_eq!(resp.headers().get("link"), None);
    assert_eq!(resp.json::<Value>().await.expect("JSON"), json!({ "repositories": sorted }));

    let mut pages = Vec::new();
    let mut next = Some("/v2/_catalog?n=3".to_owned());
    while let Some(path) = next {
        let resp = expect_status(send(api.get(&path)).await, 200).await;
        next = header(&resp, "link").map(|l| {
            let (target, rel) = l.split_once(">; ").expect("Link: <…>; rel=\"next\"");
            assert_eq!(rel, "rel=\"next\"");
            target.trim_start_matches('<').to_owned()
        });
        pages.push((path, resp.json::<Value>().await.expect("JSON")));
    }
    let page = |path: &str, names: &[&str]| (path.to_owned(), json!({ "repositories": names }));
    assert_eq!(
        pages,
        [
            page("/v2/_catalog?n=3", &["ns/a", "ns/a-b", "ns/a.b"]),
            page("/v2/_catalog?n=3&last=ns/a.b", &["ns/a/b", "ns/a0", "ns/a_b"]),
            page("/v2/_catalog?n=3&last=ns/a_b", &["ns/ab", "ns/b"]),
        ]
    );

    assert_eq!(api.json("/v2/_catalog?last=ns/a0").await, json!({ "repositories": ["ns/a_b", "ns/ab", "ns/b"] }));
    assert_eq!(api.json("/v2/_catalog?n=0").await, json!({ "repositories": [] }));
    expect_error(send(api.get("/v2/_catalog?n=abc")).await, 400, "PAGINATION_NUMBER_INVALID").await;
}

async fn deletes_remove_exactly_what_they_name(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let name = "deleting/app";
    let config = Blob::new(b"{\"os\":\"linux\"}");
    let layer = Blob::new(pattern(11, 777));
    api.push_blob(name, &config).await;
    api.push_blob(name, &layer).await;
    let first = image_manifest(OCI_MANIFEST, config.descriptor(OCI_CONFIG), vec![layer.descriptor(OCI_LAYER)]);
    let second = image_manifest(OCI_MANIFEST, config.descriptor(OCI_CONFIG), vec![]);
    let first_digest = api.push_manifest(name, "one", OCI_MANIFEST, &first).await;
    api.push_manifest(name, "also-one", OCI_MANIFEST, &first).await;
    let second_digest = api.push_manifest(name, "two", OCI_MANIFEST, &second).await;
    let manifest = |reference: &str| format!("/v2/{name}/manifests/{reference}");

    // By tag: the tag goes, the manifest stays.
    expect_status(send(api.delete(&manifest("two"))).await, 202).await;
    expect_error(send(api.get(&manifest("two"))).await, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(api.pull_manifest(name, &second_digest).await.1, second);

    // By digest: the manifest and every tag on it go.
    expect_status(send(api.delete(&manifest(&first_digest))).await, 202).await;
    for reference in ["one", "also-one", first_digest.as_str()] {
        expect_error(send(api.get(&manifest(reference))).await, 404, "MANIFEST_UNKNOWN").await;
    }
    assert_eq!(api.json(&format!("/v2/{name}/tags/list")).await, json!({ "name": name, "tags": [] }));

    let blob_path = format!("/v2/{name}/blobs/{}", layer.digest);
    expect_status(send(api.delete(&blob_path)).await, 202).await;
    expect_error(send(api.get(&blob_path)).await, 404, "BLOB_UNKNOWN").await;
    assert_eq!(api.pull_blob(name, &config.digest).await, config.bytes);

    expect_error(send(api.delete(&manifest("never"))).await, 404, "MANIFEST_UNKNOWN").await;
    expect_error(send(api.delete(&manifest(&first_digest))).await, 404, "MANIFEST_UNKNOWN").await;
    expect_error(send(api.delete(&blob_path)).await, 404, "BLOB_UNKNOWN").await;
    let unknown_blob = format!("/v2/{name}/blobs/{}", sha256_digest(b"never pushed"));
    expect_error(send(api.delete(&unknown_blob)).await, 404, "BLOB_UNKNOWN").await;
}

async fn referrers_list_artifacts_by_subject_and_filter_by_artifact_type(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let name = "signed/app";
    let config = Blob::new(b"{\"os\":\"linux\"}");
    let layer = Blob::new(pattern(12, 1500));
    let empty = Blob::new(b"{}");
    let signature = Blob::new(b"signature bytes");
    let sbom = Blob::new(b"{\"packages\":[]}");
    let attestation_config = Blob::new(b"{\"predicateType\":\"slsa\"}");
    for blob in [&config, &layer, &empty, &signature, &sbom, &attestation_config] {
        api.push_blob(name, blob).await;
    }
    let subject_body = image_manifest(OCI_MANIFEST, config.descriptor(OCI_CONFIG), vec![layer.descriptor(OCI_LAYER)]);
    let subject_digest = api.push_manifest(name, "v1", OCI_MANIFEST, &subject_body).await;
    let subject = json!({ "mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_body.len() });

    const SIGNATURE: &str = "application/vnd.example.signature.v1+json";
    const SBOM: &str = "application/vnd.example.sbom.v1+json";
    const ATTESTATION: &str = "application/vnd.example.attestation.config.v1+json";
    let annotations = json!({ "org.opencontainers.image.created": "2024-05-01T00:00:00Z", "com.example.signer": "ci" });
    let artifacts = [
        json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIGNATURE,
            "config": empty.descriptor(OCI_EMPTY), "layers": [signature.descriptor("application/octet-stream")],
            "subject": subject, "annotations": annotations,
        }),
        json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SBOM,
            "config": empty.descriptor(OCI_EMPTY), "layers": [sbom.descriptor("application/spdx+json")],
            "subject": subject,
        }),
        // No artifactType field: the config's media type stands in for it.
        json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": attestation_config.descriptor(ATTESTATION), "layers": [empty.descriptor(OCI_EMPTY)],
            "subject": subject,
        }),
    ];
    let mut listed = Vec::new();
    for (i, (artifact, artifact_type)) in artifacts.iter().zip([SIGNATURE, SBOM, ATTESTATION]).enumerate() {
        let body = artifact.to_string();
        let put = api.put(&format!("/v2/{name}/manifests/{}", sha256_digest(body.as_bytes())));
        let resp = expect_status(send(put.header("content-type", OCI_MANIFEST).body(body.clone())).await, 201).await;
        assert_headers(resp.headers(), &[("oci-subject", &subject_digest)]);
        let mut descriptor = json!({
            "mediaType": OCI_MANIFEST, "digest": sha256_digest(body.as_bytes()), "size": body.len(),
            "artifactType": artifact_type,
        });
        if i == 0 {
            descriptor["annotations"] = annotations.clone();
        }
        listed.push(descriptor);
    }
    listed.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    let index_of =
        |manifests: Vec<Value>| json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let referrers = format!("/v2/{name}/referrers/{subject_digest}");

    let resp = expect_status(send(api.get(&referrers)).await, 200).await;
    assert_headers(resp.headers(), &[("content-type", OCI_INDEX)]);
    assert_eq!(resp.headers().get("oci-filters-applied"), None);
    let mut got: Value = resp.json().await.expect("JSON");
    if let Some(m) = got["manifests"].as_array_mut() {
        m.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    }
    assert_eq!(got, index_of(listed.clone()));

    for artifact_type in [SBOM, ATTESTATION] {
        let resp = expect_status(send(api.get(&referrers).query(&[("artifactType", artifact_type)])).await, 200).await;
        assert_headers(resp.headers(), &[("content-type", OCI_INDEX), ("oci-filters-applied", "artifactType")]);
        let only: Vec<Value> = listed.iter().filter(|d| d["artifactType"] == artifact_type).cloned().collect();
        assert_eq!(resp.json::<Value>().await.expect("JSON"), index_of(only), "artifactType={artifact_type}");
    }

    let lonely = format!("/v2/{name}/referrers/{}", sha256_digest(b"nobody refers to this"));
    let resp = expect_status(send(api.get(&lonely)).await, 200).await;
    assert_headers(resp.headers(), &[("content-type", OCI_INDEX)]);
    assert_eq!(resp.json::<Value>().await.expect("JSON"), index_of(vec![]));

    expect_error(send(api.get(&format!("/v2/{name}/referrers/sha256:nothex"))).await, 400, "DIGEST_INVALID").await;
}

async fn errors_carry_the_spec_status_and_code(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let blob = Blob::new(b"present");
    api.push_blob("errors/app", &blob).await;
    let unknown = sha256_digest(b"absent");
    let upload = "/v2/errors/app/blobs/uploads/00000000-0000-0000-0000-000000000000";

    let cases: Vec<(Method, String, u16, &str)> = vec![
        (Method::GET, format!("/v2/errors/app/blobs/{unknown}"), 404, "BLOB_UNKNOWN"),
        // No blob is stored under a digest that is none: unknown, as a manifest's reference.
        (Method::GET, "/v2/errors/app/blobs/sha256:xyz".into(), 404, "BLOB_UNKNOWN"),
        (Method::GET, "/v2/errors/app/blobs/md5:0123abcd".into(), 404, "BLOB_UNKNOWN"),
        (Method::DELETE, "/v2/errors/app/blobs/sha256:xyz".into(), 404, "BLOB_UNKNOWN"),
        // Pushing to one, and the referrers of one (the spec says 400 there), are refused.
        (Method::POST, "/v2/errors/app/blobs/uploads/?digest=sha256:xyz".into(), 400, "DIGEST_INVALID"),
        (Method::GET, "/v2/errors/app/referrers/sha256:xyz".into(), 400, "DIGEST_INVALID"),
        (Method::GET, "/v2/Errors/App/tags/list".into(), 400, "NAME_INVALID"),
        (Method::POST, "/v2/UPPER/blobs/uploads/".into(), 400, "NAME_INVALID"),
        (Method::GET, upload.into(), 404, "BLOB_UPLOAD_UNKNOWN"),
        (Method::PATCH, upload.into(), 404, "BLOB_UPLOAD_UNKNOWN"),
        (Method::PUT, with_digest(upload, &unknown), 404, "BLOB_UPLOAD_UNKNOWN"),
        (Method::DELETE, upload.into(), 404, "BLOB_UPLOAD_UNKNOWN"),
        (Method::PUT, "/v2/errors/app/tags/list".into(), 405, "UNSUPPORTED"),
        (Method::POST, "/v2/errors/app/manifests/latest".into(), 405, "UNSUPPORTED"),
        (Method::DELETE, "/v2/_catalog".into(), 405, "UNSUPPORTED"),
        (Method::GET, "/v2/errors/app/nothing/here".into(), 404, "UNSUPPORTED"),
    ];
    for (method, path, status, code) in cases {
        let resp = send(api.request(method, &path)).await;
        let headers = expect_error(resp, status, code).await;
        assert_headers(
            &headers,
            &[("content-type", "application/json"), ("docker-distribution-api-version", "registry/2.0")],
        );
    }

    // Finishing a real session without saying what it should hash to.
    let location = api.start_upload("errors/app").await;
    expect_status(send(api.patch(&location).body(b"abc".to_vec())).await, 202).await;
    expect_error(send(api.put(&location)).await, 400, "DIGEST_INVALID").await;
    assert_eq!(api.upload_range(&location).await, "0-2", "the session survives a PUT it could not act on");
}

async fn failed_pushes_leave_nothing_behind_byte_for_byte(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let name = "careful/app";
    let layer = Blob::new(pattern(13, 5000));
    let config = Blob::new(b"{}");
    api.push_blob(name, &layer).await;
    api.push_blob(name, &config).await;
    let manifest = image_manifest(OCI_MANIFEST, config.descriptor(OCI_CONFIG), vec![layer.descriptor(OCI_LAYER)]);
    api.push_manifest(name, "kept", OCI_MANIFEST, &manifest).await;
    let before = reg.snapshot_files();
    let blobs_before = metric(&api.metrics().await, "damselfly_blob_store_blobs").expect("blob count");

    // (a) One POST whose bytes hash to something other than its digest.
    let lie = Blob::new(pattern(14, 3000));
    let resp = send(
        api.post(&format!("/v2/{name}/blobs/uploads/?digest={}", sha256_digest(b"not it"))).body(lie.bytes.clone()),
    )
    .await;
    expect_error(resp, 400, "DIGEST_INVALID").await;

    // (b) A chunked session finished with the wrong digest is dropped.
    let location = api.start_upload(name).await;
    expect_status(send(api.patch(&location).header("content-range", "0-2999").body(lie.bytes.clone())).await, 202)
        .await;
    expect_error(send(api.put(&with_digest(&location, &sha256_digest(b"not it")))).await, 400, "DIGEST_INVALID").await;
    expect_error(send(api.get(&location)).await, 404, "BLOB_UPLOAD_UNKNOWN").await;

    // (c) A one-request upload cut off halfway.
    let full = Blob::new(pattern(15, 100_000));
    let head = format!(
        "POST /v2/{name}/blobs/uploads/?digest={} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n",
        full.digest,
        reg.host,
        basic_authorization(ADMIN_USER, ADMIN_PASSWORD)
    );
    let cut = send_unfinished(&reg.host, &head, &full.bytes[..50_000]);
    eventually(|| reg.snapshot_files() != before).await; // the registry started writing
    drop(cut);
    expect_error(send(api.get(&format!("/v2/{name}/blobs/{}", full.digest))).await, 404, "BLOB_UNKNOWN").await;

    // (d) A chunk cut off halfway on an open session is rolled back to the
    // bytes acknowledged before it. Over 1 MiB arrives, so some reach disk.
    let location = api.start_upload(name).await;
    let acknowledged = pattern(16, 1000);
    expect_status(send(api.patch(&location).header("content-range", "0-999").body(acknowledged)).await, 202).await;
    let with_session = reg.snapshot_files();
    let chunk = pattern(17, 4 * MIB);
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/octet-stream\r\nContent-Range: 1000-{}\r\nContent-Length: {}\r\n\r\n",
        reg.host,
        basic_authorization(ADMIN_USER, ADMIN_PASSWORD),
        1000 + chunk.len() - 1,
        chunk.len()
    );
    let cut = send_unfinished(&reg.host, &head, &chunk[..2 * MIB + 512 * 1024]);
    if reg.bucket.is_none() {
        let reached_disk = eventually(|| reg.snapshot_files() != with_session).await;
        assert!(reached_disk, "no byte of the cut chunk reached the session file, so there was nothing to roll back");
        drop(cut);
        eventually(|| reg.snapshot_files() == with_session).await;
        assert_eq!(reg.snapshot_files(), with_session);
    } else {
        // S3 holds a chunk in memory until a whole part is there, and parts of an
        // open multipart upload are not objects: the bucket never shows the cut
        // chunk; what counts is that the session still holds 1000 bytes.
        tokio::time::sleep(SETTLE / 3).await;
        drop(cut);
        tokio::time::sleep(SETTLE / 3).await;
    }
    assert_eq!(api.upload_range(&location).await, "0-999");
    expect_status(send(api.delete(&location)).await, 204).await;
    expect_error(send(api.get(&location)).await, 404, "BLOB_UPLOAD_UNKNOWN").await;

    eventually(|| reg.snapshot_files() == before).await;
    assert_eq!(reg.snapshot_files(), before);
    assert_eq!(metric(&api.metrics().await, "damselfly_blob_store_blobs").expect("blob count"), blobs_before);
    assert_eq!(api.pull_blob(name, &layer.digest).await, layer.bytes);
    assert_eq!(api.pull_manifest(name, "kept").await, (OCI_MANIFEST.to_owned(), manifest));

    // A failed first push to a new name does not create a repository.
    let resp = send(
        api.post(&format!("/v2/never/created/blobs/uploads/?digest={}", sha256_digest(b"not it")))
            .body(lie.bytes.clone()),
    )
    .await;
    expect_error(resp, 400, "DIGEST_INVALID").await;
    let dangling = image_manifest(OCI_MANIFEST, config.descriptor(OCI_CONFIG), vec![lie.descriptor(OCI_LAYER)]);
    let resp = send(
        api.put("/v2/never/created/manifests/v1").header("content-type", OCI_MANIFEST).body(dangling.into_bytes()),
    )
    .await;
    expect_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    let catalog: Value = send(api.get("/v2/_catalog")).await.json().await.expect("catalog JSON");
    assert_eq!(catalog, json!({ "repositories": [name] }));
}

async fn restart_loses_nothing_and_open_uploads_resume(backend: Backend) {
    let mut reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let name = "durable/app";
    let config = Blob::new(b"{\"os\":\"linux\"}");
    let layer = Blob::new(pattern(18, 5 * MIB + 3));
    api.push_blob(name, &config).await;
    api.push_blob(name, &layer).await;
    api.push_blob("durable/other", &config).await;
    let image = image_manifest(OCI_MANIFEST, config.descriptor(OCI_CONFIG), vec![layer.descriptor(OCI_LAYER)]);
    let image_digest = sha256_digest(image.as_bytes());
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{ "mediaType": OCI_MANIFEST, "digest": image_digest, "size": image.len() }] })
    .to_string();
    api.push_manifest(name, "v1", OCI_MANIFEST, &image).await;
    api.push_manifest(name, "latest", OCI_MANIFEST, &image).await;
    api.push_manifest(name, "multi", OCI_INDEX, &index).await;
    let unfinished = Blob::new(pattern(19, 6 * MIB + 5));
    let (sent, rest) = unfinished.bytes.split_at(4 * MIB + 1);
    let location = api.start_upload(name).await;
    let range = format!("0-{}", sent.len() - 1);
    expect_status(send(api.patch(&location).header("content-range", &range).body(sent.to_vec())).await, 202).await;
    let catalog = api.json("/v2/_catalog").await;
    let tags = api.json(&format!("/v2/{name}/tags/list")).await;

    reg.restart();
    let api = Api::new(&reg);

    assert_eq!(api.json("/v2/_catalog").await, catalog);
    assert_eq!(api.json(&format!("/v2/{name}/tags/list")).await, tags);
    assert_eq!(api.pull_blob(name, &config.digest).await, config.bytes);
    assert_eq!(api.pull_blob(name, &layer.digest).await, layer.bytes);
    assert_eq!(api.pull_blob("durable/other", &config.digest).await, config.bytes);
    for reference in ["v1", "latest", image_digest.as_str()] {
        assert_eq!(api.pull_manifest(name, reference).await, (OCI_MANIFEST.to_owned(), image.clone()), "{reference}");
    }
    assert_eq!(api.pull_manifest(name, "multi").await, (OCI_INDEX.to_owned(), index));

    assert_eq!(api.upload_range(&location).await, range);
    let range = format!("{}-{}", sent.len(), unfinished.len() - 1);
    let resp = send(api.patch(&location).header("content-range", range).body(rest.to_vec())).await;
    assert_headers(expect_status(resp, 202).await.headers(), &[("range", &held(unfinished.len()))]);
    expect_status(send(api.put(&with_digest(&location, &unfinished.digest))).await, 201).await;
    assert_eq!(api.pull_blob(name, &unfinished.digest).await, unfinished.bytes);
}

async fn health_and_metrics_report_exact_traffic_and_storage(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let resp = expect_status(send(api.get(path)).await, 200).await;
        assert_eq!(resp.text().await.expect("body"), body, "{path}");
    }
    let name = "metered/app";
    let config = Blob::new(b"{\"os\":\"linux\"}");
    let layer = Blob::new(pattern(20, 123_457));
    api.push_blob(name, &config).await;
    api.push_blob(name, &layer).await;
    // A second repository linking the same bytes stores nothing new.
    let mount = format!("/v2/metered/copy/blobs/uploads/?mount={}&from={name}", layer.digest);
    expect_status(send(api.post(&mount)).await, 201).await;
    let manifest = image_manifest(OCI_MANIFEST, config.descriptor(OCI_CONFIG), vec![layer.descriptor(OCI_LAYER)]);
    api.push_manifest(name, "v1", OCI_MANIFEST, &manifest).await;

    api.pull_manifest(name, "v1").await;
    api.pull_blob(name, &layer.digest).await;
    let resp = send(api.get(&format!("/v2/{name}/blobs/{}", layer.digest)).header("range", "bytes=10-19")).await;
    assert_eq!(expect_status(resp, 206).await.bytes().await.expect("range body").len(), 10);

    let text = api.metrics().await;
    let pushed = (config.len() + layer.len()) as u64;
    assert_eq!(
        [
            metric(&text, r#"damselfly_http_requests_total{route="manifest",method="GET",status="200"}"#),
            metric(&text, r#"damselfly_http_requests_total{route="manifest",method="PUT",status="201"}"#),
            metric(&text, r#"damselfly_bytes_sent_total{kind="blob"}"#),
            metric(&text, r#"damselfly_bytes_sent_total{kind="manifest"}"#),
            metric(&text, r#"damselfly_bytes_received_total{kind="blob"}"#),
            metric(&text, r#"damselfly_bytes_received_total{kind="manifest"}"#),
            metric(&text, "damselfly_blob_store_bytes"),
            metric(&text, "damselfly_blob_store_blobs"),
        ],
        [1, 1, layer.len() as u64 + 10, manifest.len() as u64, pushed, manifest.len() as u64, pushed, 2].map(Some),
        "{text}"
    );
}

async fn a_256_mib_blob_streams_through_in_bounded_memory(backend: Backend) {
    const SIZE: usize = 256 * MIB;
    const BUDGET_KIB: u64 = 150 * 1024;
    let reg = Registry::start_paired(backend);
    let api = Api::new(&reg);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("layer");
    let digest = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("create layer file"));
            let (mut source, mut hasher, mut buf) = (Pattern::new(21), sha2::Sha256::new(), vec![0u8; MIB]);
            for _ in 0..SIZE / MIB {
                source.fill(&mut buf);
                hasher.update(&buf);
                out.write_all(&buf).expect("write layer file");
            }
            out.flush().expect("flush layer file");
            format!("sha256:{:x}", hasher.finalize())
        })
        .await
        .expect("generate layer")
    };

    let body = reqwest::Body::from(tokio::fs::File::open(&file).await.expect("open layer file"));
    let push = api
        .post(&format!("/v2/big/app/blobs/uploads/?digest={digest}"))
        .header("content-length", SIZE.to_string())
        .body(body);
    expect_status(send(push).await, 201).await;

    let mut resp = expect_status(send(api.get(&format!("/v2/big/app/blobs/{digest}"))).await, 200).await;
    let (mut hasher, mut pulled) = (sha2::Sha256::new(), 0usize);
    while let Some(chunk) = resp.chunk().await.expect("blob chunk") {
        hasher.update(&chunk);
        pulled += chunk.len();
    }
    assert_eq!((pulled, format!("sha256:{:x}", hasher.finalize())), (SIZE, digest));

    let peak_kib = reg.peak_rss_kib();
    assert!(
        peak_kib < BUDGET_KIB,
        "registry peaked at {peak_kib} KiB moving a {SIZE}-byte blob; budget {BUDGET_KIB} KiB"
    );
}
