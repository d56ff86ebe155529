-- Every certificate issued to a user (at login, at each renewal, at a reissue), so that all of a
-- user's certificates can be revoked at once (`river user reissue`). Existing users start with the
-- one the host knows of; their certificates' ends are not recorded, so they are kept for a year.
CREATE TABLE user_certs (
    serial     TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX user_certs_by_user ON user_certs (user_name);
INSERT OR IGNORE INTO user_certs (serial, user_name, expires_at)
    SELECT cert_serial, name, CAST(strftime('%s', 'now') AS INTEGER) + 366 * 86400 FROM users WHERE cert_serial <> '';

-- Tokens of a third kind: `reissue` (an existing user logs in again). SQLite cannot change a
-- CHECK constraint in place, so the table is made again with its rows.
CREATE TABLE tokens_new (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    purpose     TEXT NOT NULL CHECK (purpose IN ('node', 'user', 'reissue')),
    user_name   TEXT,
    user_role   TEXT,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    uses_left   INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0
);
INSERT INTO tokens_new (id, secret_hash, purpose, user_name, user_role, created_by, created_at, expires_at, uses_left, revoked)
    SELECT id, secret_hash, purpose, user_name, user_role, created_by, created_at, expires_at, uses_left, revoked FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;

-- A user an admin has disabled keeps their account, tasks and keys, but cannot connect. A removed
-- user's row stays, marked: their name is never given to someone else, who would otherwise own
-- what is left of theirs (tasks, environments, files under their uid).
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN removed_at INTEGER;

-- Colleagues a VPS's owner lets reach it (ssh, connect, forward, the gateway).
CREATE TABLE vps_shares (
    task_id     INTEGER NOT NULL,
    user_name   TEXT NOT NULL,
    added_at_ms INTEGER NOT NULL,
    PRIMARY KEY (task_id, user_name)
);

-- The scheduler reads each user's oldest waiting tasks (a fair queue).
CREATE INDEX tasks_state_owner ON tasks (state, owner, id);
