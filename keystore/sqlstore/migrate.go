package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
)

// The two directories hold one set of migrations: the same versions, each
// written once per dialect where the SQL must differ (identity columns,
// trigger bodies). A test keeps them in step.
//
//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrations embed.FS

// Migrate applies every pending migration to db. It is idempotent and safe
// to call from every process at start-up, several at once. First the
// version table is created, once: on PostgreSQL under an advisory lock, on
// SQLite in one write transaction. Then:
//   - on PostgreSQL goose runs the migrations holding the same lock, so
//     callers queue and each finds the work done by the one before;
//   - SQLite has no lock that can span goose's transactions, so two callers
//     may both find a version pending. Each migration commits in one
//     transaction with its version row, and a unique index refuses a
//     version recorded twice, so the loser's attempt rolls back whole, and
//     Migrate tries again while another caller makes progress.
//
// It needs one connection of db's pool at a time. db must come from [Open]
// (or use the "postgres" driver, or the "sqlite" driver with
// _txlock=immediate).
func Migrate(ctx context.Context, db *sqlx.DB) error {
	m, err := newMigrator(db)
	if err != nil {
		return err
	}
	if err := m.ensureVersionTable(ctx, db); err != nil {
		return fmt.Errorf("sqlstore: migrate: %w", err)
	}
	tries := 0
	for {
		before, _, err := m.provider.GetVersions(ctx)
		if err != nil {
			return fmt.Errorf("sqlstore: migrate: %w", err)
		}
		_, upErr := m.provider.Up(ctx)
		if upErr == nil {
			return nil
		}
		if lockConflict(upErr) && tries < maxLockRetries {
			// A deadlock or lock timeout with writers or a long reader:
			// the migration rolled back whole; wait and try again.
			tries++
			select {
			case <-ctx.Done():
				return fmt.Errorf("sqlstore: migrate: %w", upErr)
			case <-time.After(time.Duration(tries) * 200 * time.Millisecond):
			}
			continue
		}
		// A version that advanced while this attempt failed was applied
		// by someone (another caller, or this attempt before its failing
		// step): try again. One that did not is a real failure. Versions
		// only grow, so this ends.
		after, _, err := m.provider.GetVersions(ctx)
		if err != nil || after <= before {
			return fmt.Errorf("sqlstore: migrate: %w", upErr)
		}
	}
}

// maxLockRetries bounds how often Migrate tries again after a deadlock or
// a lock timeout (about 20 s of waiting in all, with the migrations' own
// 3 s lock timeout).
const maxLockRetries = 5

// lockConflict reports a PostgreSQL deadlock (40P01) or lock timeout
// (55P03): a migration that lost to other sessions' locks and rolled back.
func lockConflict(err error) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "55P03")
}

// MigrationVersion reports the schema version db is at and the newest
// version this build knows.
func MigrationVersion(ctx context.Context, db *sqlx.DB) (current, latest int64, err error) {
	m, err := newMigrator(db)
	if err != nil {
		return 0, 0, err
	}
	current, latest, err = m.provider.GetVersions(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("sqlstore: migration version: %w", err)
	}
	return current, latest, nil
}

// migrationTable records the applied versions.
const migrationTable = "llmauth_schema_migrations"

type migrator struct {
	dialect  dialect
	versions database.Store // goose's view of migrationTable
	provider *goose.Provider
}

func newMigrator(db *sqlx.DB) (*migrator, error) {
	d, err := dialectOf(db)
	if err != nil {
		return nil, err
	}
	dir, err := fs.Sub(migrations, "migrations/"+string(d))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: migrations: %w", err)
	}
	gd := database.DialectSQLite3
	if d == dialectPostgres {
		gd = database.DialectPostgres
	}
	versions, err := database.NewStore(gd, migrationTable)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: migrations: %w", err)
	}
	opts := []goose.ProviderOption{
		goose.WithStore(versions),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(slog.New(slog.DiscardHandler)),
	}
	if d == dialectPostgres {
		opts = append(opts, goose.WithSessionLocker(pgMigrationLock{}))
	}
	p, err := goose.NewProvider(goose.DialectCustom, db.DB, dir, opts...)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: migrations: %w", err)
	}
	return &migrator{dialect: d, versions: versions, provider: p}, nil
}

// ensureVersionTable creates goose's version table, as goose would, but so
// that concurrent callers cannot both find it missing: goose checks, then
// creates, outside any lock, and on a clash retries a second later. On
// PostgreSQL it holds the migration lock meanwhile; on SQLite the write
// transaction itself serialises (Open makes it take the write lock at
// BEGIN).
func (m *migrator) ensureVersionTable(ctx context.Context, db *sqlx.DB) (err error) {
	conn, err := db.Connx(ctx)
	if err != nil {
		return fmt.Errorf("version table: %w", err)
	}
	defer conn.Close()
	exists := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`
	if m.dialect == dialectPostgres {
		var lock pgMigrationLock
		if err := lock.SessionLock(ctx, conn.Conn); err != nil {
			return err
		}
		defer func() {
			if uerr := lock.SessionUnlock(context.WithoutCancel(ctx), conn.Conn); uerr != nil && err == nil {
				err = uerr
			}
		}()
		exists = `SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE tablename = $1 AND schemaname = current_schema()`
	}
	tx, err := conn.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("version table: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var n int
	if err := tx.GetContext(ctx, &n, exists, migrationTable); err != nil {
		return fmt.Errorf("version table: %w", err)
	}
	if n == 0 {
		if err := m.versions.CreateVersionTable(ctx, tx); err != nil {
			return fmt.Errorf("version table: %w", err)
		}
		if err := m.versions.Insert(ctx, tx, database.InsertRequest{Version: 0}); err != nil {
			return fmt.Errorf("version table: %w", err)
		}
	}
	if m.dialect == dialectSQLite {
		// Two callers may both find a version pending (see Migrate): the
		// loser's attempt must fail whole, whatever its migration does, so
		// the table refuses a version recorded twice.
		if _, err := tx.ExecContext(ctx, `CREATE UNIQUE INDEX IF NOT EXISTS `+migrationTable+`_version_once ON `+migrationTable+` (version_id)`); err != nil {
			return fmt.Errorf("version table: %w", err)
		}
	} else if n > 0 {
		return nil
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("version table: %w", err)
	}
	return nil
}

// migrationLockID is the PostgreSQL advisory lock Migrate holds: the bytes
// of "llmauth", apart from goose's default lock so that an application's
// own goose migrations on the same database neither wait for ours nor
// pass them.
const migrationLockID int64 = 0x6c6c6d61757468

// migrationLockWait bounds how long Migrate waits for another process's
// migrations.
const migrationLockWait = 5 * time.Minute

// pgMigrationLock is a goose session locker that waits in the server
// (pg_advisory_lock) instead of polling pg_try_advisory_lock as goose's own
// does, at least a second apart, so that a caller starts the moment the
// lock is free. The lock belongs to the session: it goes with the
// connection if the process dies.
type pgMigrationLock struct{}

// SessionLock waits for the migration lock on conn.
func (pgMigrationLock) SessionLock(ctx context.Context, conn *sql.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, migrationLockWait)
	defer cancel()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLockID); err != nil {
		return fmt.Errorf("sqlstore: migration lock: %w", err)
	}
	return nil
}

// SessionUnlock releases the migration lock held on conn. If that fails
// the connection is discarded, which ends the session and so the lock.
func (pgMigrationLock) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, migrationLockID); err != nil {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		return fmt.Errorf("sqlstore: migration unlock: %w", err)
	}
	return nil
}
