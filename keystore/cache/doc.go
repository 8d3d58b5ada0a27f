// Package cache is a [keystore.Store] in front of another Store: client
// states and verified keys are kept for a TTL (under the token's digest,
// never its plaintext), unknown clients and invalid tokens for a shorter
// one, concurrent misses share one store call, and a change drops exactly
// the entries it affects, found through indexes by client and key id.
// Cached answers are used only while a freshness lease holds: a change
// feed (keystore/sqlstore's Watcher) must have proved within the staleness
// bound (1s by default) that every change up to a recent moment was
// applied; past it every request asks the store, and fails closed if the
// store cannot answer. As a [keystore.Peeker] it also answers from memory
// alone, under the same rules. It imports nothing SQL.
//
//	c, err := cache.New(store, cache.Options{})
//	if err != nil { … }
//	defer c.Close()
//	// start a watcher that feeds c (see sqlstore.NewWatcher)
//	state, err := c.ClientState(ctx, "support-bot")
package cache
