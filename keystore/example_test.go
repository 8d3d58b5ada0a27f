package keystore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/llmauth/llmauth/keystore"
)

// Create a client, give it a key, and ask the two questions the middleware
// asks on every request.
func ExampleSQLStore() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "keystore-example")
	defer os.RemoveAll(dir)

	db, err := keystore.Open(ctx, "sqlite:"+filepath.Join(dir, "keys.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := keystore.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	store, err := keystore.NewSQLStore(db, keystore.Options{})
	if err != nil {
		log.Fatal(err)
	}

	if _, err := store.CreateClient(ctx, "support-bot"); err != nil {
		log.Fatal(err)
	}
	open, _ := store.HasActiveAPIKey(ctx, "support-bot")
	fmt.Println("requires a key:", open)

	key, err := store.CreateKey(ctx, "support-bot", keystore.KeySpec{Name: "ci"})
	if err != nil {
		log.Fatal(err)
	}
	locked, _ := store.HasActiveAPIKey(ctx, "support-bot")
	fmt.Println("requires a key:", locked)

	// The plaintext exists only in key.Token; hand it to its owner now.
	p, err := store.Verify(ctx, "support-bot", key.Token)
	fmt.Println("verified key:", p.KeyName, err)

	_, err = store.CreateClient(ctx, "Support Bot")
	fmt.Println(errors.Is(err, keystore.ErrInvalidName))
	// Output:
	// requires a key: false
	// requires a key: true
	// verified key: ci <nil>
	// true
}

// ParseToken refuses a mistyped token without a database round trip, and a
// Token never prints its secret.
func ExampleParseToken() {
	_, err := keystore.ParseToken("llmk_not-a-token")
	fmt.Println(errors.Is(err, keystore.ErrInvalidToken))

	tok, _ := keystore.ParseToken(sampleToken())
	fmt.Println(strings.HasSuffix(tok.String(), "…"), len(tok.String()) < keystore.TokenLength)
	// Output:
	// true
	// true true
}

// sampleToken returns a real token from a throwaway store.
func sampleToken() string {
	store, done := tempStore()
	defer done()
	ctx := context.Background()
	_, _ = store.CreateClient(ctx, "bot")
	k, _ := store.CreateKey(ctx, "bot", keystore.KeySpec{})
	return k.Token.Reveal()
}

// tempStore opens a migrated SQLite store in a temporary directory; done
// removes it.
func tempStore() (store *keystore.SQLStore, done func()) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keystore-example")
	if err != nil {
		log.Fatal(err)
	}
	db, err := keystore.Open(ctx, "sqlite:"+filepath.Join(dir, "keys.db"))
	if err != nil {
		log.Fatal(err)
	}
	if err := keystore.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	store, err = keystore.NewSQLStore(db, keystore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	return store, func() { db.Close(); os.RemoveAll(dir) }
}

// A cache in front of the store, kept current by a watcher of the change
// log. On PostgreSQL, set WatcherOptions.PostgresURL to get changes within
// milliseconds instead of within a poll interval.
func ExampleNewCache() {
	ctx := context.Background()
	store, done := tempStore() // keystore.Open, keystore.Migrate, keystore.NewSQLStore
	defer done()

	cache, err := keystore.NewCache(store, keystore.CacheOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()
	watcher, err := keystore.NewWatcher(store, cache, keystore.WatcherOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if err := watcher.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer watcher.Close()

	_, _ = store.CreateClient(ctx, "bot")
	st, _ := cache.ClientState(ctx, "bot")
	fmt.Println("requires a key:", st.RequiresKey)

	_, _ = store.CreateKey(ctx, "bot", keystore.KeySpec{})
	_ = watcher.Poll(ctx) // the poller does this every 500ms by itself
	st, _ = cache.ClientState(ctx, "bot")
	fmt.Println("requires a key:", st.RequiresKey)
	// Output:
	// requires a key: false
	// requires a key: true
}
