//! Tenants that cannot see or touch each other on a real
//! `damselfly-registry`: every read, write and delete on another tenant's
//! repositories, uploads, digests and management objects is refused, the
//! catalog lists only what the caller may see, and public namespaces are
//! pulled by anyone, on both metadata backends.
//!
//! Tenants, namespaces, users, roles and robots are made through the
//! management API (`/api/v1/…`) as the system administrator `admin`; the
//! HTTP client and those calls are `damselfly_tests::http`'s.
//!
//! Each scenario is an `async fn(Backend)`; `on_both_backends!` turns it into
//! `<scenario>::sqlite` and `<scenario>::postgres`.

use damselfly_tests::http::{
    challenge, create_namespace, create_robot, create_tenant, create_user, grant_role, management_api_is_up, Cred, Http,
};
use damselfly_tests::image::{
    push_blob, push_image, push_manifest, Blob, Image, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use damselfly_tests::{on_both_backends, sha256_digest, Backend, Registry};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(
    nobody_can_read_write_or_delete_in_another_tenant_s_repositories,
    a_cross_tenant_mount_falls_back_to_an_upload_and_links_nothing,
    knowing_another_tenant_s_digests_and_upload_ids_gives_nothing,
    the_catalog_lists_only_own_and_public_repositories,
    the_management_api_refuses_reads_and_writes_on_another_tenant,
    a_public_namespace_is_pulled_by_anyone_and_pushed_by_members_only,
);

/// Two tenants as their admins would set them up:
///
/// | tenant | namespace  | public | image (by the admin)   | members, tenant-wide           |
/// |--------|------------|--------|------------------------|--------------------------------|
/// | alpha  | alpha-apps | no     | alpha-apps/app:v1 (+1) | developers alice, robot$alpha+ci |
/// | alpha  | alpha-pub  | yes    | alpha-pub/app:v1 (+1)  |                                |
/// | beta   | beta-apps  | no     | beta-apps/app:v1 (+1)  | developers bob, robot$beta+ci  |
///
/// (+1: a signature referring to the image), and, in each private
/// repository, an upload session the admin left open holding three bytes.
struct World {
    reg: Registry,
    http: Http,
    alice: Cred,
    alpha_robot: Cred,
    bob: Cred,
    beta_robot: Cred,
    alpha_app: Image,
    alpha_pub: Image,
    beta_app: Image,
    alpha_upload: String,
    beta_upload: String,
}

impl World {
    async fn build(backend: Backend) -> World {
        let reg = Registry::start(backend);
        let http = Http::new(&reg);
        management_api_is_up(&http).await;
        for (tenant, namespaces) in
            [("alpha", &[("alpha-apps", false), ("alpha-pub", true)][..]), ("beta", &[("beta-apps", false)][..])]
        {
            create_tenant(&http, tenant).await;
            for (ns, public) in namespaces {
                create_namespace(&http, tenant, ns, *public).await;
            }
        }
        create_user(&http, "alice", "alice-password").await;
        grant_role(&http, "alpha", "user", "alice", None, "developer").await;
        create_user(&http, "bob", "bob-password").await;
        grant_role(&http, "beta", "user", "bob", None, "developer").await;
        let alpha_robot = create_robot(&http, "alpha", "ci", json!([{ "role": "developer" }])).await;
        let beta_robot = create_robot(&http, "beta", "ci", json!([{ "role": "developer" }])).await;
        let admin = Cred::admin();
        let alpha_app = push_image(&http, &admin, "alpha-apps/app", "alpha private").await;
        let alpha_pub = push_image(&http, &admin, "alpha-pub/app", "alpha public").await;
        let beta_app = push_image(&http, &admin, "beta-apps/app", "beta private").await;
        let mut uploads = Vec::new();
        for repo in ["alpha-apps/app", "beta-apps/app"] {
            let started =
                http.send(http.request(&admin, Method::POST, &format!("/v2/{repo}/blobs/uploads/"))).await.expect(202);
            let location = started.header("location").expect("Location").to_owned();
            http.send(
                http.request(&admin, Method::PATCH, &location)
                    .header("content-type", "application/octet-stream")
                    .body(b"abc".to_vec()),
            )
            .await
            .expect(202);
            uploads.push(location);
        }
        let beta_upload = uploads.pop().expect("beta upload");
        let alpha_upload = uploads.pop().expect("alpha upload");
        World {
            reg,
            http,
            alice: Cred::basic("alice", "alice-password"),
            alpha_robot,
            bob: Cred::basic("bob", "bob-password"),
            beta_robot,
            alpha_app,
            alpha_pub,
            beta_app,
            alpha_upload,
            beta_upload,
        }
    }

    /// The principals of one tenant, each with what is theirs and what is the other tenant's.
    fn outsiders(&self) -> Vec<(&'static str, Cred, Option<&Image>, &Image, &str)> {
        vec![
            (
                "alice (user of alpha)",
                self.alice.clone(),
                Some(&self.alpha_app),
                &self.beta_app,
                self.beta_upload.as_str(),
            ),
            (
                "robot$alpha+ci",
                self.alpha_robot.clone(),
                Some(&self.alpha_app),
                &self.beta_app,
                self.beta_upload.as_str(),
            ),
            ("bob (user of beta)", self.bob.clone(), Some(&self.beta_app), &self.alpha_app, self.alpha_upload.as_str()),
            (
                "robot$beta+ci",
                self.beta_robot.clone(),
                Some(&self.beta_app),
                &self.alpha_app,
                self.alpha_upload.as_str(),
            ),
            ("anonymous, against beta", Cred::Anonymous, None, &self.beta_app, self.beta_upload.as_str()),
            ("anonymous, against alpha", Cred::Anonymous, None, &self.alpha_app, self.alpha_upload.as_str()),
        ]
    }

    /// The credentials to try for a principal: its Basic credentials (or
    /// none), and a bearer token it got asking for everything in `scopes`.
    /// The token must grant exactly `granted`.
    async fn credentials(&self, who: &str, basic: &Cred, scopes: &[String], granted: &str) -> Vec<Cred> {
        let asked: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let (token, scope) = self.http.token(basic, &asked).await;
        assert_eq!(scope, granted, "{who} asked for {asked:?}");
        vec![basic.clone(), Cred::Bearer(token)]
    }

    /// Everything the admin sees of an image: it must not change under attempts that were refused.
    async fn state_of(&self, image: &Image, upload: &str) -> Vec<String> {
        let admin = Cred::admin();
        let http = &self.http;
        vec![
            http.get(&admin, &format!("/v2/{}/tags/list", image.repo)).await.expect(200).text(),
            http.get(&admin, &image.manifest_path("v1")).await.expect(200).text(),
            http.get(&admin, &image.manifest_path(&image.digest)).await.expect(200).text(),
            sha256_digest(&http.get(&admin, &image.blob_path(&image.layer.digest)).await.expect(200).body),
            sha256_digest(&http.get(&admin, &image.blob_path(&image.config.digest)).await.expect(200).body),
            http.get(&admin, &format!("/v2/{}/referrers/{}", image.repo, image.digest)).await.expect(200).text(),
            http.get(&admin, upload).await.expect(204).header("range").unwrap_or_default().to_owned(),
            http.get(&admin, "/v2/_catalog").await.expect(200).text(),
        ]
    }
}

/// A request someone without rights to `repo` makes, and the action its challenge names.
struct Attempt {
    what: String,
    method: Method,
    path: String,
    body: Option<(Vec<u8>, &'static str)>,
    repo: String,
    actions: &'static str,
}

impl Attempt {
    fn new(what: &str, method: Method, path: String, repo: &str, actions: &'static str) -> Attempt {
        Attempt { what: what.to_owned(), method, path, body: None, repo: repo.to_owned(), actions }
    }

    fn with_body(mut self, bytes: Vec<u8>, content_type: &'static str) -> Attempt {
        self.body = Some((bytes, content_type));
        self
    }
}

/// Every read, write and delete on another tenant's repository (and on an
/// upload session open in it), on a repository that does not exist in its
/// namespace, and on a namespace nobody created.
fn attempts_on(image: &Image, upload: Option<&str>) -> Vec<Attempt> {
    let repo = image.repo.as_str();
    let ns = repo.split('/').next().expect("namespace");
    let absent = format!("{ns}/nothing-here");
    let evil = image.manifest.replacen('{', "{\"annotations\":{\"by\":\"intruder\"},", 1);
    let mut attempts = vec![
        Attempt::new("GET manifest by tag", Method::GET, image.manifest_path("v1"), repo, "pull"),
        Attempt::new("HEAD manifest by tag", Method::HEAD, image.manifest_path("v1"), repo, "pull"),
        Attempt::new("GET manifest by digest", Method::GET, image.manifest_path(&image.digest), repo, "pull"),
        Attempt::new("HEAD manifest by digest", Method::HEAD, image.manifest_path(&image.digest), repo, "pull"),
        Attempt::new("GET manifest by an unknown tag", Method::GET, image.manifest_path("nope"), repo, "pull"),
        Attempt::new("GET layer", Method::GET, image.blob_path(&image.layer.digest), repo, "pull"),
        Attempt::new("HEAD layer", Method::HEAD, image.blob_path(&image.layer.digest), repo, "pull"),
        Attempt::new("GET config", Method::GET, image.blob_path(&image.config.digest), repo, "pull"),
        Attempt::new("GET tag list", Method::GET, format!("/v2/{repo}/tags/list"), repo, "pull"),
        Attempt::new("GET referrers", Method::GET, format!("/v2/{repo}/referrers/{}", image.digest), repo, "pull"),
        Attempt::new("POST upload session", Method::POST, format!("/v2/{repo}/blobs/uploads/"), repo, "pull,push"),
        Attempt::new(
            "POST monolithic upload",
            Method::POST,
            format!("/v2/{repo}/blobs/uploads/?digest={}", sha256_digest(b"evil")),
            repo,
            "pull,push",
        )
        .with_body(b"evil".to_vec(), "application/octet-stream"),
        Attempt::new(
            "POST mount within the repository",
            Method::POST,
            format!("/v2/{repo}/blobs/uploads/?mount={}&from={repo}", image.layer.digest),
            repo,
            "pull,push",
        ),
        Attempt::new("PUT manifest under a new tag", Method::PUT, image.manifest_path("evil"), repo, "pull,push")
            .with_body(evil.clone().into_bytes(), OCI_MANIFEST),
        Attempt::new("PUT manifest over the tag v1", Method::PUT, image.manifest_path("v1"), repo, "pull,push")
            .with_body(evil.into_bytes(), OCI_MANIFEST),
        Attempt::new("DELETE manifest by tag", Method::DELETE, image.manifest_path("v1"), repo, "delete"),
        Attempt::new("DELETE manifest by digest", Method::DELETE, image.manifest_path(&image.digest), repo, "delete"),
        Attempt::new("DELETE referrer", Method::DELETE, image.manifest_path(&image.referrer), repo, "delete"),
        Attempt::new("DELETE layer", Method::DELETE, image.blob_path(&image.layer.digest), repo, "delete"),
        Attempt::new(
            "GET tag list of an absent repository",
            Method::GET,
            format!("/v2/{absent}/tags/list"),
            &absent,
            "pull",
        ),
        Attempt::new(
            "GET manifest of an absent repository",
            Method::GET,
            format!("/v2/{absent}/manifests/v1"),
            &absent,
            "pull",
        ),
        Attempt::new(
            "POST upload to an absent repository",
            Method::POST,
            format!("/v2/{absent}/blobs/uploads/"),
            &absent,
            "pull,push",
        ),
        Attempt::new(
            "POST upload to a namespace nobody created",
            Method::POST,
            "/v2/nobody-s/app/blobs/uploads/".to_owned(),
            "nobody-s/app",
            "pull,push",
        ),
    ];
    if let Some(upload) = upload {
        let with_digest = format!("{upload}?digest={}", sha256_digest(b"abc"));
        attempts.extend([
            Attempt::new("GET the open upload session", Method::GET, upload.to_owned(), repo, "pull,push"),
            Attempt::new("PATCH the open upload session", Method::PATCH, upload.to_owned(), repo, "pull,push")
                .with_body(b"evil".to_vec(), "application/octet-stream"),
            Attempt::new("PUT the open upload session", Method::PUT, with_digest, repo, "pull,push"),
            Attempt::new("DELETE the open upload session", Method::DELETE, upload.to_owned(), repo, "pull,push"),
        ]);
    }
    attempts
}

/// Sends an attempt and checks it was refused the way `cred` is refused:
/// Basic credentials are known but lack the right (403 DENIED), a token
/// lacks the scope (401, `insufficient_scope`), no credentials need a login (401).
async fn assert_refused(w: &World, who: &str, cred: &Cred, attempt: &Attempt) {
    let mut request = w.http.request(cred, attempt.method.clone(), &attempt.path);
    if let Some((bytes, content_type)) = &attempt.body {
        request = request.header("content-type", *content_type).body(bytes.clone());
    }
    let reply = w.http.send(request).await;
    let scope = format!("repository:{}:{}", attempt.repo, attempt.actions);
    let (status, code, www_authenticate) = match cred {
        Cred::Basic(..) => (403, "DENIED", None),
        Cred::Bearer(_) => (401, "UNAUTHORIZED", Some(challenge(&w.reg, Some(&scope), Some("insufficient_scope")))),
        Cred::Anonymous => (401, "UNAUTHORIZED", Some(challenge(&w.reg, Some(&scope), None))),
    };
    let context = format!("{who} ({}): {} {} {}", cred.kind(), attempt.what, attempt.method, attempt.path);
    let code = (attempt.method != Method::HEAD).then(|| code.to_owned());
    assert_eq!(reply.status_and_code(), (status, code), "{context}: {}", reply.text());
    assert_eq!(reply.header("www-authenticate").map(str::to_owned), www_authenticate, "{context}");
}

async fn nobody_can_read_write_or_delete_in_another_tenant_s_repositories(backend: Backend) {
    let w = World::build(backend).await;
    let before = (w.state_of(&w.alpha_app, &w.alpha_upload).await, w.state_of(&w.beta_app, &w.beta_upload).await);

    for (who, basic, own, foreign, upload) in w.outsiders() {
        let mut scopes: Vec<String> = vec![format!("repository:{}:pull,push,delete", foreign.repo)];
        let mut granted = String::new();
        if let Some(own) = own {
            scopes.insert(0, format!("repository:{}:pull,push", own.repo));
            granted = format!("repository:{}:pull,push", own.repo);
        }
        // Asking for the other tenant's repository grants nothing on it.
        let (_, alone) = w.http.token(&basic, &[scopes.last().expect("foreign scope").as_str()]).await;
        assert_eq!(alone, "", "{who} asked only for {}", foreign.repo);
        for cred in w.credentials(who, &basic, &scopes, &granted).await {
            if let Some(own) = own {
                // What is theirs they reach with the same credentials.
                let reply = w.http.get(&cred, &own.manifest_path("v1")).await;
                assert_eq!(
                    (reply.status, reply.text()),
                    (200, own.manifest.clone()),
                    "{who} ({}) pulls its own",
                    cred.kind()
                );
            }
            for attempt in attempts_on(foreign, Some(upload)) {
                assert_refused(&w, who, &cred, &attempt).await;
            }
        }
    }

    let after = (w.state_of(&w.alpha_app, &w.alpha_upload).await, w.state_of(&w.beta_app, &w.beta_upload).await);
    assert_eq!(after, before, "the refused attempts changed nothing");
}

async fn a_cross_tenant_mount_falls_back_to_an_upload_and_links_nothing(backend: Backend) {
    let w = World::build(backend).await;
    for (who, basic, own, foreign, _) in w.outsiders() {
        let Some(own) = own else { continue };
        let scopes = [format!("repository:{}:pull,push", own.repo), format!("repository:{}:pull", foreign.repo)];
        let granted = format!("repository:{}:pull,push", own.repo);
        for cred in w.credentials(who, &basic, &scopes, &granted).await {
            for blob in [&foreign.layer, &foreign.config] {
                let path = format!("/v2/{}/blobs/uploads/?mount={}&from={}", own.repo, blob.digest, foreign.repo);
                let reply = w.http.send(w.http.request(&cred, Method::POST, &path)).await;
                let context = format!("{who} ({}) mounting {} from {}", cred.kind(), blob.digest, foreign.repo);
                assert_eq!(reply.status, 202, "{context}: an upload session instead: {}", reply.text());
                let location = reply.header("location").expect("Location").to_owned();
                let uuid = reply.header("docker-upload-uuid").expect("Docker-Upload-UUID");
                assert_eq!(location, format!("/v2/{}/blobs/uploads/{uuid}", own.repo), "{context}");
                assert_eq!(reply.header("range"), Some("0-0"), "{context}");
                assert_eq!(reply.header("docker-content-digest"), None, "{context}");
                let linked = w.http.get(&cred, &own.blob_path(&blob.digest)).await;
                assert_eq!(linked.status_and_code(), (404, Some("BLOB_UNKNOWN".into())), "{context}");
                // The session is a real one, and its owner can use it.
                assert_eq!(w.http.get(&cred, &location).await.expect(204).header("range"), Some("0-0"), "{context}");
                w.http.send(w.http.request(&cred, Method::DELETE, &location)).await.expect(204);
            }
        }
    }
    // Mounting within one's own tenant does link.
    let path = format!("/v2/alpha-apps/copy/blobs/uploads/?mount={}&from=alpha-pub/app", w.alpha_pub.layer.digest);
    let reply = w.http.send(w.http.request(&Cred::admin(), Method::POST, &path)).await.expect(201);
    assert_eq!(reply.header("docker-content-digest"), Some(w.alpha_pub.layer.digest.as_str()));
}

async fn knowing_another_tenant_s_digests_and_upload_ids_gives_nothing(backend: Backend) {
    let w = World::build(backend).await;
    let upload_id = |location: &str| location.rsplit('/').next().expect("id").to_owned();
    let mut cases: Vec<(&str, Cred, &Image, &Image, String)> = Vec::new();
    for (who, basic, own, foreign, upload) in w.outsiders() {
        if let Some(own) = own {
            cases.push((who, basic, own, foreign, upload_id(upload)));
        }
    }
    // Anonymous, through the public repository.
    cases.push(("anonymous", Cred::Anonymous, &w.alpha_pub, &w.beta_app, upload_id(&w.beta_upload)));

    for (who, basic, own, foreign, foreign_upload) in cases {
        let scopes = [format!("repository:{}:pull,push", own.repo)];
        let granted =
            if matches!(basic, Cred::Anonymous) { format!("repository:{}:pull", own.repo) } else { scopes[0].clone() };
        for cred in w.credentials(who, &basic, &scopes, &granted).await {
            let context = |what: &str| format!("{who} ({}) in {}: {what}", cred.kind(), own.repo);
            for (what, method, path, expected) in [
                ("GET the other tenant's layer", Method::GET, own.blob_path(&foreign.layer.digest), "BLOB_UNKNOWN"),
                ("GET the other tenant's config", Method::GET, own.blob_path(&foreign.config.digest), "BLOB_UNKNOWN"),
                (
                    "GET the other tenant's manifest",
                    Method::GET,
                    own.manifest_path(&foreign.digest),
                    "MANIFEST_UNKNOWN",
                ),
                (
                    "GET the other tenant's referrer",
                    Method::GET,
                    own.manifest_path(&foreign.referrer),
                    "MANIFEST_UNKNOWN",
                ),
            ] {
                let reply = w.http.send(w.http.request(&cred, method, &path)).await;
                assert_eq!(reply.status_and_code(), (404, Some(expected.into())), "{}", context(what));
            }
            let reply = w.http.send(w.http.request(&cred, Method::HEAD, &own.blob_path(&foreign.layer.digest))).await;
            assert_eq!(reply.status, 404, "{}", context("HEAD the other tenant's layer"));
            let reply = w.http.get(&cred, &format!("/v2/{}/referrers/{}", own.repo, foreign.digest)).await.expect(200);
            assert_eq!(
                reply.json(),
                json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] }),
                "{}",
                context("referrers of the other tenant's manifest")
            );
            if matches!(basic, Cred::Anonymous) {
                continue;
            }
            // The other tenant's upload session, under one's own repository.
            let session = format!("/v2/{}/blobs/uploads/{foreign_upload}", own.repo);
            for (method, path) in [
                (Method::GET, session.clone()),
                (Method::PATCH, session.clone()),
                (Method::PUT, format!("{session}?digest={}", sha256_digest(b"abc"))),
                (Method::DELETE, session.clone()),
            ] {
                let reply = w.http.send(w.http.request(&cred, method.clone(), &path)).await;
                assert_eq!(
                    reply.status_and_code(),
                    (404, Some("BLOB_UPLOAD_UNKNOWN".into())),
                    "{}",
                    context(&format!("{method} {path}"))
                );
            }
            // A manifest over the other tenant's blobs, or an index over its manifest, is refused.
            let image = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": foreign.config.descriptor(OCI_CONFIG), "layers": [foreign.layer.descriptor(OCI_LAYER)] })
            .to_string();
            let reply = push_manifest(&w.http, &cred, &own.repo, "stolen", OCI_MANIFEST, &image).await;
            assert_eq!(
                reply.status_and_code(),
                (400, Some("MANIFEST_BLOB_UNKNOWN".into())),
                "{}",
                context("manifest over foreign blobs")
            );
            let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                { "mediaType": OCI_MANIFEST, "digest": foreign.digest, "size": foreign.manifest.len() }] })
            .to_string();
            let reply = push_manifest(&w.http, &cred, &own.repo, "stolen", OCI_INDEX, &index).await;
            assert_eq!(
                reply.status_and_code(),
                (400, Some("MANIFEST_BLOB_UNKNOWN".into())),
                "{}",
                context("index over a foreign manifest")
            );
        }
    }
    // The sessions are the admin's still, untouched.
    for location in [&w.alpha_upload, &w.beta_upload] {
        assert_eq!(w.http.get(&Cred::admin(), location).await.expect(204).header("range"), Some("0-2"));
    }
}

