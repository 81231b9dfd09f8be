//! The metadata store suite: the same specification run against SQLite and
//! PostgreSQL, through the registry's own store types.

use damselfly_core::{BlobHasher, Digest};
use damselfly_registry::metadata::{
    BlobRecord, BlobVerdict, Db, Finished, Level, Linked, Measure, NewManifest, PutOutcome, TagRule, TargetKind,
    Unstored,
};
use damselfly_tests::{fresh_postgres_database, on_both_backends, Backend};

struct Store {
    db: Db,
    _dir: tempfile::TempDir,
}

async fn open(backend: Backend) -> Store {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/metadata.db", dir.path().display()),
        Backend::Postgres => fresh_postgres_database(),
    };
    let db = Db::open(&url, 4).await.expect("open store");
    Store { db, _dir: dir }
}

fn blob(content: &[u8]) -> BlobRecord {
    let mut h = BlobHasher::new(4);
    h.update(content);
    let (digest, pieces) = h.finish();
    BlobRecord { digest, size: content.len() as u64, pieces }
}

fn manifest<'a>(content: &'a [u8], refs: Vec<(Digest, TargetKind)>) -> NewManifest<'a> {
    NewManifest {
        digest: Digest::of(content),
        media_type: "application/vnd.oci.image.manifest.v1+json",
        artifact_type: None,
        subject: None,
        annotations: None,
        content,
        references: refs,
    }
}

on_both_backends!(
    migrations_apply_once_and_reopen_cleanly,
    repositories_are_created_once_and_listed_bytewise,
    blobs_keep_piece_digests_and_belong_to_repositories,
    manifests_are_stored_byte_exact_and_tags_move,
    deleting_a_manifest_removes_its_tags_and_references,
    tags_list_in_bytewise_order_with_pages,
    referrers_filter_by_artifact_type,
    upload_sessions_belong_to_one_repository,
    upload_progress_advances_only_from_the_length_it_was_read_at,
    use_counts_a_blob_once_per_namespace_and_quotas_refuse_what_would_pass_them,
    the_sweep_removes_unreferenced_links_and_marks_unreferenced_blobs,
    an_immutable_tag_is_created_once_and_never_moved,
);

/// A tenant `t` with namespaces `ns` and `ns2`.
async fn tenant_with_namespaces(
    s: &Store,
) -> (damselfly_registry::metadata::TenantId, [damselfly_registry::metadata::NamespaceId; 2]) {
    let t = s.db.tenancy().create_tenant("t").await.unwrap();
    let ns = s.db.tenancy().create_namespace(t.id, "ns", false).await.unwrap();
    let ns2 = s.db.tenancy().create_namespace(t.id, "ns2", false).await.unwrap();
    (t.id, [ns, ns2])
}

async fn migrations_apply_once_and_reopen_cleanly(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/m.db", dir.path().display()),
        Backend::Postgres => fresh_postgres_database(),
    };
    let db = Db::open(&url, 2).await.unwrap();
    db.repositories().ensure("kept").await.unwrap();
    db.close().await;
    let again = Db::open(&url, 2).await.unwrap();
    assert!(again.repositories().find("kept").await.unwrap().is_some());
}

async fn repositories_are_created_once_and_listed_bytewise(backend: Backend) {
    let s = open(backend).await;
    let repos = s.db.repositories();
    let a = repos.ensure("b/app").await.unwrap();
    assert_eq!(repos.ensure("b/app").await.unwrap(), a);
    let layer = blob(b"layer");
    s.db.blobs().insert_and_link(a, &layer).await.unwrap();
    for n in ["a", "a-b", "a.b", "a/b", "a_b", "z", "0"] {
        let id = repos.ensure(n).await.unwrap();
        s.db.blobs().link(id, &layer.digest, None).await.unwrap();
    }
    // A repository with nothing in it (an upload was started, never finished) is not listed.
    repos.ensure("empty").await.unwrap();
    let all = repos.list(None, 100).await.unwrap();
    assert_eq!(all, ["0", "a", "a-b", "a.b", "a/b", "a_b", "b/app", "z"]);
    assert_eq!(repos.list(Some("a.b"), 2).await.unwrap(), ["a/b", "a_b"]);
    assert!(repos.find("missing").await.unwrap().is_none());
}

