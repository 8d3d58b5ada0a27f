-- SQLite keeps times as text, so a key time typed by hand (an integer,
-- 'now', '2030-02-31', junk) would be stored as given and then fail every
-- read of that key: its token would get 503 and keys list would error.
-- These triggers refuse such writes with a clear message instead, for the
-- two key times an operator sets by hand. A valid time is one both SQLite
-- and the Go driver read: a calendar date YYYY-MM-DD, optionally followed
-- by a space or T and either HH:MM, or HH:MM:SS[.fff] and an optional
-- offset +HH:MM; either may end in Z. PostgreSQL's timestamptz refuses the
-- rest by itself.
-- The insert and update triggers repeat one check: a SQLite trigger fires on
-- one event, and SQL alone cannot define a function to share it through.

-- +goose Up
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

-- +goose Down
DROP TRIGGER api_keys_times_updated;
DROP TRIGGER api_keys_times_inserted;
