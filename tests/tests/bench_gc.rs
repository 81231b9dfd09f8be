//! The garbage collection benchmark: a Damselfly run beside CNCF
//! Distribution's offline `garbage-collect` over the same images, in the same
//! test, as a ratio.
//!
//! The full size (100,000 blobs, 10,000 manifests, 1,000 repositories) is
//! ignored in the suite and run by `scripts/bench-gc.sh` with a release
//! registry; the suite runs a hundredth of it on both backend pairs
//! (SQLite with files, PostgreSQL with S3) and checks what each collector
//! deleted, but asserts nothing about time.
//!
//! The data is seeded straight into each registry's storage, since pushing
//! it through the API would take far longer than the runs measured: into
//! Damselfly's database and blob store with the registry's own code (`Db`,
//! `BlobStore`), and into Distribution's filesystem layout as its own pushes
//! would leave it. Both hold the same images: repositories in ten
//! namespaces, ten tagged manifests in each, each manifest referencing a
//! config and eight layers of its own (90 % of the blobs), and one blob in
//! ten linked to a repository and referenced by nothing. Everything was
//! last touched two days ago, so a run with the default grace period
//! deletes exactly those, as Distribution's collector does.
//!
//! Figures: each collector's wall time (Damselfly's from the management
//! API's `POST /api/v1/gc` with `wait` to its answer, Distribution's the
//! whole `docker-registry garbage-collect` process) and its peak memory
//! (the registry process's `VmHWM`, idle before and after the run;
//! Distribution's maximum resident set from `/usr/bin/time`). Distribution
//! always runs on the filesystem: on the PostgreSQL and S3 row the ratio
//! also measures the network store.
//!
//! `DAMSELFLY_GC_BENCH_SCALE` divides the full size of the ignored tests
//! (default 1); `DAMSELFLY_GC_DELETE_BATCH` and
//! `DAMSELFLY_GC_DELETE_CONCURRENCY`, when set, are handed to the registry.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use damselfly_core::{BlobHasher, Digest};
use damselfly_registry::metadata::{now, Db};
use damselfly_registry::storage::{BlobStore, StorageBackend, StorageConfig};
use damselfly_tests::http::{create_namespace, create_tenant, Http};
use damselfly_tests::storage::collect;
use damselfly_tests::{pseudo_random, Backend, Registry, Storage};
use futures_util::StreamExt;

const NAMESPACES: usize = 10;
const TAGS_PER_REPOSITORY: usize = 10;
const LAYERS: usize = 8;
const BLOB_BYTES: usize = 1024;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The images both collectors work on.
struct Dataset {
    repositories: usize,
    /// Every blob's digest: first those the manifests reference (`LAYERS + 1`
    /// per manifest, config first), then the garbage.
    blobs: Vec<(Digest, Vec<u8>)>,
    /// `(repository index, tag, manifest bytes, manifest digest)`.
    manifests: Vec<(usize, String, String, Digest)>,
    garbage: usize,
}

impl Dataset {
    /// `repositories` repositories' worth of images; blob `i`'s bytes are `pseudo_random(BLOB_BYTES, i)`.
    fn new(repositories: usize) -> Dataset {
        let manifests = repositories * TAGS_PER_REPOSITORY;
        let referenced = manifests * (LAYERS + 1);
        let garbage = manifests;
        let blobs = (0..referenced + garbage)
            .map(|i| {
                let mut h = BlobHasher::new(damselfly_core::PIECE_SIZE);
                h.update(&pseudo_random(BLOB_BYTES, i as u64));
                let (digest, pieces) = h.finish();
                (digest, pieces.to_bytes())
            })
            .collect::<Vec<_>>();
        let manifests = (0..manifests)
            .map(|m| {
                let descriptor = |k: usize, media_type: &str| {
                    serde_json::json!({ "mediaType": media_type, "digest": blobs[m * (LAYERS + 1) + k].0.to_string(), "size": BLOB_BYTES })
                };
                let body = serde_json::json!({
                    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": descriptor(0, "application/vnd.oci.image.config.v1+json"),
                    "layers": (1..=LAYERS).map(|k| descriptor(k, "application/vnd.oci.image.layer.v1.tar+gzip")).collect::<Vec<_>>(),
                })
                .to_string();
                let digest = Digest::of(body.as_bytes());
                (m / TAGS_PER_REPOSITORY, format!("t{}", m % TAGS_PER_REPOSITORY), body, digest)
            })
            .collect();
        Dataset { repositories, blobs, manifests, garbage }
    }

