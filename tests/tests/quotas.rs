//! Quotas per tenant and per namespace, through the real registry on both
//! metadata backends with their paired blob stores: exact accounting with
//! layers shared between repositories and namespaces, refusal at blob and at
//! manifest commit with `DENIED` and nothing left behind, a raised quota
//! counting at once, the repository count, who may set what, and use shown
//! in the API, the console and the metrics.

use std::time::Duration;

use damselfly_tests::http::{create_namespace, create_tenant, create_user, grant_role, Cred, Http};
use damselfly_tests::image::{push_blob, push_manifest, Blob, OCI_MANIFEST};
use damselfly_tests::storage::{collect, namespace_use, push_image, stored_blobs, ConsoleSession, PushedImage};
use damselfly_tests::{metric_value, on_both_backends, pseudo_random, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(
    use_counts_shared_layers_once_per_namespace_and_a_quota_refuses_at_commit_leaving_nothing,
    who_may_set_quotas_and_see_use,
);

fn bytes_of(images: &[&PushedImage]) -> i64 {
    let mut seen = std::collections::BTreeMap::new();
    for b in images.iter().flat_map(|i| i.blobs()) {
        seen.insert(b.digest.clone(), b.bytes.len() as i64);
    }
    seen.values().sum::<i64>() + images.iter().map(|i| i.manifest.len() as i64).sum::<i64>()
}

async fn quota(http: &Http, path: &str, limit_bytes: Option<i64>, limit_repositories: Option<i64>) -> Value {
    let body = json!({ "limit_bytes": limit_bytes, "limit_repositories": limit_repositories });
    http.admin_api(Method::PUT, path, body).await
}

fn image(repo: &str, tag: &str, seed: u64, shared: &Blob, own: usize) -> PushedImage {
    PushedImage::new(
        repo,
        tag,
        Blob::new(format!("{{\"config\":\"{repo}:{tag}\"}}")),
        vec![shared.clone(), Blob::new(pseudo_random(own, seed))],
    )
}

async fn use_counts_shared_layers_once_per_namespace_and_a_quota_refuses_at_commit_leaving_nothing(backend: Backend) {
    let reg = Registry::start_paired_with(
        backend,
        &[
            ("DAMSELFLY_GC_GRACE_SECS", "1"),
            ("DAMSELFLY_GC_INTERVAL_SECS", "0"),
            ("DAMSELFLY_METRICS_TENANT_LABELS", "true"),
        ],
    );
    let http = Http::new(&reg);
    let admin = Cred::admin();
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "team", false).await;
    create_namespace(&http, "acme", "other", false).await;
    let shared = Blob::new(pseudo_random(100_000, 1));
    let a = image("team/a", "v1", 2, &shared, 30_000);
    let b = image("team/b", "v1", 3, &shared, 20_000);
    let c = image("other/c", "v1", 4, &shared, 10_000);
    for i in [&a, &b, &c] {
        push_image(&http, &admin, i).await;
    }
    // The shared layer counts once in team, once in other: twice for the tenant.
    let team = bytes_of(&[&a, &b]);
    assert_eq!(namespace_use(&http, "team").await, (team, 2));
    assert_eq!(namespace_use(&http, "other").await, (bytes_of(&[&c]), 1));
    let tenant = http.admin_api(Method::GET, "/api/v1/tenants/acme/quota", Value::Null).await;
    assert_eq!(
        (tenant["used_bytes"].as_i64(), tenant["used_repositories"].as_i64()),
        (Some(team + bytes_of(&[&c])), Some(3))
    );
    assert_eq!(tenant["limit_bytes"], Value::Null);
    let page = reqwest::get(format!("{}/metrics", reg.url)).await.expect("metrics").text().await.expect("text");
    assert_eq!(
        metric_value(&page, "damselfly_namespace_storage_bytes{tenant=\"acme\",namespace=\"team\"}"),
        team as f64
    );
    assert_eq!(metric_value(&page, "damselfly_tenant_repositories{tenant=\"acme\"}"), 3.0);

    // A limit 50 KB above the use: a 100 KB layer is refused, whichever way it is sent, and nothing of it stays.
    let set = quota(&http, "/api/v1/namespaces/team/quota", Some(team + 50_000), None).await;
    assert_eq!((set["limit_bytes"].as_i64(), set["used_bytes"].as_i64()), (Some(team + 50_000), Some(team)));
    let big = Blob::new(pseudo_random(100_000, 5));
    let path = format!("/v2/team/a/blobs/uploads/?digest={}", big.digest);
    let refused = http.send(http.request(&admin, Method::POST, &path).body(big.bytes.clone())).await;
    assert_eq!(refused.status_and_code(), (403, Some("DENIED".to_owned())), "{}", refused.text());
    let said = refused.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
    for part in [
        "storage quota of namespace team",
        &format!("({team} bytes) used"),
        &format!("({} bytes), and it adds", team + 50_000),
        "(100000 bytes)",
    ] {
        assert!(said.contains(part), "{part:?} not in {said:?}");
    }
    let session = http.send(http.request(&admin, Method::POST, "/v2/team/a/blobs/uploads/")).await.expect(202);
    let location = session.header("location").expect("Location").to_owned();
    let patch = http.request(&admin, Method::PATCH, &location).body(big.bytes.clone());
    let location = http.send(patch).await.expect(202).header("location").expect("Location").to_owned();
    let finish = http.request(&admin, Method::PUT, &format!("{location}?digest={}", big.digest));
    let refused = http.send(finish).await;
    assert_eq!(refused.status_and_code(), (403, Some("DENIED".to_owned())), "{}", refused.text());
    assert_eq!(http.get(&admin, &location).await.status_and_code(), (404, Some("BLOB_UPLOAD_UNKNOWN".to_owned())));
    assert_eq!(
        http.send(http.request(&admin, Method::HEAD, &format!("/v2/team/a/blobs/{}", big.digest))).await.status,
        404
    );
    assert!(!stored_blobs(&reg).contains(&big.digest), "a refused blob's bytes are not kept");
    if reg.bucket.is_none() {
        let sessions = std::fs::read_dir(reg.data_dir.join("uploads")).expect("uploads").count();
        assert_eq!(sessions, 0, "the refused session's bytes are gone");
    }
    assert_eq!(namespace_use(&http, "team").await, (team, 2));

    // A blob that fits, under a manifest that does not: the manifest is refused, and no tag appears.
    let small = Blob::new(pseudo_random(40_000, 6));
    let d = PushedImage::new("team/a", "v2", a.config.clone(), vec![shared.clone(), small.clone()]);
    push_blob(&http, &admin, "team/a", &small).await;
    let now = namespace_use(&http, "team").await.0;
    assert_eq!(now, team + 40_000);
    quota(&http, "/api/v1/namespaces/team/quota", Some(now), None).await;
    let put = push_manifest(&http, &admin, "team/a", "v2", OCI_MANIFEST, &d.manifest).await;
    assert_eq!(put.status_and_code(), (403, Some("DENIED".to_owned())), "{}", put.text());
    assert!(
        put.text().contains("storing this manifest would exceed the storage quota of namespace team"),
        "{}",
        put.text()
    );
    assert_eq!(http.get(&admin, "/v2/team/a/manifests/v2").await.status, 404);
    assert_eq!(namespace_use(&http, "team").await, (now, 2));

    // Raised, it counts at once.
    quota(&http, "/api/v1/namespaces/team/quota", Some(now + d.manifest.len() as i64), None).await;
    push_manifest(&http, &admin, "team/a", "v2", OCI_MANIFEST, &d.manifest).await.expect(201);
    assert_eq!(namespace_use(&http, "team").await, (now + d.manifest.len() as i64, 2));

    // A repository count on the tenant: a fourth repository is refused, an existing one still takes pushes.
    quota(&http, "/api/v1/tenants/acme/quota", None, Some(3)).await;
    let extra = Blob::new(pseudo_random(1_000, 7));
    let refused = http
        .send(
            http.request(&admin, Method::POST, &format!("/v2/other/new/blobs/uploads/?digest={}", extra.digest))
                .body(extra.bytes.clone()),
        )
        .await;
    assert_eq!(refused.status_and_code(), (403, Some("DENIED".to_owned())), "{}", refused.text());
    assert!(refused.text().contains("repository quota of tenant acme: 3 of a limit of 3"), "{}", refused.text());
    push_blob(&http, &admin, "other/c", &extra).await;

    // Deleting frees a manifest's bytes at once, and blobs nothing references any more at the next collection.
    http.send(http.request(&admin, Method::DELETE, &format!("/v2/team/b/manifests/{}", b.digest))).await.expect(202);
    let after_delete = namespace_use(&http, "team").await;
    assert_eq!(after_delete.0, now + d.manifest.len() as i64 - b.manifest.len() as i64);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let run = collect(&http, false).await;
    assert_eq!(run["details"]["usage_corrections"], json!([]), "the use kept between runs was exact: {run}");
    let left = after_delete.0 - (b.config.bytes.len() + b.layers[1].bytes.len()) as i64;
    assert_eq!(namespace_use(&http, "team").await, (left, 1), "team/b holds nothing now");
}

