-- Bumped whenever a role of the account is removed or replaced by a lesser
-- one (a robot's scope included). Access tokens carry it beside the
-- credentials version and are refused once it moved, so a narrowed grant
-- ends the tokens issued before it on the next request, on every replica;
-- console sign-ins and refresh tokens, which hold no grants, live on.
-- Tokens issued before this column existed carry none (0) and stay valid
-- until the account's first narrowing.
ALTER TABLE users ADD COLUMN grants_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE robots ADD COLUMN grants_version BIGINT NOT NULL DEFAULT 0;
