//! A minute of pushes and deletes beside garbage collection running back to
//! back with a grace period of two seconds, once on each metadata backend
//! with its paired blob store (SQLite and files, PostgreSQL and S3).
//!
//! Several clients push images (a layer every client shares, one each
//! client's images share, and layers of their own; monolithic, chunked and
//! mounted uploads) and delete their older images, retrying a manifest PUT
//! the way clients do when a collection took a blob between their HEAD and
//! their PUT. Afterwards every image still tagged is pulled with skopeo and
//! compared byte for byte, and once the grace has passed one more run must
//! leave in the store exactly the blobs those images reference, with the
//! namespace's use counted exactly.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use damselfly_tests::http::{create_namespace, Cred, Http};
use damselfly_tests::image::{push_manifest, Blob, OCI_MANIFEST};
use damselfly_tests::storage::{
    collect, namespace_use, pull_with_skopeo_and_compare, push_blob_if_missing, push_image, stored_blobs, PushedImage,
};
use damselfly_tests::{on_both_backends, pseudo_random, Backend, Registry};
use reqwest::Method;

on_both_backends!(a_minute_of_pushes_and_deletes_beside_back_to_back_collections_loses_nothing_and_frees_the_rest);

/// How long the clients push and delete; `DAMSELFLY_GC_LOAD_SECS` shortens it for a quick local try.
fn load_time() -> Duration {
    let secs = std::env::var("DAMSELFLY_GC_LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    Duration::from_secs(secs)
}

const CLIENTS: u64 = 4;
/// Images a client keeps before it deletes its oldest.
const KEEP: usize = 6;

/// What a client did.
#[derive(Default, Debug)]
struct Tally {
    pushes: u64,
    deletes: u64,
    retries: u64,
    mounts: u64,
    chunked: u64,
}

/// A tiny deterministic generator, one per client.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

/// Uploads a blob in a session: POST, one PATCH, PUT with the digest.
async fn push_chunked(http: &Http, repo: &str, blob: &Blob) {
    let admin = Cred::admin();
    let started =
        http.send(http.request(&admin, Method::POST, &format!("/v2/{repo}/blobs/uploads/"))).await.expect(202);
    let location = started.header("location").expect("Location").to_owned();
    let range = format!("0-{}", blob.bytes.len() - 1);
    let patch = http.request(&admin, Method::PATCH, &location).header("content-range", range).body(blob.bytes.clone());
    let patched = http.send(patch).await.expect(202);
    let next = patched.header("location").expect("Location").to_owned();
    let sep = if next.contains('?') { '&' } else { '?' };
    http.send(http.request(&admin, Method::PUT, &format!("{next}{sep}digest={}", blob.digest))).await.expect(201);
}

/// Mounts a blob from another repository, or uploads it into the session the registry starts when it cannot.
async fn mount_or_upload(http: &Http, repo: &str, from: &str, blob: &Blob) -> bool {
    let admin = Cred::admin();
    let path = format!("/v2/{repo}/blobs/uploads/?mount={}&from={from}", blob.digest);
    let reply = http.send(http.request(&admin, Method::POST, &path)).await;
    match reply.status {
        201 => true,
        202 => {
            let location = reply.header("location").expect("Location").to_owned();
            let sep = if location.contains('?') { '&' } else { '?' };
            let put = http.request(&admin, Method::PUT, &format!("{location}{sep}digest={}", blob.digest));
            http.send(put.body(blob.bytes.clone())).await.expect(201);
            false
        }
        other => panic!("mount of {} into {repo}: {other} {}", blob.digest, reply.text()),
    }
}

async fn client(http: Http, c: u64, base: Blob, until: Instant) -> (Vec<PushedImage>, Tally) {
    let admin = Cred::admin();
    let repo = format!("load/app{c}");
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ (c + 1));
    let own = Blob::new(pseudo_random(32 * 1024, 1000 + c));
    let mut images: VecDeque<PushedImage> = VecDeque::new();
    let mut tally = Tally::default();
    let mut n = 0u64;
    while Instant::now() < until {
        if images.len() >= KEEP || (!images.is_empty() && dice.roll(4) == 0) {
            let gone = images.remove(dice.roll(images.len() as u64) as usize).expect("an image");
            let path = format!("/v2/{}/manifests/{}", gone.repo, gone.digest);
            http.send(http.request(&admin, Method::DELETE, &path)).await.expect(202);
            tally.deletes += 1;
            continue;
        }
        n += 1;
        let seed = c * 1_000_000 + n;
        let config = Blob::new(format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"client\":{c},\"n\":{n}}}"));
        let mut layers =
            vec![base.clone(), own.clone(), Blob::new(pseudo_random(1024 + dice.roll(48 * 1024) as usize, seed))];
        if dice.roll(3) == 0 {
            layers.push(Blob::new(pseudo_random(512 + dice.roll(8 * 1024) as usize, seed + 500_000)));
        }
        let image = PushedImage::new(&repo, &format!("v{n}"), config, layers);
        // Some blobs travel other ways than the monolithic upload push_image uses.
        match dice.roll(4) {
            0 => {
                push_chunked(&http, &repo, &image.layers[2]).await;
                tally.chunked += 1;
            }
            1 => {
                let from = format!("load/app{}", (c + 1 + dice.roll(CLIENTS - 1)) % CLIENTS);
                tally.mounts += u64::from(mount_or_upload(&http, &repo, &from, &base).await);
            }
            _ => {}
        }
        for b in image.blobs() {
            push_blob_if_missing(&http, &admin, &repo, b).await;
        }
        if dice.roll(5) == 0 {
            // A slow client: its blobs outlive the grace before its manifest comes, and may be collected.
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        let put = push_manifest(&http, &admin, &repo, &image.tag, OCI_MANIFEST, &image.manifest).await;
        if put.status != 201 {
            assert_eq!(put.status_and_code(), (400, Some("MANIFEST_BLOB_UNKNOWN".to_owned())), "{}", put.text());
            // As clients do: push what is missing again, and the manifest.
            tally.retries += 1 + u64::from(push_image(&http, &admin, &image).await);
        }
        tally.pushes += 1;
        images.push_back(image);
    }
    (images.into(), tally)
}

