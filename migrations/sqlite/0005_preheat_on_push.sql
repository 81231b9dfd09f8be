-- Preheat on push: a new tag in the namespace is pushed into the caches of
-- these clusters' online agents (a share of them, in percent). Both sides
-- belong to one tenant; the API checks that before it writes a row.
CREATE TABLE namespace_preheat_targets (
    namespace_id  BIGINT   NOT NULL REFERENCES namespaces (id) ON DELETE CASCADE,
    cluster_id    BIGINT   NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    percent       BIGINT   NOT NULL CHECK (percent BETWEEN 1 AND 100),
    PRIMARY KEY (namespace_id, cluster_id)
);
