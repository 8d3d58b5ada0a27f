package keystore

import "time"

// ValidClientName reports whether name is a well-formed client name:
// ^[a-z0-9][a-z0-9-]{0,62}$, the rule the migrations' CHECK constraints
// also enforce. It runs on every request (in the middleware and the
// cache), so it is a plain byte loop rather than a regular expression.
func ValidClientName(name string) bool {
	if len(name) == 0 || len(name) > 63 || name[0] == '-' {
		return false
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if (b < 'a' || b > 'z') && (b < '0' || b > '9') && b != '-' {
			return false
		}
	}
	return true
}

// Client is an LLM client: a bot endpoint that keys may protect.
type Client struct {
	ID   int64  `json:"id" db:"id"`
	Name string `json:"name" db:"name"`
	// Locked makes the client require a key even while it has no active
	// one: see [ClientState.RequiresKey].
	Locked    bool      `json:"locked" db:"locked"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
	UpdatedAt time.Time `json:"updated_at" db:"updated_at"`
}

// ClientSummary is a client with its key counts, as listings show it.
type ClientSummary struct {
	Client
	// RequiresKey is true while at least one linked key is active or the
	// client is locked: see [ClientState.RequiresKey].
	RequiresKey bool `json:"requires_key" db:"requires_key"`
	// ActiveKeys counts linked keys that are active (expired ones included:
	// they keep the client requiring a key).
	ActiveKeys int `json:"active_keys" db:"active_keys"`
	// Keys counts all linked keys.
	Keys int `json:"keys" db:"keys"`
}

// ClientState is what the middleware needs to know about a client on every
// request.
type ClientState struct {
	ID   int64
	Name string
	// Locked is the operator's lock (clients lock NAME): the client
	// requires a key even while it has no active one.
	Locked bool
	// RequiresKey is the rule every decision follows:
	//
	//	RequiresKey = has_active_api_key OR Locked
	//
	// has_active_api_key is the seed model's (HasActiveAPIKey): at least
	// one linked key is active. Expiry does not count, so a client whose
	// keys all expired still requires a key rather than opening to
	// anonymous callers. Locked is the contract's lock: a locked client
	// with no key refuses every caller (401) until a key exists. Only
	// revoking or deleting the last active key of an unlocked client
	// opens it.
	RequiresKey bool
}

// KeyState names where a key stands.
type KeyState string

// Key states.
const (
	KeyActive  KeyState = "active"
	KeyExpired KeyState = "expired"
	KeyRevoked KeyState = "revoked"
)

// APIKey describes a key without its secret: neither plaintext nor digest
// ever leaves the store. ExpiresAt is nil when the key never expires (NULL,
// or PostgreSQL's infinity). Every time in it lies between
// 0000-01-01T00:00:00Z (-infinity, and a stored value that is no time) and
// 9999-12-31T23:59:59.999999Z, so that it always prints as RFC 3339.
type APIKey struct {
	ID     int64  `json:"id"`
	Client string `json:"client"`
	// Prefix is the token's public start (prefix and lookup id), enough to
	// recognise a key in a listing.
	Prefix      string     `json:"prefix"`
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Active      bool       `json:"active"`
	State       KeyState   `json:"state"`
	ExpiresAt   *time.Time `json:"expires_at"`
	LastUsedAt  *time.Time `json:"last_used_at"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// NewKey is a freshly created key and its token. The token's plaintext
// exists only here: store it or show it now, it cannot be recovered.
type NewKey struct {
	APIKey
	Token Token `json:"-"`
}

// KeySpec describes a key to create.
type KeySpec struct {
	// Name is a label for people, at most 200 characters. Optional.
	Name string
	// Description is free text, at most 1000 characters. Optional.
	Description string
	// ExpiresAt, when set, must lie in the future. After it the key no
	// longer authenticates, but it still counts as active: the client still
	// requires a key until the key is revoked or a new one is created.
	ExpiresAt *time.Time
}

// RotateSpec describes a rotation.
type RotateSpec struct {
	// Grace, when positive, makes the old key expire that long after the
	// rotation (or at its own expiry, if sooner). Zero leaves the old key
	// valid until it is revoked.
	Grace time.Duration
	// ExpiresAt is the new key's expiry, checked like KeySpec.ExpiresAt.
	// Nil: the new key never expires.
	ExpiresAt *time.Time
}

// VerifiedKey is what a valid token proves: the key and the client it is
// linked to. The middleware turns it into a [middleware.Principal].
type VerifiedKey struct {
	KeyID     int64
	KeyName   string
	ClientID  int64
	Client    string
	ExpiresAt *time.Time
}

// ChangeSource is the kind of row a change touched.
type ChangeSource string

// The change sources, as the database triggers write them.
const (
	SourceClient ChangeSource = "client" // llm_clients
	SourceKey    ChangeSource = "key"    // api_keys
	SourceLink   ChangeSource = "link"   // llm_client_api_keys
	SourceFlush  ChangeSource = "flush"  // a table was truncated: drop everything
)

// Change is one row of the change log that triggers write.
type Change struct {
	ID       int64
	Source   ChangeSource
	ClientID int64 // 0 when none
	KeyID    int64 // 0 when none
}
