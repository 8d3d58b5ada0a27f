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
