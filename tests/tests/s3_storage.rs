//! Blobs in object storage: a real `damselfly-registry` keeping its blobs in
//! a bucket of a real SeaweedFS server. Sessions continue across registry
//! processes; failed, lying and cut-off uploads leave nothing in the bucket;
//! a crash's leftovers are aborted by the janitor; an outage of the store
//! fails pushes cleanly until it is back; reads stream ranges or redirect to
//! presigned URLs; and a 2 GiB push runs in bounded memory.
//!
//! Uploads use S3's smallest part, 5 MiB, so that a few MiB cross part boundaries.

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use damselfly_tests::seaweedfs::SeaweedFs;
use damselfly_tests::{
    basic_authorization, on_both_backends, pseudo_random, sha256_digest, Backend, Registry, Storage, ADMIN_PASSWORD,
    ADMIN_USER,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const MIB: usize = 1024 * 1024;
const PART: &str = "5242880";

on_both_backends!(a_chunked_upload_moves_between_registry_processes_and_racing_chunks_do_not_mix);

mod uploads_that_fail_leave_nothing_in_the_bucket {
    #[tokio::test(flavor = "multi_thread")]
    async fn postgres() {
        super::uploads_that_fail_leave_nothing_in_the_bucket(damselfly_tests::Backend::Postgres).await;
    }
}

mod the_janitor_aborts_what_a_killed_registry_left_open {
    #[tokio::test(flavor = "multi_thread")]
    async fn postgres() {
        super::the_janitor_aborts_what_a_killed_registry_left_open(damselfly_tests::Backend::Postgres).await;
    }
}

mod an_object_store_outage_fails_pushes_with_503_and_they_resume_when_it_returns {
    #[tokio::test(flavor = "multi_thread")]
    async fn postgres() {
        super::an_object_store_outage_fails_pushes_with_503_and_they_resume_when_it_returns(
            damselfly_tests::Backend::Postgres,
        )
        .await;
    }
}

mod ranges_stream_from_the_bucket_and_redirects_hand_out_presigned_urls {
    #[tokio::test(flavor = "multi_thread")]
    async fn postgres() {
        super::ranges_stream_from_the_bucket_and_redirects_hand_out_presigned_urls(damselfly_tests::Backend::Postgres)
            .await;
    }
}

mod a_2_gib_push_to_s3_keeps_the_registry_under_200_mib {
    #[tokio::test(flavor = "multi_thread")]
    async fn postgres() {
        super::a_2_gib_push_to_s3_keeps_the_registry_under_200_mib(damselfly_tests::Backend::Postgres).await;
    }
}

// ---------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------

/// An HTTP client for one registry, as the administrator, that does not follow redirects.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(reg: &Registry) -> Api {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        Api { http, base: reg.url.clone() }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
    }

    async fn start_upload(&self, name: &str) -> String {
        let r = self.request(Method::POST, &format!("/v2/{name}/blobs/uploads/")).send().await.expect("POST");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        r.headers()["location"].to_str().expect("Location").to_owned()
    }

    async fn patch(&self, location: &str, from: usize, bytes: &[u8]) -> reqwest::Response {
        self.request(Method::PATCH, location)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{from}-{}", from + bytes.len() - 1))
            .body(bytes.to_vec())
            .send()
            .await
            .expect("PATCH")
    }

    async fn range_of(&self, location: &str) -> String {
        let r = self.request(Method::GET, location).send().await.expect("GET session");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        r.headers()["range"].to_str().expect("Range").to_owned()
    }

    async fn finish(&self, location: &str, digest: &str) -> reqwest::Response {
        self.request(Method::PUT, &format!("{location}?digest={digest}")).send().await.expect("PUT")
    }

    async fn push(&self, name: &str, bytes: &[u8]) -> reqwest::Response {
        let digest = sha256_digest(bytes);
        self.request(Method::POST, &format!("/v2/{name}/blobs/uploads/?digest={digest}"))
            .body(bytes.to_vec())
            .send()
            .await
            .expect("POST blob")
    }

    async fn pull(&self, name: &str, digest: &str) -> Vec<u8> {
        let r = self.request(Method::GET, &format!("/v2/{name}/blobs/{digest}")).send().await.expect("GET blob");
        assert_eq!(r.status(), StatusCode::OK, "GET {digest}");
        r.bytes().await.expect("blob").to_vec()
    }
}

