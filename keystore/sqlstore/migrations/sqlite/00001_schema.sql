-- The three tables of the key model. A key reaches a client only through
-- llm_client_api_keys, as in the LLMClientAPIKey join model. Column types
-- are spelled so that the pure-Go driver returns TIMESTAMP columns as
-- time.Time.

-- +goose Up
CREATE TABLE llm_clients (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE
               CHECK (length(name) BETWEEN 1 AND 63
                      AND name NOT GLOB '*[^a-z0-9-]*'
                      AND substr(name, 1, 1) <> '-'),
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    lookup_id     TEXT NOT NULL UNIQUE,
    secret_digest TEXT NOT NULL CHECK (length(secret_digest) = 64),
    name          TEXT NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    description   TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    is_active     BOOLEAN NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    expires_at    TIMESTAMP NULL,
    last_used_at  TIMESTAMP NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE llm_client_api_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    llm_client_id INTEGER NOT NULL REFERENCES llm_clients (id) ON DELETE CASCADE,
    api_key_id    INTEGER NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (llm_client_id, api_key_id)
);

CREATE INDEX llm_client_api_keys_api_key_id_idx ON llm_client_api_keys (api_key_id);

-- +goose Down
DROP TABLE llm_client_api_keys;
DROP TABLE api_keys;
DROP TABLE llm_clients;
