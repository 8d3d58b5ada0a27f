-- Version 4 makes SQLite refuse a created_at or updated_at it would store
-- as unreadable text (see the sqlite directory). PostgreSQL's timestamptz
-- refuses those by itself; the values it does accept that lib/pq cannot
-- hand over as a time ('infinity', '-infinity') or that RFC 3339 cannot
-- print (years after 9999 or before 1 BC) are read by the store, in every
-- time column (keystore/times.go). So here the version is recorded and
-- nothing else.

-- +goose Up
SELECT 1;

-- +goose Down
SELECT 1;
