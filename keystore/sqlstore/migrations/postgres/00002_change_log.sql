-- Every change to the three tables, whoever makes it (this library, the CLI
-- in another process, plain SQL), is recorded in llmauth_changes and
-- announced on the llmauth_changes channel, so that every cache can drop
-- exactly what changed. Updates that cannot change a decision (last_used_at,
-- updated_at, description) are not recorded.

-- +goose Up
CREATE TABLE llmauth_changes (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source        TEXT NOT NULL CHECK (source IN ('client', 'key', 'link', 'flush')),
    llm_client_id BIGINT NULL,
    api_key_id    BIGINT NULL,
    -- clock_timestamp, not now(): a long transaction's rows must not look
    -- old to the pruner the moment they commit.
    created_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX llmauth_changes_created_at_idx ON llmauth_changes (created_at);

-- +goose StatementBegin
CREATE FUNCTION llmauth_emit(p_source TEXT, p_client BIGINT, p_key BIGINT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    change_id BIGINT;
BEGIN
    INSERT INTO llmauth_changes (source, llm_client_id, api_key_id)
    VALUES (p_source, p_client, p_key)
    RETURNING id INTO change_id;
    -- Payload: "<change id> <source> <client id or -> <key id or ->".
    PERFORM pg_notify('llmauth_changes',
        change_id || ' ' || p_source || ' ' ||
        coalesce(p_client::text, '-') || ' ' || coalesce(p_key::text, '-'));
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION llmauth_client_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM llmauth_emit('client', OLD.id, NULL);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM llmauth_emit('client', NEW.id, NULL);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION llmauth_key_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    k BIGINT;
    c BIGINT;
BEGIN
    IF TG_OP = 'DELETE' THEN k := OLD.id; ELSE k := NEW.id; END IF;
    FOR c IN SELECT llm_client_id FROM llm_client_api_keys WHERE api_key_id = k LOOP
        PERFORM llmauth_emit('key', c, k);
    END LOOP;
    PERFORM llmauth_emit('key', NULL, k);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION llmauth_link_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM llmauth_emit('link', OLD.llm_client_id, OLD.api_key_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM llmauth_emit('link', NEW.llm_client_id, NEW.api_key_id);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION llmauth_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM llmauth_emit('flush', NULL, NULL);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER llm_clients_changed AFTER INSERT OR DELETE ON llm_clients
    FOR EACH ROW EXECUTE FUNCTION llmauth_client_changed();
CREATE TRIGGER llm_clients_updated AFTER UPDATE ON llm_clients
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION llmauth_client_changed();

CREATE TRIGGER api_keys_changed AFTER INSERT OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION llmauth_key_changed();
CREATE TRIGGER api_keys_updated AFTER UPDATE ON api_keys
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id
        OR OLD.is_active IS DISTINCT FROM NEW.is_active
        OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
        OR OLD.lookup_id IS DISTINCT FROM NEW.lookup_id
        OR OLD.secret_digest IS DISTINCT FROM NEW.secret_digest
        OR OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION llmauth_key_changed();

CREATE TRIGGER llm_client_api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON llm_client_api_keys
    FOR EACH ROW EXECUTE FUNCTION llmauth_link_changed();

CREATE TRIGGER llm_clients_truncated AFTER TRUNCATE ON llm_clients
    FOR EACH STATEMENT EXECUTE FUNCTION llmauth_truncated();
CREATE TRIGGER api_keys_truncated AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION llmauth_truncated();
CREATE TRIGGER llm_client_api_keys_truncated AFTER TRUNCATE ON llm_client_api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION llmauth_truncated();

-- +goose Down
DROP TRIGGER llm_client_api_keys_truncated ON llm_client_api_keys;
DROP TRIGGER api_keys_truncated ON api_keys;
DROP TRIGGER llm_clients_truncated ON llm_clients;
DROP TRIGGER llm_client_api_keys_changed ON llm_client_api_keys;
DROP TRIGGER api_keys_updated ON api_keys;
DROP TRIGGER api_keys_changed ON api_keys;
DROP TRIGGER llm_clients_updated ON llm_clients;
DROP TRIGGER llm_clients_changed ON llm_clients;
DROP FUNCTION llmauth_truncated();
DROP FUNCTION llmauth_link_changed();
DROP FUNCTION llmauth_key_changed();
DROP FUNCTION llmauth_client_changed();
DROP FUNCTION llmauth_emit(TEXT, BIGINT, BIGINT);
DROP TABLE llmauth_changes;
