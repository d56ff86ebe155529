-- The dashboard at the host's own address: one-time login links (`river ui --link`) and the
-- browser sessions they start. Only SHA-256 hashes of the secrets are kept. A session acts as its
-- user, at most at `role` (the role of whoever asked for the link).
CREATE TABLE web_links (
    key_hash      TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE web_sessions (
    id            TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL,
    role          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER,
    address       TEXT NOT NULL,
    agent         TEXT NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX web_sessions_user ON web_sessions (user_name);
