//! Clients that try to wear the registry down each get a bounded, precise
//! answer, while a well-behaved client on another connection keeps being
//! served: it pulls a manifest every 50 ms throughout, and every pull must
//! succeed within [`SERVED_WITHIN`] (debug build, loopback, a shared
//! machine; a pull takes a few milliseconds when nothing else runs).
//!
//! - a slowloris client, trickling header lines: disconnected once
//!   `--header-read-timeout-secs` has passed since its request began;
//! - 1 MiB of headers, in one header or in a thousand: `431`;
//! - a 100 MiB manifest, with a length or chunked: `413` with the OCI error
//!   body, after at most the manifest limit (4 MiB) is read;
//! - JSON nested 10,000 deep (and 2,000,000 deep) in a manifest, in the
//!   management API and in the P2P API: `400` (`422` in the P2P API, as for any body of the
//!   wrong shape) with each API's error body,
//!   or, where the nesting sits in a field the manifest may carry unknown,
//!   the manifest stored byte for byte as the OCI image spec asks;
//! - a repository with 50,000 tags: the tag list comes in pages of at most
//!   1,000, each within [`SERVED_WITHIN`], every tag once, in byte order.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use damselfly_core::Digest;
use damselfly_registry::metadata::{Db, NewManifest, TargetKind};
use damselfly_tests::http::{Cred, Http};
use damselfly_tests::image::{self, Blob, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use damselfly_tests::{basic_authorization, on_both_backends, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The stated bound on a well-behaved client's pull while an attack runs:
/// generous, as the debug build shares two cores with other builds (a pull
/// takes 3 to 200 ms when the machine is quiet; the test prints the slowest).
const SERVED_WITHIN: Duration = Duration::from_secs(10);

/// How late past the header read timeout a slowloris connection may be closed, on a loaded machine.
const CLOSE_SLACK: Duration = Duration::from_secs(5);

/// The header read timeout the registries here run with.
const HEADER_TIMEOUT_SECS: u64 = 2;

/// A registry with a public image `pub/app:1` for the well-behaved client.
async fn registry(backend: Backend) -> (Registry, String) {
    let timeout = HEADER_TIMEOUT_SECS.to_string();
    let reg = Registry::start_with(backend, &[("DAMSELFLY_HEADER_READ_TIMEOUT_SECS", &timeout)]);
    let http = Http::new(&reg);
    let image = image::push_image(&http, &Cred::admin(), "pub/app", "hostile").await;
    http.admin_api(Method::PATCH, "/api/v1/namespaces/pub", json!({ "public": true })).await;
    let path = image.manifest_path("v1");
    assert_eq!(http.get(&Cred::Anonymous, &path).await.status, 200);
    (reg, path)
}

/// A client pulling a manifest anonymously every 50 ms, each time on a new connection, until stopped.
struct WellBehaved {
    stop: Arc<AtomicBool>,
    /// When each successful pull started, the slowest pull, and what failed.
    task: tokio::task::JoinHandle<(Vec<Instant>, Duration, Vec<String>)>,
}

impl WellBehaved {
    fn start(reg: &Registry, path: &str) -> WellBehaved {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, until) = (format!("{}{path}", reg.url), stop.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
            let (mut pulls, mut slowest, mut failures) = (Vec::new(), Duration::ZERO, Vec::new());
            while !until.load(Ordering::Relaxed) {
                let started = Instant::now();
                let pull = async {
                    let r = client.get(&url).send().await.map_err(|e| e.to_string())?;
                    let status = r.status();
                    r.bytes().await.map_err(|e| e.to_string())?;
                    if status == 200 {
                        Ok(())
                    } else {
                        Err(format!("answered {status}"))
                    }
                };
                let pulled = tokio::time::timeout(Duration::from_secs(30), pull).await;
                let took = started.elapsed();
                match pulled {
                    Ok(Ok(())) => pulls.push(started),
                    Ok(Err(e)) => failures.push(e),
                    Err(_) => failures.push("no answer in 30 s".into()),
                }
                slowest = slowest.max(took);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (pulls, slowest, failures)
        });
        WellBehaved { stop, task }
    }

    /// Stops, and checks that every pull succeeded within the bound, and
    /// that pulls went on while the attack (since `attack`) ran.
    async fn served(self, during: &str, attack: Instant) {
        let lasted = attack.elapsed();
        self.stop.store(true, Ordering::Relaxed);
        let (pulls, slowest, failures) = self.task.await.expect("the client's task");
        let meanwhile = pulls.iter().filter(|p| **p >= attack).count();
        eprintln!(
            "during {during} ({lasted:.1?}): {meanwhile} pulls by a well-behaved client, the slowest in {slowest:.0?}"
        );
        assert!(failures.is_empty(), "during {during}, pulls failed: {failures:?}");
        assert!(meanwhile >= 3, "during {during}, only {meanwhile} pulls");
        assert!(slowest <= SERVED_WITHIN, "during {during}, a pull took {slowest:?}");
    }
}

/// The process's resident memory and its peak so far, in bytes.
fn memory(reg: &Registry) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", reg.pid().expect("running"))).expect("status");
    let kib = |key: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
        line.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()).expect("a number") * 1024
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// Reads what the server sends until it closes; the bytes, and when it closed.
async fn read_until_closed(mut stream: tokio::net::tcp::OwnedReadHalf, limit: Duration) -> (Vec<u8>, Option<Instant>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, None),
        }
    }
}