async fn a_minute_of_pushes_and_deletes_beside_back_to_back_collections_loses_nothing_and_frees_the_rest(
    backend: Backend,
) {
    let reg =
        Registry::start_paired_with(backend, &[("DAMSELFLY_GC_GRACE_SECS", "2"), ("DAMSELFLY_GC_INTERVAL_SECS", "0")]);
    let http = Http::new(&reg);
    create_namespace(&http, "default", "load", false).await;
    let base = Blob::new(pseudo_random(64 * 1024, 7));
    let until = Instant::now() + load_time();
    let clients: Vec<_> = (0..CLIENTS).map(|c| tokio::spawn(client(http.clone(), c, base.clone(), until))).collect();
    let (mut runs, mut freed_blobs, mut freed_bytes) = (0u64, 0u64, 0u64);
    while Instant::now() < until {
        let run = collect(&http, false).await;
        assert_eq!(run["errors"], 0, "{run}");
        assert_eq!(
            run["details"]["usage_corrections"],
            serde_json::json!([]),
            "use was kept exactly between runs: {run}"
        );
        runs += 1;
        freed_blobs += run["blobs_deleted"].as_u64().unwrap_or(0);
        freed_bytes += run["bytes_freed"].as_u64().unwrap_or(0);
    }
    let mut remaining = Vec::new();
    let mut total = Tally::default();
    for c in clients {
        let (images, t) = c.await.expect("client");
        remaining.extend(images);
        total.pushes += t.pushes;
        total.deletes += t.deletes;
        total.retries += t.retries;
        total.mounts += t.mounts;
        total.chunked += t.chunked;
    }
    eprintln!(
        "{backend:?}: {runs} collections freed {freed_blobs} blobs ({freed_bytes} bytes) beside {} pushes ({} chunked, \
         {} mounted), {} deletes and {} manifest retries; {} images remain",
        total.pushes,
        total.chunked,
        total.mounts,
        total.deletes,
        total.retries,
        remaining.len()
    );
    assert!(
        runs >= 5 && total.pushes >= 40 && total.deletes >= 20 && freed_blobs > 0,
        "too little happened: {total:?}"
    );
    assert!(total.retries > 0, "no manifest PUT met a collected blob: the race never happened ({total:?})");

    // Every tag still stored pulls, byte for byte: no tag points at a missing blob.
    for image in &remaining {
        let (reg_ref, image) = (&reg, image.clone());
        tokio::task::block_in_place(|| pull_with_skopeo_and_compare(reg_ref, &image));
    }
    // Once the grace has passed, one more run leaves exactly what the remaining images reference.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let last = collect(&http, false).await;
    assert_eq!(last["details"]["usage_corrections"], serde_json::json!([]), "{last}");
    let expected: BTreeSet<String> = remaining.iter().flat_map(|i| i.blobs().map(|b| b.digest.clone())).collect();
    let stored = stored_blobs(&reg);
    let missing: Vec<_> = expected.difference(&stored).collect();
    let extra: Vec<_> = stored.difference(&expected).collect();
    assert!(missing.is_empty() && extra.is_empty(), "store differs: missing {missing:?}, not freed {extra:?}");
    // The namespace's use is exactly what remains: each blob once, each manifest's bytes, the repositories that hold one.
    let mut sizes = std::collections::BTreeMap::new();
    for b in remaining.iter().flat_map(|i| i.blobs()) {
        sizes.insert(b.digest.clone(), b.bytes.len() as i64);
    }
    let bytes: i64 = sizes.values().sum::<i64>() + remaining.iter().map(|i| i.manifest.len() as i64).sum::<i64>();
    let repositories = remaining.iter().map(|i| i.repo.clone()).collect::<BTreeSet<_>>().len() as i64;
    assert_eq!(namespace_use(&http, "load").await, (bytes, repositories));
    for image in remaining.iter().take(3) {
        tokio::task::block_in_place(|| pull_with_skopeo_and_compare(&reg, image));
    }
}
