-- Cluster identity and settings that must survive restarts.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Joined runners. A row exists from join until `river node remove`.
CREATE TABLE nodes (
    name              TEXT PRIMARY KEY,
    state             TEXT NOT NULL DEFAULT 'offline',
    address           TEXT,
    info_json         TEXT NOT NULL,
    usage_json        TEXT,
    last_heartbeat_ms INTEGER,
    joined_at         INTEGER NOT NULL,
    cert_serial       TEXT NOT NULL,
    prev_cert_serial  TEXT,
    cert_expires_at   INTEGER NOT NULL
);

-- Join tokens (purpose 'node') and user invites (purpose 'user'). Only a hash of the secret.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    purpose     TEXT NOT NULL CHECK (purpose IN ('node', 'user')),
    user_name   TEXT,
    user_role   TEXT,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    uses_left   INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE users (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    cert_serial TEXT
);

-- Certificates that must no longer be accepted, until they would have expired anyway.
CREATE TABLE revoked_certs (
    serial     TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Audit trail: who did what, never secrets.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT NOT NULL
);