async fn blobs_keep_piece_digests_and_belong_to_repositories(backend: Backend) {
    let s = open(backend).await;
    let one = s.db.repositories().ensure("one").await.unwrap();
    let two = s.db.repositories().ensure("two").await.unwrap();
    let b = blob(b"0123456789"); // pieces of 4: "0123", "4567", "89"
    s.db.blobs().insert_and_link(one, &b).await.unwrap();
    s.db.blobs().insert_and_link(one, &b).await.unwrap(); // idempotent
    let found = s.db.blobs().find_in_repository("one", &b.digest).await.unwrap().expect("linked blob");
    assert_eq!(found.size, 10);
    assert_eq!(found.pieces.piece_size(), 4);
    assert_eq!(found.pieces.digests(), [Digest::of(b"0123"), Digest::of(b"4567"), Digest::of(b"89")].as_slice());
    // Knowing the digest does not make it readable through another repository.
    assert!(s.db.blobs().find_in_repository("two", &b.digest).await.unwrap().is_none());
    assert_eq!(s.db.blobs().link(two, &b.digest, Some(one)).await.unwrap(), Linked::Linked);
    assert_eq!(s.db.blobs().link(two, &b.digest, Some(one)).await.unwrap(), Linked::Already);
    assert!(s.db.blobs().find_in_repository("two", &b.digest).await.unwrap().is_some());
    assert!(s.db.blobs().unlink(one, &b.digest).await.unwrap());
    assert!(!s.db.blobs().unlink(one, &b.digest).await.unwrap());
    assert!(s.db.blobs().find_in_repository("one", &b.digest).await.unwrap().is_none());
    assert_eq!(s.db.blobs().totals().await.unwrap(), (1, 10));
}

async fn manifests_are_stored_byte_exact_and_tags_move(backend: Backend) {
    let s = open(backend).await;
    let repo = s.db.repositories().ensure("app").await.unwrap();
    let first = b"{ \"schemaVersion\" : 2 ,\n \"x\": 1 }".to_vec();
    let second = b"{\"schemaVersion\":2,\"x\":2}".to_vec();
    s.db.manifests().put(repo, &manifest(&first, vec![]), Some("latest"), TagRule::default()).await.unwrap();
    let got = s.db.manifests().find_by_tag("app", "latest").await.unwrap().unwrap();
    assert_eq!(got.content, first);
    assert_eq!(got.digest, Digest::of(&first));
    assert_eq!(got.media_type, "application/vnd.oci.image.manifest.v1+json");
    s.db.manifests().put(repo, &manifest(&second, vec![]), Some("latest"), TagRule::default()).await.unwrap();
    assert_eq!(s.db.manifests().find_by_tag("app", "latest").await.unwrap().unwrap().content, second);
    // The first manifest is still there by digest.
    assert_eq!(s.db.manifests().find_by_digest("app", &Digest::of(&first)).await.unwrap().unwrap().content, first);
    assert!(s.db.manifests().find_by_tag("other", "latest").await.unwrap().is_none());
}

async fn deleting_a_manifest_removes_its_tags_and_references(backend: Backend) {
    let s = open(backend).await;
    let repo = s.db.repositories().ensure("app").await.unwrap();
    let layer = blob(b"layer");
    s.db.blobs().insert_and_link(repo, &layer).await.unwrap();
    let body = b"{\"m\":1}".to_vec();
    let m = manifest(&body, vec![(layer.digest, TargetKind::Blob)]);
    s.db.manifests().put(repo, &m, Some("v1"), TagRule::default()).await.unwrap();
    s.db.manifests().put(repo, &m, Some("v2"), TagRule::default()).await.unwrap();
    assert!(s.db.manifests().delete(repo, &m.digest).await.unwrap());
    assert!(s.db.manifests().find_by_tag("app", "v1").await.unwrap().is_none());
    assert!(s.db.tags().list(repo, None, 10).await.unwrap().is_empty());
    assert!(!s.db.manifests().delete(repo, &m.digest).await.unwrap());
    // The layer is still in the repository: deleting a manifest does not delete blobs.
    assert!(s.db.blobs().find_in_repository("app", &layer.digest).await.unwrap().is_some());
    // Pushing it again works, including its references.
    s.db.manifests().put(repo, &m, Some("v1"), TagRule::default()).await.unwrap();
    assert!(s.db.manifests().exists(repo, &m.digest).await.unwrap());
}

