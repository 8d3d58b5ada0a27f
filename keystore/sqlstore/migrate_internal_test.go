package sqlstore

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/llmauth/llmauth/internal/pgtest"
)

// TestMigrationsInStep keeps the two dialect directories one set: the same
// versions with the same names.
func TestMigrationsInStep(t *testing.T) {
	names := func(dir string) []string {
		entries, err := fs.ReadDir(migrations, "migrations/"+dir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	pg, lite := names("postgres"), names("sqlite")
	if len(pg) == 0 || strings.Join(pg, ",") != strings.Join(lite, ",") {
		t.Fatalf("postgres migrations %v, sqlite migrations %v: must match", pg, lite)
	}
}

// TestMigrationDuringWrites: migration 5 runs while a transaction that
// read a client writes a key (and so the change log, in the order writers
// lock tables). The migration takes its locks in that order, at once: it
// waits for the writer instead of deadlocking with it, and both succeed.
func TestMigrationDuringWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	open := func() *sqlx.DB {
		db, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	db, other := open(), open()
	m, err := newMigrator(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ensureVersionTable(ctx, db); err != nil {
		t.Fatal(err)
	}
	if _, err := m.provider.UpTo(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO llm_clients (name) VALUES ('bot')`); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var cid int64
	if err := tx.GetContext(ctx, &cid, `SELECT id FROM llm_clients WHERE name = 'bot'`); err != nil {
		t.Fatal(err)
	}
	migrated := make(chan error, 1)
	go func() { migrated <- Migrate(ctx, other) }()
	time.Sleep(time.Second) // the migration is waiting for the writer's lock
	if _, err := tx.ExecContext(ctx, `INSERT INTO api_keys (lookup_id, secret_digest, name) VALUES ('aaaaaaaaaaaa', repeat('a', 64), 'k')`); err != nil {
		t.Fatalf("the writer: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("the writer's commit: %v", err)
	}
	select {
	case err := <-migrated:
		if err != nil {
			t.Fatalf("Migrate beside a writer: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Migrate did not finish within 60s")
	}
}
