-- Version 6 adds the lock: a locked client requires a key even while it
-- has none, so every caller gets 401 until one exists. A lock or an unlock
-- changes a decision, so the client-changed trigger now fires on it too
-- (it fired only on id and name).
-- Applied twice, this fails at the ADD COLUMN (the column exists), and the
-- version table's unique index refuses the second version row anyway: a
-- concurrent Migrate that loses the race rolls back whole.

-- +goose Up
ALTER TABLE llm_clients ADD COLUMN locked BOOLEAN NOT NULL DEFAULT 0 CHECK (locked IN (0, 1));

DROP TRIGGER llm_clients_updated;
-- +goose StatementBegin
CREATE TRIGGER llm_clients_updated AFTER UPDATE ON llm_clients
WHEN OLD.id IS NOT NEW.id OR OLD.name IS NOT NEW.name OR OLD.locked IS NOT NEW.locked BEGIN
    INSERT INTO llmauth_changes (source, llm_client_id) VALUES ('client', OLD.id);
    INSERT INTO llmauth_changes (source, llm_client_id) VALUES ('client', NEW.id);
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER llm_clients_updated;
-- +goose StatementBegin
CREATE TRIGGER llm_clients_updated AFTER UPDATE ON llm_clients
WHEN OLD.id IS NOT NEW.id OR OLD.name IS NOT NEW.name BEGIN
    INSERT INTO llmauth_changes (source, llm_client_id) VALUES ('client', OLD.id);
    INSERT INTO llmauth_changes (source, llm_client_id) VALUES ('client', NEW.id);
END;
-- +goose StatementEnd

ALTER TABLE llm_clients DROP COLUMN locked;
