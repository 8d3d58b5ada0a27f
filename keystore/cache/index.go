package cache

import (
	"strings"
	"sync"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

// indexes find the entries a change affects without a scan: for each
// client id and key id, the keys of the entries that carry it. They are
// kept under Cache.mu, in step with the caches: an entry is indexed when
// stored, and unindexed when deleted. go-cache calls the caches' OnEvicted
// hook for every Delete and for every expired entry DeleteExpired sweeps
// (outside its own lock); the hook only records the entry (see
// [evictions]). A deletion under Cache.mu (del) unindexes what it deleted
// before it returns; a sweep, which deletes without Cache.mu, unindexes
// what it deleted afterwards, a chunk per hold of Cache.mu (see
// Cache.sweepExpired). Until then the indexes may list, for an entry a
// sweep deleted, a key no longer cached or cached anew under other ids:
// harmless, a change then deletes an entry that is not there or that it
// need not have. What must never be is a cached entry missing from its
// indexes, so unindex leaves any id that the entry now cached under the
// key carries. Flush resets them. An entry overwritten in place would
// leave its ids behind, so a store deletes the old entry first.
type indexes struct {
	states        refs // client id -> names in states
	keysByClient  refs // client id -> token keys in verified
	keysByKey     refs // key id -> token keys in verified
	invalidClient refs // client id, or 0 when unknown -> token keys in invalid
}

// refs maps an id to the cache keys of the entries that carry it. Almost
// every id has one entry (a client one state, a key one client), so the
// first key lives in a flat map and only the others in a set per id: an
// indexed entry costs one map slot.
type refs struct {
	first map[int64]string
	more  map[int64]map[string]struct{}
}

func (r *refs) add(id int64, key string) {
	if r.first == nil {
		r.first = map[int64]string{}
	}
	f, ok := r.first[id]
	switch {
	case !ok:
		r.first[id] = key
	case f != key:
		if r.more == nil {
			r.more = map[int64]map[string]struct{}{}
		}
		set := r.more[id]
		if set == nil {
			set = map[string]struct{}{}
			r.more[id] = set
		}
		set[key] = struct{}{}
	}
}

func (r *refs) remove(id int64, key string) {
	f, ok := r.first[id]
	if !ok {
		return
	}
	set := r.more[id]
	if f == key {
		delete(r.first, id)
		for k := range set { // promote any other
			r.first[id] = k
			delete(set, k)
			break
		}
	} else {
		delete(set, key)
	}
	if set != nil && len(set) == 0 {
		delete(r.more, id)
	}
}

// detach removes id from r and returns its keys: first, then the others.
func (r *refs) detach(id int64) (first string, more map[string]struct{}, ok bool) {
	if first, ok = r.first[id]; !ok {
		return "", nil, false
	}
	more = r.more[id]
	delete(r.first, id)
	delete(r.more, id)
	return first, more, true
}

// drop deletes from t every entry r lists under id, unindexing each
// everywhere else; id is taken out of r first, so that unindexing finds
// nothing left to do there. Called with Cache.mu held.
func (c *Cache) drop(t *shards, r *refs, id int64) {
	first, more, ok := r.detach(id)
	if !ok {
		return
	}
	c.del(t, first)
	for k := range more {
		c.del(t, k)
	}
}

// evicted is an entry deleted from states, verified or invalid (which one
// its value's type says) whose ids are still to be unindexed.
type evicted struct {
	key string
	v   any // stateEntry, keyEntry or negEntry
}

// evictions routes the calls of the caches' eviction hook, which go-cache
// makes from the goroutine that deletes: del, under Cache.mu, or a sweep's
// DeleteExpired, without it. While a del runs (open), every call lands in
// direct, which del unindexes before it returns; a sweep's call that
// lands there meanwhile is unindexed with it, only earlier than the sweep
// would (unindex is right at any time under Cache.mu). Every other call
// is a sweep's and lands in swept, which the sweep unindexes once its
// DeleteExpired is done.
type evictions struct {
	mu     sync.Mutex
	open   bool // a del is deleting: only ever set under Cache.mu
	direct []evicted
	swept  []evicted
}

// evicted is the caches' OnEvicted hook: it records the entry for del or
// the sweep to unindex.
func (c *Cache) evicted(key string, v any) {
	e := &c.ev
	e.mu.Lock()
	if e.open {
		e.direct = append(e.direct, evicted{key, v})
	} else {
		e.swept = append(e.swept, evicted{key, v})
	}
	e.mu.Unlock()
}

// del deletes key from t (states, verified or invalid) and unindexes the
// entry it held, if any, before it returns. Called with Cache.mu held.
func (c *Cache) del(t *shards, key string) {
	e := &c.ev
	e.mu.Lock()
	e.open = true
	e.mu.Unlock()
	t.Delete(key) // the hook runs here, on this goroutine
	e.mu.Lock()
	e.open = false
	for _, x := range e.direct {
		c.unindex(x)
	}
	clear(e.direct) // keeps the array: Apply allocates nothing per change
	e.direct = e.direct[:0]
	e.mu.Unlock()
}

// unindex removes the ids of x, an entry deleted from its cache, from the
// indexes, except any that the entry now cached under the same key
// carries: a sweep unindexes what it deleted after the fact, when a fill
// may have cached the key again, with the same ids or others. (An entry
// past go-cache's expiry counts as not cached: go-cache hides it, and it
// is older than any lookup accepts.) Called with Cache.mu held, under
// which every entry is stored and indexed.
func (c *Cache) unindex(x evicted) {
	switch v := x.v.(type) {
	case stateEntry:
		id := v.state.ID
		if cur, ok := c.states.Get(x.key); !ok || cur.(stateEntry).state.ID != id {
			c.idx.states.remove(id, x.key)
		}
	case keyEntry:
		p := v.principal
		var now keystore.VerifiedKey
		cur, ok := c.verified.Get(x.key)
		if ok {
			now = cur.(keyEntry).principal
		}
		if !ok || now.ClientID != p.ClientID {
			c.idx.keysByClient.remove(p.ClientID, x.key)
		}
		if !ok || now.KeyID != p.KeyID {
			c.idx.keysByKey.remove(p.KeyID, x.key)
		}
	case negEntry:
		if cur, ok := c.invalid.Get(x.key); !ok || cur.(negEntry).clientID != v.clientID {
			c.idx.invalidClient.remove(v.clientID, x.key)
		}
	}
}

// The stores below run under Cache.mu, from a fill whose generation is
// still current.

// storeState caches st, the state of the client named client.
func (c *Cache) storeState(client string, st keystore.ClientState, fetched time.Duration) {
	c.del(c.states, client) // unindexes the entry it replaces
	key := st.Name          // from the store: holds no caller's buffer
	if key != client {
		key = strings.Clone(client)
	}
	c.states.SetDefault(key, stateEntry{state: st, fetched: fetched})
	c.idx.states.add(st.ID, key)
}

// storeUnknown remembers that no client is named client.
func (c *Cache) storeUnknown(client string) {
	c.del(c.states, client)
	if c.unknown.ItemCount() < c.opts.MaxNegative {
		c.unknown.SetDefault(strings.Clone(client), struct{}{})
	}
}

// storeKey caches p, what the token under key proved for client. An
// answer naming another client than the one asked is not cached: an
// entry serves only the client it names (see tokenKey), and no store that
// keeps the contract gives one.
func (c *Cache) storeKey(key, client string, p keystore.VerifiedKey, fetched time.Duration) {
	if p.Client != client {
		return
	}
	p.Client = c.clientName(client)
	c.del(c.verified, key)
	c.verified.SetDefault(key, keyEntry{principal: p, fetched: fetched})
	c.idx.keysByClient.add(p.ClientID, key)
	c.idx.keysByKey.add(p.KeyID, key)
}

// storeInvalid remembers that the token under key is no key of client.
func (c *Cache) storeInvalid(key, client string) {
	c.del(c.verified, key)
	if c.invalid.ItemCount() >= c.opts.MaxNegative {
		return
	}
	// The client's id, when its state is cached, lets a change of that
	// client drop the entry; with none, any client change drops it.
	var cid int64
	if v, ok := c.states.Get(client); ok {
		cid = v.(stateEntry).state.ID
	}
	c.del(c.invalid, key)
	c.invalid.SetDefault(key, negEntry{client: c.clientName(client), clientID: cid})
	c.idx.invalidClient.add(cid, key)
}

// clientName returns client in a string the cache may keep: the cached
// state's name when there is one (no new bytes), else a copy (the
// caller's string may be a slice of a whole request).
func (c *Cache) clientName(client string) string {
	if v, ok := c.states.Get(client); ok {
		if name := v.(stateEntry).state.Name; name == client {
			return name
		}
	}
	return strings.Clone(client)
}
