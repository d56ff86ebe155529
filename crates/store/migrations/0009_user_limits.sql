-- Per-user overrides of the cluster's limits (`river user limits NAME --running-cores 16`); a
-- NULL keeps the cluster's default, 0 means no limit.
CREATE TABLE user_limits (
    user_name     TEXT PRIMARY KEY,
    queued        INTEGER,
    running_cores INTEGER,
    running_gpus  INTEGER,
    vps           INTEGER,
    archive_mib   INTEGER
);
