package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/llmauth/llmauth/keystore"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

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
	err := s.db.GetContext(ctx, &r, s.q(`SELECT `+clientColumns+` FROM llm_clients c WHERE c.name = ?`), name)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return keystore.Client{}, fmt.Errorf("%w: %q", keystore.ErrUnknownClient, name)
	case err != nil:
		return keystore.Client{}, unavailable("get client", err)
	}
	return r.client(), nil
}

// LockClient locks a client: it requires a key even while it has no active
// one, so every caller gets 401 until a key exists. Locking a locked client
// changes nothing (no write, no change event) and returns it.
func (s *Store) LockClient(ctx context.Context, name string) (keystore.Client, error) {
	return s.setLocked(ctx, "lock client", name, true)
}

// UnlockClient lifts a client's lock: without an active key it is open to
// anonymous callers again. Unlocking an unlocked client changes nothing and
// returns it.
func (s *Store) UnlockClient(ctx context.Context, name string) (keystore.Client, error) {
	return s.setLocked(ctx, "unlock client", name, false)
}

func (s *Store) setLocked(ctx context.Context, op, name string, locked bool) (keystore.Client, error) {
	if err := checkName(name); err != nil {
		return keystore.Client{}, err
	}
	var c keystore.Client
	err := s.inTx(ctx, op, func(ctx context.Context, tx *sqlx.Tx) error {
		// Only a real change is written, so that a repeated lock does not
		// invalidate every instance's cache again.
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE llm_clients SET locked = ?, updated_at = ? WHERE name = ? AND locked <> ?`),
			locked, s.stamp(), name, locked); err != nil {
			return err
		}
		var r clientRow
		err := tx.GetContext(ctx, &r, s.q(`SELECT `+clientColumns+` FROM llm_clients c WHERE c.name = ?`), name)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %q", keystore.ErrUnknownClient, name)
		}
		if err != nil {
			return err
		}
		c = r.client()
		return nil
	})
	return c, err
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
SELECT `+clientColumns+`,
       COUNT(k.id) AS keys,
       COUNT(CASE WHEN k.is_active THEN 1 END) AS active_keys,
       (c.locked OR COUNT(CASE WHEN k.is_active THEN 1 END) > 0) AS requires_key
FROM llm_clients c
LEFT JOIN llm_client_api_keys ck ON ck.llm_client_id = c.id
LEFT JOIN api_keys k ON k.id = ck.api_key_id
GROUP BY c.id, c.name, c.locked, c.created_at, c.updated_at
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
