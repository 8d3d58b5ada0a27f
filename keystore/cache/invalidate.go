package cache

import (
	"github.com/llmauth/llmauth/keystore"

	gocache "github.com/patrickmn/go-cache"
)

// invalidate runs drop with fills held off and the generation moved on, so
// that no fill that started earlier can store a result from before the
// change.
func (c *Cache) invalidate(reason InvalidationReason, drop func()) {
	c.mu.Lock()
	c.gen.Add(1)
	drop()
	c.mu.Unlock()
	if c.opts.Observer != nil {
		c.opts.Observer.Invalidated(string(reason))
	}
}

// Flush drops every entry.
func (c *Cache) Flush() {
	c.invalidate(InvalidatedFlush, func() {
		for _, g := range []*gocache.Cache{c.states, c.unknown, c.verified, c.invalid} {
			g.Flush()
		}
	})
}

// Apply drops exactly the entries a batch of changes affects, in one pass
// over each cache. A "flush" change drops everything.
func (c *Cache) Apply(changes []keystore.Change) {
	if len(changes) == 0 {
		return
	}
	clients := map[int64]bool{}
	keys := map[int64]bool{}
	clientRows := false
	for _, ch := range changes {
		if ch.Source == keystore.SourceFlush {
			c.Flush()
			return
		}
		if ch.ClientID != 0 {
			clients[ch.ClientID] = true
		}
		if ch.KeyID != 0 {
			keys[ch.KeyID] = true
		}
		if ch.Source == keystore.SourceClient {
			clientRows = true
		}
	}
	reason := InvalidatedKey
	if len(keys) == 0 {
		reason = InvalidatedClient
	}
	c.invalidate(reason, func() {
		for name, it := range c.states.Items() {
			if clients[it.Object.(stateEntry).state.ID] {
				c.states.Delete(name)
			}
		}
		if clientRows {
			// A created or renamed client may be remembered as unknown.
			c.unknown.Flush()
		}
		for k, it := range c.verified.Items() {
			p := it.Object.(keyEntry).principal
			if keys[p.KeyID] || clients[p.ClientID] {
				c.verified.Delete(k)
			}
		}
		for k, it := range c.invalid.Items() {
			e := it.Object.(negEntry)
			// An entry with no client id was cached before its client's
			// state: it cannot be matched, so any client change drops it.
			if clients[e.clientID] || (e.clientID == 0 && len(clients) > 0) {
				c.invalid.Delete(k)
			}
		}
	})
}
