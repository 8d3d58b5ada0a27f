package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// Create a client, give it a key, and ask the two questions the middleware
// asks on every request.
func ExampleStore() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "keystore-example")
	defer os.RemoveAll(dir)

	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(dir, "keys.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := sqlstore.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	store, err := sqlstore.New(ctx, db, sqlstore.Options{})
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
