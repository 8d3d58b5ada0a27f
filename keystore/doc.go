// Package keystore keeps LLM clients and their API keys in PostgreSQL or
// SQLite, and answers the two questions asked on every request: does this
// client require a key, and is this token a valid key of this client.
//
// A client with no active key is open. A client with at least one active
// key requires a bearer token that is an active, unexpired key linked to
// that client. Expiry never opens a client; only revoking or deleting its
// last active key does.
//
// Tokens look like llmk_<12 lookup><43 secret><6 checksum>, all base62. Only
// the SHA-256 digest of a token is stored; the plaintext exists once, in
// the return value of [SQLStore.CreateKey].
//
// The smallest use:
//
//	db, err := keystore.Open(ctx, "sqlite:llmauth.db")
//	// handle err
//	if err := keystore.Migrate(ctx, db); err != nil { … }
//	store, err := keystore.NewSQLStore(db, keystore.Options{})
//	client, err := store.CreateClient(ctx, "support-bot")
//	key, err := store.CreateKey(ctx, "support-bot", keystore.KeySpec{Name: "ci"})
//	fmt.Println(key.Token.Reveal()) // shown once
package keystore