/// The OCI error code of a response, checking the body is an OCI error.
async fn error_code(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.expect("an OCI error body is JSON");
    (status, body["errors"][0]["code"].as_str().expect("errors[0].code").to_owned())
}

/// Polls until `condition` holds, failing after `within`.
async fn wait_for(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Object keys in the bucket, without their sizes.
fn keys(s3: &SeaweedFs, bucket: &str) -> Vec<String> {
    s3.objects(bucket).into_iter().map(|(k, _)| k).collect()
}

fn blob_key(digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    format!("blobs/sha256/{}/{hex}", &hex[..2])
}

/// A registry on S3 with 5 MiB parts.
fn registry(backend: Backend, env: &[(&str, &str)]) -> Registry {
    let mut all = vec![("DAMSELFLY_S3_PART_SIZE", PART)];
    all.extend_from_slice(env);
    Registry::start_on(backend, Storage::S3, &all)
}

/// Sends a request head and part of its body over a raw connection; dropping it hangs up.
fn send_unfinished(host: &str, head: &str, partial_body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(host).expect("connect");
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(partial_body).expect("body");
    stream.flush().expect("flush");
    stream
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

async fn a_chunked_upload_moves_between_registry_processes_and_racing_chunks_do_not_mix(backend: Backend) {
    let a = registry(backend, &[]);
    let b = Registry::start_sharing(&a, &[("DAMSELFLY_S3_PART_SIZE", PART)]);
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    let s3 = SeaweedFs::shared();
    let bucket = a.bucket.clone().expect("an S3 registry");
    let blob = pseudo_random(17 * MIB + 123, 1);
    // Chunks of 3 MiB and 7 MiB: parts cut across chunks, chunks across parts.
    let cuts = [0, 3 * MIB, 10 * MIB, 13 * MIB, blob.len()];

    let location = api_a.start_upload("moving/app").await;
    for (i, w) in cuts.windows(2).take(3).enumerate() {
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        let r = api.patch(&location, w[0], &blob[w[0]..w[1]]).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "chunk {i}: {}", r.text().await.unwrap_or_default());
        assert_eq!(api_a.range_of(&location).await, format!("0-{}", w[1] - 1));
        assert_eq!(api_b.range_of(&location).await, format!("0-{}", w[1] - 1));
    }

    // Two chunks for the same offset race through both processes: one is
    // kept, the other is refused with where the session stands.
    let from = cuts[3];
    let (ours, theirs) = (pseudo_random(blob.len() - from, 2), blob[from..].to_vec());
    let (ra, rb) = tokio::join!(api_a.patch(&location, from, &ours), api_b.patch(&location, from, &theirs));
    let mut statuses = [ra.status(), rb.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::ACCEPTED, StatusCode::RANGE_NOT_SATISFIABLE]);
    let kept = if ra.status() == StatusCode::ACCEPTED { &ours } else { &theirs };
    let mut expected = blob[..from].to_vec();
    expected.extend_from_slice(kept);
    let expected_digest = sha256_digest(&expected);
    assert_eq!(api_a.range_of(&location).await, format!("0-{}", expected.len() - 1));

    let r = api_b.finish(&location, &expected_digest).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap_or_default());
    assert_eq!(api_a.pull("moving/app", &expected_digest).await, expected);
    assert_eq!(api_b.pull("moving/app", &expected_digest).await, expected);
    // One object, at the blob's address; the session left nothing.
    wait_for("the session's objects to go", Duration::from_secs(10), || {
        keys(s3, &bucket) == [blob_key(&expected_digest)] && s3.open_uploads(&bucket).is_empty()
    })
    .await;
}

