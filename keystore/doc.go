// Package keystore is the contract between the llmauth middleware and the
// stores behind it: the [Store] interface with its two questions ("what is
// this client's state?", "is this token a valid key of this client?"), the
// model (clients, API keys, their states), tokens and their digests, the
// errors callers branch on, and the batched last-used audit. It uses the
// standard library only, so a program with a store of its own links no SQL
// driver.
//
// The rule, from the seed model's has_active_api_key and the contract's
// lock: a client requires a key while it has at least one active key OR is
// locked ([ClientState.RequiresKey]); then the caller needs a bearer token
// that is an active, unexpired key linked to that client. Any other client
// is open. Expiry never opens a client; only revoking or deleting the last
// active key of an unlocked client does.
//
// Tokens look like llmk_<12 lookup><43 secret><6 checksum>, all base62.
// Stores keep only the SHA-256 digest of a token; the plaintext exists
// once, when a key is created.
//
// Implementations: keystore/sqlstore (PostgreSQL and SQLite) and
// keystore/cache (a TTL cache over any Store).
//
//	tok, err := keystore.ParseToken(header) // refuses bad format or checksum
//	if err != nil { … }                     // errors.Is(err, keystore.ErrInvalidToken)
//	key, err := store.Verify(ctx, "support-bot", tok)
package keystore
