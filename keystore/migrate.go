package keystore

import (
	"context"
	"database/sql/driver"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"
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
// to call from every process at start-up, several at once:
//   - on PostgreSQL the callers queue on an advisory lock held for the whole
//     run, and each finds the work done by the one before;
//   - SQLite has no lock that can span goose's transactions, so the version
//     table is created in one write transaction, and two callers may still
//     both find a version pending. Each migration commits in one
//     transaction with its version row, so the loser's attempt rolls back
//     whole, and Migrate tries again while another caller makes progress.
//
// db must come from [Open] (or use the "postgres" or "sqlite" driver).
func Migrate(ctx context.Context, db *sqlx.DB) error {
	m, err := newMigrator(db)
	if err != nil {
		return err
	}
	if m.dialect == dialectPostgres {
		unlock, err := lockMigrations(ctx, db)
		if err != nil {
			return err
		}
		defer unlock()
		if _, err := m.provider.Up(ctx); err != nil {
			return fmt.Errorf("keystore: migrate: %w", err)
		}
		return nil
	}

	if err := m.ensureVersionTable(ctx, db); err != nil {
		return fmt.Errorf("keystore: migrate: %w", err)
	}
	for {
		before, _, err := m.provider.GetVersions(ctx)
		if err != nil {
			return fmt.Errorf("keystore: migrate: %w", err)
		}
		_, upErr := m.provider.Up(ctx)
		if upErr == nil {
			return nil
		}
		// A version that advanced while this attempt failed was applied
		// by someone (another caller, or this attempt before its failing
		// step): try again. One that did not is a real failure. Versions
		// only grow, so this ends.
		after, _, err := m.provider.GetVersions(ctx)
		if err != nil || after <= before {
			return fmt.Errorf("keystore: migrate: %w", upErr)
		}
	}
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
		return 0, 0, fmt.Errorf("keystore: migration version: %w", err)
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
		return nil, fmt.Errorf("keystore: migrations: %w", err)
	}
	gd := database.DialectSQLite3
	if d == dialectPostgres {
		gd = database.DialectPostgres
	}
	versions, err := database.NewStore(gd, migrationTable)
	if err != nil {
		return nil, fmt.Errorf("keystore: migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectCustom, db.DB, dir,
		goose.WithStore(versions),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		return nil, fmt.Errorf("keystore: migrations: %w", err)
	}
	return &migrator{dialect: d, versions: versions, provider: p}, nil
}

// ensureVersionTable creates the SQLite version table, as goose would, but
// inside one write transaction (Open makes SQLite transactions take the
// write lock at BEGIN), so that concurrent callers cannot both find it
// missing. goose itself checks, then creates, and on a clash retries a
// second later.
func (m *migrator) ensureVersionTable(ctx context.Context, db *sqlx.DB) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("version table: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var n int
	if err := tx.GetContext(ctx, &n, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, migrationTable); err != nil {
		return fmt.Errorf("version table: %w", err)
	}
	if n > 0 {
		return nil
	}
	if err := m.versions.CreateVersionTable(ctx, tx); err != nil {
		return fmt.Errorf("version table: %w", err)
	}
	if err := m.versions.Insert(ctx, tx, database.InsertRequest{Version: 0}); err != nil {
		return fmt.Errorf("version table: %w", err)
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

// lockMigrations takes the migration lock on a connection of its own and
// returns its release. It waits in the server (pg_advisory_lock), so a
// caller starts the moment the lock is free; goose's locker polls, at
// least a second apart, and its version-table check runs outside its lock.
// The lock belongs to the session: it goes with the connection if the
// process dies.
func lockMigrations(ctx context.Context, db *sqlx.DB) (unlock func(), err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, unavailable("migration lock", err)
	}
	wctx, cancel := context.WithTimeout(ctx, migrationLockWait)
	defer cancel()
	if _, err := conn.ExecContext(wctx, `SELECT pg_advisory_lock($1)`, migrationLockID); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("keystore: migration lock: %w", err)
	}
	return func() {
		// Closing a connection that failed to unlock ends the session,
		// which releases the lock too.
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLockID); err != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		_ = conn.Close()
	}, nil
}