    fn referenced(&self) -> usize {
        self.blobs.len() - self.garbage
    }

    fn repository(&self, r: usize) -> String {
        format!("bench{}/repo{r}", r % NAMESPACES)
    }

    /// The repository a blob belongs to: its manifest's, or, for garbage, spread over all.
    fn owner(&self, i: usize) -> usize {
        let referenced = self.referenced();
        if i < referenced {
            i / (LAYERS + 1) / TAGS_PER_REPOSITORY
        } else {
            (i - referenced) % self.repositories
        }
    }

    fn bytes(i: usize) -> Vec<u8> {
        pseudo_random(BLOB_BYTES, i as u64)
    }
}

/// The blob store the registry uses, opened from this process.
async fn store_of(reg: &Registry, dir: &Path) -> BlobStore {
    let mut config = StorageConfig::default();
    if let Some(bucket) = &reg.bucket {
        let env = damselfly_tests::seaweedfs::SeaweedFs::shared().registry_env(bucket);
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
        let credentials = dir.join("credentials");
        let keys = format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            get("AWS_ACCESS_KEY_ID"),
            get("AWS_SECRET_ACCESS_KEY")
        );
        std::fs::write(&credentials, keys).expect("credentials file");
        config.backend = StorageBackend::S3;
        config.bucket = Some(bucket.clone());
        config.endpoint = Some(get("DAMSELFLY_S3_ENDPOINT"));
        config.region = Some(get("DAMSELFLY_S3_REGION"));
        config.path_style = true;
        config.credentials_file = Some(credentials);
    }
    BlobStore::open(&config, &reg.data_dir, damselfly_core::PIECE_SIZE).await.expect("the registry's blob store")
}

/// Inserts `rows` (each a list of SQL literals) into `table` in multi-row statements.
async fn insert(db: &Db, table: &str, columns: &str, rows: impl Iterator<Item = String>) {
    let rows: Vec<String> = rows.collect();
    for chunk in rows.chunks(500) {
        let sql = format!("INSERT INTO {table} ({columns}) VALUES {}", chunk.join(", "));
        sqlx::query(&sql).execute(db.pool()).await.unwrap_or_else(|e| panic!("seeding {table}: {e}"));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
}

/// A byte string as a SQL literal on `backend`.
fn bytes_literal(backend: Backend, bytes: &[u8]) -> String {
    match backend {
        Backend::Sqlite => format!("X'{}'", hex(bytes)),
        Backend::Postgres => format!("'\\x{}'", hex(bytes)),
    }
}

/// Seeds Damselfly: blob bytes through its blob store, rows straight into
/// its database; the store, opened from this process.
async fn seed_damselfly(reg: &Registry, data: &Dataset, dir: &Path) -> BlobStore {
    let http = Http::new(reg);
    create_tenant(&http, "bench").await;
    for n in 0..NAMESPACES {
        create_namespace(&http, "bench", &format!("bench{n}"), false).await;
    }
    let db = Db::open(&reg.database_url, 8).await.expect("the registry's database");
    let store = store_of(reg, dir).await;
    futures_util::stream::iter(data.blobs.iter().enumerate())
        .map(|(i, (digest, _))| {
            let store = store.clone();
            async move {
                let body = futures_util::stream::once(async move {
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(Dataset::bytes(i)))
                });
                store
                    .write_blob(digest, Box::pin(body), |_| async {
                        Ok::<(), damselfly_registry::storage::StoreError>(())
                    })
                    .await
                    .expect("blob written");
            }
        })
        .buffer_unordered(32)
        .collect::<()>()
        .await;
    let old = now() - 2 * 86_400;
    let backend = reg.backend;
    insert(
        &db,
        "blobs",
        "digest, size, piece_size, piece_digests, created_at, touched_at, deleting",
        data.blobs.iter().map(|(d, pieces)| {
            format!(
                "('{d}', {BLOB_BYTES}, {}, {}, {old}, {old}, 0)",
                damselfly_core::PIECE_SIZE,
                bytes_literal(backend, pieces)
            )
        }),
    )
    .await;
    insert(
        &db,
        "repositories",
        "name, created_at",
        (0..data.repositories).map(|r| format!("('{}', {old})", data.repository(r))),
    )
    .await;
    let ids: std::collections::HashMap<String, i64> = {
        use sqlx::Row;
        let rows = sqlx::query("SELECT name, id FROM repositories").fetch_all(db.pool()).await.expect("ids");
        rows.iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))).collect()
    };
    let repo_id = |r: usize| ids[&data.repository(r)];
    insert(
        &db,
        "repository_blobs",
        "repository_id, digest, created_at",
        data.blobs.iter().enumerate().map(|(i, (d, _))| format!("({}, '{d}', {old})", repo_id(data.owner(i)))),
    )
    .await;
    insert(
        &db,
        "manifests",
        "repository_id, digest, media_type, content, created_at",
        data.manifests.iter().map(|(r, _, body, d)| {
            format!("({}, '{d}', '{OCI_MANIFEST}', {}, {old})", repo_id(*r), bytes_literal(backend, body.as_bytes()))
        }),
    )
    .await;
    insert(
        &db,
        "manifest_references",
        "repository_id, manifest_digest, target_digest, target_kind",
        data.manifests.iter().enumerate().flat_map(|(m, (r, _, _, d))| {
            (0..=LAYERS)
                .map(move |k| format!("({}, '{d}', '{}', 'blob')", repo_id(*r), data.blobs[m * (LAYERS + 1) + k].0))
        }),
    )
    .await;
    insert(
        &db,
        "tags",
        "repository_id, name, manifest_digest, updated_at",
        data.manifests.iter().map(|(r, tag, _, d)| format!("({}, '{tag}', '{d}', {old})", repo_id(*r))),
    )
    .await;
    db.close().await;
    store
}

