package cache_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// A cache in front of the store, kept current by a watcher of the change
// log. On PostgreSQL, set WatcherOptions.PostgresURL to get changes within
// milliseconds instead of within a poll interval.
func ExampleNew() {
	ctx := context.Background()
	store, done := tempStore() // sqlstore.Open, sqlstore.Migrate, sqlstore.New
	defer done()

	c, err := cache.New(store, cache.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	watcher, err := sqlstore.NewWatcher(ctx, store, c, sqlstore.WatcherOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer watcher.Close()

	_, _ = store.CreateClient(ctx, "bot")
	st, _ := c.ClientState(ctx, "bot")
	fmt.Println("requires a key:", st.RequiresKey)

	_, _ = store.CreateKey(ctx, "bot", keystore.KeySpec{})
	_ = watcher.Poll(ctx) // the poller does this every 500ms by itself
	st, _ = c.ClientState(ctx, "bot")
	fmt.Println("requires a key:", st.RequiresKey)
	// Output:
	// requires a key: false
	// requires a key: true
}

// tempStore opens a migrated SQLite store in a temporary directory; done
// removes it.
func tempStore() (store *sqlstore.Store, done func()) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keystore-example")
	if err != nil {
		log.Fatal(err)
	}
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(dir, "keys.db"))
	if err != nil {
		log.Fatal(err)
	}
	if err := sqlstore.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	store, err = sqlstore.New(ctx, db, sqlstore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	return store, func() { db.Close(); os.RemoveAll(dir) }
}
