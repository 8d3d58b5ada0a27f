package keystore_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmauth/llmauth/internal/pgtest"
	"github.com/llmauth/llmauth/internal/storetest"
	"github.com/llmauth/llmauth/keystore"
)

func sqliteURL(t testing.TB) string {
	return "sqlite:" + filepath.Join(t.TempDir(), "keys.db")
}

// rawHarness is the SQL store alone, on the database at url.
func rawHarness(url func(testing.TB) string) storetest.Factory {
	return func(t *testing.T, clock *storetest.Clock) storetest.Harness {
		ctx := context.Background()
		db, err := keystore.Open(ctx, url(t))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = db.Close() })
		if err := keystore.Migrate(ctx, db); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		opts := keystore.Options{}
		if clock != nil {
			opts.Now = clock.Now
		}
		s, err := keystore.NewSQLStore(db, opts)
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Harness{
			Admin:   s,
			Decider: s,
			Break:   func(testing.TB) { _ = db.Close() },
		}
	}
}

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
			db, err := keystore.Open(ctx, url(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for i := range 3 {
				if err := keystore.Migrate(ctx, db); err != nil {
					t.Fatalf("Migrate #%d: %v", i+1, err)
				}
			}
			cur, latest, err := keystore.MigrationVersion(ctx, db)
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
				for range parallel {
					go func() {
						ctx := context.Background()
						db, err := keystore.Open(ctx, u)
						if err != nil {
							errs <- err
							return
						}
						defer db.Close()
						errs <- keystore.Migrate(ctx, db)
					}()
				}
				for range parallel {
					if err := <-errs; err != nil {
						t.Errorf("round %d: %v", round, err)
					}
				}
				db, err := keystore.Open(context.Background(), u)
				if err != nil {
					t.Fatal(err)
				}
				cur, latest, err := keystore.MigrationVersion(context.Background(), db)
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

func TestOpenRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "mysql://x", "sqlite:", "file:", "sqlite:/tmp/a?b", "http://x"} {
		if _, err := keystore.Open(context.Background(), u); !errors.Is(err, keystore.ErrInvalidInput) {
			t.Errorf("Open(%q) = %v, want ErrInvalidInput", u, err)
		}
	}
}

func TestURLsNeverLeakPasswords(t *testing.T) {
	_, err := keystore.Open(context.Background(), "postgres://app:S3cr%zzet@db:5432/x")
	if !errors.Is(err, keystore.ErrInvalidInput) || strings.Contains(err.Error(), "S3cr") {
		t.Fatalf("Open error %v leaks the password or is not ErrInvalidInput", err)
	}
	for in, want := range map[string]string{
		"postgres://app:S3cret@db/x":                          "postgres://app:xxxxx@db/x",
		"postgres://app@db/x?password=S3cret&sslmode=disable": "postgres://app@db/x?password=xxxxx&sslmode=disable",
		"postgres://db/x?sslpassword=S3cret":                  "postgres://db/x?sslpassword=xxxxx",
		"sqlite:llmauth.db":                                   "sqlite:llmauth.db",
	} {
		if got := keystore.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