async fn the_catalog_lists_only_own_and_public_repositories(backend: Backend) {
    let w = World::build(backend).await;
    let alpha_sees = json!({ "repositories": ["alpha-apps/app", "alpha-pub/app"] });
    let beta_sees = json!({ "repositories": ["alpha-pub/app", "beta-apps/app"] });
    for (who, basic, expected) in [
        ("alice", w.alice.clone(), &alpha_sees),
        ("robot$alpha+ci", w.alpha_robot.clone(), &alpha_sees),
        ("bob", w.bob.clone(), &beta_sees),
        ("robot$beta+ci", w.beta_robot.clone(), &beta_sees),
    ] {
        for cred in w.credentials(who, &basic, &["registry:catalog:*".to_owned()], "registry:catalog:*").await {
            let listed = w.http.get(&cred, "/v2/_catalog").await.expect(200).json();
            assert_eq!(&listed, expected, "{who} ({})", cred.kind());
            // Paging shows nothing more.
            let first = w.http.get(&cred, "/v2/_catalog?n=1").await.expect(200);
            let next = first.header("link").expect("Link to the second page").to_owned();
            let target = next.trim_start_matches('<').split_once('>').expect("<…>").0.to_owned();
            let second = w.http.get(&cred, &target).await.expect(200);
            assert_eq!(second.header("link"), None, "{who}: two pages");
            let paged = [first.json()["repositories"][0].clone(), second.json()["repositories"][0].clone()];
            assert_eq!(json!(paged), expected["repositories"], "{who} ({}) paging", cred.kind());
        }
    }
    let reply = w.http.get(&Cred::Anonymous, "/v2/_catalog").await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())));
    assert_eq!(reply.header("www-authenticate"), Some(challenge(&w.reg, Some("registry:catalog:*"), None).as_str()));
    assert_eq!(
        w.http.get(&Cred::admin(), "/v2/_catalog").await.expect(200).json(),
        json!({ "repositories": ["alpha-apps/app", "alpha-pub/app", "beta-apps/app"] })
    );
}