async fn who_may_set_quotas_and_see_use(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let http = Http::new(&reg);
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "team", false).await;
    create_user(&http, "ada", "ada-password").await;
    create_user(&http, "vic", "vic-password").await;
    grant_role(&http, "acme", "user", "ada", None, "admin").await;
    grant_role(&http, "acme", "user", "vic", Some("team"), "viewer").await;
    let ada = Cred::basic("ada", "ada-password");
    let vic = Cred::basic("vic", "vic-password");
    let body = json!({ "limit_bytes": 1_000_000 });
    // A tenant admin divides the tenant's quota among its namespaces, but does not set the tenant's.
    let r = http.api(&ada, Method::PUT, "/api/v1/namespaces/team/quota", body.clone()).await.expect(200).json();
    assert_eq!(r["limit_bytes"], 1_000_000);
    let r = http.api(&ada, Method::PUT, "/api/v1/tenants/acme/quota", body.clone()).await;
    assert_eq!(r.status_and_code(), (403, Some("DENIED".to_owned())), "{}", r.text());
    // A viewer reads the use, and sets nothing.
    let r = http.api(&vic, Method::GET, "/api/v1/namespaces/team/quota", Value::Null).await.expect(200).json();
    assert_eq!((r["limit_bytes"].clone(), r["used_bytes"].clone()), (json!(1_000_000), json!(0)));
    let r = http.api(&vic, Method::PUT, "/api/v1/namespaces/team/quota", body.clone()).await;
    assert_eq!(r.status_and_code(), (403, Some("DENIED".to_owned())), "{}", r.text());
    let bad = http.api(&Cred::admin(), Method::PUT, "/api/v1/tenants/acme/quota", json!({ "limit_bytes": -1 })).await;
    assert_eq!(bad.status_and_code(), (400, Some("INVALID_REQUEST".to_owned())), "{}", bad.text());
    let events = damselfly_tests::http::audit(&http, &[("action", "quota.update")]).await;
    let outcomes: Vec<(String, String)> = events
        .iter()
        .map(|e| (e["actor"].as_str().unwrap_or("").to_owned(), e["outcome"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert!(
        outcomes.contains(&("ada".into(), "success".into())) && outcomes.contains(&("ada".into(), "denied".into())),
        "{events:?}"
    );

    // The console shows the use and lets the system administrator set the tenant's quota.
    let console = ConsoleSession::sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let page = console
        .post_and_follow("/console/tenants/acme/storage/quota", &[("limit_mib", "5"), ("limit_repositories", "")])
        .await;
    assert!(page.body.contains("Quota of tenant acme set"), "{}", page.body);
    assert!(page.body.contains("<dd id=\"usage-bytes\">0 B of 5.0 MiB (0%)</dd>"), "{}", page.body);
    let q = http.admin_api(Method::GET, "/api/v1/tenants/acme/quota", Value::Null).await;
    assert_eq!((q["limit_bytes"].clone(), q["limit_repositories"].clone()), (json!(5 * 1024 * 1024), Value::Null));
    let viewer = ConsoleSession::sign_in(&reg, "vic", "vic-password").await;
    let page = viewer.get("/console/namespaces/team/storage").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("0 B of 976.6 KiB (0%)") && !page.body.contains("id=\"set-quota\""), "{}", page.body);
    let refused = viewer.post("/console/namespaces/team/storage/quota", &[("limit_mib", "9")]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
}
