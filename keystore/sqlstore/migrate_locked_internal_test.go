package sqlstore

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/llmauth/llmauth/internal/pgtest"
)

// TestLockedMigration: version 6 adds llm_clients.locked, a change to it is
// logged like a rename, and Down removes both.
func TestLockedMigration(t *testing.T) {
	t.Parallel()
	for name, url := range map[string]func(testing.TB) string{
		"sqlite":   func(t testing.TB) string { return "sqlite:" + filepath.Join(t.TempDir(), "keys.db") },
		"postgres": pgtest.NewDatabase,
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, err := Open(ctx, url(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := Migrate(ctx, db); err != nil {
				t.Fatal(err)
			}
			changes := func() int {
				t.Helper()
				var n int
				if err := db.GetContext(ctx, &n, `SELECT COUNT(*) FROM llmauth_changes WHERE source = 'client'`); err != nil {
					t.Fatal(err)
				}
				return n
			}
			exec := func(q string, args ...any) error {
				_, err := db.ExecContext(ctx, db.Rebind(q), args...)
				return err
			}
			if err := exec(`INSERT INTO llm_clients (name) VALUES ('bot')`); err != nil {
				t.Fatal(err)
			}
			before := changes()
			if err := exec(`UPDATE llm_clients SET locked = ? WHERE name = 'bot'`, true); err != nil {
				t.Fatal(err)
			}
			if got := changes(); got <= before {
				t.Fatalf("locking by plain SQL logged no change (%d -> %d)", before, got)
			}
			before = changes()
			if err := exec(`UPDATE llm_clients SET locked = ? WHERE name = 'bot'`, true); err != nil {
				t.Fatal(err)
			}
			if got := changes(); got != before {
				t.Fatalf("an update that left locked as it was logged a change (%d -> %d)", before, got)
			}

			m, err := newMigrator(db)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.provider.DownTo(ctx, 5); err != nil {
				t.Fatalf("down to 5: %v", err)
			}
			if err := exec(`SELECT locked FROM llm_clients`); err == nil {
				t.Fatal("down to 5 left the locked column")
			}
			before = changes()
			if err := exec(`UPDATE llm_clients SET name = 'bot2' WHERE name = 'bot'`); err != nil {
				t.Fatal(err)
			}
			if got := changes(); got <= before {
				t.Fatal("after down to 5 a rename logs no change")
			}
			if err := Migrate(ctx, db); err != nil {
				t.Fatalf("up again: %v", err)
			}
			var locked bool
			if err := db.GetContext(ctx, &locked, `SELECT locked FROM llm_clients WHERE name = 'bot2'`); err != nil || locked {
				t.Fatalf("after up again: locked = %v, %v; want false", locked, err)
			}
		})
	}
}

// TestLockedMigrationTwiceFailsOnSQLite: SQLite has no lock across goose's
// transactions, so a Migrate that loses the race runs a version someone
// else applied; it must fail and roll back whole, not apply it twice.
func TestLockedMigrationTwiceFailsOnSQLite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	// Forget that version 6 ran, as a racing caller that read the versions
	// before it committed would.
	if _, err := db.ExecContext(ctx, `DELETE FROM `+migrationTable+` WHERE version_id = 6`); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, db); err == nil {
		t.Fatal("version 6 applied twice without an error")
	}
	var n int
	if err := db.GetContext(ctx, &n, `SELECT COUNT(*) FROM pragma_table_info('llm_clients') WHERE name = 'locked'`); err != nil || n != 1 {
		t.Fatalf("locked columns after the failed re-run: %d, %v", n, err)
	}
	var triggers int
	if err := db.GetContext(ctx, &triggers, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'llm_clients_updated'`); err != nil || triggers != 1 {
		t.Fatalf("llm_clients_updated triggers after the failed re-run: %d, %v", triggers, err)
	}
}