async fn tags_list_in_bytewise_order_with_pages(backend: Backend) {
    let s = open(backend).await;
    let repo = s.db.repositories().ensure("app").await.unwrap();
    let body = b"{}".to_vec();
    let names = ["b", "B", "a", "A", "_x", "Z9", "a-1", "a.1", "a_1", "10", "9"];
    for t in names {
        s.db.manifests().put(repo, &manifest(&body, vec![]), Some(t), TagRule::default()).await.unwrap();
    }
    let mut expected: Vec<&str> = names.to_vec();
    expected.sort(); // Rust sorts str byte-wise
    assert_eq!(s.db.tags().list(repo, None, 100).await.unwrap(), expected);
    assert_eq!(s.db.tags().list(repo, Some("Z9"), 3).await.unwrap(), ["_x", "a", "a-1"]);
    assert_eq!(s.db.tags().delete(repo, "a").await.unwrap(), Some(Digest::of(&body)));
    assert_eq!(s.db.tags().delete(repo, "a").await.unwrap(), None);
}

async fn referrers_filter_by_artifact_type(backend: Backend) {
    let s = open(backend).await;
    let repo = s.db.repositories().ensure("app").await.unwrap();
    let subject = Digest::of(b"subject");
    let sig = b"{\"sig\":1}".to_vec();
    let sbom = b"{\"sbom\":1}".to_vec();
    let mut m1 = manifest(&sig, vec![]);
    m1.subject = Some(subject);
    m1.artifact_type = Some("application/vnd.example.signature");
    m1.annotations = Some("{\"k\":\"v\"}".into());
    let mut m2 = manifest(&sbom, vec![]);
    m2.subject = Some(subject);
    m2.artifact_type = Some("application/spdx+json");
    s.db.manifests().put(repo, &m1, None, TagRule::default()).await.unwrap();
    s.db.manifests().put(repo, &m2, None, TagRule::default()).await.unwrap();
    let all = s.db.manifests().referrers(repo, &subject, None).await.unwrap();
    assert_eq!(all.len(), 2);
    let sigs = s.db.manifests().referrers(repo, &subject, Some("application/vnd.example.signature")).await.unwrap();
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].digest, Digest::of(&sig));
    assert_eq!(sigs[0].size, sig.len() as u64);
    assert_eq!(sigs[0].annotations.as_deref(), Some("{\"k\":\"v\"}"));
    assert!(s.db.manifests().referrers(repo, &Digest::of(b"other"), None).await.unwrap().is_empty());
}

async fn upload_sessions_belong_to_one_repository(backend: Backend) {
    let s = open(backend).await;
    let repo = s.db.repositories().ensure("app").await.unwrap();
    s.db.repositories().ensure("other").await.unwrap();
    s.db.uploads().create("u1", repo, Some("{\"start\":1}")).await.unwrap();
    let row = s.db.uploads().find("u1", "app").await.unwrap().expect("the session");
    assert_eq!((row.repository, row.length, row.store_state.as_deref()), (repo, 0, Some("{\"start\":1}")));
    assert!(s.db.uploads().find("u1", "other").await.unwrap().is_none());
    assert!(s.db.uploads().delete("u1").await.unwrap());
    assert!(s.db.uploads().find("u1", "app").await.unwrap().is_none());
}

