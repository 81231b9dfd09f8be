-- Web console sign-ins. The cookie holds a random secret; only its SHA-256
-- is stored, so a copy of the database cannot be used to sign in. A session
-- dies with sign-out, with its expiry, and with a password change (the
-- user's credentials_version moves past the one recorded here).
CREATE TABLE console_sessions (
    id_sha256            TEXT   PRIMARY KEY,
    user_id              BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credentials_version  BIGINT NOT NULL,
    csrf_token           TEXT   NOT NULL,
    -- One message for the next page (POST-redirect-GET), JSON; a secret shown once lives here until read.
    flash                TEXT,
    created_at           BIGINT NOT NULL,
    expires_at           BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
