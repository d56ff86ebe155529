-- Command tasks. The spec and placement are JSON: the host reads them whole, never queries inside.
CREATE TABLE tasks (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    batch           INTEGER NOT NULL,
    name            TEXT,
    owner           TEXT NOT NULL,
    spec_json       TEXT NOT NULL,
    target          TEXT,
    state           TEXT NOT NULL,
    placement_json  TEXT,
    exit_code       INTEGER,
    message         TEXT,
    submitted_at_ms INTEGER NOT NULL,
    started_at_ms   INTEGER,
    finished_at_ms  INTEGER
);
CREATE INDEX tasks_state ON tasks (state);
