//! The registry process as an operator sees it: its command line, its
//! defaults, what it records for every blob, and its housekeeping.

use std::process::Command;
use std::time::{Duration, Instant};

use damselfly_core::{BlobHasher, Digest};
use damselfly_registry::metadata::Db;
use damselfly_tests::http::Cred;
use damselfly_tests::{binary, on_both_backends, Backend, Registry, ADMIN_USER};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A request as the system administrator, who may push anywhere.
fn admin(method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    Cred::admin().apply(client().request(method, url))
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
        ("--token-service", "DAMSELFLY_TOKEN_SERVICE"),
        ("--token-ttl-secs", "DAMSELFLY_TOKEN_TTL_SECS"),
        ("--refresh-token-ttl-secs", "DAMSELFLY_REFRESH_TOKEN_TTL_SECS"),
        ("--admin-password", "DAMSELFLY_ADMIN_PASSWORD"),
        ("--login-failures-per-minute", "DAMSELFLY_LOGIN_FAILURES_PER_MINUTE"),
        ("--acceleration-host", "DAMSELFLY_ACCELERATION_HOST"),
        ("--console-session-hours", "DAMSELFLY_CONSOLE_SESSION_HOURS"),
        ("--traffic-sample-secs", "DAMSELFLY_TRAFFIC_SAMPLE_SECS"),
        ("--public-ca-file", "DAMSELFLY_PUBLIC_CA_FILE"),
    ] {
        assert!(help.contains(flag) && help.contains(var), "--help lacks {flag} / {var}:\n{help}");
    }
    // It sends the reader to a place they can find: a section of the README that exists.
    assert!(help.contains("The README's section \"Configuration\" lists them all."), "{help}");
    assert!(!help.contains("Config` docs"), "{help}");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert!(readme.contains("\n## Configuration\n"));
}

/// The README's settings table (section "Configuration") and `--help` name
/// the same flags, each with the same environment variable and default.
#[test]
fn the_readme_settings_table_matches_help() {
    let out = Command::new(binary("damselfly-registry")).env_clear().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert_eq!(
        settings_in_readme(&readme),
        settings_in_help(&help),
        "README.md's Configuration table vs --help:\n{help}"
    );
}

/// Flag → (environment variable, default), from `--help`: every option that
/// has a variable, with the `[default: …]` its text ends with.
fn settings_in_help(help: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let mut settings = std::collections::BTreeMap::new();
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        let head = line.trim_start();
        let starts_option = line.starts_with("  ") && (head.starts_with("--") || head.starts_with('-'));
        if starts_option && !line.starts_with("          ") {
            blocks.push(String::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push_str(head);
            block.push('\n');
        }
    }
    let between = |text: &str, open: &str, close: &[char]| -> Option<String> {
        let rest = &text[text.find(open)? + open.len()..];
        Some(rest[..rest.find(close)?].to_owned())
    };
    for block in blocks {
        let Some(env) = between(&block, "[env: ", &['=', ']']) else { continue };
        let flag = block.split_whitespace().find(|w| w.starts_with("--")).unwrap().to_owned();
        let default = between(&block, "[default: ", &[']']).unwrap_or_else(|| panic!("{flag} states no default"));
        settings.insert(flag, (env, default));
    }
    settings
}

