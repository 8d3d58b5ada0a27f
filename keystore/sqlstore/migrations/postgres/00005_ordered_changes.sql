-- Version 5 makes change ids visible in the order they were taken, so that
-- a watcher never has to wonder whether a missing id is a transaction that
-- will still commit.
--
-- Before it, a change row was written by an ordinary AFTER trigger, early in
-- the writing transaction: a transaction that stayed open could commit an
-- id below ids other watchers had long read (a "hole"), and its row carried
-- the time of the write, not of the commit, so a pruner could delete it as
-- old the moment it appeared.
--
-- Now the row triggers are constraint triggers, deferred to commit, and
-- llmauth_emit first takes a transaction-scoped advisory lock, held until
-- the commit is visible: the next writer takes its id only after that. A
-- hole is then only an id whose transaction failed after taking it. The
-- lock is held for the few milliseconds of a commit. (A session that runs
-- SET CONSTRAINTS ALL IMMEDIATE writes its rows early again; the watcher
-- still tracks holes for that case.)
--
-- Every row also gets a random nonce: with the id and created_at it tells a
-- row the watcher saw from one written in its place after the log was
-- emptied and its ids restarted.

-- +goose Up
-- Every lock this migration needs, at once and in the order writers take
-- them, so that it cannot deadlock with a key written meanwhile; and not
-- for long behind a long reader (pg_dump), during which every instance
-- would fail closed: the migration fails after 3s and Migrate tries again.
SET LOCAL lock_timeout = '3s';
LOCK TABLE llm_clients, api_keys, llm_client_api_keys, llmauth_changes IN ACCESS EXCLUSIVE MODE;
ALTER TABLE llmauth_changes ADD COLUMN nonce BIGINT NOT NULL
    DEFAULT floor(random() * 9007199254740991)::bigint;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION llmauth_emit(p_source TEXT, p_client BIGINT, p_key BIGINT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    change_id BIGINT;
BEGIN
    -- The bytes of "llmauth" plus one: not the migration lock.
    PERFORM pg_advisory_xact_lock(30518514527073385);
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

DROP TRIGGER llm_clients_changed ON llm_clients;
DROP TRIGGER llm_clients_updated ON llm_clients;
DROP TRIGGER api_keys_changed ON api_keys;
DROP TRIGGER api_keys_updated ON api_keys;
DROP TRIGGER llm_client_api_keys_changed ON llm_client_api_keys;

CREATE CONSTRAINT TRIGGER llm_clients_changed AFTER INSERT OR DELETE ON llm_clients
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION llmauth_client_changed();
CREATE CONSTRAINT TRIGGER llm_clients_updated AFTER UPDATE ON llm_clients
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION llmauth_client_changed();
CREATE CONSTRAINT TRIGGER api_keys_changed AFTER INSERT OR DELETE ON api_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION llmauth_key_changed();
CREATE CONSTRAINT TRIGGER api_keys_updated AFTER UPDATE ON api_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id
        OR OLD.is_active IS DISTINCT FROM NEW.is_active
        OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
        OR OLD.lookup_id IS DISTINCT FROM NEW.lookup_id
        OR OLD.secret_digest IS DISTINCT FROM NEW.secret_digest
        OR OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION llmauth_key_changed();
CREATE CONSTRAINT TRIGGER llm_client_api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON llm_client_api_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION llmauth_link_changed();

-- +goose Down
SET LOCAL lock_timeout = '3s';
LOCK TABLE llm_clients, api_keys, llm_client_api_keys, llmauth_changes IN ACCESS EXCLUSIVE MODE;
DROP TRIGGER llm_client_api_keys_changed ON llm_client_api_keys;
DROP TRIGGER api_keys_updated ON api_keys;
DROP TRIGGER api_keys_changed ON api_keys;
DROP TRIGGER llm_clients_updated ON llm_clients;
DROP TRIGGER llm_clients_changed ON llm_clients;

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

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION llmauth_emit(p_source TEXT, p_client BIGINT, p_key BIGINT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    change_id BIGINT;
BEGIN
    INSERT INTO llmauth_changes (source, llm_client_id, api_key_id)
    VALUES (p_source, p_client, p_key)
    RETURNING id INTO change_id;
    PERFORM pg_notify('llmauth_changes',
        change_id || ' ' || p_source || ' ' ||
        coalesce(p_client::text, '-') || ' ' || coalesce(p_key::text, '-'));
END
$$;
-- +goose StatementEnd

ALTER TABLE llmauth_changes DROP COLUMN nonce;
