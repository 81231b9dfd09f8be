//! The registry process as an operator sees it: its command line, its
//! defaults, what it records for every blob, and its housekeeping.

use std::process::Command;
use std::time::{Duration, Instant};

use damselfly_core::{BlobHasher, Digest};
use damselfly_registry::metadata::Db;
use damselfly_tests::{binary, Backend, Registry};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn push_blob(reg: &Registry, name: &str, bytes: Vec<u8>) -> Digest {
    let digest = Digest::of(&bytes);
    let r = client()
        .post(format!("{}/v2/{name}/blobs/uploads/?digest={digest}", reg.url))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    digest
}

#[test]
fn help_lists_every_setting_with_its_variable() {
    let out = Command::new(binary("damselfly-registry")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, var) in [
        ("--config", "DAMSELFLY_CONFIG"),
        ("--listen", "DAMSELFLY_LISTEN"),
        ("--data-dir", "DAMSELFLY_DATA_DIR"),
        ("--database-url", "DAMSELFLY_DATABASE_URL"),
        ("--public-url", "DAMSELFLY_PUBLIC_URL"),
        ("--max-manifest-bytes", "DAMSELFLY_MAX_MANIFEST_BYTES"),
        ("--piece-size", "DAMSELFLY_PIECE_SIZE"),
        ("--database-max-connections", "DAMSELFLY_DATABASE_MAX_CONNECTIONS"),
        ("--log-format", "DAMSELFLY_LOG_FORMAT"),
        ("--upload-ttl-secs", "DAMSELFLY_UPLOAD_TTL_SECS"),
    ] {
        assert!(help.contains(flag) && help.contains(var), "--help lacks {flag} / {var}:\n{help}");
    }
}

#[test]
fn a_bad_setting_is_explained_and_exits_nonzero() {
    let out = Command::new(binary("damselfly-registry"))
        .env_clear()
        .env("DAMSELFLY_DATABASE_URL", "mysql://user:hunter2@db/x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must start with sqlite:// or postgres://"), "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
}

#[test]
fn an_unreachable_postgres_is_named_with_a_hint() {
    let port = damselfly_tests::free_port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary("damselfly-registry"))
        .env_clear()
        .env("DAMSELFLY_DATA_DIR", dir.path())
        .env("DAMSELFLY_LISTEN", format!("127.0.0.1:{}", damselfly_tests::free_port()))
        .env("DAMSELFLY_DATABASE_URL", format!("postgres://damselfly:hunter2@127.0.0.1:{port}/x"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is PostgreSQL running"), "{err}");
    assert!(err.contains("damselfly:***@127.0.0.1"), "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
}

#[test]
fn with_no_settings_it_serves_on_5000_from_damselfly_data() {
    // Port 5000 may be taken on a developer machine; the test needs it free.
    if std::net::TcpListener::bind("127.0.0.1:5000").is_err() {
        panic!("port 5000 is in use; stop whatever listens there and rerun");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary("damselfly-registry"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ok = loop {
        if let Ok(out) = Command::new("curl").args(["-fsS", "http://127.0.0.1:5000/v2/"]).output() {
            if out.status.success() {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "registry did not answer on 127.0.0.1:5000");
    assert!(dir.path().join("damselfly-data/metadata.db").exists());
    assert!(dir.path().join("damselfly-data/blobs/sha256").is_dir());
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() { super::$name(damselfly_tests::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() { super::$name(damselfly_tests::Backend::Postgres).await }
        }
    )*};
}

on_both_backends!(every_blob_records_its_piece_digests, idle_upload_sessions_expire);

/// Pieces are 4 MiB; a 10 MiB blob pushed in odd-sized chunks has three.
async fn every_blob_records_its_piece_digests(backend: Backend) {
    let mut reg = Registry::start(backend);
    let content: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    // Chunked, with boundaries that do not line up with pieces.
    let start = client().post(format!("{}/v2/p2p/ready/blobs/uploads/", reg.url)).send().await.unwrap();
    assert_eq!(start.status(), 202);
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let mut at = 0usize;
    for size in [1_000_003usize, 5_000_000, 3_000_000] {
        let chunk = content[at..at + size].to_vec();
        let r = client()
            .patch(format!("{}{location}", reg.url))
            .header("content-range", format!("{}-{}", at, at + size - 1))
            .body(chunk)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        at += size;
    }
    let digest = Digest::of(&content);
    let r = client()
        .put(format!("{}{location}?digest={digest}", reg.url))
        .body(content[at..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let small = push_blob(&reg, "p2p/ready", b"tiny".to_vec()).await;

    reg.stop();
    let db = Db::open(&reg.database_url, 2).await.unwrap();
    let record = db.blobs().find(&digest).await.unwrap().expect("blob row");
    assert_eq!(record.size, content.len() as u64);
    assert_eq!(record.pieces.piece_size(), 4 * 1024 * 1024);
    let expected: Vec<Digest> = content.chunks(4 * 1024 * 1024).map(Digest::of).collect();
    assert_eq!(record.pieces.digests(), expected.as_slice());
    let tiny = db.blobs().find(&small).await.unwrap().expect("small blob row");
    let mut h = BlobHasher::new(4 * 1024 * 1024);
    h.update(b"tiny");
    assert_eq!(tiny.pieces, h.finish().1);
}

async fn idle_upload_sessions_expire(backend: Backend) {
    let reg = Registry::start_with(backend, &[("DAMSELFLY_UPLOAD_TTL_SECS", "2")]);
    let start = client().post(format!("{}/v2/app/blobs/uploads/", reg.url)).send().await.unwrap();
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap().to_owned();
    let r = client().patch(format!("{}{location}", reg.url)).body(vec![7u8; 1000]).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert!(reg.data_dir.join("uploads").join(&id).exists());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = client().get(format!("{}{location}", reg.url)).send().await.unwrap();
        if r.status() == 404 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN");
            break;
        }
        assert!(Instant::now() < deadline, "idle upload session was never discarded");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!reg.data_dir.join("uploads").join(&id).exists(), "the session's file is still on disk");
}
