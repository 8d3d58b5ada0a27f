package sqlstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmauth/llmauth/internal/pgtest"
	"github.com/llmauth/llmauth/internal/storetest"
	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// sqliteURL and rawHarness are the suite's SQL databases.
var sqliteURL = storetest.SQLiteURL

func rawHarness(url func(testing.TB) string) storetest.Factory { return storetest.SQL(url) }

func TestSQLStoreSQLite(t *testing.T) {
	t.Parallel()
	storetest.Run(t, rawHarness(sqliteURL))
}

func TestSQLStorePostgres(t *testing.T) {
	t.Parallel()
	storetest.Run(t, rawHarness(pgtest.NewDatabase))
}

func TestMigrateIdempotent(t *testing.T) {
	t.Parallel()
	for name, url := range map[string]func(testing.TB) string{"sqlite": sqliteURL, "postgres": pgtest.NewDatabase} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, err := sqlstore.Open(ctx, url(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for i := range 3 {
				if err := sqlstore.Migrate(ctx, db); err != nil {
					t.Fatalf("Migrate #%d: %v", i+1, err)
				}
			}
			cur, latest, err := sqlstore.MigrationVersion(ctx, db)
			if err != nil || cur != latest || latest < 2 {
				t.Fatalf("MigrationVersion = %d, %d, %v", cur, latest, err)
			}
			// The database itself refuses a bad name, whoever writes it.
			if _, err := db.ExecContext(ctx, `INSERT INTO llm_clients (name) VALUES ('Bad Name')`); err == nil {
				t.Fatal("the schema accepted an invalid client name")
			}
		})
	}
}

// TestMigrateConcurrently: processes that start together on a fresh
// database (every CLI command and every server migrates at start) all
// succeed and leave one schema. Each pool here is a separate *sqlx.DB, so
// they contend through the database's own locks, as processes do.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	const rounds, parallel = 5, 4
	for name, url := range map[string]func(testing.TB) string{"sqlite": sqliteURL, "postgres": pgtest.NewDatabase} {
		t.Run(name, func(t *testing.T) {
			for round := range rounds {
				u := url(t)
				errs := make(chan error, parallel)
				for i := range parallel {
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
						defer cancel()
						db, err := sqlstore.Open(ctx, u)
						if err != nil {
							errs <- err
							return
						}
						defer db.Close()
						if i == 0 {
							db.SetMaxOpenConns(1) // Migrate needs one connection at a time
						}
						errs <- sqlstore.Migrate(ctx, db)
					}()
				}
				for range parallel {
					if err := <-errs; err != nil {
						t.Errorf("round %d: %v", round, err)
					}
				}
				db, err := sqlstore.Open(context.Background(), u)
				if err != nil {
					t.Fatal(err)
				}
				cur, latest, err := sqlstore.MigrationVersion(context.Background(), db)
				var applied int
				if err == nil {
					err = db.Get(&applied, `SELECT COUNT(*) FROM llmauth_schema_migrations WHERE version_id > 0`)
				}
				db.Close()
				if err != nil || cur != latest || int64(applied) != latest {
					t.Fatalf("round %d: version %d of %d, %d versions recorded, %v", round, cur, latest, applied, err)
				}
			}
		})
	}
}