async fn upload_progress_advances_only_from_the_length_it_was_read_at(backend: Backend) {
    let s = open(backend).await;
    let repo = s.db.repositories().ensure("app").await.unwrap();
    s.db.uploads().create("u2", repo, None).await.unwrap();
    assert!(s.db.uploads().advance("u2", 0, 10, Some("ten")).await.unwrap());
    // A request that read the session at 0 bytes lost the race: nothing changes.
    assert!(!s.db.uploads().advance("u2", 0, 7, Some("seven")).await.unwrap());
    let row = s.db.uploads().find("u2", "app").await.unwrap().expect("the session");
    assert_eq!((row.length, row.store_state.as_deref()), (10, Some("ten")));
    // Part numbers are handed out once each, in order; none for a session that is gone.
    let numbers = [s.db.uploads().next_part("u2").await.unwrap(), s.db.uploads().next_part("u2").await.unwrap()];
    assert_eq!(numbers, [Some(1), Some(2)]);
    assert_eq!(s.db.uploads().next_part("gone").await.unwrap(), None);
    assert!(s.db.uploads().exists("u2").await.unwrap());
    let far_future = i64::MAX / 2;
    assert_eq!(
        s.db.uploads().idle_since(far_future, 10).await.unwrap(),
        vec![("u2".to_owned(), Some("ten".to_owned()))]
    );
    assert!(s.db.uploads().idle_since(row.updated_at, 10).await.unwrap().is_empty());
}

