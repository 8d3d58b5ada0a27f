package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"github.com/llmauth/llmauth/keystore"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/llmauth/llmauth/internal/pgtest"
)

// openSQLiteBusy opens a migrated SQLite file as Open does, but with the
// given busy timeout in milliseconds (-1: Open's own DSN).
func openSQLiteBusy(t *testing.T, path string, busyMS int) *sqlx.DB {
	t.Helper()
	dsn := sqliteDSN(path)
	if busyMS >= 0 {
		v := url.Values{}
		v.Add("_pragma", "foreign_keys(1)")
		v.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyMS))
		v.Add("_pragma", "journal_mode(WAL)")
		v.Set("_txlock", "immediate")
		v.Set("_time_format", "sqlite")
		dsn = "file:" + path + "?" + v.Encode()
	}
	db, err := sqlx.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestWriteBounds: reads are bounded by QueryTimeout; writes on SQLite by
// QueryTimeout plus the busy timeout the connections really have, which
// Open sets from SQLiteBusyTimeout; writes on PostgreSQL by QueryTimeout.
func TestWriteBounds(t *testing.T) {
	t.Parallel()
	if got := sqliteDSN("x.db"); !strings.Contains(got, url.QueryEscape(fmt.Sprintf("busy_timeout(%d)", SQLiteBusyTimeout.Milliseconds()))) {
		t.Fatalf("sqliteDSN does not set SQLiteBusyTimeout: %s", got)
	}
	tests := []struct {
		name         string
		open         func(t *testing.T) *sqlx.DB
		queryTimeout time.Duration
		read, write  time.Duration
	}{
		{"sqlite from Open", sqliteFromOpen, 0, 2 * time.Second, 2*time.Second + SQLiteBusyTimeout},
		{"sqlite from Open, QueryTimeout 300ms", sqliteFromOpen, 300 * time.Millisecond, 300 * time.Millisecond, 300*time.Millisecond + SQLiteBusyTimeout},
		{"sqlite, busy timeout 1500ms", sqliteBusy(1500), 0, 2 * time.Second, 3500 * time.Millisecond},
		{"sqlite, no busy timeout", sqliteBusy(0), time.Second, time.Second, time.Second},
		{"postgres", postgresFromOpen, 0, 2 * time.Second, 2 * time.Second},
		{"postgres, QueryTimeout 5s", postgresFromOpen, 5 * time.Second, 5 * time.Second, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(context.Background(), tt.open(t), Options{QueryTimeout: tt.queryTimeout})
			if err != nil {
				t.Fatal(err)
			}
			if s.timeout != tt.read || s.timeout+s.lockWait != tt.write {
				t.Fatalf("read bound %v, write bound %v; want %v, %v", s.timeout, s.timeout+s.lockWait, tt.read, tt.write)
			}
			for what, bound := range map[string]func(context.Context) (context.Context, context.CancelFunc){"read": s.ctx, "write": s.writeCtx} {
				want := tt.read
				if what == "write" {
					want = tt.write
				}
				start := time.Now()
				ctx, cancel := bound(context.Background())
				deadline, ok := ctx.Deadline()
				cancel()
				if d := deadline.Sub(start); !ok || d < want || d > want+time.Second {
					t.Errorf("%s deadline %v after the call, want %v", what, d, want)
				}
			}
		})
	}
}

func sqliteFromOpen(t *testing.T) *sqlx.DB {
	db, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

func sqliteBusy(ms int) func(t *testing.T) *sqlx.DB {
	return func(t *testing.T) *sqlx.DB { return openSQLiteBusy(t, filepath.Join(t.TempDir(), "k.db"), ms) }
}

func postgresFromOpen(t *testing.T) *sqlx.DB {
	db, err := Open(context.Background(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestSQLiteWriteQueuesForLock: while another process holds SQLite's write
// lock, a write waits for it past QueryTimeout, up to the busy timeout,
// and SQLite, not the store's deadline, decides when it has waited too
// long. A read meanwhile does not wait at all.
func TestSQLiteWriteQueuesForLock(t *testing.T) {
	t.Parallel()
	const queryTimeout = 200 * time.Millisecond
	tests := []struct {
		name    string
		busyMS  int
		hold    time.Duration
		wantErr bool // SQLITE_BUSY after the busy timeout
	}{
		{"lock held past QueryTimeout, within the busy timeout", 3000, 800 * time.Millisecond, false},
		{"lock held past the busy timeout", 600, 5 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "k.db")
			s, err := New(context.Background(), openSQLiteBusy(t, path, tt.busyMS), Options{QueryTimeout: queryTimeout})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.CreateClient(ctx, "bot"); err != nil {
				t.Fatal(err)
			}
			other := openSQLiteBusy(t, path, -1) // another process's pool
			tx, err := other.BeginTxx(ctx, nil)  // BEGIN IMMEDIATE: takes the write lock
			if err != nil {
				t.Fatal(err)
			}
			released := time.AfterFunc(tt.hold, func() { _ = tx.Rollback() })
			defer func() {
				released.Stop()
				_ = tx.Rollback()
			}()

			start := time.Now()
			if st, err := s.ClientState(ctx, "bot"); err != nil || st.Name != "bot" || time.Since(start) > queryTimeout {
				t.Fatalf("a read while the lock is held: %+v, %v after %v", st, err, time.Since(start))
			}

			start = time.Now()
			_, err = s.CreateClient(ctx, "queued")
			took := time.Since(start)
			busy := time.Duration(tt.busyMS) * time.Millisecond
			if !tt.wantErr {
				if err != nil || took < tt.hold-100*time.Millisecond {
					t.Fatalf("CreateClient: %v after %v; want success once the lock is released after %v", err, took, tt.hold)
				}
				return
			}
			var se *sqlite.Error
			if !errors.Is(err, keystore.ErrUnavailable) || !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY {
				t.Fatalf("CreateClient: %v; want ErrUnavailable from SQLITE_BUSY, not the store's deadline", err)
			}
			if took < busy {
				t.Fatalf("CreateClient gave up after %v, before SQLite's busy timeout of %v", took, busy)
			}
		})
	}
}

// TestWriteTurn: the store's writes to SQLite take turns; one that does not
// get its turn within its bound fails as unavailable rather than wait on,
// and gets it as soon as the write before it ends.
func TestWriteTurn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := New(context.Background(), sqliteFromOpen(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.writeTurn <- struct{}{} // a write in progress
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := s.CreateClient(short, "late"); !errors.Is(err, keystore.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CreateClient without a turn: %v, want ErrUnavailable (deadline exceeded)", err)
	}
	time.AfterFunc(200*time.Millisecond, func() { <-s.writeTurn })
	start := time.Now()
	if _, err := s.CreateClient(ctx, "next"); err != nil || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("CreateClient after the turn is given back: %v after %v", err, time.Since(start))
	}
	if len(s.writeTurn) != 0 {
		t.Fatal("a finished write kept its turn")
	}
}