async fn uploads_that_fail_leave_nothing_in_the_bucket(backend: Backend) {
    let reg = registry(backend, &[]);
    let api = Api::new(&reg);
    let s3 = SeaweedFs::shared();
    let bucket = reg.bucket.clone().expect("an S3 registry");
    let name = "careful/app";
    let kept = pseudo_random(6 * MIB, 10);
    assert_eq!(api.push(name, &kept).await.status(), StatusCode::CREATED);
    let before = keys(s3, &bucket);
    assert_eq!(before, [blob_key(&sha256_digest(&kept))]);
    let lie = pseudo_random(12 * MIB, 11);
    let not_it = sha256_digest(b"not it");

    // A one-request upload of three parts whose digest lies.
    let r =
        api.request(Method::POST, &format!("/v2/{name}/blobs/uploads/?digest={not_it}")).body(lie.clone()).send().await;
    assert_eq!(error_code(r.expect("POST")).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));

    // A session of three parts finished with a digest that lies.
    let location = api.start_upload(name).await;
    assert_eq!(api.patch(&location, 0, &lie).await.status(), StatusCode::ACCEPTED);
    assert_eq!(
        error_code(api.finish(&location, &not_it).await).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );

    // A chunk whose body is shorter than its Content-Range says (sent without
    // Content-Length, so only counting finds out), then the session is cancelled.
    let location = api.start_upload(name).await;
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(
        lie[..11 * MIB].chunks(MIB).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
    ));
    let r = api
        .request(Method::PATCH, &location)
        .header("content-range", format!("0-{}", lie.len() - 1))
        .body(streamed)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "SIZE_INVALID".into()));
    assert_eq!(api.range_of(&location).await, "0-0", "nothing of the short chunk was kept");
    assert_eq!(api.request(Method::DELETE, &location).send().await.expect("DELETE").status(), StatusCode::NO_CONTENT);

    // A client that hangs up after two parts of a one-request upload, and one
    // that hangs up in the middle of a chunk of a session.
    let head = |method: &str, path: &str, extra: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/octet-stream\r\n{extra}Content-Length: {}\r\n\r\n",
            reg.host,
            basic_authorization(ADMIN_USER, ADMIN_PASSWORD),
            lie.len()
        )
    };
    let digest = sha256_digest(&lie);
    let cut = send_unfinished(
        &reg.host,
        &head("POST", &format!("/v2/{name}/blobs/uploads/?digest={digest}"), ""),
        &lie[..11 * MIB],
    );
    wait_for("the cut upload's parts to reach the store", Duration::from_secs(20), || {
        !s3.open_uploads(&bucket).is_empty()
    })
    .await;
    drop(cut);
    let location = api.start_upload(name).await;
    let range = format!("Content-Range: 0-{}\r\n", lie.len() - 1);
    let cut = send_unfinished(&reg.host, &head("PATCH", &location, &range), &lie[..11 * MIB]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(cut);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.range_of(&location).await, "0-0");
    assert_eq!(api.request(Method::DELETE, &location).send().await.expect("DELETE").status(), StatusCode::NO_CONTENT);

    wait_for("every failed upload's leftovers to go", Duration::from_secs(20), || {
        keys(s3, &bucket) == before && s3.open_uploads(&bucket).is_empty()
    })
    .await;
    assert_eq!(api.pull(name, &sha256_digest(&kept)).await, kept);
    let r = api.request(Method::GET, &format!("/v2/{name}/blobs/{digest}")).send().await.expect("GET");
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into()));
}

async fn the_janitor_aborts_what_a_killed_registry_left_open(backend: Backend) {
    let mut reg = registry(backend, &[]);
    let api = Api::new(&reg);
    let s3 = SeaweedFs::shared();
    let bucket = reg.bucket.clone().expect("an S3 registry");
    let blob = pseudo_random(16 * MIB, 20);
    let digest = sha256_digest(&blob);

    // A session with a part and a tail, and a one-request upload in flight
    // with two parts sent, when the registry is killed.
    let session = api.start_upload("crash/app").await;
    assert_eq!(api.patch(&session, 0, &blob[..7 * MIB]).await.status(), StatusCode::ACCEPTED);
    let head = format!(
        "POST /v2/crash/app/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n",
        reg.host,
        basic_authorization(ADMIN_USER, ADMIN_PASSWORD),
        blob.len()
    );
    let _cut = send_unfinished(&reg.host, &head, &blob[..11 * MIB]);
    wait_for("both multipart uploads to be open", Duration::from_secs(20), || s3.open_uploads(&bucket).len() == 2)
        .await;
    reg.kill();
    let left = s3.open_uploads(&bucket);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(keys(s3, &bucket).iter().any(|k| k.starts_with("uploads/")), "the session's tail object");

    // Back with a 2-second TTL: the janitor expires the idle session and
    // aborts the upload nobody owns.
    reg.start_again(&[("DAMSELFLY_S3_PART_SIZE", PART), ("DAMSELFLY_UPLOAD_TTL_SECS", "2")]);
    wait_for("the janitor to clear the bucket", Duration::from_secs(30), || {
        s3.open_uploads(&bucket).is_empty() && keys(s3, &bucket).is_empty()
    })
    .await;
    let api = Api::new(&reg);
    let r = api.request(Method::GET, &session).send().await.expect("GET session");
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()));
    let log = reg.log();
    assert!(log.contains("removed what interrupted uploads left in the blob store"), "{log}");
    // Pushes work as before.
    assert_eq!(api.push("crash/app", &blob).await.status(), StatusCode::CREATED);
    assert_eq!(api.pull("crash/app", &digest).await, blob);
}

