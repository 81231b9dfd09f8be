//! Online garbage collection, driven through the real registry on both
//! metadata backends, each with the blob store it is paired with (SQLite and
//! files, PostgreSQL and S3): the race between the sweep and a manifest PUT
//! made to happen both ways with the testing hold points, a registry killed
//! in the middle of a sweep, the reports (database, API, console, metrics,
//! audit log), dry runs, and the schedule; and, on S3 with either database,
//! a sweep of over a thousand blobs deleted in batches, killed in the middle.

use std::path::Path;
use std::time::{Duration, Instant};

use damselfly_tests::http::{audit, create_user, Cred, Http};
use damselfly_tests::image::{push_blob, push_manifest, Blob, OCI_MANIFEST};
use damselfly_tests::storage::{
    collect, finished_run, pull_with_skopeo_and_compare, push_image, start_collection, stored_blobs, ConsoleSession,
    PushedImage,
};
use damselfly_tests::{
    metric_value, on_both_backends, pseudo_random, Backend, Registry, Storage, ADMIN_PASSWORD, ADMIN_USER,
};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(
    a_manifest_put_racing_a_sweep_held_before_its_decision_wins_and_the_blob_stays,
    a_manifest_put_racing_a_sweep_that_decided_fails_with_blob_unknown_and_its_retry_works,
    a_registry_killed_mid_sweep_loses_nothing_referenced_and_the_next_run_finishes,
    runs_are_reported_in_the_api_console_metrics_and_audit_log_and_a_dry_run_deletes_nothing,
    the_schedule_starts_runs_and_one_run_at_a_time_holds,
    a_sweep_of_many_blobs_in_s3_frees_every_object_even_when_killed_mid_batch,
);

const GRACE: &str = "1";

/// A registry with its paired blob store, a one-second grace period, no
/// schedule, and the testing hold points in `hold`.
fn registry(backend: Backend, hold: &Path) -> Registry {
    let hold = hold.display().to_string();
    Registry::start_paired_with(
        backend,
        &[
            ("DAMSELFLY_GC_GRACE_SECS", GRACE),
            ("DAMSELFLY_GC_INTERVAL_SECS", "0"),
            ("DAMSELFLY_GC_TEST_HOLD_DIR", &hold),
            ("DAMSELFLY_METRICS_TENANT_LABELS", "true"),
        ],
    )
}