async fn the_management_api_refuses_reads_and_writes_on_another_tenant(backend: Backend) {
    let w = World::build(backend).await;
    let tenants_before = w.http.admin_api(Method::GET, "/api/v1/tenants", Value::Null).await;
    let mut state_before = Vec::new();
    for t in ["alpha", "beta"] {
        for what in ["namespaces", "members", "robots"] {
            state_before.push(w.http.admin_api(Method::GET, &format!("/api/v1/tenants/{t}/{what}"), Value::Null).await);
        }
    }
    let users_before = w.http.admin_api(Method::GET, "/api/v1/users", Value::Null).await;

    for (who, basic, other, other_ns, other_member) in [
        ("alice", w.alice.clone(), "beta", "beta-apps", "bob"),
        ("robot$alpha+ci", w.alpha_robot.clone(), "beta", "beta-apps", "bob"),
        ("bob", w.bob.clone(), "alpha", "alpha-apps", "alice"),
        ("robot$beta+ci", w.beta_robot.clone(), "alpha", "alpha-apps", "alice"),
    ] {
        let (token, _) = w.http.token(&basic, &[]).await;
        for cred in [basic.clone(), Cred::Bearer(token)] {
            let me = match &basic {
                Cred::Basic(login, _) => login.clone(),
                _ => unreachable!(),
            };
            for (method, path, body) in [
                (Method::GET, format!("/api/v1/tenants/{other}"), Value::Null),
                (Method::GET, format!("/api/v1/tenants/{other}/namespaces"), Value::Null),
                (
                    Method::POST,
                    format!("/api/v1/tenants/{other}/namespaces"),
                    json!({ "name": "intruder", "public": true }),
                ),
                (Method::GET, format!("/api/v1/namespaces/{other_ns}"), Value::Null),
                (Method::PATCH, format!("/api/v1/namespaces/{other_ns}"), json!({ "public": true })),
                (Method::GET, format!("/api/v1/tenants/{other}/members"), Value::Null),
                (
                    Method::PUT,
                    format!("/api/v1/tenants/{other}/members"),
                    json!({ "kind": "user", "name": me, "role": "admin" }),
                ),
                (Method::DELETE, format!("/api/v1/tenants/{other}/members?kind=user&name={other_member}"), Value::Null),
                (Method::GET, format!("/api/v1/tenants/{other}/robots"), Value::Null),
                (
                    Method::POST,
                    format!("/api/v1/tenants/{other}/robots"),
                    json!({ "name": "intruder", "scopes": [{ "role": "admin" }] }),
                ),
                (Method::POST, format!("/api/v1/tenants/{other}/robots/ci/rotate"), Value::Null),
                (Method::DELETE, format!("/api/v1/tenants/{other}/robots/ci"), Value::Null),
                (Method::GET, format!("/api/v1/audit?tenant={other}"), Value::Null),
                (Method::POST, "/api/v1/tenants".to_owned(), json!({ "name": "intruder" })),
                (
                    Method::POST,
                    "/api/v1/users".to_owned(),
                    json!({ "username": "intruder", "password": "intruder-password" }),
                ),
                (Method::PUT, format!("/api/v1/users/{other_member}/password"), json!({ "password": "taken-over-1" })),
                (Method::POST, "/api/v1/signing-keys/rotate".to_owned(), Value::Null),
            ] {
                let reply = w.http.api(&cred, method.clone(), &path, body).await;
                assert_eq!(
                    reply.status_and_code(),
                    (403, Some("DENIED".into())),
                    "{who} ({}): {method} {path}: {}",
                    cred.kind(),
                    reply.text()
                );
            }
        }
    }

    assert_eq!(w.http.admin_api(Method::GET, "/api/v1/tenants", Value::Null).await, tenants_before);
    let mut state_after = Vec::new();
    for t in ["alpha", "beta"] {
        for what in ["namespaces", "members", "robots"] {
            state_after.push(w.http.admin_api(Method::GET, &format!("/api/v1/tenants/{t}/{what}"), Value::Null).await);
        }
    }
    assert_eq!(state_after, state_before);
    assert_eq!(w.http.admin_api(Method::GET, "/api/v1/users", Value::Null).await, users_before);
    // The people and robots refused are still who they were: bob's password, the robots' tokens.
    for cred in [&w.alice, &w.bob, &w.alpha_robot, &w.beta_robot] {
        w.http.get(cred, "/v2/").await.expect(200);
    }
    let reply = w.http.get(&Cred::Anonymous, &w.beta_app.manifest_path("v1")).await;
    assert_eq!(reply.status, 401, "beta-apps is still private");
}

