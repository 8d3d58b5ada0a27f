package storetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// SQLiteURL is a SQLite file in t's temporary directory.
func SQLiteURL(t testing.TB) string {
	return "sqlite:" + filepath.Join(t.TempDir(), "keys.db")
}

// SQL is the SQL store alone, on a fresh database at url(t): PostgreSQL
// (see internal/pgtest) or SQLite (see SQLiteURL). A nil clock leaves the
// store on the real one.
func SQL(url func(testing.TB) string) Factory {
	return func(t *testing.T, clock *Clock) Harness {
		ctx := context.Background()
		db, err := sqlstore.Open(ctx, url(t))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = db.Close() })
		if err := sqlstore.Migrate(ctx, db); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		opts := sqlstore.Options{}
		if clock != nil {
			opts.Now = clock.Now
		}
		s, err := sqlstore.New(ctx, db, opts)
		if err != nil {
			t.Fatal(err)
		}
		return Harness{
			Admin:   s,
			Decider: s,
			DB:      db,
			Break:   func(testing.TB) { _ = db.Close() },
		}
	}
}

// latestChange is the newest change-log id, read as an operator would.
func (h Harness) latestChange(ctx context.Context) (int64, error) {
	var id int64
	err := h.DB.GetContext(ctx, &id, `SELECT COALESCE(MAX(id), 0) FROM llmauth_changes`)
	return id, err
}