/// Waits until a run reaches hold point `point`; the digest it holds there.
async fn reached(hold: &Path, point: &str) -> String {
    let file = hold.join(format!("{point}.reached"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(digest) = std::fs::read_to_string(&file) {
            if !digest.is_empty() {
                return digest;
            }
        }
        assert!(Instant::now() < deadline, "no run reached {point} within a minute");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets the collector's grace period pass for what was touched until now.
async fn past_grace() {
    tokio::time::sleep(Duration::from_millis(2100)).await;
}

fn digests(run: &Value) -> Vec<String> {
    run["details"]["blobs"]
        .as_array()
        .map(|b| b.iter().map(|b| b["digest"].as_str().unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

async fn a_manifest_put_racing_a_sweep_held_before_its_decision_wins_and_the_blob_stays(backend: Backend) {
    let hold = tempfile::tempdir().expect("hold dir");
    let reg = registry(backend, hold.path());
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let layer = Blob::new(pseudo_random(300_000, 1));
    push_blob(&http, &admin, "race/app", &layer).await;
    past_grace().await;
    // The sweep picks the layer (uploaded, referenced by nothing, older than the grace) and is held there.
    std::fs::write(hold.path().join("decide"), &layer.digest).expect("hold");
    let run = start_collection(&http).await.expect(202).json();
    assert_eq!(reached(hold.path(), "decide").await, layer.digest);
    let image = PushedImage::new("race/app", "v1", Blob::new(b"{\"config\":\"race\"}".to_vec()), vec![layer.clone()]);
    push_blob(&http, &admin, "race/app", &image.config).await;
    // The PUT takes the layer's row and touches it before the sweep decides: it wins.
    push_manifest(&http, &admin, "race/app", "v1", OCI_MANIFEST, &image.manifest).await.expect(201);
    std::fs::remove_file(hold.path().join("decide")).expect("release");
    let run = finished_run(&http, run["id"].as_i64().expect("id")).await;
    assert_eq!(run["blobs_deleted"], 0, "the sweep re-checked and kept the layer: {run}");
    assert!(stored_blobs(&reg).contains(&layer.digest));
    pull_with_skopeo_and_compare(&reg, &image);
}

async fn a_manifest_put_racing_a_sweep_that_decided_fails_with_blob_unknown_and_its_retry_works(backend: Backend) {
    let hold = tempfile::tempdir().expect("hold dir");
    let reg = registry(backend, hold.path());
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let layer = Blob::new(pseudo_random(300_000, 2));
    push_blob(&http, &admin, "race/app", &layer).await;
    past_grace().await;
    let image = PushedImage::new("race/app", "v1", Blob::new(b"{\"config\":\"race 2\"}".to_vec()), vec![layer.clone()]);
    push_blob(&http, &admin, "race/app", &image.config).await;
    // The sweep decides on the layer and is held before committing, holding its row.
    std::fs::write(hold.path().join("marked"), &layer.digest).expect("hold");
    let run = start_collection(&http).await.expect(202).json();
    assert_eq!(reached(hold.path(), "marked").await, layer.digest);
    let put = {
        let (http, manifest) = (http.clone(), image.manifest.clone());
        tokio::spawn(
            async move { push_manifest(&http, &Cred::admin(), "race/app", "v1", OCI_MANIFEST, &manifest).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!put.is_finished(), "the PUT waits for the sweep's decision on the layer's row");
    std::fs::remove_file(hold.path().join("marked")).expect("release");
    let refused = put.await.expect("PUT task");
    assert_eq!(refused.status_and_code(), (400, Some("MANIFEST_BLOB_UNKNOWN".to_owned())), "{}", refused.text());
    assert_eq!(refused.json()["errors"][0]["detail"]["digest"], layer.digest.as_str());
    let run = finished_run(&http, run["id"].as_i64().expect("id")).await;
    assert!(digests(&run).contains(&layer.digest), "{run}");
    assert!(!stored_blobs(&reg).contains(&layer.digest), "the layer's bytes were deleted");
    assert!(http.get(&admin, "/v2/race/app/manifests/v1").await.status == 404, "nothing of the refused PUT was stored");
    // The client's retry: its HEAD says the layer is missing, it uploads it again, and the PUT works.
    assert_eq!(push_image(&http, &admin, &image).await, 0);
    pull_with_skopeo_and_compare(&reg, &image);
    assert!(stored_blobs(&reg).contains(&layer.digest));
}

async fn a_registry_killed_mid_sweep_loses_nothing_referenced_and_the_next_run_finishes(backend: Backend) {
    let hold = tempfile::tempdir().expect("hold dir");
    let mut reg = registry(backend, hold.path());
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let shared = Blob::new(pseudo_random(200_000, 10));
    let kept = PushedImage::new(
        "crash/app",
        "kept",
        Blob::new(b"{\"config\":\"kept\"}".to_vec()),
        vec![shared.clone(), Blob::new(pseudo_random(100_000, 11))],
    );
    let dropped = PushedImage::new(
        "crash/app",
        "dropped",
        Blob::new(b"{\"config\":\"dropped\"}".to_vec()),
        vec![shared.clone(), Blob::new(pseudo_random(100_000, 12)), Blob::new(pseudo_random(50_000, 13))],
    );
    push_image(&http, &admin, &kept).await;
    push_image(&http, &admin, &dropped).await;
    let delete = http.request(&admin, Method::DELETE, &format!("/v2/crash/app/manifests/{}", dropped.digest));
    http.send(delete).await.expect(202);
    past_grace().await;
    // Kill the registry once the sweep has deleted a batch's bytes (the three
    // blobs only the deleted image held) and before it deletes their rows.
    std::fs::write(hold.path().join("bytes-deleted"), "").expect("hold");
    let first = start_collection(&http).await.expect(202).json();
    let victim = reached(hold.path(), "bytes-deleted").await;
    reg.kill();
    std::fs::remove_file(hold.path().join("bytes-deleted")).expect("release");
    let only_dropped: Vec<String> =
        vec![dropped.config.digest.clone(), dropped.layers[1].digest.clone(), dropped.layers[2].digest.clone()];
    assert!(only_dropped.contains(&victim), "the sweep deleted {victim}, which only the deleted image held");
    let kept_digests: std::collections::BTreeSet<String> = kept.blobs().map(|b| b.digest.clone()).collect();
    assert_eq!(stored_blobs(&reg), kept_digests, "the batch's bytes went together, and nothing else");

    let hold_dir = hold.path().display().to_string();
    reg.start_again(&[
        ("DAMSELFLY_GC_GRACE_SECS", GRACE),
        ("DAMSELFLY_GC_INTERVAL_SECS", "0"),
        ("DAMSELFLY_GC_TEST_HOLD_DIR", &hold_dir),
    ]);
    let http = Http::new(&reg);
    // Nothing referenced is missing: the kept image pulls byte for byte.
    pull_with_skopeo_and_compare(&reg, &kept);
    // The next run finishes the interrupted deletion and the rest of the sweep.
    let second = collect(&http, false).await;
    assert_eq!(second["details"]["pending_finished"], 3, "the killed run's whole batch: {second}");
    let mut deleted = digests(&second);
    deleted.sort();
    let mut expected = only_dropped.clone();
    expected.sort();
    assert_eq!(deleted, expected, "{second}");
    assert_eq!(stored_blobs(&reg), kept_digests, "exactly the kept image's blobs remain");
    let first = http.get(&admin, &format!("/api/v1/gc/runs/{}", first["id"])).await.expect(200).json();
    assert_eq!(first["state"], "interrupted", "{first}");
    pull_with_skopeo_and_compare(&reg, &kept);
}

async fn runs_are_reported_in_the_api_console_metrics_and_audit_log_and_a_dry_run_deletes_nothing(backend: Backend) {
    let hold = tempfile::tempdir().expect("hold dir");
    let reg = registry(backend, hold.path());
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let image = PushedImage::new(
        "report/app",
        "v1",
        Blob::new(b"{\"config\":\"report\"}".to_vec()),
        vec![Blob::new(pseudo_random(123_456, 20)), Blob::new(pseudo_random(7_890, 21))],
    );
    push_image(&http, &admin, &image).await;
    let before = stored_blobs(&reg);
    http.send(http.request(&admin, Method::DELETE, &format!("/v2/report/app/manifests/{}", image.digest)))
        .await
        .expect(202);
    past_grace().await;
    let freed: u64 = image.blobs().map(|b| b.bytes.len() as u64).sum();

    // Only the system administrator runs it.
    create_user(&http, "uma", "uma-password").await;
    let refused = http.api(&Cred::basic("uma", "uma-password"), Method::POST, "/api/v1/gc", json!({})).await;
    assert_eq!(refused.status_and_code(), (403, Some("DENIED".to_owned())), "{}", refused.text());
    let bad = http.api(&admin, Method::POST, "/api/v1/gc", json!({ "dryrun": true })).await;
    assert_eq!(bad.status_and_code(), (400, Some("INVALID_REQUEST".to_owned())), "{}", bad.text());

    // A dry run lists what would go and deletes nothing.
    let dry = collect(&http, true).await;
    assert_eq!(
        (dry["dry_run"].clone(), dry["blobs_deleted"].clone(), dry["bytes_freed"].clone()),
        (json!(true), json!(3), json!(freed)),
        "{dry}"
    );
    let mut listed = digests(&dry);
    listed.sort();
    let mut all: Vec<String> = image.blobs().map(|b| b.digest.clone()).collect();
    all.sort();
    assert_eq!(listed, all);
    assert_eq!(stored_blobs(&reg), before);

    // One run at a time: a second start while one is held answers 409.
    std::fs::write(hold.path().join("decide"), "").expect("hold");
    let held = start_collection(&http).await.expect(202).json();
    reached(hold.path(), "decide").await;
    let second = start_collection(&http).await;
    assert_eq!(second.status_and_code(), (409, Some("CONFLICT".to_owned())), "{}", second.text());
    assert!(second.text().contains(&format!("run {}", held["id"])), "{}", second.text());
    std::fs::remove_file(hold.path().join("decide")).expect("release");
    let run = finished_run(&http, held["id"].as_i64().expect("id")).await;
    assert_eq!(
        (run["state"].clone(), run["blobs_deleted"].clone(), run["bytes_freed"].clone(), run["errors"].clone()),
        (json!("done"), json!(3), json!(freed), json!(0)),
        "{run}"
    );
    assert!(run["duration_ms"].as_i64().is_some() && run["finished_at"].as_i64().is_some(), "{run}");
    assert!(stored_blobs(&reg).is_disjoint(&all.iter().cloned().collect()));
    let runs = http.get(&admin, "/api/v1/gc/runs?limit=10").await.expect(200).json();
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "newest first: {runs}");
    assert_eq!(runs[0]["id"], run["id"]);

    // Metrics: this process's totals, and the last run's report.
    let page = reqwest::get(format!("{}/metrics", reg.url)).await.expect("metrics").text().await.expect("text");
    assert_eq!(metric_value(&page, "damselfly_gc_runs_total{outcome=\"done\"}"), 1.0, "dry runs are not counted");
    assert_eq!(metric_value(&page, "damselfly_gc_bytes_freed_total"), freed as f64);
    assert_eq!(metric_value(&page, "damselfly_gc_last_run_bytes_freed"), freed as f64);
    assert_eq!(metric_value(&page, "damselfly_gc_last_run_blobs_deleted"), 3.0);
    assert!(metric_value(&page, "damselfly_gc_last_run_finished_timestamp_seconds") > 0.0);
    assert_eq!(metric_value(&page, "damselfly_namespace_storage_bytes{tenant=\"default\",namespace=\"report\"}"), 0.0);
    assert!(page.contains("damselfly_namespace_repositories{tenant=\"default\",namespace=\"report\"} 0"), "{page}");

    // The audit log: who started it, and what it freed.
    let events = audit(&http, &[("action", "gc.run")]).await;
    let last = events.last().expect("a gc.run event");
    assert_eq!((last["actor"].clone(), last["outcome"].clone()), (json!(ADMIN_USER), json!("success")), "{last}");
    assert_eq!(last["detail"]["bytes_freed"], freed);
    assert_eq!(last["detail"]["run"], run["id"]);
    assert_eq!(audit(&http, &[("action", "gc.dry_run")]).await.len(), 1);

    // The console shows the runs and a run's report, and starts one.
    let console = ConsoleSession::sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let page = console.get("/console/gc").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&format!("<a href=\"/console/gc/{}\">{}</a>", run["id"], run["id"])), "{}", page.body);
    let report = console.get(&format!("/console/gc/{}", run["id"])).await;
    assert!(
        report.body.contains("<dd id=\"gc-blobs\">3 (") && report.body.contains(&image.layers[0].digest),
        "{}",
        report.body
    );
    let started = console.post_and_follow("/console/gc", &[("dry_run", "true")]).await;
    assert!(started.body.contains("Dry run") && started.body.contains("started"), "{}", started.body);
    let runs = http.get(&admin, "/api/v1/gc/runs").await.expect(200).json();
    assert_eq!((runs[0]["cause"].clone(), runs[0]["dry_run"].clone()), (json!("console"), json!(true)), "{runs}");
    finished_run(&http, runs[0]["id"].as_i64().expect("id")).await;
    let other = ConsoleSession::sign_in(&reg, "uma", "uma-password").await;
    assert_eq!(other.get("/console/gc").await.status, 403);

    // The OpenAPI document describes the endpoints.
    let doc = http.get(&Cred::Anonymous, "/api/v1/openapi.json").await.expect(200).json();
    for path in [
        "/api/v1/gc",
        "/api/v1/gc/runs",
        "/api/v1/gc/runs/{id}",
        "/api/v1/namespaces/{namespace}/quota",
        "/api/v1/namespaces/{namespace}/lifecycle/preview",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not in the OpenAPI document");
    }
    assert!(doc["paths"]["/api/v1/gc"]["post"]["requestBody"].is_object());
}

async fn the_schedule_starts_runs_and_one_run_at_a_time_holds(backend: Backend) {
    let reg = Registry::start_paired_with(
        backend,
        &[("DAMSELFLY_GC_GRACE_SECS", GRACE), ("DAMSELFLY_GC_INTERVAL_SECS", "2")],
    );
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let blob = Blob::new(pseudo_random(10_000, 30));
    push_blob(&http, &admin, "sched/app", &blob).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = http.get(&admin, "/api/v1/gc/runs").await.expect(200).json();
        let done: Vec<&Value> = runs.as_array().expect("runs").iter().filter(|r| r["state"] == "done").collect();
        if done.iter().any(|r| r["blobs_deleted"] == 1) {
            assert!(done.iter().all(|r| r["cause"] == "schedule" && r["actor"] == "system"), "{runs}");
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled run collected the blob within 30 s: {runs}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!stored_blobs(&reg).contains(&blob.digest));
    assert!(reg.log().contains("garbage collection finished"));
}

/// Unreferenced blobs the many-blob sweep deletes, and its batch size.
const MANY: usize = 1200;
const DELETE_BATCH: usize = 100;

async fn a_sweep_of_many_blobs_in_s3_frees_every_object_even_when_killed_mid_batch(backend: Backend) {
    let hold = tempfile::tempdir().expect("hold dir");
    let hold_dir = hold.path().display().to_string();
    let settings = [
        ("DAMSELFLY_GC_GRACE_SECS", GRACE),
        ("DAMSELFLY_GC_INTERVAL_SECS", "0"),
        ("DAMSELFLY_GC_TEST_HOLD_DIR", hold_dir.as_str()),
        ("DAMSELFLY_GC_DELETE_BATCH", "100"),
        ("DAMSELFLY_GC_DELETE_CONCURRENCY", "4"),
    ];
    let mut reg = Registry::start_on(backend, Storage::S3, &settings);
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let kept = PushedImage::new(
        "many/app",
        "kept",
        Blob::new(b"{\"config\":\"many\"}".to_vec()),
        vec![Blob::new(pseudo_random(70_000, 30)), Blob::new(pseudo_random(1_000, 31))],
    );
    push_image(&http, &admin, &kept).await;
    let garbage: Vec<Blob> = (0..MANY).map(|i| Blob::new(pseudo_random(512 + i % 700, 1000 + i as u64))).collect();
    let scratch = |i: usize| format!("many/scratch{}", i % 3);
    futures_util::stream::iter(garbage.iter().enumerate())
        .for_each_concurrent(16, |(i, b)| {
            let (http, admin, repo) = (&http, &admin, scratch(i));
            async move { push_blob(http, admin, &repo, b).await }
        })
        .await;
    let wanted: std::collections::BTreeSet<String> = kept.blobs().map(|b| b.digest.clone()).collect();
    let mut all = wanted.clone();
    all.extend(garbage.iter().map(|b| b.digest.clone()));
    assert_eq!(stored_blobs(&reg), all, "one object per blob, over a thousand in the bucket");
    past_grace().await;

    // Kill the registry once the first batch's objects are deleted and before its rows are.
    std::fs::write(hold.path().join("bytes-deleted"), "").expect("hold");
    let first = start_collection(&http).await.expect(202).json();
    reached(hold.path(), "bytes-deleted").await;
    reg.kill();
    std::fs::remove_file(hold.path().join("bytes-deleted")).expect("release");
    let left = stored_blobs(&reg);
    assert_eq!(left.len(), all.len() - DELETE_BATCH, "the whole first batch's objects went together");
    assert!(wanted.is_subset(&left), "nothing referenced was deleted");

    reg.start_again(&settings);
    let http = Http::new(&reg);
    pull_with_skopeo_and_compare(&reg, &kept);
    let started = Instant::now();
    let second = collect(&http, false).await;
    println!("a run over {MANY} blobs in S3 on {backend:?} took {:.2} s", started.elapsed().as_secs_f64());
    assert_eq!(second["details"]["pending_finished"], DELETE_BATCH, "{second}");
    assert_eq!(second["blobs_deleted"], MANY, "{second}");
    assert_eq!(second["errors"], 0, "{second}");
    assert_eq!(stored_blobs(&reg), wanted, "exactly the kept image's objects remain in the bucket");
    let first = http.get(&admin, &format!("/api/v1/gc/runs/{}", first["id"])).await.expect(200).json();
    assert_eq!(first["state"], "interrupted", "{first}");
    // Every row went with its object: a HEAD of any garbage blob says it is unknown.
    for (i, b) in garbage.iter().enumerate().step_by(97) {
        let head = http.request(&admin, Method::HEAD, &format!("/v2/{}/blobs/{}", scratch(i), b.digest));
        assert_eq!(http.send(head).await.status, 404, "{}", b.digest);
    }
    pull_with_skopeo_and_compare(&reg, &kept);
}
