-- Clusters registered for P2P acceleration. Their agents authenticate with
-- the cluster token, stored as a SHA-256 (it is a high-entropy secret).
CREATE TABLE clusters (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          TEXT   NOT NULL,
    token_sha256  TEXT   NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