async fn an_object_store_outage_fails_pushes_with_503_and_they_resume_when_it_returns(backend: Backend) {
    let mut s3 = SeaweedFs::start();
    let bucket = s3.create_bucket();
    let mut env = s3.registry_env(&bucket);
    env.push(("DAMSELFLY_S3_PART_SIZE".into(), PART.into()));
    let reg = Registry::start_in(backend, None, env, &[]);
    let api = Api::new(&reg);
    let stored = pseudo_random(6 * MIB, 30);
    assert_eq!(api.push("outage/app", &stored).await.status(), StatusCode::CREATED);
    let blob = pseudo_random(13 * MIB, 31);
    let digest = sha256_digest(&blob);
    let location = api.start_upload("outage/app").await;
    assert_eq!(api.patch(&location, 0, &blob[..6 * MIB]).await.status(), StatusCode::ACCEPTED);

    // The store goes away in the middle of a chunk: the body is still
    // arriving; the bytes after the last part cannot be saved.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let pending = api
        .request(Method::PATCH, &location)
        .header("content-range", format!("{}-{}", 6 * MIB, 8 * MIB - 1))
        .body(body)
        .send();
    let feeder = async {
        tx.send(Ok(blob[6 * MIB..7 * MIB].to_vec())).await.expect("first MiB");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        s3.stop();
        tx.send(Ok(blob[7 * MIB..8 * MIB].to_vec())).await.expect("second MiB");
        drop(tx);
    };
    let (r, ()) = tokio::join!(pending, feeder);
    let (status, code) = error_code(r.expect("the registry answers")).await;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "UNKNOWN"));

    // While it is down: pushes and pulls fail with an OCI error, readiness says what to fix.
    let (status, code) = error_code(api.push("outage/app", &pseudo_random(1000, 32)).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "UNKNOWN"));
    let r = api.request(Method::GET, &format!("/v2/outage/app/blobs/{}", sha256_digest(&stored))).send().await;
    assert_eq!(error_code(r.expect("GET")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let ready = api.http.get(format!("{}/readyz", reg.url)).send().await.expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let why = ready.text().await.expect("readyz body");
    assert!(
        why.contains(&format!("S3 endpoint {} is unreachable", s3.endpoint)) && why.contains("is it running?"),
        "{why}"
    );

    // Back, without restarting the registry: the session still holds what
    // was acknowledged, and the push completes.
    s3.resume();
    let ready = api.http.get(format!("{}/readyz", reg.url)).send().await.expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(api.range_of(&location).await, format!("0-{}", 6 * MIB - 1));
    assert_eq!(api.patch(&location, 6 * MIB, &blob[6 * MIB..]).await.status(), StatusCode::ACCEPTED);
    assert_eq!(api.finish(&location, &digest).await.status(), StatusCode::CREATED);
    assert_eq!(api.pull("outage/app", &digest).await, blob);
    assert_eq!(api.pull("outage/app", &sha256_digest(&stored)).await, stored);
    let other = pseudo_random(7 * MIB, 33);
    assert_eq!(api.push("outage/app", &other).await.status(), StatusCode::CREATED);
    assert_eq!(api.pull("outage/app", &sha256_digest(&other)).await, other);
}

async fn ranges_stream_from_the_bucket_and_redirects_hand_out_presigned_urls(backend: Backend) {
    let proxied = registry(backend, &[]);
    let redirecting =
        Registry::start_sharing(&proxied, &[("DAMSELFLY_S3_PART_SIZE", PART), ("DAMSELFLY_S3_REDIRECT", "true")]);
    let api = Api::new(&proxied);
    let blob = pseudo_random(12 * MIB + 5, 40);
    let digest = sha256_digest(&blob);
    assert_eq!(api.push("ranges/app", &blob).await.status(), StatusCode::CREATED);
    let path = format!("/v2/ranges/app/blobs/{digest}");
    let boundary = 5 * MIB;

    // Ranged reads, across the parts the object was written in.
    for (range, first, last) in [
        (format!("bytes={}-{}", boundary - 3, boundary + 3), boundary - 3, boundary + 3),
        ("bytes=0-0".to_owned(), 0, 0),
        ("bytes=-7".to_owned(), blob.len() - 7, blob.len() - 1),
        (format!("bytes={}-", 10 * MIB), 10 * MIB, blob.len() - 1),
    ] {
        let r = api.request(Method::GET, &path).header("range", &range).send().await.expect("ranged GET");
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(r.headers()["content-range"], format!("bytes {first}-{last}/{}", blob.len()).as_str());
        assert_eq!(r.bytes().await.expect("body").as_ref(), &blob[first..=last], "{range}");
    }

    // Redirect mode: a 307 to a presigned URL that serves the bytes, and ranges of them, without credentials.
    let api = Api::new(&redirecting);
    let r = api.request(Method::GET, &path).send().await.expect("GET");
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    let url = r.headers()["location"].to_str().expect("Location").to_owned();
    assert!(url.starts_with(&SeaweedFs::shared().endpoint) && url.contains("X-Amz-Signature="), "{url}");
    let plain = reqwest::Client::new();
    let fetched = plain.get(&url).send().await.expect("presigned GET");
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(sha256_digest(&fetched.bytes().await.expect("bytes")), digest);
    let ranged = plain.get(&url).header("range", "bytes=100-199").send().await.expect("presigned ranged GET");
    assert_eq!(ranged.bytes().await.expect("bytes").as_ref(), &blob[100..200]);
    // The bytes follow the same checks as ever: a client that follows redirects gets the blob.
    let following = reqwest::Client::new()
        .get(format!("{}{path}", redirecting.url))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("GET, following");
    assert_eq!(sha256_digest(&following.bytes().await.expect("bytes")), digest);
    // HEAD still answers from the registry, and a tampered URL is refused by the store.
    let head = api.request(Method::HEAD, &path).send().await.expect("HEAD");
    assert_eq!(
        (head.status(), head.headers()["content-length"].to_str().expect("Content-Length")),
        (StatusCode::OK, blob.len().to_string().as_str())
    );
    let tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    assert_eq!(plain.get(&tampered).send().await.expect("tampered GET").status(), StatusCode::FORBIDDEN);
}

async fn a_2_gib_push_to_s3_keeps_the_registry_under_200_mib(backend: Backend) {
    const SIZE: usize = 2048 * MIB;
    const BUDGET_KIB: u64 = 200 * 1024;
    // The default 8 MiB parts.
    let reg = Registry::start_on(backend, Storage::S3, &[]);
    let api = Api::new(&reg);
    // The body is generated as it is sent; its digest is computed on the way.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(
        (0usize, sha2::Sha256::default(), Some(tx)),
        |(sent, mut hasher, tx)| async move {
            use sha2::Digest as _;
            if sent == SIZE {
                if let Some(tx) = tx {
                    let _ = tx.send(format!("sha256:{:x}", hasher.finalize()));
                }
                return None;
            }
            let chunk = pseudo_random(MIB, sent as u64);
            hasher.update(&chunk);
            Some((Ok::<_, std::io::Error>(chunk), (sent + MIB, hasher, tx)))
        },
    ));
    let location = api.start_upload("big/app").await;
    let r = api
        .request(Method::PATCH, &location)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await;
    let r = r.expect("PATCH 2 GiB");
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", r.text().await.unwrap_or_default());
    let digest = rx.await.expect("the body's digest");
    let r = api.finish(&location, &digest).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap_or_default());

    let peak_kib = reg.peak_rss_kib();
    println!("registry peak RSS pushing a 2 GiB blob to S3: {peak_kib} KiB");
    assert!(peak_kib < BUDGET_KIB, "registry peaked at {peak_kib} KiB pushing 2 GiB to S3; budget {BUDGET_KIB} KiB");
    let size = SeaweedFs::shared()
        .objects(reg.bucket.as_deref().expect("bucket"))
        .into_iter()
        .find(|(k, _)| *k == blob_key(&digest))
        .map(|(_, size)| size);
    assert_eq!(size, Some(SIZE as u64), "the blob's object holds every byte");
}
