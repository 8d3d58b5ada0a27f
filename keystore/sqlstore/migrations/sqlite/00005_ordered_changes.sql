-- Version 5 gives every change row a random nonce: with the id and
-- created_at (kept to the second on SQLite) it tells a row the watcher saw
-- from one written in its place after the log was emptied and its sequence
-- reset. SQLite cannot add a column with a random default, so the table is
-- rebuilt. The triggers that write it name it and find the new one; with
-- legacy_alter_table on, the rename does not insist that they parse while
-- the old table is gone.
-- (On PostgreSQL this version also orders change ids by commit; SQLite
-- writers are serialised by the database lock already.)

-- +goose Up
PRAGMA legacy_alter_table = ON;
CREATE TABLE llmauth_changes_v5 (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    source        TEXT NOT NULL CHECK (source IN ('client', 'key', 'link', 'flush')),
    llm_client_id INTEGER NULL,
    api_key_id    INTEGER NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    nonce         INTEGER NOT NULL DEFAULT (random())
);
INSERT INTO llmauth_changes_v5 (id, source, llm_client_id, api_key_id, created_at)
    SELECT id, source, llm_client_id, api_key_id, created_at FROM llmauth_changes;
DROP TABLE llmauth_changes;
ALTER TABLE llmauth_changes_v5 RENAME TO llmauth_changes;
CREATE INDEX llmauth_changes_created_at_idx ON llmauth_changes (created_at);
PRAGMA legacy_alter_table = OFF;

-- +goose Down
PRAGMA legacy_alter_table = ON;
CREATE TABLE llmauth_changes_v4 (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    source        TEXT NOT NULL CHECK (source IN ('client', 'key', 'link', 'flush')),
    llm_client_id INTEGER NULL,
    api_key_id    INTEGER NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO llmauth_changes_v4 (id, source, llm_client_id, api_key_id, created_at)
    SELECT id, source, llm_client_id, api_key_id, created_at FROM llmauth_changes;
DROP TABLE llmauth_changes;
ALTER TABLE llmauth_changes_v4 RENAME TO llmauth_changes;
CREATE INDEX llmauth_changes_created_at_idx ON llmauth_changes (created_at);
PRAGMA legacy_alter_table = OFF;
