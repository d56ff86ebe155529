-- A number per user name, given once and never given again (AUTOINCREMENT never reuses one, even
-- after a row is gone): nodes make the uid of a user's process tasks from it where they have no
-- account of that name. Existing users get theirs in the order they joined.
CREATE TABLE user_numbers (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    name   TEXT NOT NULL UNIQUE
);
INSERT INTO user_numbers (name) SELECT name FROM users ORDER BY created_at, name;
