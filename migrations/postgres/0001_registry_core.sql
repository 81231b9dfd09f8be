-- Repositories, blobs, manifests, tags and upload sessions.
-- Times are Unix seconds. Names and tags compare byte-wise (COLLATE "C").

CREATE TABLE repositories (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT    COLLATE "C" NOT NULL UNIQUE,
    created_at  BIGINT  NOT NULL
);

-- One row per distinct content; the bytes live in the blob store.
CREATE TABLE blobs (
    digest         TEXT   PRIMARY KEY,
    size           BIGINT NOT NULL,
    piece_size     BIGINT NOT NULL,
    piece_digests  BYTEA  NOT NULL,  -- 32 raw bytes per piece, in order
    created_at     BIGINT NOT NULL
);

-- Which repositories may serve which blobs. Knowing a digest is not enough to read it.
CREATE TABLE repository_blobs (
    repository_id  BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest         TEXT   NOT NULL REFERENCES blobs (digest),
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_digest ON repository_blobs (digest);

-- Manifests are stored byte for byte, as pushed.
CREATE TABLE manifests (
    repository_id   BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest          TEXT   NOT NULL,
    media_type      TEXT   NOT NULL,
    artifact_type   TEXT,
    subject_digest  TEXT,
    annotations     TEXT,              -- JSON object, kept for the referrers API
    content         BYTEA  NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_subject ON manifests (repository_id, subject_digest);

-- What each manifest references: layers and config blobs, or child manifests of an index.
CREATE TABLE manifest_references (
    repository_id    BIGINT NOT NULL,
    manifest_digest  TEXT   NOT NULL,
    target_digest    TEXT   NOT NULL,
    target_kind      TEXT   NOT NULL CHECK (target_kind IN ('blob', 'manifest')),
    PRIMARY KEY (repository_id, manifest_digest, target_digest),
    FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_references_target ON manifest_references (target_digest);

CREATE TABLE tags (
    repository_id    BIGINT NOT NULL,
    name             TEXT   COLLATE "C" NOT NULL,
    manifest_digest  TEXT   NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);

-- Upload sessions in progress; their bytes are in the blob store's upload area.
CREATE TABLE uploads (
    id             TEXT   PRIMARY KEY,
    repository_id  BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL
);