/// How many of the referenced blobs and of the garbage the store holds
/// (asked blob by blob: listing a bucket of 100,000 objects is slower).
async fn held(store: &BlobStore, data: &Dataset) -> (usize, usize) {
    let present: Vec<bool> = futures_util::stream::iter(data.blobs.iter())
        .map(|(d, _)| async move { store.contains(d).await.expect("the blob store answers") })
        .buffered(32)
        .collect()
        .await;
    let (referenced, garbage) = present.split_at(data.referenced());
    (referenced.iter().filter(|p| **p).count(), garbage.iter().filter(|p| **p).count())
}

/// Writes `content` to `path`, creating its directories.
fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("directories");
    std::fs::write(path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Seeds Distribution's filesystem layout under `root` as its pushes leave it:
/// blobs (manifests too) by digest, and per repository the links of its
/// layers, manifest revisions and tags.
fn seed_distribution(root: &Path, data: &Dataset) {
    let v2 = root.join("docker/registry/v2");
    let blob = |d: &Digest, content: &[u8]| {
        let hex = d.hex();
        write(&v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])), content);
    };
    let link = |repo: &str, what: &str, d: &Digest| {
        write(&v2.join(format!("repositories/{repo}/{what}/sha256/{}/link", d.hex())), d.to_string().as_bytes());
    };
    for (i, (d, _)) in data.blobs.iter().enumerate() {
        blob(d, &Dataset::bytes(i));
        link(&data.repository(data.owner(i)), "_layers", d);
    }
    for (r, tag, body, d) in &data.manifests {
        let repo = data.repository(*r);
        blob(d, body.as_bytes());
        link(&repo, "_manifests/revisions", d);
        link(&repo, &format!("_manifests/tags/{tag}/index"), d);
        write(&v2.join(format!("repositories/{repo}/_manifests/tags/{tag}/current/link")), d.to_string().as_bytes());
    }
}

/// The blobs Distribution's layout holds.
fn distribution_blobs(root: &Path) -> usize {
    let dir = root.join("docker/registry/v2/blobs/sha256");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).map(Iterator::count).unwrap_or(0))
        .sum()
}

/// What a collector's run took.
struct Measured {
    seconds: f64,
    /// Peak resident memory, MiB.
    peak_mib: u64,
    deleted: u64,
}