/// The status line and headers of a raw answer, lowercased, and its body.
fn parse_answer(raw: &[u8]) -> (String, String, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

on_both_backends!(
    trickled_headers_are_cut_off_at_the_header_timeout,
    a_mebibyte_of_headers_gets_431,
    a_100_mib_manifest_gets_413_after_at_most_the_limit_is_read,
    json_nested_10000_deep_gets_each_apis_error,
    fifty_thousand_tags_list_in_bounded_pages,
);

/// 100 connections each send a request line, then a header line every
/// 500 ms. Each is closed, with no answer, between the timeout and one
/// second after it.
async fn trickled_headers_are_cut_off_at_the_header_timeout(backend: Backend) {
    let (reg, path) = registry(backend).await;
    let client = WellBehaved::start(&reg, &path);
    let attack = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..100 {
        let host = reg.host.clone();
        attackers.push(tokio::spawn(async move {
            let (read, mut write) = TcpStream::connect(&host).await.expect("connect").into_split();
            let opened = Instant::now();
            write.write_all(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n").await.expect("request line");
            let trickle = tokio::spawn(async move {
                for i in 0.. {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if write.write_all(format!("X-Trickle-{i}: a\r\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
            let (answer, closed) = read_until_closed(read, Duration::from_secs(20)).await;
            trickle.abort();
            (answer, closed.map(|at| at - opened))
        }));
    }
    let mut held = Vec::new();
    for attacker in attackers {
        let (answer, held_for) = attacker.await.expect("an attacker");
        assert!(answer.is_empty(), "a slowloris client got an answer: {:?}", String::from_utf8_lossy(&answer));
        held.push(held_for.expect("the registry never closed a slowloris connection (20 s)"));
    }
    let (shortest, longest) =
        (held.iter().min().copied().unwrap_or_default(), held.iter().max().copied().unwrap_or_default());
    eprintln!("100 slowloris connections were closed after {shortest:.1?} to {longest:.1?}");
    let timeout = Duration::from_secs(HEADER_TIMEOUT_SECS);
    assert!(shortest >= timeout - Duration::from_millis(100), "closed after {shortest:?}, before the timeout");
    assert!(longest <= timeout + CLOSE_SLACK, "held for {longest:?}");
    client.served("100 slowloris connections", attack).await;
}

/// One header of 1 MiB, and 1,024 headers of 1 KiB: `431` and the connection closed.
async fn a_mebibyte_of_headers_gets_431(backend: Backend) {
    let (reg, path) = registry(backend).await;
    let client = WellBehaved::start(&reg, &path);
    let one = format!("X-Big: {}\r\n", "a".repeat(1 << 20));
    let many: String = (0..1024).map(|i| format!("X-Header-{i}: {}\r\n", "a".repeat(1000))).collect();
    let attack = Instant::now();
    // Five of each at least, and for two seconds.
    let mut rounds = 0;
    while rounds < 5 || attack.elapsed() < Duration::from_secs(2) {
        rounds += 1;
        for (what, headers) in [("one header of 1 MiB", &one), ("1,024 headers of 1 KiB", &many)] {
            let (read, mut write) = TcpStream::connect(&reg.host).await.expect("connect").into_split();
            let request = format!("GET /v2/ HTTP/1.1\r\nHost: registry\r\n{headers}\r\n");
            // Written beside the read: the answer comes before the headers are all sent.
            let writer = tokio::spawn(async move {
                let _ = write.write_all(request.as_bytes()).await;
            });
            let (answer, closed) = read_until_closed(read, Duration::from_secs(10)).await;
            writer.abort();
            let (status, headers, _) = parse_answer(&answer);
            assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large", "{what}");
            assert!(headers.contains("connection: close"), "{what}: {headers}");
            assert!(closed.is_some(), "{what}: the connection stayed open");
        }
    }
    client.served(&format!("{rounds} rounds of requests with 1 MiB of headers"), attack).await;
}

/// `PUT` of a 100 MiB manifest, declared with `Content-Length` and sent
/// chunked, in turn for two seconds: `413` with `SIZE_INVALID`, answered
/// before the client has sent 16 MiB, with the registry's memory growing by
/// less than 32 MiB; nothing stored.
async fn a_100_mib_manifest_gets_413_after_at_most_the_limit_is_read(backend: Backend) {
    const SIZE: usize = 100 << 20;
    let (reg, path) = registry(backend).await;
    let client = WellBehaved::start(&reg, &path);
    let (rss_before, _) = memory(&reg);
    let attack = Instant::now();
    // Each way at least twice, and for two seconds.
    let (mut uploads, mut most_sent) = (0, [0usize; 2]);
    while uploads < 4 || attack.elapsed() < Duration::from_secs(2) {
        let chunked = uploads % 2 == 1;
        uploads += 1;
        let framing = if chunked { "Transfer-Encoding: chunked".to_owned() } else { format!("Content-Length: {SIZE}") };
        let head = format!(
            "PUT /v2/team/app/manifests/huge HTTP/1.1\r\nHost: registry\r\nAuthorization: {}\r\n\
             Content-Type: {OCI_MANIFEST}\r\n{framing}\r\n\r\n",
            basic_authorization(ADMIN_USER, ADMIN_PASSWORD)
        );
        let (read, mut write) = TcpStream::connect(&reg.host).await.expect("connect").into_split();
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let writer = tokio::spawn(async move {
            write.write_all(head.as_bytes()).await.expect("headers");
            let chunk = vec![b'['; 64 << 10];
            while counter.load(Ordering::Relaxed) < SIZE {
                let written = if chunked {
                    let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    write.write_all(&frame).await
                } else {
                    write.write_all(&chunk).await
                };
                if written.is_err() {
                    break;
                }
                counter.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        });
        let mut read = read;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the whole answer is in (its body is small and comes with the head).
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") || !answer.ends_with(b"}") {
            let n = tokio::time::timeout(Duration::from_secs(30), read.read(&mut buf))
                .await
                .expect("an answer within 30 s")
                .expect("read the answer");
            assert!(n > 0, "closed without an answer: {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        let sent_then = sent.load(Ordering::Relaxed);
        writer.abort();
        let (status, headers, body) = parse_answer(&answer);
        let what = if chunked { "chunked" } else { "with a length" };
        assert_eq!(status, "HTTP/1.1 413 Payload Too Large", "{what}");
        assert!(headers.contains("content-type: application/json"), "{what}: {headers}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
        assert_eq!(body["errors"][0]["code"], "SIZE_INVALID", "{what}: {body}");
        assert_eq!(
            body["errors"][0]["message"], "manifest is larger than the registry's limit of 4194304 bytes",
            "{what}"
        );
        most_sent[usize::from(chunked)] = most_sent[usize::from(chunked)].max(sent_then);
        assert!(sent_then < 16 << 20, "{what}: the client sent {sent_then} bytes before the answer");
    }
    let (_, peak) = memory(&reg);
    eprintln!(
        "{uploads} uploads of a 100 MiB manifest: 413 once the client had sent at most {} KiB with a length, {} KiB \
         chunked; registry memory {} MiB before, peak {} MiB",
        most_sent[0] >> 10,
        most_sent[1] >> 10,
        rss_before >> 20,
        peak >> 20
    );
    // Well under one 100 MiB manifest: each is refused after at most the limit (4 MiB) is read. The
    // allocator's arenas keep some of what hundreds of refused uploads used, so the margin is wide.
    assert!(peak < rss_before + (64 << 20), "the registry's memory peaked at {peak} from {rss_before}");
    let http = Http::new(&reg);
    assert_eq!(http.get(&Cred::admin(), "/v2/team/app/manifests/huge").await.status, 404, "nothing stored");
    client.served(&format!("{uploads} uploads of a 100 MiB manifest"), attack).await;
}

/// `depth` arrays opened and closed: `[[[…]]]`.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Deep nesting where each API reads JSON: the answer is its error, and
/// the registry goes on serving. Deep nesting in a field a manifest may
/// carry without the registry knowing it is stored, byte for byte.
async fn json_nested_10000_deep_gets_each_apis_error(backend: Backend) {
    let (reg, path) = registry(backend).await;
    let client = WellBehaved::start(&reg, &path);
    let attack = Instant::now();
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let config = Blob::new(b"{}".to_vec());
    let layer = Blob::new(b"a layer".to_vec());
    for blob in [&config, &layer] {
        image::push_blob(&http, &admin, "team/app", blob).await;
    }
    let manifest = |extra: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]{extra}}}"#,
            config.descriptor(OCI_CONFIG),
            layer.descriptor(OCI_LAYER)
        )
    };
    let deep = nested(10_000);
    let refused = [
        ("in annotations", manifest(&format!(r#","annotations":{deep}"#))),
        (
            "in a layer",
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":{deep}}}"#,
                config.descriptor(OCI_CONFIG)
            ),
        ),
        ("as the whole body", deep.clone()),
    ];
    for (what, body) in refused {
        let r = image::push_manifest(&http, &admin, "team/app", "deep", OCI_MANIFEST, &body).await;
        assert_eq!(r.status_and_code(), (400, Some("MANIFEST_INVALID".into())), "{what}: {}", r.text());
    }
    // Unknown fields are the OCI image spec's to allow: skipped without recursion, at any depth the size limit lets in.
    for depth in [10_000, 2_000_000] {
        let body = manifest(&format!(r#","x-unknown":{}"#, nested(depth)));
        let r = image::push_manifest(&http, &admin, "team/app", "deep", OCI_MANIFEST, &body).await;
        assert_eq!(r.status, 201, "{depth} deep in an unknown field: {}", r.text());
        let stored = http.get(&admin, "/v2/team/app/manifests/deep").await.expect(200);
        assert_eq!(Digest::of(&stored.body), Digest::of(body.as_bytes()), "stored byte for byte");
    }
    // The management API: 400 INVALID_REQUEST.
    for (method, api_path, body) in [
        (Method::POST, "/api/v1/tenants", format!(r#"{{"name":{deep}}}"#)),
        (Method::POST, "/api/v1/tenants/default/robots", format!(r#"{{"name":"r","scopes":{deep}}}"#)),
        (Method::PATCH, "/api/v1/namespaces/team", deep.clone()),
    ] {
        let request = http.request(&admin, method.clone(), api_path).header("content-type", "application/json");
        let r = http.send(request.body(body)).await;
        assert_eq!(r.status_and_code(), (400, Some("INVALID_REQUEST".into())), "{method} {api_path}: {}", r.text());
    }
    // The P2P API: an OCI error body, 422 as for any body of the wrong shape (the nesting sits where a
    // string or nothing is expected, so it is refused at its first bracket).
    let token = reg.register_cluster("edge").await;
    for p2p_path in ["/p2p/v1/agents", "/p2p/v1/swarms/join", "/p2p/v1/swarms/report"] {
        let request = http
            .request(&Cred::Anonymous, Method::POST, p2p_path)
            .header("authorization", format!("Cluster {token}"))
            .header("content-type", "application/json");
        let r = http.send(request.body(format!(r#"{{"agent_id":{deep}}}"#))).await;
        assert_eq!(r.status_and_code(), (422, Some("UNSUPPORTED".into())), "{p2p_path}: {}", r.text());
    }
    assert_eq!(http.get(&Cred::Anonymous, "/healthz").await.status, 200);
    client.served("deeply nested JSON", attack).await;
}

/// 50,000 tags on one manifest. Pushing them through the HTTP API takes
/// about 150 s here (3 ms a push, each a metadata transaction and an audit
/// record), so 49,999 of them are written with the registry's own metadata
/// code (`Manifests::put`, the call a push makes; 25 to 45 s) and the first
/// goes through the API. The list, read whole again and again for two
/// seconds, comes in pages of at most 1,000 with a `Link` to the next, each
/// within the stated bound, and the registry's memory grows by less than 32 MiB.
async fn fifty_thousand_tags_list_in_bounded_pages(backend: Backend) {
    const TAGS: usize = 50_000;
    let (reg, path) = registry(backend).await;
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let image = image::push_image(&http, &admin, "team/app", "many-tags").await;
    // Only the 50,000 tags: the image came with `v1`.
    http.send(http.request(&admin, Method::DELETE, &image.manifest_path("v1"))).await.expect(202);
    let tag = |i: usize| format!("t{i:05}");
    image::push_manifest(&http, &admin, "team/app", &tag(0), OCI_MANIFEST, &image.manifest).await.expect(201);
    let seeding = Instant::now();
    seed_tags(&reg, &image.manifest, (1..TAGS).map(tag).collect()).await;
    eprintln!("seeded {} tags through the metadata code in {:.1?}", TAGS - 1, seeding.elapsed());

    let client = WellBehaved::start(&reg, &path);
    let attack = Instant::now();
    let (rss_before, _) = memory(&reg);
    // The whole list at least once, and for two seconds.
    let (mut listings, mut slowest) = (0, Duration::ZERO);
    while listings < 1 || attack.elapsed() < Duration::from_secs(2) {
        let (listed, pages, slowest_page) = list_tags(&http, "/v2/team/app/tags/list").await;
        assert_eq!(pages, 50);
        assert_eq!(listed, (0..TAGS).map(tag).collect::<Vec<_>>(), "every tag once, in byte order");
        slowest = slowest.max(slowest_page);
        listings += 1;
    }
    let (_, peak) = memory(&reg);
    eprintln!(
        "{TAGS} tags listed {listings} times in 50 pages of 1,000, the slowest page in {slowest:.0?}; registry \
         memory {} MiB before, peak {} MiB",
        rss_before >> 20,
        peak >> 20
    );
    assert!(slowest <= SERVED_WITHIN, "a page took {slowest:?}");
    assert!(peak < rss_before + (32 << 20), "the registry's memory peaked at {peak} from {rss_before}");
    // A client asking for everything at once gets a page too.
    let all = http.get(&admin, "/v2/team/app/tags/list?n=100000").await.expect(200);
    assert_eq!(all.json()["tags"].as_array().map(Vec::len), Some(1000));
    assert!(all.header("link").is_some_and(|l| l.contains("n=1000&last=t00999")));
    client.served("listing 50,000 tags", attack).await;
}

/// Follows a tag list's `Link`s from `first`: every tag, the pages, the slowest page.
async fn list_tags(http: &Http, first: &str) -> (Vec<String>, usize, Duration) {
    let mut next = Some(first.to_owned());
    let (mut listed, mut pages, mut slowest) = (Vec::new(), 0, Duration::ZERO);
    while let Some(page) = next.take() {
        let started = Instant::now();
        let r = http.get(&Cred::admin(), &page).await.expect(200);
        slowest = slowest.max(started.elapsed());
        let body = r.json();
        let tags = body["tags"].as_array().expect("tags").iter().map(|t| t.as_str().expect("a tag").to_owned());
        let before = listed.len();
        listed.extend(tags);
        assert!(listed.len() - before <= 1000, "a page of {} tags", listed.len() - before);
        pages += 1;
        next = r.header("link").map(|link| {
            assert!(link.ends_with("rel=\"next\""), "{link}");
            link.split(['<', '>']).nth(1).expect("<…> in Link").to_owned()
        });
        assert!(pages <= 51, "more pages than 50,000 tags make");
    }
    (listed, pages, slowest)
}

/// Points `tags` at the manifest `manifest` in `team/app`, through the
/// registry's metadata code on the registry's own database, 8 writers at once.
async fn seed_tags(reg: &Registry, manifest: &str, tags: Vec<String>) {
    let db = Db::open(&reg.database_url, 8).await.expect("the registry's database");
    let repo = db.repositories().find("team/app").await.expect("query").expect("the repository");
    let mut writers = tokio::task::JoinSet::new();
    for share in tags.chunks(tags.len().div_ceil(8)) {
        let (db, manifest, share) = (db.clone(), manifest.to_owned(), share.to_vec());
        writers.spawn(async move {
            let new = NewManifest {
                digest: Digest::of(manifest.as_bytes()),
                media_type: OCI_MANIFEST,
                artifact_type: None,
                subject: None,
                annotations: None,
                content: manifest.as_bytes(),
                references: Vec::<(Digest, TargetKind)>::new(),
            };
            for tag in &share {
                db.manifests()
                    .put(repo, &new, Some(tag), damselfly_registry::metadata::TagRule::default())
                    .await
                    .expect("a tag written");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a writer");
    }
    db.close().await;
}
