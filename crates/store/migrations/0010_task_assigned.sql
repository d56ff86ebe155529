-- What the host decided for a task at submit (its environment's archive, a pinned overlay address,
-- a group member's rank), apart from what the user asked (`spec_json`). NULL in rows from before:
-- those decisions are then read from the spec, where they used to be kept.
ALTER TABLE tasks ADD COLUMN assigned_json TEXT;
