package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/llmauth/llmauth/keystore"

	"github.com/jmoiron/sqlx"
)

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
	expires, err := checkExpiry(spec.ExpiresAt, now)
	if err != nil {
		return keystore.NewKey{}, err
	}
	var out keystore.NewKey
	err = s.inTx(ctx, "create key", func(ctx context.Context, tx *sqlx.Tx) error {
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

// checkExpiry checks a new key's expiry and returns it as stored: UTC,
// in microseconds.
func checkExpiry(at *time.Time, now time.Time) (*time.Time, error) {
	if at == nil {
		return nil, nil
	}
	e := at.UTC().Truncate(time.Microsecond)
	if !e.After(now) {
		return nil, fmt.Errorf("%w: expiry %s is not in the future", keystore.ErrInvalidInput, e.Format(time.RFC3339))
	}
	if e.Year() > 9999 {
		// Neither database keeps such a time as one.
		return nil, fmt.Errorf("%w: expiry %s is after the year 9999", keystore.ErrInvalidInput, e.Format(time.RFC3339))
	}
	return &e, nil
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
		expires, err := checkExpiry(spec.ExpiresAt, now)
		if err != nil {
			return err
		}
		out, err = s.insertKey(ctx, tx, clientIDs[0], old.Client, old.Name, old.Description, expires, now)
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
