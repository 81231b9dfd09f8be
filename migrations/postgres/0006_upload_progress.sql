-- Upload sessions keep their progress in the database, so that any registry
-- replica can continue a session another one started (blobs in object
-- storage): the bytes acknowledged, the store's state of the session (for S3:
-- its multipart upload, parts and hasher, as JSON; NULL on the filesystem,
-- whose session file is the state), the last part number handed out (never
-- reused within a session), and when a request last changed it.
ALTER TABLE uploads ADD COLUMN length BIGINT NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN store_state TEXT;
ALTER TABLE uploads ADD COLUMN last_part BIGINT NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
UPDATE uploads SET updated_at = created_at;
