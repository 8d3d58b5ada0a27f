package sqlstore

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/llmauth/llmauth/keystore"
)

// HasActiveAPIKey reports whether at least one key linked to client is
// active, exactly the seed model's has_active_api_key. Expiry does not
// count. A locked client may have none and still require a key: the
// decision is [keystore.ClientState.RequiresKey], not this.
func (s *Store) HasActiveAPIKey(ctx context.Context, client string) (bool, error) {
	r, err := s.clientState(ctx, client)
	if err != nil {
		return false, err
	}
	return r.ActiveKey, nil
}

// ClientState answers "does client exist, and does it require a key?" in
// one indexed round trip. RequiresKey is has_active_api_key OR locked (see
// [keystore.ClientState.RequiresKey]).
func (s *Store) ClientState(ctx context.Context, client string) (keystore.ClientState, error) {
	r, err := s.clientState(ctx, client)
	if err != nil {
		return keystore.ClientState{}, err
	}
	return keystore.ClientState{ID: r.ID, Name: r.Name, Locked: r.Locked, RequiresKey: r.ActiveKey || r.Locked}, nil
}

// clientStateRow is a client with its lock and whether it has an active key.
type clientStateRow struct {
	ID        int64  `db:"id"`
	Name      string `db:"name"`
	Locked    bool   `db:"locked"`
	ActiveKey bool   `db:"active_key"`
}

func (s *Store) clientState(ctx context.Context, client string) (clientStateRow, error) {
	if !keystore.ValidClientName(client) {
		return clientStateRow{}, fmt.Errorf("%w: %q", keystore.ErrUnknownClient, truncateForMessage(client))
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return clientStateRow{}, err
	}
	var row clientStateRow
	err := s.db.GetContext(ctx, &row, s.q(`
SELECT c.id, c.name, c.locked,
       EXISTS (SELECT 1 FROM llm_client_api_keys ck JOIN api_keys k ON k.id = ck.api_key_id
               WHERE ck.llm_client_id = c.id AND k.is_active) AS active_key
FROM llm_clients c WHERE c.name = ?`), client)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return clientStateRow{}, fmt.Errorf("%w: %q", keystore.ErrUnknownClient, client)
	case err != nil:
		return clientStateRow{}, unavailable("client state", err)
	}
	return row, nil
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
