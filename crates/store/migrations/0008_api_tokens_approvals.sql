-- API tokens: how scripts and CI call the HTTPS API (`Authorization: Bearer rvk1.ID.SECRET`).
-- Only a SHA-256 hash of the secret is kept. A token acts as its user, at most at `role`.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_used_ms INTEGER,
    revoked_at   INTEGER
);
-- A user's live tokens have distinct names (what `river user token revoke NAME` names).
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (user_name, name) WHERE revoked_at IS NULL;

-- Approvals: a batch of tasks is approved or rejected at once.
CREATE INDEX tasks_batch ON tasks (batch);
