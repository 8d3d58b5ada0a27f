package cache

import (
	"github.com/llmauth/llmauth/keystore"
)

// flushAbove is the largest batch Apply drops entry by entry; a larger
// one (a backlog after an outage, a bulk import) flushes the cache, which
// drops a superset of what it would. It bounds how long Apply holds the
// lock every fill waits on: a few microseconds a change, so 150ms or so
// at the threshold. Apply allocates nothing per change either way.
const flushAbove = 50_000

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
		for _, t := range []*shards{c.states, c.verified, c.invalid} {
			t.Flush() // calls no eviction hook
		}
		c.unknown.Flush()
		c.idx = indexes{}
	})
}

// Apply drops exactly the entries a batch of changes affects, found
// through indexes by client and key id, so that its cost grows with the
// batch and what it drops, not with the cache:
//
//   - a change naming a client drops that client's state, its verified
//     keys and the tokens found invalid for it, and also every invalid
//     token cached before its client's state (whose client is unknown);
//   - a change naming a key drops that key's verified entries, for every
//     client;
//   - a change of a client row also forgets every unknown client name (it
//     may have been created or renamed);
//   - a "flush" change, or a batch of more than 50,000 changes, drops
//     everything (reported as a flush).
func (c *Cache) Apply(changes []keystore.Change) {
	if len(changes) == 0 {
		return
	}
	if len(changes) > flushAbove {
		c.Flush()
		return
	}
	reason := InvalidatedClient
	anyClient, clientRows := false, false
	for _, ch := range changes {
		if ch.Source == keystore.SourceFlush {
			c.Flush()
			return
		}
		anyClient = anyClient || ch.ClientID != 0
		clientRows = clientRows || ch.Source == keystore.SourceClient
		if ch.KeyID != 0 {
			reason = InvalidatedKey
		}
	}
	c.invalidate(reason, func() {
		// An id named twice is found the second time with nothing left.
		for _, ch := range changes {
			if id := ch.ClientID; id != 0 {
				c.drop(c.states, &c.idx.states, id)
				c.drop(c.verified, &c.idx.keysByClient, id)
				c.drop(c.invalid, &c.idx.invalidClient, id)
			}
			if id := ch.KeyID; id != 0 {
				c.drop(c.verified, &c.idx.keysByKey, id)
			}
		}
		if anyClient {
			// An entry with no client id was cached before its client's
			// state: it cannot be matched, so any client change drops it.
			c.drop(c.invalid, &c.idx.invalidClient, 0)
		}
		if clientRows {
			// A created or renamed client may be remembered as unknown.
			c.unknown.Flush()
		}
	})
}