/// The same from the README's table: the flag and the variable are the
/// first `--…` and `DAMSELFLY_…` code spans of the second column; the default
/// is the first code span of the third, or the whole cell if it has none.
fn settings_in_readme(readme: &str) -> std::collections::BTreeMap<String, (String, String)> {
    // Every table of the section, its subsections (blob storage) included, up to the next `## `.
    let section = &readme[readme.find("\n## Configuration\n").expect("a Configuration section") + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];
    let rows = section
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter(|l| !l.contains("| flag / variable |") && !l.starts_with("|---"));
    let spans = |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    rows.map(|row| {
        let cells: Vec<String> =
            row.replace("\\|", "\u{0}").split('|').map(|c| c.trim().replace('\u{0}', "|")).collect();
        let (names, default) = (spans(&cells[2]), &cells[3]);
        let flag = names.iter().find(|s| s.starts_with("--")).expect("a flag").split(' ').next().unwrap().to_owned();
        let env = names.iter().find(|s| s.starts_with("DAMSELFLY_")).expect("a variable").clone();
        (flag, (env, spans(default).into_iter().next().unwrap_or_else(|| default.clone())))
    })
    .collect()
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
fn with_no_settings_it_serves_on_5000_from_damselfly_data_and_prints_a_generated_admin_password_once() {
    // Port 5000 may be taken on a developer machine; the test needs it free.
    if std::net::TcpListener::bind("127.0.0.1:5000").is_err() {
        panic!("port 5000 is in use; stop whatever listens there and rerun");
    }
    let dir = tempfile::tempdir().unwrap();

    let (stderr, first_statuses) = DefaultProcess::start(dir.path(), None).stop();
    assert!(dir.path().join("damselfly-data/metadata.db").exists());
    assert!(dir.path().join("damselfly-data/blobs/sha256").is_dir());
    let password = generated_password(&stderr).unwrap_or_else(|| panic!("no generated password on stderr:\n{stderr}"));
    assert!(password.len() >= 16, "a generated password of {} characters: {password:?}", password.len());
    assert_eq!(stderr.matches(&password).count(), 1, "the password is printed exactly once:\n{stderr}");
    assert_eq!(
        first_statuses,
        [("anonymous", 401), ("admin with the printed password", 200), ("admin with another password", 401)]
    );

    // A second start on the same data keeps the password and does not show it again.
    let (stderr, second_statuses) = DefaultProcess::start(dir.path(), Some(&password)).stop();
    assert_eq!(generated_password(&stderr), None, "{stderr}");
    assert!(!stderr.contains(&password), "the password was printed again:\n{stderr}");
    assert_eq!(second_statuses, first_statuses);
}

/// A browser pointed at the registry's root lands in the console, and the
/// start-up banner names the console and the README's first push.
#[tokio::test(flavor = "multi_thread")]
async fn the_root_leads_to_the_console_which_the_banner_names() {
    let reg = Registry::start(Backend::Sqlite);
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let root = no_redirects.get(format!("{}/", reg.url)).send().await.unwrap();
    assert_eq!(root.status().as_u16(), 303);
    assert_eq!(root.headers()["location"], "/console");
    // Followed as a browser follows it, it ends on the sign-in form.
    let landed = client().get(format!("{}/", reg.url)).send().await.unwrap();
    assert_eq!(landed.url().path(), "/console/login");
    assert!(landed.text().await.unwrap().contains("Sign in to Damselfly"));
    let log = reg.log();
    for line in [
        format!("Damselfly registry is serving {}\n", reg.url),
        format!("  console:  {}/console\n", reg.url),
        format!("  try:      podman login --tls-verify=false {} -u admin\n", reg.host),
        format!("            podman push --tls-verify=false <image> {}/team/hello:1\n", reg.host),
    ] {
        assert!(log.contains(&line), "the banner lacks {line:?}:\n{log}");
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert!(readme.contains("$REG/team/hello:1"), "the README's first push is the banner's");
}

/// The registry started with no settings at all in a directory, and what
/// `GET /v2/` on 127.0.0.1:5000 answered once it was ready: anonymously, as
/// `admin` with the password it printed (or `known_password` if it printed
/// none), and as `admin` with a wrong one.
struct DefaultProcess {
    child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
    statuses: Vec<(&'static str, u16)>,
}

impl DefaultProcess {
    fn start(dir: &std::path::Path, known_password: Option<&str>) -> DefaultProcess {
        use std::io::Read as _;
        let mut child = Command::new(binary("damselfly-registry"))
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut process = DefaultProcess { child, stderr, reader, statuses: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while base_status(None) != Some(401) {
            if Instant::now() > deadline {
                let _ = process.child.kill();
                panic!("registry did not answer on 127.0.0.1:5000; stderr:\n{}", process.stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Wait for the start-up banner, written before the port is bound but read by another thread.
        while !process.stderr.lock().unwrap().contains("Damselfly registry is serving") {
            assert!(Instant::now() < deadline, "no start-up banner: {}", process.stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
        let printed = generated_password(&process.stderr.lock().unwrap());
        let password = printed.as_deref().or(known_password).unwrap_or_default().to_owned();
        process.statuses = vec![
            ("anonymous", base_status(None).unwrap_or(0)),
            ("admin with the printed password", base_status(Some(&password)).unwrap_or(0)),
            ("admin with another password", base_status(Some("not-the-password")).unwrap_or(0)),
        ];
        process
    }

    /// Kills the process; returns everything it wrote to stderr, and the statuses.
    fn stop(self) -> (String, Vec<(&'static str, u16)>) {
        let mut child = self.child;
        let _ = child.kill();
        let _ = child.wait();
        let _ = self.reader.join();
        let stderr = self.stderr.lock().unwrap().clone();
        (stderr, self.statuses)
    }
}

/// The status of `GET http://127.0.0.1:5000/v2/`, as `admin` with `password` or anonymously.
fn base_status(password: Option<&str>) -> Option<u16> {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:5000/v2/"]);
    if let Some(p) = password {
        curl.arg("-u").arg(format!("{ADMIN_USER}:{p}"));
    }
    let out = curl.output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok().filter(|s| *s != 0)
}

/// The generated password in the first-start banner: the first non-empty line after "with the password".
fn generated_password(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines().skip_while(|l| !l.trim_end().ends_with("with the password"));
    lines.next()?;
    lines.map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)
}

on_both_backends!(every_blob_records_its_piece_digests, idle_upload_sessions_expire);

/// Pieces are 4 MiB; a 10 MiB blob pushed in odd-sized chunks has three.
async fn every_blob_records_its_piece_digests(backend: Backend) {
    let mut reg = Registry::start(backend);
    let content: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    // Chunked, with boundaries that do not line up with pieces.
    let start = admin(reqwest::Method::POST, format!("{}/v2/p2p/ready/blobs/uploads/", reg.url)).send().await.unwrap();
    assert_eq!(start.status(), 202);
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let mut at = 0usize;
    for size in [1_000_003usize, 5_000_000, 3_000_000] {
        let chunk = content[at..at + size].to_vec();
        let r = admin(reqwest::Method::PATCH, format!("{}{location}", reg.url))
            .header("content-range", format!("{}-{}", at, at + size - 1))
            .body(chunk)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        at += size;
    }
    let digest = Digest::of(&content);
    let r = admin(reqwest::Method::PUT, format!("{}{location}?digest={digest}", reg.url))
        .body(content[at..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let small = reg.push_blob("p2p/ready", b"tiny").await;

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
    let start = admin(reqwest::Method::POST, format!("{}/v2/idle/app/blobs/uploads/", reg.url)).send().await.unwrap();
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap().to_owned();
    let r = admin(reqwest::Method::PATCH, format!("{}{location}", reg.url)).body(vec![7u8; 1000]).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert!(reg.data_dir.join("uploads").join(&id).exists());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = admin(reqwest::Method::GET, format!("{}{location}", reg.url)).send().await.unwrap();
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
