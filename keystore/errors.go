package keystore

import (
	"errors"
	"fmt"
)

// Errors callers branch on. Every error a store returns wraps one of these
// (test with errors.Is), with detail in the message.
var (
	// ErrInvalidName: a client name outside ^[a-z0-9][a-z0-9-]{0,62}$.
	ErrInvalidName = errors.New("keystore: invalid client name")
	// ErrInvalidInput: any other argument the store refuses (an oversized
	// label, an expiry in the past, a negative id).
	ErrInvalidInput = errors.New("keystore: invalid input")
	// ErrClientExists: a client of that name already exists.
	ErrClientExists = errors.New("keystore: client already exists")
	// ErrUnknownClient: no client of that name.
	ErrUnknownClient = errors.New("keystore: unknown client")
	// ErrKeyNotFound: no key with that id.
	ErrKeyNotFound = errors.New("keystore: api key not found")
	// ErrInvalidToken: the credentials are not an active, unexpired key of the
	// client. Its causes (unknown, revoked, expired, another client's key,
	// malformed) are deliberately not told apart by type, so that callers
	// cannot leak them to a caller who guesses.
	ErrInvalidToken = errors.New("keystore: invalid token")
	// ErrMalformedToken: the token fails its format or checksum. It wraps
	// ErrInvalidToken.
	ErrMalformedToken = fmt.Errorf("%w: malformed", ErrInvalidToken)
	// ErrUnavailable: the store could not answer (database down, deadline
	// passed, context cancelled). Never treat it as "no key".
	ErrUnavailable = errors.New("keystore: store unavailable")
	// ErrNotCached: a [Peeker] cannot answer without asking the store. It
	// is never a decision.
	ErrNotCached = errors.New("keystore: not cached")
)
