-- Every state a task has been in, with when and why: written by the database itself, so no way
-- of changing a task (a lifecycle step, a whole batch moved, a submission) can leave it out.
CREATE TABLE task_history (
    task_id   INTEGER NOT NULL,
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    state     TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    message   TEXT,
    exit_code INTEGER
);
CREATE INDEX task_history_task ON task_history (task_id, seq);

CREATE TRIGGER task_history_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_history (task_id, state, at_ms, message, exit_code)
    VALUES (NEW.id, NEW.state, NEW.submitted_at_ms, NEW.message, NEW.exit_code);
END;

CREATE TRIGGER task_history_update AFTER UPDATE OF state ON tasks
WHEN OLD.state IS NOT NEW.state
BEGIN
    INSERT INTO task_history (task_id, state, at_ms, message, exit_code)
    VALUES (NEW.id, NEW.state,
        -- The task's own time for a start or an end, so the two never disagree; else now.
        CASE
            WHEN NEW.finished_at_ms IS NOT NULL AND OLD.finished_at_ms IS NULL THEN NEW.finished_at_ms
            WHEN NEW.started_at_ms IS NOT NULL AND OLD.started_at_ms IS NULL THEN NEW.started_at_ms
            ELSE CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
        END,
        NEW.message, NEW.exit_code);
END;

CREATE TRIGGER task_history_delete AFTER DELETE ON tasks
BEGIN
    DELETE FROM task_history WHERE task_id = OLD.id;
END;

-- Tasks from before: what their times say (submitted, started, ended).
INSERT INTO task_history (task_id, state, at_ms, message, exit_code)
SELECT id, 'queued', submitted_at_ms, NULL, NULL FROM tasks;
INSERT INTO task_history (task_id, state, at_ms, message, exit_code)
SELECT id, 'running', started_at_ms, NULL, NULL FROM tasks WHERE started_at_ms IS NOT NULL;
INSERT INTO task_history (task_id, state, at_ms, message, exit_code)
SELECT id, state, finished_at_ms, message, exit_code FROM tasks
WHERE finished_at_ms IS NOT NULL AND state IN ('completed', 'failed', 'killed', 'oom', 'lost', 'stopped');
