package keystore

import "context"

// Store answers the two questions the middleware asks on every request.
// [SQLStore] implements it over a database and [Cache] over any Store.
//
// Implementations return ErrUnknownClient from ClientState for a client
// that does not exist, ErrInvalidToken from Verify for every kind of bad
// credentials, and ErrUnavailable when they cannot decide. Callers must
// never treat ErrUnavailable as "no key required".
type Store interface {
	// ClientState reports whether client exists and whether it requires
	// a key.
	ClientState(ctx context.Context, client string) (ClientState, error)
	// Verify checks that token is an active, unexpired key of client.
	Verify(ctx context.Context, client string, token Token) (VerifiedKey, error)
}

// Peeker is implemented by a Store that can answer some lookups from
// memory (the keystore/cache Cache). The middleware asks it first, so
// that a request it can answer without I/O never waits for a store call
// slot or a throttling budget: a valid key already verified keeps working
// from any source.
//
// A peek answers only what the Store itself would answer at that moment
// without a store call, under the same rules (freshness, TTL, expiry).
// When it cannot, it returns ErrNotCached and has no effect.
type Peeker interface {
	// PeekClientState is ClientState without I/O: the state, or
	// ErrUnknownClient for a name remembered as unknown, or ErrNotCached.
	PeekClientState(client string) (ClientState, error)
	// PeekVerify is Verify without I/O: the key, or ErrInvalidToken for a
	// token remembered as invalid (or expired), or ErrNotCached.
	PeekVerify(client string, token Token) (VerifiedKey, error)
}