async fn use_counts_a_blob_once_per_namespace_and_quotas_refuse_what_would_pass_them(backend: Backend) {
    let s = open(backend).await;
    let (tenant, [ns, ns2]) = tenant_with_namespaces(&s).await;
    let repos = s.db.repositories();
    let (a, b, c) = (
        repos.ensure("ns/a").await.unwrap(),
        repos.ensure("ns/b").await.unwrap(),
        repos.ensure("ns2/c").await.unwrap(),
    );
    let x = blob(b"0123456789");
    assert_eq!(s.db.blobs().insert_and_link(a, &x).await.unwrap(), Linked::Linked);
    assert_eq!(s.db.blobs().link(b, &x.digest, Some(a)).await.unwrap(), Linked::Linked);
    assert_eq!(s.db.blobs().link(c, &x.digest, None).await.unwrap(), Linked::Linked);
    let used = |u: damselfly_registry::metadata::Usage| (u.used_bytes, u.used_repositories);
    assert_eq!(used(s.db.storage().namespace(ns).await.unwrap()), (10, 2), "once per namespace, two repositories");
    assert_eq!(used(s.db.storage().namespace(ns2).await.unwrap()), (10, 1));
    assert_eq!(used(s.db.storage().tenant(tenant).await.unwrap()), (20, 3), "once in each of its namespaces");
    let body = b"{\"m\":\"with x\"}".to_vec();
    let m = manifest(&body, vec![(x.digest, TargetKind::Blob)]);
    assert!(matches!(
        s.db.manifests().put(a, &m, Some("v1"), TagRule::default()).await.unwrap(),
        PutOutcome::Stored { .. }
    ));
    let with_manifest = 10 + body.len() as i64;
    assert_eq!(used(s.db.storage().namespace(ns).await.unwrap()), (with_manifest, 2));

    // A limit 5 bytes above the use refuses a 10-byte blob, and nothing of it is linked or counted.
    s.db.storage().set_namespace_quota(ns, Some(with_manifest + 5), None).await.unwrap();
    let y = blob(b"abcdefghij");
    s.db.blobs().claim(&y).await.unwrap();
    match s.db.blobs().link(a, &y.digest, None).await.unwrap() {
        Linked::Refused(q) => {
            assert_eq!((q.level, q.measure, q.name.as_str()), (Level::Namespace, Measure::Bytes, "ns"));
            assert_eq!((q.used, q.limit, q.adding), (with_manifest, with_manifest + 5, 10));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(s.db.blobs().find_in_repository("ns/a", &y.digest).await.unwrap().is_none());
    assert_eq!(used(s.db.storage().namespace(ns).await.unwrap()), (with_manifest, 2));
    assert!(s.db.blobs().quota_check(a, &y.digest, 10).await.unwrap().is_some());
    // Raised, it counts at once.
    s.db.storage().set_namespace_quota(ns, Some(with_manifest + 10), None).await.unwrap();
    assert_eq!(s.db.blobs().link(a, &y.digest, None).await.unwrap(), Linked::Linked);
    // A repository count on the tenant refuses a fourth repository.
    s.db.storage().set_tenant_quota(tenant, None, Some(3)).await.unwrap();
    let d = repos.ensure("ns/d").await.unwrap();
    match s.db.blobs().link(d, &y.digest, Some(a)).await.unwrap() {
        Linked::Refused(q) => {
            assert_eq!((q.level, q.measure, q.used, q.limit), (Level::Tenant, Measure::Repositories, 3, 3))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Unlinking frees a blob's bytes only when the namespace's last link goes, and a repository once empty.
    assert!(s.db.blobs().unlink(b, &x.digest).await.unwrap());
    assert_eq!(used(s.db.storage().namespace(ns).await.unwrap()), (with_manifest + 10, 1));
    assert!(s.db.blobs().unlink(a, &y.digest).await.unwrap());
    assert_eq!(used(s.db.storage().namespace(ns).await.unwrap()), (with_manifest, 1));
    assert!(s.db.manifests().delete(a, &m.digest).await.unwrap());
    assert_eq!(used(s.db.storage().namespace(ns).await.unwrap()), (10, 1));
    // What was kept incrementally is what a recount finds.
    let (before, after) = s.db.storage().recount_namespace(ns, "ns").await.unwrap();
    assert_eq!(used(before), used(after));
    let (before, after) = s.db.storage().recount_tenant(tenant).await.unwrap();
    assert_eq!((used(before), used(after)), ((20, 2), (20, 2)));
}

async fn the_sweep_removes_unreferenced_links_and_marks_unreferenced_blobs(backend: Backend) {
    let s = open(backend).await;
    tenant_with_namespaces(&s).await;
    let a = s.db.repositories().ensure("ns/a").await.unwrap();
    let b = s.db.repositories().ensure("ns/b").await.unwrap();
    let (x, y, z) = (blob(b"referenced in a"), blob(b"referenced nowhere"), blob(b"deleted"));
    for blob in [&x, &y, &z] {
        s.db.blobs().insert_and_link(a, blob).await.unwrap();
    }
    s.db.blobs().link(b, &x.digest, None).await.unwrap();
    let body = b"{\"m\":\"x\"}".to_vec();
    s.db.manifests()
        .put(a, &manifest(&body, vec![(x.digest, TargetKind::Blob)]), Some("v1"), TagRule::default())
        .await
        .unwrap();
    let sweep = s.db.sweep();
    let stale = damselfly_registry::metadata::now() + 10;
    let candidates = sweep.candidates(None, stale, 10).await.unwrap();
    assert_eq!(candidates.len(), 3);
    // Untouched since a cutoff in the past: nothing to decide.
    assert_eq!(sweep.collect(&y.digest, 0, std::future::ready(())).await.unwrap(), BlobVerdict::Kept);
    assert_eq!(sweep.collect(&x.digest, stale, std::future::ready(())).await.unwrap(), BlobVerdict::LinksRemoved(1));
    assert!(s.db.blobs().find_in_repository("ns/b", &x.digest).await.unwrap().is_none());
    assert!(s.db.blobs().find_in_repository("ns/a", &x.digest).await.unwrap().is_some());
    let left: Vec<Digest> = sweep.candidates(None, stale, 10).await.unwrap().into_iter().map(|c| c.digest).collect();
    assert!(!left.contains(&x.digest) && left.len() == 2, "a blob every link of which is referenced is no candidate");
    assert_eq!(sweep.collect(&y.digest, stale, std::future::ready(())).await.unwrap(), BlobVerdict::Marked(1));
    // Marked: absent for readers, refused to manifests and links.
    assert!(s.db.blobs().find(&y.digest).await.unwrap().is_none());
    assert_eq!(s.db.blobs().link(a, &y.digest, None).await.unwrap(), Linked::Missing);
    let refers_y = b"{\"m\":\"y\"}".to_vec();
    let outcome =
        s.db.manifests()
            .put(a, &manifest(&refers_y, vec![(y.digest, TargetKind::Blob)]), Some("v2"), TagRule::default())
            .await
            .unwrap();
    assert_eq!(outcome, PutOutcome::Refused(Unstored::Blob(y.digest)));
    // An upload of the same content takes it back before its bytes go.
    s.db.blobs().claim(&y).await.unwrap();
    let finished = sweep.finish(&[y.digest], failing("not called"), no_pause).await.unwrap();
    assert_eq!(finished, [(y.digest, Ok(Finished::Revived))]);
    assert_eq!(s.db.blobs().link(a, &y.digest, None).await.unwrap(), Linked::Linked);
    // A marked blob whose bytes go loses its row; one whose bytes fail to go stays marked for the next run.
    assert_eq!(sweep.collect(&z.digest, stale, std::future::ready(())).await.unwrap(), BlobVerdict::Marked(1));
    let failed = sweep.finish(&[z.digest], failing("store down"), no_pause).await.unwrap();
    assert_eq!(failed, [(z.digest, Err("store down".to_owned()))]);
    assert_eq!(sweep.pending(None, 10).await.unwrap(), [z.digest]);
    // In a batch, only the rows still marked are held and have their bytes deleted.
    let only_z = |held: Vec<Digest>| async move {
        assert_eq!(held, [z.digest]);
        vec![Ok(())]
    };
    let done = sweep.finish(&[y.digest, z.digest], only_z, no_pause).await.unwrap();
    assert_eq!(done.len(), 2);
    assert!(done.contains(&(z.digest, Ok(Finished::Deleted(z.size)))), "{done:?}");
    assert!(done.contains(&(y.digest, Ok(Finished::Revived))), "{done:?}");
    assert!(sweep.pending(None, 10).await.unwrap().is_empty());
    assert_eq!(s.db.blobs().totals().await.unwrap().0, 2);
    // A claim keeps every run off the blob while its bytes move into place, however short the grace; its link ends that.
    let w = blob(b"moving into place");
    s.db.blobs().claim(&w).await.unwrap();
    assert_eq!(sweep.collect(&w.digest, stale, std::future::ready(())).await.unwrap(), BlobVerdict::Kept);
    assert_eq!(s.db.blobs().link(a, &w.digest, None).await.unwrap(), Linked::Linked);
    assert_eq!(sweep.collect(&w.digest, stale, std::future::ready(())).await.unwrap(), BlobVerdict::Marked(1));
    // Two uploads of one blob overlap: the first to link leaves the hold to the other, whose link ends it.
    let v = blob(b"uploaded twice at once");
    s.db.blobs().claim(&v).await.unwrap();
    s.db.blobs().claim(&v).await.unwrap();
    assert_eq!(s.db.blobs().link(a, &v.digest, None).await.unwrap(), Linked::Linked);
    assert_eq!(sweep.collect(&v.digest, stale, std::future::ready(())).await.unwrap(), BlobVerdict::Kept);
    assert_eq!(s.db.blobs().link(b, &v.digest, None).await.unwrap(), Linked::Linked);
    assert_eq!(sweep.collect(&v.digest, stale, std::future::ready(())).await.unwrap(), BlobVerdict::Marked(2));
}

async fn an_immutable_tag_is_created_once_and_never_moved(backend: Backend) {
    let s = open(backend).await;
    let repo = s.db.repositories().ensure("app").await.unwrap();
    let (one, two) = (b"{\"v\":1}".to_vec(), b"{\"v\":2}".to_vec());
    let immutable = TagRule { immutable: true };
    for _ in 0..2 {
        let stored = s.db.manifests().put(repo, &manifest(&one, vec![]), Some("v1"), immutable).await.unwrap();
        assert_eq!(stored, PutOutcome::Stored { moved_from: None });
    }
    let refused = s.db.manifests().put(repo, &manifest(&two, vec![]), Some("v1"), immutable).await.unwrap();
    assert_eq!(refused, PutOutcome::Refused(Unstored::Immutable { current: Digest::of(&one) }));
    assert_eq!(s.db.manifests().find_by_tag("app", "v1").await.unwrap().unwrap().content, one);
    assert!(!s.db.manifests().exists(repo, &Digest::of(&two)).await.unwrap(), "nothing of the refused push stays");
    let moved = s.db.manifests().put(repo, &manifest(&two, vec![]), Some("v1"), TagRule::default()).await.unwrap();
    assert_eq!(moved, PutOutcome::Stored { moved_from: Some(Digest::of(&one)) });
}

/// A blob store deletion that fails for every blob with `why`.
fn failing(why: &'static str) -> impl FnOnce(Vec<Digest>) -> std::future::Ready<Vec<Result<(), String>>> {
    move |held| std::future::ready(held.iter().map(|_| Err(why.to_owned())).collect())
}

/// No test hold while a batch's rows are held.
fn no_pause(_: Vec<Digest>) -> std::future::Ready<()> {
    std::future::ready(())
}
