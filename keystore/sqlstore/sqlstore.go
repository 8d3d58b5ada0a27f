package sqlstore

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/llmauth/llmauth/keystore"
	"maps"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
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

// dbFile is the SQLite file a store's connections hold open. A file
// replaced (a backup moved over it) or removed while they do is not seen by
// them: they keep reading the old one, and would serve decisions the
// database no longer holds. Calls check that the path still names the file
// first, and fail as unavailable if not.
type dbFile struct {
	path string
	info os.FileInfo
	// checked is when the path last named the file, in nanoseconds since
	// base (monotonic): within fileCheckEvery of it, calls skip the stat.
	checked atomic.Int64
	base    time.Time
}

// fileCheckEvery spaces out the stat calls of a busy store. A replaced
// file is noticed within it, well inside the one-second bound on changes.
const fileCheckEvery = 100 * time.Millisecond

// check reports ErrUnavailable when the path no longer names the file.
func (f *dbFile) check() error {
	if f == nil {
		return nil
	}
	now := int64(time.Since(f.base))
	if now-f.checked.Load() < int64(fileCheckEvery) {
		return nil
	}
	info, err := os.Stat(f.path)
	if err == nil && os.SameFile(info, f.info) {
		f.checked.Store(now)
		return nil
	}
	return fmt.Errorf("%w (%s); restart to open the new one", ErrDatabaseReplaced, f.path)
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

// openedFile finds the file of a SQLite pool's main database: nil for an
// in-memory or temporary one.
func openedFile(ctx context.Context, db *sqlx.DB) (*dbFile, error) {
	var path string
	if err := db.GetContext(ctx, &path, `SELECT file FROM pragma_database_list WHERE name = 'main'`); err != nil {
		return nil, unavailable("find the database file", err)
	}
	if path == "" {
		return nil, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, unavailable("find the database file", err)
	}
	f := &dbFile{path: path, info: info, base: time.Now()}
	f.checked.Store(int64(-fileCheckEvery)) // the first call checks
	return f, nil
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

func checkName(name string) error {
	if !keystore.ValidClientName(name) {
		return fmt.Errorf("%w: %q must match ^[a-z0-9][a-z0-9-]{0,62}$", keystore.ErrInvalidName, truncateForMessage(name))
	}
	return nil
}

// truncateForMessage keeps an error message about a bad name short.
func truncateForMessage(s string) string {
	const limit = 70
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}

func checkLabel(field, v string, limit int) error {
	switch {
	case !utf8.ValidString(v):
		return fmt.Errorf("%w: %s is not valid UTF-8", keystore.ErrInvalidInput, field)
	case utf8.RuneCountInString(v) > limit:
		return fmt.Errorf("%w: %s longer than %d characters", keystore.ErrInvalidInput, field, limit)
	case strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%w: %s contains control characters", keystore.ErrInvalidInput, field)
	}
	return nil
}

// isUniqueViolation reports whether err is a unique-constraint failure.
func isUniqueViolation(err error) bool {
	var pe *pq.Error
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// CreateClient creates a client with no keys: open to anonymous callers.
func (s *Store) CreateClient(ctx context.Context, name string) (keystore.Client, error) {
	if err := checkName(name); err != nil {
		return keystore.Client{}, err
	}
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return keystore.Client{}, err
	}
	now := s.stamp()
	c := keystore.Client{Name: name, CreatedAt: now, UpdatedAt: now}
	err := s.db.GetContext(ctx, &c.ID,
		s.q(`INSERT INTO llm_clients (name, created_at, updated_at) VALUES (?, ?, ?) RETURNING id`),
		name, now, now)
	switch {
	case isUniqueViolation(err):
		return keystore.Client{}, fmt.Errorf("%w: %q", keystore.ErrClientExists, name)
	case err != nil:
		return keystore.Client{}, unavailable("create client", err)
	}
	return c, nil
}

// GetClient returns the client called name.
func (s *Store) GetClient(ctx context.Context, name string) (keystore.Client, error) {
	if err := checkName(name); err != nil {
		return keystore.Client{}, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return keystore.Client{}, err
	}
	var r clientRow
	err := s.db.GetContext(ctx, &r, s.q(`SELECT id, name, created_at, updated_at FROM llm_clients WHERE name = ?`), name)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return keystore.Client{}, fmt.Errorf("%w: %q", keystore.ErrUnknownClient, name)
	case err != nil:
		return keystore.Client{}, unavailable("get client", err)
	}
	return r.client(), nil
}

// ListClients returns every client, by name, with its key counts.
func (s *Store) ListClients(ctx context.Context) ([]keystore.ClientSummary, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return nil, err
	}
	var rows []clientSummaryRow
	err := s.db.SelectContext(ctx, &rows, `
SELECT c.id, c.name, c.created_at, c.updated_at,
       COUNT(k.id) AS keys,
       COUNT(CASE WHEN k.is_active THEN 1 END) AS active_keys,
       COUNT(CASE WHEN k.is_active THEN 1 END) > 0 AS requires_key
FROM llm_clients c
LEFT JOIN llm_client_api_keys ck ON ck.llm_client_id = c.id
LEFT JOIN api_keys k ON k.id = ck.api_key_id
GROUP BY c.id, c.name, c.created_at, c.updated_at
ORDER BY c.name`)
	if err != nil {
		return nil, unavailable("list clients", err)
	}
	out := make([]keystore.ClientSummary, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.summary())
	}
	return out, nil
}

