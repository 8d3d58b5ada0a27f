-- Every time column of the three tables is checked as version 3 checks the
-- two key times, so that no time typed by hand (a created_at, an
-- updated_at) can be text the store does not read as a time. The check is
-- also tightened where version 3 let through text that SQLite reads but
-- the Go driver does not: a bare date followed by a space or T
-- ('2030-01-02 '), and a time followed by a NUL byte (SQLite's functions
-- stop at the first NUL; the byte length of an ASCII time is its length in
-- characters, so comparing the two refuses NULs and non-ASCII). A valid
-- time is a calendar date YYYY-MM-DD, optionally followed by a space or T
-- and either HH:MM, or HH:MM:SS[.fff] and an optional offset +HH:MM; either
-- may end in Z. created_at and updated_at are NOT NULL, and their triggers
-- refuse NULL with the same message.
-- Rows written before this version are not checked again: the store reads
-- any value (see keystore/times.go), a time it cannot parse as the earliest
-- time.
-- Each trigger repeats the check: SQL alone cannot define a function to
-- share it through.

-- +goose Up
DROP TRIGGER api_keys_times_updated;
DROP TRIGGER api_keys_times_inserted;

-- +goose StatementBegin
CREATE TRIGGER api_keys_times_inserted BEFORE INSERT ON api_keys
BEGIN
    SELECT RAISE(ABORT, 'api_keys: expires_at and last_used_at must be NULL or a time such as ''2030-01-02 15:04:05+00:00''')
    FROM (SELECT NEW.expires_at AS t UNION ALL SELECT NEW.last_used_at)
    WHERE t IS NOT NULL AND NOT (
        typeof(t) = 'text'
        AND length(CAST(t AS BLOB)) = length(t)
        AND date(substr(t, 1, 10)) IS substr(t, 1, 10)
        AND (length(t) = 10 OR (length(t) >= 16 AND substr(t, 11, 1) IN (' ', 'T') AND substr(t, 12, 2) < '24'))
        AND (length(t) <= 16 OR substr(t, 17, 1) IN (':', 'Z'))
        AND substr(t, 12) NOT GLOB '*[^0-9:.+Z-]*'
        AND datetime(t) IS NOT NULL);
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER api_keys_times_updated BEFORE UPDATE OF expires_at, last_used_at ON api_keys
BEGIN
    SELECT RAISE(ABORT, 'api_keys: expires_at and last_used_at must be NULL or a time such as ''2030-01-02 15:04:05+00:00''')
    FROM (SELECT NEW.expires_at AS t UNION ALL SELECT NEW.last_used_at)
    WHERE t IS NOT NULL AND NOT (
        typeof(t) = 'text'
        AND length(CAST(t AS BLOB)) = length(t)
        AND date(substr(t, 1, 10)) IS substr(t, 1, 10)
        AND (length(t) = 10 OR (length(t) >= 16 AND substr(t, 11, 1) IN (' ', 'T') AND substr(t, 12, 2) < '24'))
        AND (length(t) <= 16 OR substr(t, 17, 1) IN (':', 'Z'))
        AND substr(t, 12) NOT GLOB '*[^0-9:.+Z-]*'
        AND datetime(t) IS NOT NULL);
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER llm_clients_row_times_inserted BEFORE INSERT ON llm_clients
BEGIN
    SELECT RAISE(ABORT, 'llm_clients: created_at and updated_at must be a time such as ''2030-01-02 15:04:05+00:00''')
    FROM (SELECT NEW.created_at AS t UNION ALL SELECT NEW.updated_at)
    WHERE NOT (
        typeof(t) = 'text'
        AND length(CAST(t AS BLOB)) = length(t)
        AND date(substr(t, 1, 10)) IS substr(t, 1, 10)
        AND (length(t) = 10 OR (length(t) >= 16 AND substr(t, 11, 1) IN (' ', 'T') AND substr(t, 12, 2) < '24'))
        AND (length(t) <= 16 OR substr(t, 17, 1) IN (':', 'Z'))
        AND substr(t, 12) NOT GLOB '*[^0-9:.+Z-]*'
        AND datetime(t) IS NOT NULL);
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER llm_clients_row_times_updated BEFORE UPDATE OF created_at, updated_at ON llm_clients
BEGIN
    SELECT RAISE(ABORT, 'llm_clients: created_at and updated_at must be a time such as ''2030-01-02 15:04:05+00:00''')
    FROM (SELECT NEW.created_at AS t UNION ALL SELECT NEW.updated_at)
    WHERE NOT (
        typeof(t) = 'text'
        AND length(CAST(t AS BLOB)) = length(t)
        AND date(substr(t, 1, 10)) IS substr(t, 1, 10)
        AND (length(t) = 10 OR (length(t) >= 16 AND substr(t, 11, 1) IN (' ', 'T') AND substr(t, 12, 2) < '24'))
        AND (length(t) <= 16 OR substr(t, 17, 1) IN (':', 'Z'))
        AND substr(t, 12) NOT GLOB '*[^0-9:.+Z-]*'
        AND datetime(t) IS NOT NULL);
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER api_keys_row_times_inserted BEFORE INSERT ON api_keys
BEGIN
    SELECT RAISE(ABORT, 'api_keys: created_at and updated_at must be a time such as ''2030-01-02 15:04:05+00:00''')
    FROM (SELECT NEW.created_at AS t UNION ALL SELECT NEW.updated_at)
    WHERE NOT (
        typeof(t) = 'text'
        AND length(CAST(t AS BLOB)) = length(t)
        AND date(substr(t, 1, 10)) IS substr(t, 1, 10)
        AND (length(t) = 10 OR (length(t) >= 16 AND substr(t, 11, 1) IN (' ', 'T') AND substr(t, 12, 2) < '24'))
        AND (length(t) <= 16 OR substr(t, 17, 1) IN (':', 'Z'))
        AND substr(t, 12) NOT GLOB '*[^0-9:.+Z-]*'
        AND datetime(t) IS NOT NULL);
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER api_keys_row_times_updated BEFORE UPDATE OF created_at, updated_at ON api_keys
BEGIN
    SELECT RAISE(ABORT, 'api_keys: created_at and updated_at must be a time such as ''2030-01-02 15:04:05+00:00''')
    FROM (SELECT NEW.created_at AS t UNION ALL SELECT NEW.updated_at)
    WHERE NOT (
        typeof(t) = 'text'
        AND length(CAST(t AS BLOB)) = length(t)
        AND date(substr(t, 1, 10)) IS substr(t, 1, 10)
        AND (length(t) = 10 OR (length(t) >= 16 AND substr(t, 11, 1) IN (' ', 'T') AND substr(t, 12, 2) < '24'))
        AND (length(t) <= 16 OR substr(t, 17, 1) IN (':', 'Z'))
        AND substr(t, 12) NOT GLOB '*[^0-9:.+Z-]*'
        AND datetime(t) IS NOT NULL);
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER llm_client_api_keys_row_times_inserted BEFORE INSERT ON llm_client_api_keys
BEGIN
    SELECT RAISE(ABORT, 'llm_client_api_keys: created_at and updated_at must be a time such as ''2030-01-02 15:04:05+00:00''')
    FROM (SELECT NEW.created_at AS t UNION ALL SELECT NEW.updated_at)
    WHERE NOT (
        typeof(t) = 'text'
        AND length(CAST(t AS BLOB)) = length(t)
        AND date(substr(t, 1, 10)) IS substr(t, 1, 10)
        AND (length(t) = 10 OR (length(t) >= 16 AND substr(t, 11, 1) IN (' ', 'T') AND substr(t, 12, 2) < '24'))
        AND (length(t) <= 16 OR substr(t, 17, 1) IN (':', 'Z'))
        AND substr(t, 12) NOT GLOB '*[^0-9:.+Z-]*'
        AND datetime(t) IS NOT NULL);
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER llm_client_api_keys_row_times_updated BEFORE UPDATE OF created_at, updated_at ON llm_client_api_keys
BEGIN
    SELECT RAISE(ABORT, 'llm_client_api_keys: created_at and updated_at must be a time such as ''2030-01-02 15:04:05+00:00''')
    FROM (SELECT NEW.created_at AS t UNION ALL SELECT NEW.updated_at)
    WHERE NOT (
        typeof(t) = 'text'
        AND length(CAST(t AS BLOB)) = length(t)
        AND date(substr(t, 1, 10)) IS substr(t, 1, 10)
        AND (length(t) = 10 OR (length(t) >= 16 AND substr(t, 11, 1) IN (' ', 'T') AND substr(t, 12, 2) < '24'))
        AND (length(t) <= 16 OR substr(t, 17, 1) IN (':', 'Z'))
        AND substr(t, 12) NOT GLOB '*[^0-9:.+Z-]*'
        AND datetime(t) IS NOT NULL);
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER llm_client_api_keys_row_times_updated;
DROP TRIGGER llm_client_api_keys_row_times_inserted;
DROP TRIGGER api_keys_row_times_updated;
DROP TRIGGER api_keys_row_times_inserted;
DROP TRIGGER llm_clients_row_times_updated;
DROP TRIGGER llm_clients_row_times_inserted;
DROP TRIGGER api_keys_times_updated;
DROP TRIGGER api_keys_times_inserted;

