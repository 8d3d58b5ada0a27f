package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/llmauth/llmauth/keystore"

	"github.com/jmoiron/sqlx"
)

type dialect string

const (
	dialectPostgres dialect = "postgres"
	dialectSQLite   dialect = "sqlite"
)

func dialectOf(db *sqlx.DB) (dialect, error) {
	switch db.DriverName() {
	case "postgres":
		return dialectPostgres, nil
	case "sqlite":
		return dialectSQLite, nil
	}
	return "", fmt.Errorf("%w: unsupported database driver %q (want postgres or sqlite)", keystore.ErrInvalidInput, db.DriverName())
}

const (
	maxKeyNameLen        = 200
	maxKeyDescriptionLen = 1000
)

// defaultQueryTimeout is Options.QueryTimeout's default.
const defaultQueryTimeout = 2 * time.Second

// Options configures a [Store]. The zero value is ready to use.
type Options struct {
	// QueryTimeout bounds every call, on top of the caller's context.
	// Reads (every call the middleware makes) get this bound alone: in WAL
	// mode they never wait for SQLite's write lock. A write on SQLite may
	// first queue for that lock, for up to the connection's busy timeout
	// ([SQLiteBusyTimeout] when opened with [Open]), so writes there are
	// bounded by QueryTimeout plus the busy timeout: SQLite gives up first,
	// with SQLITE_BUSY, and the store never cancels a write SQLite would
	// still have let through. The store's own writes to SQLite take turns
	// (in order, each waiting within that bound) rather than all polling
	// SQLite's lock. Default: 2s.
	QueryTimeout time.Duration
	// Now is the store's clock, used for timestamps and expiry.
	// Default: time.Now.
	Now func() time.Time
}

// Store keeps clients and keys in PostgreSQL or SQLite through sqlx. It
// is safe for concurrent use.
type Store struct {
	db      *sqlx.DB
	dialect dialect
	timeout time.Duration
	// lockWait is how long a write may queue for the database's write
	// lock on top of timeout: SQLite's busy timeout, 0 on PostgreSQL.
	lockWait time.Duration
	// writeTurn, on SQLite, is held by the store's one write in progress.
	writeTurn chan struct{}
	now       func() time.Time
	file      *dbFile // SQLite only: the file the pool opened
}

// New returns a store over db, which must already be migrated (see
// [Migrate]).
func New(ctx context.Context, db *sqlx.DB, opts Options) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: nil database", keystore.ErrInvalidInput)
	}
	d, err := dialectOf(db)
	if err != nil {
		return nil, err
	}
	if opts.QueryTimeout < 0 {
		return nil, fmt.Errorf("%w: negative query timeout", keystore.ErrInvalidInput)
	}
	if opts.QueryTimeout == 0 {
		opts.QueryTimeout = defaultQueryTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{db: db, dialect: d, timeout: opts.QueryTimeout, now: opts.Now}
	if d == dialectSQLite {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if s.file, err = openedFile(ctx, db); err != nil {
			return nil, err
		}
		if s.lockWait, err = busyTimeout(ctx, db); err != nil {
			return nil, err
		}
		s.writeTurn = make(chan struct{}, 1)
	}
	return s, nil
}

// isPostgres reports whether the store runs on PostgreSQL.
func (s *Store) isPostgres() bool { return s.dialect == dialectPostgres }

// ctx bounds a read.
func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// stamp is the store's notion of now, at the precision both databases keep.
func (s *Store) stamp() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

func (s *Store) q(query string) string { return s.db.Rebind(query) }

// Ping reports whether the database answers queries on the schema.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return err
	}
	if err := s.db.PingContext(ctx); err != nil {
		return unavailable("ping", err)
	}
	// Read a real table, so that a database that accepts connections but
	// cannot serve data (a damaged SQLite file, missing tables) is not
	// reported as ready.
	var n int
	if err := s.db.GetContext(ctx, &n, `SELECT COUNT(*) FROM llm_clients WHERE id = 0`); err != nil {
		return unavailable("ping", err)
	}
	return nil
}

// inTx runs fn in a write transaction (on SQLite it takes the write lock
// at BEGIN), bounded as a write; errors that are not already one of the
// package's sentinels are reported as ErrUnavailable.
func (s *Store) inTx(ctx context.Context, op string, fn func(context.Context, *sqlx.Tx) error) error {
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return err
	}
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return unavailable(op, err)
	}
	if err := fn(ctx, tx); err != nil {
		_ = tx.Rollback()
		if isDomainError(err) {
			return err
		}
		return unavailable(op, err)
	}
	if err := tx.Commit(); err != nil {
		return unavailable(op, err)
	}
	return nil
}

func isDomainError(err error) bool {
	for _, target := range []error{keystore.ErrInvalidName, keystore.ErrInvalidInput, keystore.ErrClientExists, keystore.ErrUnknownClient, keystore.ErrKeyNotFound, keystore.ErrInvalidToken, keystore.ErrUnavailable} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

var _ keystore.Store = (*Store)(nil)