// DeleteClient deletes a client, its links and every key linked to no
// other client, in one transaction.
func (s *Store) DeleteClient(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return s.inTx(ctx, "delete client", func(ctx context.Context, tx *sqlx.Tx) error {
		var id int64
		err := tx.GetContext(ctx, &id, s.q(`SELECT id FROM llm_clients WHERE name = ?`), name)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %q", keystore.ErrUnknownClient, name)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`
DELETE FROM api_keys WHERE id IN (
    SELECT ck.api_key_id FROM llm_client_api_keys ck
    WHERE ck.llm_client_id = ?
      AND NOT EXISTS (SELECT 1 FROM llm_client_api_keys o
                      WHERE o.api_key_id = ck.api_key_id AND o.llm_client_id <> ck.llm_client_id))`), id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.q(`DELETE FROM llm_clients WHERE id = ?`), id)
		return err
	})
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

// CreateKey creates a key linked to client and returns it with its token,
// the only time the plaintext exists. The key and its link are written in
// one transaction.
func (s *Store) CreateKey(ctx context.Context, client string, spec keystore.KeySpec) (keystore.NewKey, error) {
	if err := checkName(client); err != nil {
		return keystore.NewKey{}, err
	}
	if err := checkLabel("key name", spec.Name, maxKeyNameLen); err != nil {
		return keystore.NewKey{}, err
	}
	if err := checkLabel("key description", spec.Description, maxKeyDescriptionLen); err != nil {
		return keystore.NewKey{}, err
	}
	now := s.stamp()
	var expires *time.Time
	if spec.ExpiresAt != nil {
		e := spec.ExpiresAt.UTC().Truncate(time.Microsecond)
		if !e.After(now) {
			return keystore.NewKey{}, fmt.Errorf("%w: expiry %s is not in the future", keystore.ErrInvalidInput, e.Format(time.RFC3339))
		}
		if e.Year() > 9999 {
			// Neither database keeps such a time as one.
			return keystore.NewKey{}, fmt.Errorf("%w: expiry %s is after the year 9999", keystore.ErrInvalidInput, e.Format(time.RFC3339))
		}
		expires = &e
	}
	var out keystore.NewKey
	err := s.inTx(ctx, "create key", func(ctx context.Context, tx *sqlx.Tx) error {
		var clientID int64
		err := tx.GetContext(ctx, &clientID, s.q(`SELECT id FROM llm_clients WHERE name = ?`), client)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %q", keystore.ErrUnknownClient, client)
		}
		if err != nil {
			return err
		}
		out, err = s.insertKey(ctx, tx, clientID, client, spec.Name, spec.Description, expires, now)
		return err
	})
	return out, err
}

// insertKey writes a new key row and its link inside tx.
func (s *Store) insertKey(ctx context.Context, tx *sqlx.Tx, clientID int64, client, name, description string, expires *time.Time, now time.Time) (keystore.NewKey, error) {
	tok, err := keystore.NewToken()
	if err != nil {
		return keystore.NewKey{}, err
	}
	var id int64
	err = tx.GetContext(ctx, &id, s.q(`
INSERT INTO api_keys (lookup_id, secret_digest, name, description, is_active, expires_at, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`),
		tok.LookupID(), tok.Digest().String(), name, description, true, expires, now, now)
	if err != nil {
		// A lookup-id collision (71 random bits) surfaces here as a unique
		// violation; it is retried by no one because it does not happen.
		return keystore.NewKey{}, err
	}
	if _, err := tx.ExecContext(ctx, s.q(`
INSERT INTO llm_client_api_keys (llm_client_id, api_key_id, created_at, updated_at) VALUES (?, ?, ?, ?)`),
		clientID, id, now, now); err != nil {
		return keystore.NewKey{}, err
	}
	return keystore.NewKey{
		APIKey: keystore.APIKey{
			ID: id, Client: client, Prefix: keystore.TokenPrefix + tok.LookupID(), Name: name, Description: description,
			Active: true, State: keystore.KeyActive, ExpiresAt: expires, CreatedAt: now, UpdatedAt: now,
		},
		Token: tok,
	}, nil
}

// ListKeys returns the keys linked to client, oldest first.
func (s *Store) ListKeys(ctx context.Context, client string) ([]keystore.APIKey, error) {
	if err := checkName(client); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return nil, err
	}
	var exists bool
	if err := s.db.GetContext(ctx, &exists, s.q(`SELECT EXISTS (SELECT 1 FROM llm_clients WHERE name = ?)`), client); err != nil {
		return nil, unavailable("list keys", err)
	}
	if !exists {
		return nil, fmt.Errorf("%w: %q", keystore.ErrUnknownClient, client)
	}
	var rows []keyRow
	err := s.db.SelectContext(ctx, &rows, s.q(`
SELECT c.name AS client, `+keyColumns+`
FROM llm_clients c
JOIN llm_client_api_keys ck ON ck.llm_client_id = c.id
JOIN api_keys k ON k.id = ck.api_key_id
WHERE c.name = ?
ORDER BY k.id`), client)
	if err != nil {
		return nil, unavailable("list keys", err)
	}
	now := s.stamp()
	out := make([]keystore.APIKey, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.apiKey(now))
	}
	return out, nil
}

// GetKey returns one key. Its Client is the first client it was linked to.
func (s *Store) GetKey(ctx context.Context, id int64) (keystore.APIKey, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return keystore.APIKey{}, err
	}
	return s.getKey(ctx, s.db, id)
}

func (s *Store) getKey(ctx context.Context, q sqlx.QueryerContext, id int64) (keystore.APIKey, error) {
	if id <= 0 {
		return keystore.APIKey{}, fmt.Errorf("%w: key id %d", keystore.ErrKeyNotFound, id)
	}
	var r keyRow
	err := sqlx.GetContext(ctx, q, &r, s.q(`
SELECT COALESCE((SELECT c.name FROM llm_client_api_keys ck JOIN llm_clients c ON c.id = ck.llm_client_id
                 WHERE ck.api_key_id = k.id ORDER BY ck.id LIMIT 1), '') AS client, `+keyColumns+`
FROM api_keys k WHERE k.id = ?`), id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return keystore.APIKey{}, fmt.Errorf("%w: key id %d", keystore.ErrKeyNotFound, id)
	case err != nil:
		return keystore.APIKey{}, unavailable("get key", err)
	}
	return r.apiKey(s.stamp()), nil
}

// ActivateKey makes a revoked key active again, which locks its clients.
// Activating an active key changes nothing and returns it.
func (s *Store) ActivateKey(ctx context.Context, id int64) (keystore.APIKey, error) {
	return s.setActive(ctx, "activate key", id, true)
}

// DeactivateKey revokes a key. When it was its client's last active key,
// the client becomes open to anonymous callers. Revoking a revoked key
// changes nothing (no write, no change event) and returns it.
func (s *Store) DeactivateKey(ctx context.Context, id int64) (keystore.APIKey, error) {
	return s.setActive(ctx, "deactivate key", id, false)
}

func (s *Store) setActive(ctx context.Context, op string, id int64, active bool) (keystore.APIKey, error) {
	var k keystore.APIKey
	err := s.inTx(ctx, op, func(ctx context.Context, tx *sqlx.Tx) error {
		// Only a real change is written, so that a repeated revoke does
		// not invalidate every instance's cache again.
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE api_keys SET is_active = ?, updated_at = ? WHERE id = ? AND is_active <> ?`), active, s.stamp(), id, active); err != nil {
			return err
		}
		var err error
		k, err = s.getKey(ctx, tx, id) // keystore.ErrKeyNotFound when there is none
		return err
	})
	return k, err
}

