-- Version 3 makes SQLite refuse key times it would store as unreadable
-- text (see the sqlite directory). PostgreSQL's timestamptz columns refuse
-- those by themselves, so here the version is recorded and nothing else.

-- +goose Up
SELECT 1;

-- +goose Down
SELECT 1;
