-- Several registry replicas share this database. What a single process kept
-- in memory and others must see lives here now.

-- One replica at a time schedules a P2P cluster's swarms: the holder of its
-- lease, which renews it every two seconds; another replica takes it over
-- once `expires_at` (milliseconds since the epoch, the database's clock) has
-- passed. `term` counts the holders it has had.
CREATE TABLE p2p_leases (
    cluster_id  BIGINT PRIMARY KEY REFERENCES clusters (id) ON DELETE CASCADE,
    holder      TEXT   NOT NULL,
    holder_url  TEXT   NOT NULL,
    expires_at  BIGINT NOT NULL,
    term        BIGINT NOT NULL
);
CREATE INDEX p2p_leases_holder ON p2p_leases (holder);

-- The agents registered with a cluster, as they said when registering, and
-- when each was last heard from (Unix seconds) with what it said then. The
-- console and preheat read the online ones; the holder of a cluster's lease
-- takes back an agent it has not seen yet (the previous holder died) from here.
CREATE TABLE p2p_agents (
    id             TEXT   PRIMARY KEY,
    cluster_id     BIGINT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    node           TEXT   NOT NULL,
    ip             TEXT   NOT NULL,
    peer_port      BIGINT NOT NULL,
    zone           TEXT   NOT NULL,
    upload_slots   BIGINT NOT NULL,
    version        TEXT   NOT NULL,
    platform       TEXT   NOT NULL,
    registered_at  BIGINT NOT NULL,
    last_seen      BIGINT NOT NULL,
    cache_bytes    BIGINT,
    served_bytes   BIGINT
);
CREATE INDEX p2p_agents_cluster ON p2p_agents (cluster_id, last_seen);

-- Preheat jobs of the last hour and each chosen node's share. Blob lists are
-- JSON arrays of digests; `token` is the short-lived pull token the nodes
-- join with.
CREATE TABLE preheat_jobs (
    id           TEXT   PRIMARY KEY,
    cluster_id   BIGINT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    repository   TEXT   NOT NULL,
    tag          TEXT   NOT NULL,
    manifest     TEXT   NOT NULL,
    blobs        TEXT   NOT NULL,
    started_by   TEXT   NOT NULL,
    token        TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL
);
CREATE INDEX preheat_jobs_cluster ON preheat_jobs (cluster_id, created_ms);

CREATE TABLE preheat_nodes (
    job_id    TEXT   NOT NULL REFERENCES preheat_jobs (id) ON DELETE CASCADE,
    ordinal   BIGINT NOT NULL,
    agent_id  TEXT   NOT NULL,
    node      TEXT   NOT NULL,
    platform  TEXT   NOT NULL,
    manifest  TEXT,
    blobs     TEXT   NOT NULL,
    state     TEXT   NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    error     TEXT,
    PRIMARY KEY (job_id, agent_id)
);
CREATE INDEX preheat_nodes_agent ON preheat_nodes (agent_id, state);

-- P2P traffic for the acceleration dashboard: bytes agents received from
-- peers and from the seed, in all and per time bucket (`at`, Unix seconds, a
-- multiple of the sample period), and the swarms joined lately with the
-- namespace their bytes count against. Replicas add what they counted every
-- few seconds. A swarm counts as active on the dashboard while it has an
-- agent `downloading` (0 or 1) and was heard from lately.
CREATE TABLE p2p_traffic (
    tenant_id   BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    cluster_id  BIGINT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    namespace   TEXT   NOT NULL,
    peers       BIGINT NOT NULL,
    seed        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, cluster_id, namespace)
);

CREATE TABLE p2p_traffic_samples (
    tenant_id  BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    at         BIGINT NOT NULL,
    peers      BIGINT NOT NULL,
    seed       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, at)
);

CREATE TABLE p2p_swarms (
    cluster_id   BIGINT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    digest       TEXT   NOT NULL,
    tenant_id    BIGINT NOT NULL,
    namespace    TEXT   NOT NULL,
    last_active  BIGINT NOT NULL,
    downloading  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (cluster_id, digest)
);
CREATE INDEX p2p_swarms_active ON p2p_swarms (tenant_id, last_active);

-- Failed logins, per login name and per client address (`subject`), for the
-- limit every replica enforces together; `at` in milliseconds. Rows older
-- than the window are deleted as new ones come.
CREATE TABLE login_failures (
    subject  TEXT   NOT NULL,
    at       BIGINT NOT NULL
);
CREATE INDEX login_failures_key ON login_failures (subject, at);