// RotateKey creates a successor to key id, linked to the same clients with
// the same name and description, and returns it with its token. The old key
// stays valid until it is revoked, or until spec.Grace has passed when that
// is set.
func (s *Store) RotateKey(ctx context.Context, id int64, spec keystore.RotateSpec) (keystore.NewKey, error) {
	if spec.Grace < 0 {
		return keystore.NewKey{}, fmt.Errorf("%w: negative grace period", keystore.ErrInvalidInput)
	}
	var out keystore.NewKey
	err := s.inTx(ctx, "rotate key", func(ctx context.Context, tx *sqlx.Tx) error {
		old, err := s.getKey(ctx, tx, id)
		if err != nil {
			return err
		}
		if !old.Active {
			return fmt.Errorf("%w: key id %d is revoked; create a new key instead", keystore.ErrInvalidInput, id)
		}
		var clientIDs []int64
		if err := tx.SelectContext(ctx, &clientIDs, s.q(`SELECT llm_client_id FROM llm_client_api_keys WHERE api_key_id = ? ORDER BY id`), id); err != nil {
			return err
		}
		if len(clientIDs) == 0 {
			return fmt.Errorf("%w: key id %d is linked to no client", keystore.ErrInvalidInput, id)
		}
		now := s.stamp()
		out, err = s.insertKey(ctx, tx, clientIDs[0], old.Client, old.Name, old.Description, nil, now)
		if err != nil {
			return err
		}
		for _, cid := range clientIDs[1:] {
			if _, err := tx.ExecContext(ctx, s.q(`
INSERT INTO llm_client_api_keys (llm_client_id, api_key_id, created_at, updated_at) VALUES (?, ?, ?, ?)`),
				cid, out.ID, now, now); err != nil {
				return err
			}
		}
		if spec.Grace > 0 {
			until := now.Add(spec.Grace)
			if old.ExpiresAt == nil || until.Before(*old.ExpiresAt) {
				if _, err := tx.ExecContext(ctx, s.q(`UPDATE api_keys SET expires_at = ?, updated_at = ? WHERE id = ?`), until, now, id); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return out, err
}

// DeleteKey deletes a key and its links.
func (s *Store) DeleteKey(ctx context.Context, id int64) error {
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM api_keys WHERE id = ?`), id)
	if err != nil {
		return unavailable("delete key", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return unavailable("delete key", err)
	}
	if n == 0 {
		return fmt.Errorf("%w: key id %d", keystore.ErrKeyNotFound, id)
	}
	return nil
}

// HasActiveAPIKey reports whether at least one key linked to client is
// active, exactly the seed model's has_active_api_key. Expiry does not
// count: see [ClientState.RequiresKey].
func (s *Store) HasActiveAPIKey(ctx context.Context, client string) (bool, error) {
	st, err := s.ClientState(ctx, client)
	if err != nil {
		return false, err
	}
	return st.RequiresKey, nil
}

// ClientState answers "does client exist, and does it require a key?" in
// one indexed round trip.
func (s *Store) ClientState(ctx context.Context, client string) (keystore.ClientState, error) {
	if !keystore.ValidClientName(client) {
		return keystore.ClientState{}, fmt.Errorf("%w: %q", keystore.ErrUnknownClient, truncateForMessage(client))
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return keystore.ClientState{}, err
	}
	var row struct {
		ID          int64  `db:"id"`
		Name        string `db:"name"`
		RequiresKey bool   `db:"requires_key"`
	}
	err := s.db.GetContext(ctx, &row, s.q(`
SELECT c.id, c.name,
       EXISTS (SELECT 1 FROM llm_client_api_keys ck JOIN api_keys k ON k.id = ck.api_key_id
               WHERE ck.llm_client_id = c.id AND k.is_active) AS requires_key
FROM llm_clients c WHERE c.name = ?`), client)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return keystore.ClientState{}, fmt.Errorf("%w: %q", keystore.ErrUnknownClient, client)
	case err != nil:
		return keystore.ClientState{}, unavailable("client state", err)
	}
	return keystore.ClientState{ID: row.ID, Name: row.Name, RequiresKey: row.RequiresKey}, nil
}

// Verify checks that token is an active, unexpired key linked to client, in
// one indexed round trip, and returns the key's identity. Every reason for
// refusal is ErrInvalidToken; a database failure is ErrUnavailable.
func (s *Store) Verify(ctx context.Context, client string, token keystore.Token) (keystore.VerifiedKey, error) {
	if token.IsZero() || !keystore.ValidClientName(client) {
		return keystore.VerifiedKey{}, keystore.ErrInvalidToken
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return keystore.VerifiedKey{}, err
	}
	var row struct {
		ID        int64  `db:"id"`
		Name      string `db:"name"`
		Digest    string `db:"secret_digest"`
		Active    bool   `db:"is_active"`
		ExpiresAt dbTime `db:"expires_at"`
		ClientID  int64  `db:"client_id"`
	}
	err := s.db.GetContext(ctx, &row, s.q(`
SELECT k.id, k.name, k.secret_digest, k.is_active, k.expires_at, c.id AS client_id
FROM api_keys k
JOIN llm_client_api_keys ck ON ck.api_key_id = k.id
JOIN llm_clients c ON c.id = ck.llm_client_id
WHERE k.lookup_id = ? AND c.name = ?`), token.LookupID(), client)
	if errors.Is(err, sql.ErrNoRows) {
		return keystore.VerifiedKey{}, keystore.ErrInvalidToken
	}
	if err != nil {
		return keystore.VerifiedKey{}, unavailable("verify", err)
	}
	var stored keystore.Digest
	if n, err := hex.Decode(stored[:], []byte(row.Digest)); err != nil || n != len(stored) {
		return keystore.VerifiedKey{}, keystore.ErrInvalidToken
	}
	if !token.Digest().Equal(stored) || !row.Active {
		return keystore.VerifiedKey{}, keystore.ErrInvalidToken
	}
	expires := row.ExpiresAt.expiry()
	if expires != nil && !s.now().Before(*expires) {
		return keystore.VerifiedKey{}, keystore.ErrInvalidToken
	}
	return keystore.VerifiedKey{KeyID: row.ID, KeyName: row.Name, ClientID: row.ClientID, Client: client, ExpiresAt: expires}, nil
}

// TouchKeys records last use: each key's last_used_at becomes the later of
// its stored value and the given time. One transaction for the batch.
func (s *Store) TouchKeys(ctx context.Context, uses map[int64]time.Time) error {
	if len(uses) == 0 {
		return nil
	}
	return s.inTx(ctx, "touch keys", func(ctx context.Context, tx *sqlx.Tx) error {
		stmt, err := tx.PreparexContext(ctx, s.q(`
UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`))
		if err != nil {
			return err
		}
		defer stmt.Close()
		// Rows are locked in id order, so that instances flushing
		// overlapping sets cannot deadlock.
		ids := slices.Sorted(maps.Keys(uses))
		for _, id := range ids {
			at := uses[id].UTC().Truncate(time.Microsecond)
			if _, err := stmt.ExecContext(ctx, at, id, at); err != nil {
				return err
			}
		}
		return nil
	})
}

var _ keystore.Store = (*Store)(nil)
