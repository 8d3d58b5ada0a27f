// Package sqlstore keeps llmauth's clients and API keys in PostgreSQL
// (through lib/pq) or SQLite (the pure-Go modernc.org/sqlite), behind the
// [keystore.Store] contract: [Open] a database URL, [Migrate] it (embedded
// goose migrations), and [New] a [Store] over it. Database triggers write
// every change to a change log; a [Watcher] reads it (and, on PostgreSQL,
// LISTENs for it) and feeds a cache's invalidation and freshness lease.
//
// The smallest use:
//
//	db, err := sqlstore.Open(ctx, "sqlite:llmauth.db")
//	if err != nil { … }
//	defer db.Close()
//	if err := sqlstore.Migrate(ctx, db); err != nil { … }
//	store, err := sqlstore.New(ctx, db, sqlstore.Options{})
//	if _, err := store.CreateClient(ctx, "support-bot"); err != nil { … }
//	key, err := store.CreateKey(ctx, "support-bot", keystore.KeySpec{Name: "ci"})
//	fmt.Println(key.Token.Reveal()) // shown once
package sqlstore
