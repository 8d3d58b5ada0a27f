-- Version 6 adds the lock: a locked client requires a key even while it
-- has none, so every caller gets 401 until one exists. A lock or an unlock
-- changes a decision, so the client-changed trigger now fires on it too
-- (it fired only on id and name), still deferred to commit as version 5
-- made it.

-- +goose Up
-- Not for long behind a long reader: Migrate retries on the timeout.
SET LOCAL lock_timeout = '3s';
ALTER TABLE llm_clients ADD COLUMN locked BOOLEAN NOT NULL DEFAULT false;

DROP TRIGGER llm_clients_updated ON llm_clients;
CREATE CONSTRAINT TRIGGER llm_clients_updated AFTER UPDATE ON llm_clients
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id
        OR OLD.name IS DISTINCT FROM NEW.name
        OR OLD.locked IS DISTINCT FROM NEW.locked)
    EXECUTE FUNCTION llmauth_client_changed();

-- +goose Down
SET LOCAL lock_timeout = '3s';
DROP TRIGGER llm_clients_updated ON llm_clients;
CREATE CONSTRAINT TRIGGER llm_clients_updated AFTER UPDATE ON llm_clients
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION llmauth_client_changed();

ALTER TABLE llm_clients DROP COLUMN locked;
