//! Namespaces' lifecycle policies through the real registry, on both
//! metadata backends with their paired blob stores: retention rules (keep
//! the newest N tags matching a pattern; delete tags not pulled for D days)
//! with their dry-run listing, immutable tags, and the untagged-manifest
//! policy, applied by garbage collection runs. Days are made to pass by
//! ageing the rows' timestamps in the registry's database.

use std::time::Duration;

use damselfly_registry::metadata::Db;
use damselfly_tests::http::{Cred, Http};
use damselfly_tests::image::{push_manifest, Blob, OCI_INDEX, OCI_MANIFEST};
use damselfly_tests::storage::{
    collect, pull_with_skopeo_and_compare, push_image, stored_blobs, ConsoleSession, PushedImage,
};
use damselfly_tests::{on_both_backends, pseudo_random, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(
    retention_keeps_the_newest_tags_and_lists_what_would_go_before_it_deletes,
    tags_not_pulled_for_days_go_and_a_pull_keeps_one,
    immutable_tags_are_never_moved_or_deleted,
    untagged_manifests_go_after_their_days_unless_an_index_lists_them,
);

const DAY: i64 = 86_400;

fn registry(backend: Backend) -> Registry {
    Registry::start_paired_with(backend, &[("DAMSELFLY_GC_GRACE_SECS", "1"), ("DAMSELFLY_GC_INTERVAL_SECS", "0")])
}

fn image(repo: &str, tag: &str, seed: u64) -> PushedImage {
    PushedImage::new(
        repo,
        tag,
        Blob::new(format!("{{\"config\":\"{repo}:{tag}\"}}")),
        vec![Blob::new(pseudo_random(20_000 + seed as usize, seed))],
    )
}

async fn set_policy(http: &Http, namespace: &str, policy: Value) -> Value {
    http.admin_api(Method::PUT, &format!("/api/v1/namespaces/{namespace}/lifecycle"), policy).await
}

async fn preview(http: &Http, namespace: &str) -> Value {
    http.admin_api(Method::GET, &format!("/api/v1/namespaces/{namespace}/lifecycle/preview"), Value::Null).await
}

fn listed(v: &Value, key: &str, field: &str) -> Vec<String> {
    let mut out: Vec<String> =
        v[key].as_array().expect(key).iter().map(|e| e[field].as_str().unwrap_or("").to_owned()).collect();
    out.sort();
    out
}

/// Runs `sql` (with `$1` the time `days_ago` days back) on the registry's database.
async fn age(reg: &Registry, sql: &str, days_ago: i64) {
    let db = Db::open(&reg.database_url, 1).await.expect("the registry's database");
    let at = damselfly_registry::metadata::now() - days_ago * DAY;
    sqlx::query(sql).bind(at).execute(db.pool()).await.expect(sql);
    db.close().await;
}

async fn past_grace() {
    tokio::time::sleep(Duration::from_millis(2100)).await;
}

async fn retention_keeps_the_newest_tags_and_lists_what_would_go_before_it_deletes(backend: Backend) {
    let reg = registry(backend);
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let mut images = Vec::new();
    for n in 1..=5u64 {
        let i = image("rel/app", &format!("v{n}"), n);
        push_image(&http, &admin, &i).await;
        images.push(i);
        // Push times a second apart, so that "newest" is well defined.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let latest = PushedImage { tag: "latest".into(), ..images[4].clone() };
    push_image(&http, &admin, &latest).await;
    // A signature of v1: it goes with its subject.
    let signature =
        PushedImage::new("rel/app", "unused", Blob::new(b"{}".to_vec()), vec![Blob::new(b"signature of v1".to_vec())]);
    let mut sig: Value = serde_json::from_str(&signature.manifest).expect("json");
    sig["subject"] = json!({ "mediaType": OCI_MANIFEST, "digest": images[0].digest, "size": images[0].manifest.len() });
    let sig = sig.to_string();
    let sig_digest = damselfly_tests::sha256_digest(sig.as_bytes());
    for b in signature.blobs() {
        damselfly_tests::storage::push_blob_if_missing(&http, &admin, "rel/app", b).await;
    }
    push_manifest(&http, &admin, "rel/app", &sig_digest, OCI_MANIFEST, &sig).await.expect(201);

    let bad = http
        .api(&admin, Method::PUT, "/api/v1/namespaces/rel/lifecycle", json!({ "retention": [{ "tags": "v*" }] }))
        .await;
    assert_eq!(bad.status_and_code(), (400, Some("INVALID_REQUEST".to_owned())));
    assert!(bad.text().contains("exactly one of keep_newest"), "{}", bad.text());
    let stored = set_policy(&http, "rel", json!({ "retention": [{ "tags": "v*", "keep_newest": 2 }] })).await;
    assert_eq!(stored["retention"], json!([{ "tags": "v*", "keep_newest": 2 }]));

    // The dry run lists what would go: v1-v3, their manifests, and v1's signature; nothing is deleted.
    let would = preview(&http, "rel").await;
    assert_eq!(listed(&would, "tags", "tag"), ["v1", "v2", "v3"]);
    assert_eq!(would["tags"][0]["reason"], json!({ "not_among_newest": { "tags": "v*", "keep": 2 } }));
    let mut gone: Vec<String> =
        vec![images[0].digest.clone(), images[1].digest.clone(), images[2].digest.clone(), sig_digest.clone()];
    gone.sort();
    assert_eq!(listed(&would, "manifests", "digest"), gone);
    let dry = collect(&http, true).await;
    assert_eq!((dry["tags_deleted"].clone(), dry["manifests_deleted"].clone()), (json!(3), json!(4)), "{dry}");
    assert_eq!(
        http.get(&admin, "/v2/rel/app/tags/list").await.expect(200).json()["tags"],
        json!(["latest", "v1", "v2", "v3", "v4", "v5"])
    );

    // The run deletes them, and the blobs only they held go in the same run once past the grace.
    past_grace().await;
    let run = collect(&http, false).await;
    assert_eq!((run["tags_deleted"].clone(), run["manifests_deleted"].clone()), (json!(3), json!(4)), "{run}");
    assert_eq!(
        http.get(&admin, "/v2/rel/app/tags/list").await.expect(200).json()["tags"],
        json!(["latest", "v4", "v5"])
    );
    for d in &gone {
        assert_eq!(http.get(&admin, &format!("/v2/rel/app/manifests/{d}")).await.status, 404, "{d} is gone");
    }
    let stored = stored_blobs(&reg);
    for i in &images[..3] {
        assert!(i.blobs().all(|b| !stored.contains(&b.digest)), "{}'s blobs are freed", i.tag);
    }
    for i in &images[3..] {
        pull_with_skopeo_and_compare(&reg, i);
    }
    pull_with_skopeo_and_compare(&reg, &latest);
    let events = damselfly_tests::http::audit(&http, &[("action", "namespace.lifecycle_applied")]).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["tenant"], "default");
    assert_eq!(events[0]["detail"]["tags_deleted"], json!(["rel/app:v1", "rel/app:v2", "rel/app:v3"]));
    assert!(preview(&http, "rel").await["tags"].as_array().expect("tags").is_empty());

    // The console shows the policy and its listing, and adds a rule.
    let console = ConsoleSession::sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let page = console
        .post_and_follow(
            "/console/namespaces/rel/storage/rules",
            &[("repositories", "app"), ("tags", "latest"), ("kind", "keep_newest"), ("number", "1")],
        )
        .await;
    assert!(
        page.body.contains("tags v*: keep the newest 2")
            && page.body.contains("tags latest in repositories app: keep the newest 1"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Nothing: the policy keeps everything stored now."), "{}", page.body);
    let page = console
        .post_and_follow(
            "/console/namespaces/rel/storage/rules",
            &[("tags", "v*"), ("kind", "keep_newest"), ("number", "1")],
        )
        .await;
    assert!(
        page.body.contains("<table id=\"preview-tags\">") && page.body.contains("<td>rel/app</td><td>v4</td>"),
        "{}",
        page.body
    );
    let page = console
        .post_and_follow(
            "/console/namespaces/rel/storage/rules",
            &[("tags", "["), ("kind", "keep_newest"), ("number", "1")],
        )
        .await;
    assert!(
        page.body.contains("is not a pattern"),
        "a pattern that does not parse comes back with the reason: {}",
        page.body
    );
}

async fn tags_not_pulled_for_days_go_and_a_pull_keeps_one(backend: Backend) {
    let reg = registry(backend);
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let (a, b, fresh) =
        (image("old/app", "build-a", 1), image("old/app", "build-b", 2), image("old/app", "build-c", 3));
    for i in [&a, &b, &fresh] {
        push_image(&http, &admin, i).await;
    }
    set_policy(&http, "old", json!({ "retention": [{ "tags": "build-*", "not_pulled_for_days": 30 }] })).await;
    assert!(preview(&http, "old").await["tags"].as_array().expect("tags").is_empty(), "just pushed, nothing is old");
    // Forty days pass for build-a and build-b; build-b is pulled today.
    age(&reg, "UPDATE tags SET updated_at = $1 WHERE name IN ('build-a', 'build-b')", 40).await;
    http.get(&admin, "/v2/old/app/manifests/build-b").await.expect(200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while listed(&preview(&http, "old").await, "tags", "tag") != ["build-a"] {
        assert!(
            std::time::Instant::now() < deadline,
            "the pull of build-b was not recorded: {}",
            preview(&http, "old").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        preview(&http, "old").await["tags"][0]["reason"],
        json!({ "not_pulled_for": { "tags": "build-*", "days": 30 } })
    );
    past_grace().await;
    let run = collect(&http, false).await;
    assert_eq!((run["tags_deleted"].clone(), run["manifests_deleted"].clone()), (json!(1), json!(1)), "{run}");
    assert_eq!(
        http.get(&admin, "/v2/old/app/tags/list").await.expect(200).json()["tags"],
        json!(["build-b", "build-c"])
    );
    pull_with_skopeo_and_compare(&reg, &b);
    assert!(a.blobs().all(|x| !stored_blobs(&reg).contains(&x.digest)));
}

async fn immutable_tags_are_never_moved_or_deleted(backend: Backend) {
    let reg = registry(backend);
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let (one, two) = (image("imm/app", "release-1", 1), image("imm/app", "release-1", 2));
    push_image(&http, &admin, &one).await;
    set_policy(
        &http,
        "imm",
        json!({ "immutable_tags": ["release-*"], "retention": [{ "tags": "*", "keep_newest": 1 }] }),
    )
    .await;
    let other = image("imm/app", "latest", 3);
    push_image(&http, &admin, &other).await;
    // Moving it is refused with the reason; pushing the same manifest again is fine.
    for b in two.blobs() {
        damselfly_tests::storage::push_blob_if_missing(&http, &admin, "imm/app", b).await;
    }
    let moved = push_manifest(&http, &admin, "imm/app", "release-1", OCI_MANIFEST, &two.manifest).await;
    assert_eq!(moved.status_and_code(), (403, Some("DENIED".to_owned())), "{}", moved.text());
    let said = moved.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        said.contains("tag release-1 of imm/app is immutable")
            && said.contains("\"release-*\"")
            && said.contains("push under a new tag"),
        "{said}"
    );
    assert_eq!(moved.json()["errors"][0]["detail"]["current"], one.digest.as_str());
    push_manifest(&http, &admin, "imm/app", "release-1", OCI_MANIFEST, &one.manifest).await.expect(201);
    assert!(
        http.get(&admin, &format!("/v2/imm/app/manifests/{}", two.digest)).await.status == 404,
        "nothing of the refused push stays"
    );
    // Deleting the tag, or its manifest, is refused too.
    let r = http.send(http.request(&admin, Method::DELETE, "/v2/imm/app/manifests/release-1")).await;
    assert_eq!(r.status_and_code(), (403, Some("DENIED".to_owned())), "{}", r.text());
    let r = http.send(http.request(&admin, Method::DELETE, &format!("/v2/imm/app/manifests/{}", one.digest))).await;
    assert_eq!(r.status_and_code(), (403, Some("DENIED".to_owned())), "{}", r.text());
    // Retention leaves it: "keep the newest 1 of *" would otherwise take it.
    assert!(preview(&http, "imm").await["tags"].as_array().expect("tags").is_empty());
    past_grace().await;
    collect(&http, false).await;
    pull_with_skopeo_and_compare(&reg, &one);
    pull_with_skopeo_and_compare(&reg, &other);
    // The console deletes no immutable tag either.
    let console = ConsoleSession::sign_in(&reg, ADMIN_USER, ADMIN_PASSWORD).await;
    let r = console
        .post(
            "/console/repository/delete-tag",
            &[("repository", "imm/app"), ("tag", "release-1"), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

async fn untagged_manifests_go_after_their_days_unless_an_index_lists_them(backend: Backend) {
    let reg = registry(backend);
    let http = Http::new(&reg);
    let admin = Cred::admin();
    let (old, young, child) = (image("unt/app", "x", 1), image("unt/app", "y", 2), image("unt/app", "z", 3));
    for i in [&old, &young, &child] {
        for b in i.blobs() {
            damselfly_tests::storage::push_blob_if_missing(&http, &admin, "unt/app", b).await;
        }
        push_manifest(&http, &admin, "unt/app", &i.digest, OCI_MANIFEST, &i.manifest).await.expect(201);
    }
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        { "mediaType": OCI_MANIFEST, "digest": child.digest, "size": child.manifest.len(), "platform": { "os": "linux", "architecture": "amd64" } }
    ]})
    .to_string();
    push_manifest(&http, &admin, "unt/app", "multi", OCI_INDEX, &index).await.expect(201);
    // Off by default: nothing untagged goes.
    assert!(preview(&http, "unt").await["manifests"].as_array().expect("manifests").is_empty());
    set_policy(&http, "unt", json!({ "untagged_days": 7 })).await;
    age(
        &reg,
        &format!("UPDATE manifests SET untagged_at = $1 WHERE digest IN ('{}', '{}')", old.digest, child.digest),
        8,
    )
    .await;
    assert_eq!(
        listed(&preview(&http, "unt").await, "manifests", "digest"),
        [old.digest.clone()],
        "the index keeps its child"
    );
    past_grace().await;
    let run = collect(&http, false).await;
    assert_eq!(run["manifests_deleted"], 1, "{run}");
    assert_eq!(http.get(&admin, &format!("/v2/unt/app/manifests/{}", old.digest)).await.status, 404);
    for kept in [&young.digest, &child.digest] {
        http.get(&admin, &format!("/v2/unt/app/manifests/{kept}")).await.expect(200);
    }
    let stored = stored_blobs(&reg);
    assert!(old.blobs().all(|b| !stored.contains(&b.digest)) && child.blobs().all(|b| stored.contains(&b.digest)));
}
