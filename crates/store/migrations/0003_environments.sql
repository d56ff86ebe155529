-- Container environments: named, versioned images. A version either points at an archive the host
-- keeps (content-addressed by SHA-256 under state_dir/blobs) or at a registry reference.
CREATE TABLE environments (
    name          TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE environment_versions (
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    image         TEXT NOT NULL,
    image_id      TEXT,
    digest        TEXT,
    size          INTEGER,
    created_by    TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    message       TEXT,
    fetches       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version)
);
CREATE INDEX environment_versions_digest ON environment_versions (digest);