/// Runs `docker-registry garbage-collect` over `root`: its wall time, maximum resident set and the blobs it deleted.
fn distribution_gc(root: &Path, dir: &Path) -> Measured {
    let config = dir.join("distribution.yml");
    let yaml = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
        root.display()
    );
    std::fs::write(&config, yaml).expect("distribution config");
    let rusage = dir.join("distribution.time");
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-o")
        .arg(&rusage)
        .args(["-f", "%M"])
        .args(["docker-registry", "garbage-collect"])
        .arg(&config)
        .output()
        .expect("run docker-registry garbage-collect under /usr/bin/time (scripts/test.sh installs both)");
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docker-registry garbage-collect failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let max_rss_kib: u64 = std::fs::read_to_string(&rusage)
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()))
        .expect("maximum resident set from /usr/bin/time");
    let deleted = stdout.lines().filter(|l| l.starts_with("blob eligible for deletion:")).count() as u64;
    Measured { seconds, peak_mib: max_rss_kib / 1024, deleted }
}

/// Seeds both, runs both collectors, checks what each deleted, and prints one table row.
async fn bench(backend: Backend, storage: Storage, repositories: usize) {
    let dir = tempfile::Builder::new().prefix("damselfly-bench-gc-").tempdir().expect("temp dir");
    let data = Dataset::new(repositories);
    let mut settings = vec![("DAMSELFLY_GC_INTERVAL_SECS", "0".to_owned()), ("RUST_LOG", "warn".to_owned())];
    for passed in ["DAMSELFLY_GC_DELETE_BATCH", "DAMSELFLY_GC_DELETE_CONCURRENCY"] {
        if let Ok(value) = std::env::var(passed) {
            settings.push((passed, value));
        }
    }
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reg = Registry::start_on(backend, storage, &settings);
    let http = Http::new(&reg);
    let seeding = Instant::now();
    let store = seed_damselfly(&reg, &data, dir.path()).await;
    let distribution_root = dir.path().join("distribution");
    seed_distribution(&distribution_root, &data);
    let seeded = seeding.elapsed().as_secs_f64();
    assert_eq!(distribution_blobs(&distribution_root), data.blobs.len() + data.manifests.len());

    let baseline = distribution_gc(&distribution_root, dir.path());
    assert_eq!(baseline.deleted, data.garbage as u64, "Distribution deletes exactly the unreferenced blobs");
    assert_eq!(distribution_blobs(&distribution_root), data.referenced() + data.manifests.len());

    let idle_kib = reg.peak_rss_kib();
    let started = Instant::now();
    let run = collect(&http, false).await;
    let seconds = started.elapsed().as_secs_f64();
    let damselfly =
        Measured { seconds, peak_mib: reg.peak_rss_kib() / 1024, deleted: run["blobs_deleted"].as_u64().unwrap_or(0) };
    assert_eq!(damselfly.deleted, data.garbage as u64, "{run}");
    assert_eq!(run["errors"].as_u64(), Some(0), "{run}");
    assert_eq!(held(&store, &data).await, (data.referenced(), 0), "the store keeps exactly the referenced blobs");
    println!(
        "| {backend:?} + {storage:?} | {} blobs, {} manifests, {} repositories (seeded in {seeded:.0} s) | {:.2} s, peak {} MiB (idle {} MiB) | {:.2} s, peak {} MiB | {:.2} |",
        data.blobs.len(),
        data.manifests.len(),
        data.repositories,
        damselfly.seconds,
        damselfly.peak_mib,
        idle_kib / 1024,
        baseline.seconds,
        baseline.peak_mib,
        damselfly.seconds / baseline.seconds,
    );
    drop(reg);
}

fn full_size() -> usize {
    let scale =
        std::env::var("DAMSELFLY_GC_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).filter(|s| *s >= 1).unwrap_or(1);
    (1000 / scale).max(1)
}

/// The short form in the suite: ten repositories (1,100 blobs, 100 manifests).
async fn a_short_gc_benchmark_deletes_what_distributions_collector_deletes(backend: Backend) {
    bench(backend, backend.paired_storage(), 10).await;
}

damselfly_tests::on_both_backends!(a_short_gc_benchmark_deletes_what_distributions_collector_deletes);

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: scripts/bench-gc.sh runs it"]
async fn gc_over_100k_blobs_on_sqlite_and_the_filesystem() {
    bench(Backend::Sqlite, Storage::Filesystem, full_size()).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: scripts/bench-gc.sh runs it"]
async fn gc_over_100k_blobs_on_postgres_and_s3() {
    bench(Backend::Postgres, Storage::S3, full_size()).await;
}
