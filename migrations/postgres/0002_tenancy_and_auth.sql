-- Tenants own namespaces; a repository's first path segment is its namespace.
-- Users and robot accounts hold roles on a tenant or on one namespace.
-- Flags are BIGINT 0/1 so one query text works on both engines.

CREATE TABLE tenants (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT   COLLATE "C" NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE namespaces (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         TEXT   COLLATE "C" NOT NULL UNIQUE,
    public       BIGINT NOT NULL DEFAULT 0,
    p2p_enabled  BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);

CREATE TABLE users (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username             TEXT   NOT NULL UNIQUE,
    password_hash        TEXT   NOT NULL,
    system_admin         BIGINT NOT NULL DEFAULT 0,
    -- Bumped on every password change: tokens carry it and die with it.
    credentials_version  BIGINT NOT NULL DEFAULT 1,
    created_at           BIGINT NOT NULL
);

-- Robot tokens are high-entropy secrets: a SHA-256 of them is stored, never the token.
CREATE TABLE robots (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id            BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name                 TEXT   NOT NULL,
    description          TEXT   NOT NULL DEFAULT '',
    token_sha256         TEXT   NOT NULL,
    credentials_version  BIGINT NOT NULL DEFAULT 1,
    expires_at           BIGINT,
    revoked_at           BIGINT,
    created_at           BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE role_bindings (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    principal_kind  TEXT   NOT NULL CHECK (principal_kind IN ('user', 'robot')),
    principal_id    BIGINT NOT NULL,
    tenant_id       BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    namespace_id    BIGINT REFERENCES namespaces (id) ON DELETE CASCADE,
    role            TEXT   NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    created_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX role_bindings_unique ON role_bindings (principal_kind, principal_id, tenant_id, COALESCE(namespace_id, 0));
CREATE INDEX role_bindings_principal ON role_bindings (principal_kind, principal_id);

-- ES256 signing keys, shared by every replica through the database.
CREATE TABLE signing_keys (
    kid            TEXT   PRIMARY KEY,
    private_pkcs8  BYTEA  NOT NULL,
    created_at     BIGINT NOT NULL,
    retired_at     BIGINT
);

CREATE TABLE audit_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    object     TEXT   NOT NULL,
    tenant_id  BIGINT,
    source     TEXT   NOT NULL DEFAULT '',
    outcome    TEXT   NOT NULL,
    detail     TEXT
);
CREATE INDEX audit_events_tenant_at ON audit_events (tenant_id, at);
CREATE INDEX audit_events_at ON audit_events (at);
