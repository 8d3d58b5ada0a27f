package sqlstore

import (
	"github.com/llmauth/llmauth/keystore"
	"time"
)

// Rows as the store's queries return them. Their time columns are dbTime,
// which reads any value the database holds (see times.go), so that a row
// with an odd time is still listed, revoked and deleted like any other.

// clientRow is an llm_clients row.
type clientRow struct {
	ID        int64  `db:"id"`
	Name      string `db:"name"`
	Locked    bool   `db:"locked"`
	CreatedAt dbTime `db:"created_at"`
	UpdatedAt dbTime `db:"updated_at"`
}

// clientColumns are clientRow's columns of llm_clients c.
const clientColumns = `c.id, c.name, c.locked, c.created_at, c.updated_at`

func (r clientRow) client() keystore.Client {
	return keystore.Client{ID: r.ID, Name: r.Name, Locked: r.Locked, CreatedAt: r.CreatedAt.at(), UpdatedAt: r.UpdatedAt.at()}
}

// clientSummaryRow is a client with its key counts.
type clientSummaryRow struct {
	clientRow
	RequiresKey bool `db:"requires_key"`
	ActiveKeys  int  `db:"active_keys"`
	Keys        int  `db:"keys"`
}

func (r clientSummaryRow) summary() keystore.ClientSummary {
	return keystore.ClientSummary{Client: r.client(), RequiresKey: r.RequiresKey, ActiveKeys: r.ActiveKeys, Keys: r.Keys}
}

// keyRow is an api_keys row as queries return it.
type keyRow struct {
	ID          int64  `db:"id"`
	Client      string `db:"client"`
	LookupID    string `db:"lookup_id"`
	Name        string `db:"name"`
	Description string `db:"description"`
	Active      bool   `db:"is_active"`
	ExpiresAt   dbTime `db:"expires_at"`
	LastUsedAt  dbTime `db:"last_used_at"`
	CreatedAt   dbTime `db:"created_at"`
	UpdatedAt   dbTime `db:"updated_at"`
}

func (r keyRow) apiKey(now time.Time) keystore.APIKey {
	k := keystore.APIKey{
		ID:          r.ID,
		Client:      r.Client,
		Prefix:      keystore.TokenPrefix + r.LookupID,
		Name:        r.Name,
		Description: r.Description,
		Active:      r.Active,
		ExpiresAt:   r.ExpiresAt.expiry(),
		LastUsedAt:  r.LastUsedAt.ptr(),
		CreatedAt:   r.CreatedAt.at(),
		UpdatedAt:   r.UpdatedAt.at(),
	}
	switch {
	case !k.Active:
		k.State = keystore.KeyRevoked
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		k.State = keystore.KeyExpired
	default:
		k.State = keystore.KeyActive
	}
	return k
}

const keyColumns = `k.id, k.lookup_id, k.name, k.description, k.is_active, k.expires_at, k.last_used_at, k.created_at, k.updated_at`
