-- VPS snapshots: a VPS's container committed to an image whose archive the host keeps (under
-- state_dir/blobs, content-addressed like environment versions).
CREATE TABLE vps_snapshots (
    vps           INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    image         TEXT NOT NULL,
    image_id      TEXT NOT NULL,
    digest        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    node          TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    message       TEXT,
    auto          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (vps, seq)
);
CREATE INDEX vps_snapshots_digest ON vps_snapshots (digest);

-- SSH public keys users registered for the SSH gateway. A key identifies one user.
CREATE TABLE user_keys (
    key_id        TEXT PRIMARY KEY, -- `TYPE BASE64`
    user_name     TEXT NOT NULL,
    line          TEXT NOT NULL,    -- `TYPE BASE64 [COMMENT]`
    fingerprint   TEXT NOT NULL,
    added_at_ms   INTEGER NOT NULL
);
CREATE INDEX user_keys_user ON user_keys (user_name);