// TestSQLiteKeyTimesByHand: SQLite stores times as text, so the schema
// refuses a key time typed by hand that the store could not read back,
// and accepts the forms an operator would type. (PostgreSQL's timestamptz
// does this by itself.)
func TestSQLiteKeyTimesByHand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := rawHarness(sqliteURL)(t, nil)
	s := h.Admin
	if _, err := s.CreateClient(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	key, err := s.CreateKey(ctx, "bot", keystore.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		expr    string
		ok      bool
		expired bool
	}{
		{"'2999-01-02 15:04:05+00:00'", true, false},
		{"'2999-01-02T15:04:05.123Z'", true, false},
		{"'2999-01-02 15:04:05'", true, false},
		{"'2999-01-02 15:04'", true, false},
		{"'2999-01-02T15:04Z'", true, false},
		{"'2999-01-02 15:04:05.5-05:00'", true, false},
		{"'2999-01-02'", true, false},
		{"datetime('now', '-1 hour')", true, true},
		{"strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+1 hour')", true, false},
		{"NULL", true, false},
		{"1700000000", false, false},
		{"'1700000000'", false, false},
		{"julianday('now')", false, false},
		{"'now'", false, false},
		{"'junk'", false, false},
		{"''", false, false},
		{"'2999-02-31 00:00:00'", false, false},
		{"'2999-01-02 15:04:05 +01:00'", false, false},
		{"'2999-01-02 15:04:05 '", false, false},
		{"'15:04:05'", false, false},
		{"'2999-01-02 24:00:00'", false, false},
		{"'2999-01-02 15:04+01:00'", false, false},
		{"'2999-01-02T15:04-05:00'", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			before, err := s.GetKey(ctx, key.ID)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.DB().ExecContext(ctx, `UPDATE api_keys SET expires_at = `+tt.expr+` WHERE id = ?`, key.ID)
			if !tt.ok {
				if err == nil || !strings.Contains(err.Error(), "expires_at and last_used_at must be NULL or a time") {
					t.Fatalf("accepted, or refused unclearly: %v", err)
				}
				after, err := s.GetKey(ctx, key.ID)
				if err != nil || !equalTimes(after.ExpiresAt, before.ExpiresAt) {
					t.Fatalf("a refused write changed the key: %+v -> %+v (%v)", before, after, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if _, err := s.ListKeys(ctx, "bot"); err != nil {
				t.Fatalf("ListKeys after the write: %v", err)
			}
			var want error
			if tt.expired {
				want = keystore.ErrInvalidToken
			}
			if _, err := s.Verify(ctx, "bot", key.Token); !errors.Is(err, want) {
				t.Fatalf("Verify = %v, want %v", err, want)
			}
		})
	}
	// The same rule on insert, for last_used_at too.
	_, err = s.DB().ExecContext(ctx, `INSERT INTO api_keys (lookup_id, secret_digest, last_used_at) VALUES ('x', ?, 'yesterday')`, strings.Repeat("0", 64))
	if err == nil || !strings.Contains(err.Error(), "must be NULL or a time") {
		t.Fatalf("insert with a junk last_used_at: %v", err)
	}
}

// TestSQLiteFileReplaced: a SQLite file replaced (a backup moved over it)
// or removed under a running store is not read as if nothing happened: the
// old file's state would be served. Every call fails as unavailable until
// the path names the opened file again.
func TestSQLiteFileReplaced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, how := range []string{"replaced", "removed"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "keys.db")
			s := rawHarness(func(testing.TB) string { return "sqlite:" + path })(t, nil).Admin
			if _, err := s.CreateClient(ctx, "bot"); err != nil {
				t.Fatal(err)
			}
			key, err := s.CreateKey(ctx, "bot", keystore.KeySpec{})
			if err != nil {
				t.Fatal(err)
			}
			aside := filepath.Join(dir, "aside.db")
			if err := os.Link(path, aside); err != nil { // keep the opened file
				t.Fatal(err)
			}
			switch how {
			case "replaced":
				other := filepath.Join(t.TempDir(), "other.db")
				rawHarness(func(testing.TB) string { return "sqlite:" + other })(t, nil)
				if err := os.Rename(other, path); err != nil {
					t.Fatal(err)
				}
			case "removed":
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			}
			// Noticed within the one-second bound on changes; from then on
			// every call fails.
			waitFor(t, "the store notices", time.Second, func() bool { return errors.Is(s.Ping(ctx), keystore.ErrUnavailable) })
			calls := map[string]func() error{
				"Ping":         func() error { return s.Ping(ctx) },
				"ClientState":  func() error { _, err := s.ClientState(ctx, "bot"); return err },
				"Verify":       func() error { _, err := s.Verify(ctx, "bot", key.Token); return err },
				"LatestChange": func() error { _, err := sqlstore.LatestChange(s, ctx); return err },
				"CreateKey":    func() error { _, err := s.CreateKey(ctx, "bot", keystore.KeySpec{}); return err },
			}
			for name, call := range calls {
				if err := call(); !errors.Is(err, sqlstore.ErrDatabaseReplaced) || !errors.Is(err, keystore.ErrUnavailable) {
					t.Errorf("%s after the file was %s: %v", name, how, err)
				}
			}
			// The opened file back at its path: the store works again.
			if err := os.Rename(aside, path); err != nil {
				t.Fatal(err)
			}
			if st, err := s.ClientState(ctx, "bot"); err != nil || !st.RequiresKey {
				t.Fatalf("ClientState with the file back: %+v, %v", st, err)
			}
		})
	}
}

