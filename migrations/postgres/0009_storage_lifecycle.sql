-- Storage lifecycle: online garbage collection, quotas, retention and
-- immutable tags. The design and its safety argument are in
-- registry/src/services/gc/mod.rs.

-- touched_at: the last moment something needed the blob (an upload's
-- commit, a mount, a manifest PUT that references it, a HEAD before a push).
-- The sweep leaves a blob touched within the grace period alone.
-- deleting: 1 once the sweep has decided to delete the blob. Its links are
-- gone with that decision, nothing may reference it again, and readers see
-- it as absent; its bytes are deleted next, then the row.
ALTER TABLE blobs ADD COLUMN touched_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE blobs ADD COLUMN deleting BIGINT NOT NULL DEFAULT 0;
-- Uploads between their claim and their link: while any is, the link of one
-- does not end the collector's hold on the blob that the others still need.
ALTER TABLE blobs ADD COLUMN claims BIGINT NOT NULL DEFAULT 0;
UPDATE blobs SET touched_at = created_at;
CREATE INDEX blobs_deleting ON blobs (deleting) WHERE deleting = 1;

-- When the manifest was last seen without a tag (NULL while tagged): the age
-- the untagged-manifest policy measures. Every deletion re-checks the tags
-- themselves, so a stale value can delay a deletion but never cause one.
ALTER TABLE manifests ADD COLUMN untagged_at BIGINT;
UPDATE manifests SET untagged_at = CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)
WHERE NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = manifests.repository_id AND t.manifest_digest = manifests.digest);

-- The last pull of a tag (a GET or HEAD of the manifest by tag), recorded at
-- most once an hour per tag, for "delete tags not pulled for D days".
ALTER TABLE tags ADD COLUMN pulled_at BIGINT;

-- A namespace's lifecycle policy: delete untagged manifests after N days
-- (NULL: never), retention rules and immutable tag patterns (JSON arrays).
CREATE TABLE namespace_policies (
    namespace_id    BIGINT PRIMARY KEY REFERENCES namespaces (id) ON DELETE CASCADE,
    untagged_days   BIGINT,
    retention       TEXT   NOT NULL DEFAULT '[]',
    immutable_tags  TEXT   NOT NULL DEFAULT '[]'
);

-- Storage used and allowed, per namespace and per tenant. A blob counts once
-- per namespace however many of its repositories link it; a manifest counts
-- its bytes in each repository that stores it; a repository counts while it
-- holds a blob or a manifest. A tenant's use is the sum of its namespaces'.
-- Kept current by every commit and delete; recomputed exactly by each GC run.
CREATE TABLE namespace_storage (
    namespace_id        BIGINT PRIMARY KEY REFERENCES namespaces (id) ON DELETE CASCADE,
    quota_bytes         BIGINT,
    quota_repositories  BIGINT,
    used_bytes          BIGINT NOT NULL DEFAULT 0,
    used_repositories   BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE tenant_storage (
    tenant_id           BIGINT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    quota_bytes         BIGINT,
    quota_repositories  BIGINT,
    used_bytes          BIGINT NOT NULL DEFAULT 0,
    used_repositories   BIGINT NOT NULL DEFAULT 0
);
INSERT INTO namespace_storage (namespace_id, used_bytes, used_repositories)
SELECT n.id,
    COALESCE((SELECT CAST(SUM(b.size) AS BIGINT) FROM blobs b WHERE EXISTS (
        SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
        WHERE rb.digest = b.digest AND r.name > (n.name || '/') COLLATE "C" AND r.name < (n.name || '0') COLLATE "C")), 0)
  + COALESCE((SELECT CAST(SUM(LENGTH(m.content)) AS BIGINT) FROM manifests m JOIN repositories r ON r.id = m.repository_id
        WHERE r.name > (n.name || '/') COLLATE "C" AND r.name < (n.name || '0') COLLATE "C"), 0),
    (SELECT COUNT(*) FROM repositories r WHERE r.name > (n.name || '/') COLLATE "C" AND r.name < (n.name || '0') COLLATE "C"
        AND (EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)
          OR EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.repository_id = r.id)))
FROM namespaces n;
INSERT INTO tenant_storage (tenant_id, used_bytes, used_repositories)
SELECT t.id,
    COALESCE((SELECT CAST(SUM(s.used_bytes) AS BIGINT) FROM namespace_storage s JOIN namespaces n ON n.id = s.namespace_id WHERE n.tenant_id = t.id), 0),
    COALESCE((SELECT CAST(SUM(s.used_repositories) AS BIGINT) FROM namespace_storage s JOIN namespaces n ON n.id = s.namespace_id WHERE n.tenant_id = t.id), 0)
FROM tenants t;

-- Garbage collection runs and what each did. One runs at a time (a lock, see
-- the GC module); a run left `running` by a process that died is marked
-- `interrupted` by the next, which finishes its work.
CREATE TABLE gc_runs (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cause              TEXT   NOT NULL,  -- schedule, api or console
    actor              TEXT   NOT NULL,
    dry_run            BIGINT NOT NULL DEFAULT 0,
    state              TEXT   NOT NULL CHECK (state IN ('running', 'done', 'failed', 'interrupted')),
    started_at         BIGINT NOT NULL,
    finished_at        BIGINT,
    duration_ms        BIGINT,
    blobs_deleted      BIGINT NOT NULL DEFAULT 0,
    bytes_freed        BIGINT NOT NULL DEFAULT 0,
    links_removed      BIGINT NOT NULL DEFAULT 0,
    manifests_deleted  BIGINT NOT NULL DEFAULT 0,
    tags_deleted       BIGINT NOT NULL DEFAULT 0,
    errors             BIGINT NOT NULL DEFAULT 0,
    report             TEXT
);
CREATE INDEX gc_runs_started ON gc_runs (started_at);

-- A blob that left a tenant's namespaces (swept, or its last link there
-- deleted): the tenant's agents stop serving it to peers holding a ticket
-- issued before `deleted_at`, and drop it from their caches. Kept a day.
CREATE TABLE blob_deletions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest      TEXT   NOT NULL,
    tenant_id   BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    deleted_at  BIGINT NOT NULL
);
CREATE INDEX blob_deletions_tenant ON blob_deletions (tenant_id, id);
CREATE INDEX blob_deletions_at ON blob_deletions (deleted_at);