-- Version 3's triggers, as they were.
-- +goose StatementBegin
CREATE TRIGGER api_keys_times_inserted BEFORE INSERT ON api_keys
BEGIN
    SELECT RAISE(ABORT, 'api_keys: expires_at and last_used_at must be NULL or a time such as ''2030-01-02 15:04:05+00:00''')
    FROM (SELECT NEW.expires_at AS t UNION ALL SELECT NEW.last_used_at)
    WHERE t IS NOT NULL AND NOT (
        typeof(t) = 'text'
        AND date(substr(t, 1, 10)) IS substr(t, 1, 10)
        AND (length(t) = 10 OR (substr(t, 11, 1) IN (' ', 'T') AND substr(t, 12, 2) < '24'))
        AND (length(t) <= 16 OR substr(t, 17, 1) IN (':', 'Z'))
        AND substr(t, 12) NOT GLOB '*[^0-9:.+Z-]*'
        AND datetime(t) IS NOT NULL);
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER api_keys_times_updated BEFORE UPDATE OF expires_at, last_used_at ON api_keys
BEGIN
    SELECT RAISE(ABORT, 'api_keys: expires_at and last_used_at must be NULL or a time such as ''2030-01-02 15:04:05+00:00''')
    FROM (SELECT NEW.expires_at AS t UNION ALL SELECT NEW.last_used_at)
    WHERE t IS NOT NULL AND NOT (
        typeof(t) = 'text'
        AND date(substr(t, 1, 10)) IS substr(t, 1, 10)
        AND (length(t) = 10 OR (substr(t, 11, 1) IN (' ', 'T') AND substr(t, 12, 2) < '24'))
        AND (length(t) <= 16 OR substr(t, 17, 1) IN (':', 'Z'))
        AND substr(t, 12) NOT GLOB '*[^0-9:.+Z-]*'
        AND datetime(t) IS NOT NULL);
END;
-- +goose StatementEnd