// TestSQLiteSymlinkSwapped: a path that is a symlink is opened at the file
// it names at Open, so that every connection of the pool reads the same
// file even after the link is swapped; it never mixes two databases.
func TestSQLiteSymlinkSwapped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	v1, v2, link := filepath.Join(dir, "v1.db"), filepath.Join(dir, "v2.db"), filepath.Join(dir, "llmauth.db")
	for _, f := range []string{v1, v2} { // both migrated, both empty
		rawHarness(func(testing.TB) string { return "sqlite:" + f })(t, nil)
	}
	if err := os.Symlink(v1, link); err != nil {
		t.Skipf("no symlinks here: %v", err)
	}
	s := rawHarness(func(testing.TB) string { return "sqlite:" + link })(t, nil).Admin
	if _, err := s.CreateClient(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	swap := filepath.Join(dir, "swap")
	if err := os.Symlink(v2, swap); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(swap, link); err != nil {
		t.Fatal(err)
	}
	// Every connection, old or opened after the swap, reads v1.
	s.DB().SetMaxIdleConns(0)
	for i := range 5 {
		if _, err := s.GetClient(ctx, "bot"); err != nil {
			t.Fatalf("read %d after the swap: %v", i, err)
		}
	}
}

func equalTimes(a, b *time.Time) bool {
	return (a == nil) == (b == nil) && (a == nil || a.Equal(*b))
}

func TestOpenRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "mysql://x", "sqlite:", "file:", "sqlite:/tmp/a?b", "http://x"} {
		if _, err := sqlstore.Open(context.Background(), u); !errors.Is(err, keystore.ErrInvalidInput) {
			t.Errorf("Open(%q) = %v, want ErrInvalidInput", u, err)
		}
	}
}

func TestURLsNeverLeakPasswords(t *testing.T) {
	// Bad escapes, and passwords whose unescaped '#', '/' or '?' end the
	// authority early (the parser then sees no password at all).
	for _, bad := range []string{
		"postgres://app:S3cr%zzet@db:5432/x",
		"postgres://app:S3cr3tpass#42@db.internal/llmauth",
		"postgres://app:S3cr3tpa/x@db.internal/llmauth",
		"postgres://app:S3cr3tpa?x@db.internal/llmauth",
		"postgresql://app:12345#S3cr@db.internal/llmauth",
	} {
		_, err := sqlstore.Open(context.Background(), bad)
		if !errors.Is(err, keystore.ErrInvalidInput) || strings.Contains(err.Error(), "S3cr") || strings.Contains(err.Error(), "12345") {
			t.Errorf("Open(%q) error %v leaks the password or is not ErrInvalidInput", bad, err)
		}
		if got := sqlstore.RedactURL(bad); strings.Contains(got, "S3cr") || strings.Contains(got, "12345") {
			t.Errorf("RedactURL(%q) = %q leaks the password", bad, got)
		}
	}
	for in, want := range map[string]string{
		"postgres://app:S3cret@db/x":                          "postgres://app:xxxxx@db/x",
		"postgres://app@db/x?password=S3cret&sslmode=disable": "postgres://app@db/x?password=xxxxx&sslmode=disable",
		"postgres://db/x?sslpassword=S3cret":                  "postgres://db/x?sslpassword=xxxxx",
		"sqlite:llmauth.db":                                   "sqlite:llmauth.db",
		// Found by FuzzDatabaseURL: hiding an odd authority must still
		// redact the query's password.
		"postgres:///@db?password=S3cret": "postgres:///@db?password=xxxxx",
		"postgres://:0?x&password=S3cr@":  "postgres://:0?password=xxxxx&x=",
	} {
		if got := sqlstore.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
