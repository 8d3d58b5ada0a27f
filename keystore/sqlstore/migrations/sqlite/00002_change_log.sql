-- Every change to the three tables, whoever makes it (this library, the CLI
-- in another process, plain SQL), is recorded in llmauth_changes, which each
-- cache polls. Updates that cannot change a decision (last_used_at,
-- updated_at, description) are not recorded.

-- +goose Up
CREATE TABLE llmauth_changes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    source        TEXT NOT NULL CHECK (source IN ('client', 'key', 'link', 'flush')),
    llm_client_id INTEGER NULL,
    api_key_id    INTEGER NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX llmauth_changes_created_at_idx ON llmauth_changes (created_at);

-- +goose StatementBegin
CREATE TRIGGER llm_clients_inserted AFTER INSERT ON llm_clients BEGIN
    INSERT INTO llmauth_changes (source, llm_client_id) VALUES ('client', NEW.id);
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER llm_clients_deleted AFTER DELETE ON llm_clients BEGIN
    INSERT INTO llmauth_changes (source, llm_client_id) VALUES ('client', OLD.id);
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER llm_clients_updated AFTER UPDATE ON llm_clients
WHEN OLD.id IS NOT NEW.id OR OLD.name IS NOT NEW.name BEGIN
    INSERT INTO llmauth_changes (source, llm_client_id) VALUES ('client', OLD.id);
    INSERT INTO llmauth_changes (source, llm_client_id) VALUES ('client', NEW.id);
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys BEGIN
    INSERT INTO llmauth_changes (source, api_key_id) VALUES ('key', NEW.id);
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys BEGIN
    INSERT INTO llmauth_changes (source, llm_client_id, api_key_id)
        SELECT 'key', llm_client_id, OLD.id FROM llm_client_api_keys WHERE api_key_id = OLD.id;
    INSERT INTO llmauth_changes (source, api_key_id) VALUES ('key', OLD.id);
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER api_keys_updated AFTER UPDATE ON api_keys
WHEN OLD.id IS NOT NEW.id
  OR OLD.is_active IS NOT NEW.is_active
  OR OLD.expires_at IS NOT NEW.expires_at
  OR OLD.lookup_id IS NOT NEW.lookup_id
  OR OLD.secret_digest IS NOT NEW.secret_digest
  OR OLD.name IS NOT NEW.name BEGIN
    INSERT INTO llmauth_changes (source, llm_client_id, api_key_id)
        SELECT 'key', llm_client_id, NEW.id FROM llm_client_api_keys WHERE api_key_id = NEW.id;
    INSERT INTO llmauth_changes (source, api_key_id) VALUES ('key', NEW.id);
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER llm_client_api_keys_inserted AFTER INSERT ON llm_client_api_keys BEGIN
    INSERT INTO llmauth_changes (source, llm_client_id, api_key_id)
        VALUES ('link', NEW.llm_client_id, NEW.api_key_id);
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER llm_client_api_keys_deleted AFTER DELETE ON llm_client_api_keys BEGIN
    INSERT INTO llmauth_changes (source, llm_client_id, api_key_id)
        VALUES ('link', OLD.llm_client_id, OLD.api_key_id);
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER llm_client_api_keys_updated AFTER UPDATE ON llm_client_api_keys BEGIN
    INSERT INTO llmauth_changes (source, llm_client_id, api_key_id)
        VALUES ('link', OLD.llm_client_id, OLD.api_key_id);
    INSERT INTO llmauth_changes (source, llm_client_id, api_key_id)
        VALUES ('link', NEW.llm_client_id, NEW.api_key_id);
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER llm_client_api_keys_updated;
DROP TRIGGER llm_client_api_keys_deleted;
DROP TRIGGER llm_client_api_keys_inserted;
DROP TRIGGER api_keys_updated;
DROP TRIGGER api_keys_deleted;
DROP TRIGGER api_keys_inserted;
DROP TRIGGER llm_clients_updated;
DROP TRIGGER llm_clients_deleted;
DROP TRIGGER llm_clients_inserted;
DROP TABLE llmauth_changes;
