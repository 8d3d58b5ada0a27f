package keystore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// The two directories hold one set of migrations: the same versions, each
// written once per dialect where the SQL must differ (identity columns,
// trigger bodies). A test keeps them in step.
//
//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrations embed.FS

// Migrate applies every pending migration to db. It is idempotent and safe
// to call from every process at start-up: on PostgreSQL concurrent callers
// serialise on an advisory lock. db must come from [Open] (or use the
// "postgres" or "sqlite" driver).
func Migrate(ctx context.Context, db *sqlx.DB) error {
	p, err := newMigrationProvider(db)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("keystore: migrate: %w", err)
	}
	return nil
}

// MigrationVersion reports the schema version db is at and the newest
// version this build knows.
func MigrationVersion(ctx context.Context, db *sqlx.DB) (current, latest int64, err error) {
	p, err := newMigrationProvider(db)
	if err != nil {
		return 0, 0, err
	}
	current, latest, err = p.GetVersions(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("keystore: migration version: %w", err)
	}
	return current, latest, nil
}

func newMigrationProvider(db *sqlx.DB) (*goose.Provider, error) {
	d, err := dialectOf(db)
	if err != nil {
		return nil, err
	}
	dir, err := fs.Sub(migrations, "migrations/"+string(d))
	if err != nil {
		return nil, fmt.Errorf("keystore: migrations: %w", err)
	}
	opts := []goose.ProviderOption{
		goose.WithDisableGlobalRegistry(true),
		goose.WithTableName("llmauth_schema_migrations"),
		goose.WithSlog(slog.New(slog.DiscardHandler)),
	}
	gd := goose.DialectSQLite3
	if d == dialectPostgres {
		gd = goose.DialectPostgres
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return nil, fmt.Errorf("keystore: migrations: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(gd, db.DB, dir, opts...)
	if err != nil {
		return nil, fmt.Errorf("keystore: migrations: %w", err)
	}
	return p, nil
}