async fn a_public_namespace_is_pulled_by_anyone_and_pushed_by_members_only(backend: Backend) {
    let w = World::build(backend).await;
    let image = &w.alpha_pub;
    let (token, scope) = w.http.token(&Cred::Anonymous, &["repository:alpha-pub/app:pull,push"]).await;
    assert_eq!(scope, "repository:alpha-pub/app:pull");
    let (bob_token, bob_scope) = w.http.token(&w.bob, &["repository:alpha-pub/app:pull,push,delete"]).await;
    assert_eq!(bob_scope, "repository:alpha-pub/app:pull");

    for (who, cred) in [
        ("anonymous", Cred::Anonymous),
        ("anonymous (token)", Cred::Bearer(token)),
        ("bob of beta", w.bob.clone()),
        ("bob of beta (token)", Cred::Bearer(bob_token)),
    ] {
        let reply = w.http.get(&cred, &image.manifest_path("v1")).await.expect(200);
        assert_eq!(
            (reply.header("docker-content-digest"), reply.text()),
            (Some(image.digest.as_str()), image.manifest.clone()),
            "{who}"
        );
        let reply =
            w.http.send(w.http.request(&cred, Method::HEAD, &image.manifest_path(&image.digest))).await.expect(200);
        assert_eq!(reply.header("docker-content-digest"), Some(image.digest.as_str()), "{who}");
        assert_eq!(
            w.http.get(&cred, &image.blob_path(&image.layer.digest)).await.expect(200).body,
            image.layer.bytes,
            "{who}"
        );
        let reply =
            w.http.send(w.http.request(&cred, Method::HEAD, &image.blob_path(&image.config.digest))).await.expect(200);
        assert_eq!(reply.header("content-length"), Some(image.config.bytes.len().to_string().as_str()), "{who}");
        assert_eq!(
            w.http.get(&cred, "/v2/alpha-pub/app/tags/list").await.expect(200).json(),
            json!({ "name": "alpha-pub/app", "tags": ["v1"] })
        );
        let referrers =
            w.http.get(&cred, &format!("/v2/alpha-pub/app/referrers/{}", image.digest)).await.expect(200).json();
        assert_eq!(referrers["manifests"][0]["digest"], image.referrer.as_str(), "{who}");

        for attempt in attempts_on(image, None).into_iter().filter(|a| a.actions != "pull" && a.repo == image.repo) {
            assert_refused(&w, who, &cred, &attempt).await;
        }
    }
    // alice, a developer of alpha, pushes there.
    let blob = Blob::new(b"pushed by a member".to_vec());
    push_blob(&w.http, &w.alice, "alpha-pub/app", &blob).await;
    assert_eq!(w.http.get(&Cred::Anonymous, &image.blob_path(&blob.digest)).await.expect(200).body, blob.bytes);

    // Made private, it closes to outsiders at once.
    w.http.admin_api(Method::PATCH, "/api/v1/namespaces/alpha-pub", json!({ "public": false })).await;
    let reply = w.http.get(&Cred::Anonymous, &image.manifest_path("v1")).await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())));
    assert_eq!(
        reply.header("www-authenticate"),
        Some(challenge(&w.reg, Some("repository:alpha-pub/app:pull"), None).as_str())
    );
    let (_, scope) = w.http.token(&Cred::Anonymous, &["repository:alpha-pub/app:pull"]).await;
    assert_eq!(scope, "");
    let reply = w.http.get(&w.bob, &image.manifest_path("v1")).await;
    assert_eq!(reply.status_and_code(), (403, Some("DENIED".into())));
    assert_eq!(w.http.get(&w.alice, &image.manifest_path("v1")).await.expect(200).text(), image.manifest);
}
