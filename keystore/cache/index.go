package cache

import (
	"strings"
	"time"

	"github.com/llmauth/llmauth/keystore"

	gocache "github.com/patrickmn/go-cache"
)

// indexes find the entries a change affects without a scan: for each
// client id and key id, the keys of the entries that carry it. They are
// kept under Cache.mu, in step with the caches: an entry is indexed when
// stored, and unindexed by the caches' OnEvicted hooks, which go-cache
// calls for every Delete and every expired entry DeleteExpired sweeps,
// always from a goroutine that holds Cache.mu (go-cache calls them outside
// its own lock). Flush resets them. An entry overwritten in place would
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

// drop deletes from g every entry r lists under id. Each Delete runs g's
// eviction hook, which unindexes the entry everywhere else; id is taken
// out of r first, so that the hook finds nothing left to do there.
// Called with Cache.mu held.
func drop(g *gocache.Cache, r *refs, id int64) {
	first, more, ok := r.detach(id)
	if !ok {
		return
	}
	g.Delete(first)
	for k := range more {
		g.Delete(k)
	}
}

// The eviction hooks. go-cache calls them for Delete and DeleteExpired,
// which this package calls only with Cache.mu held.

func (c *Cache) stateEvicted(name string, v any) {
	c.idx.states.remove(v.(stateEntry).state.ID, name)
}

func (c *Cache) keyEvicted(key string, v any) {
	p := v.(keyEntry).principal
	c.idx.keysByClient.remove(p.ClientID, key)
	c.idx.keysByKey.remove(p.KeyID, key)
}

func (c *Cache) negEvicted(key string, v any) {
	c.idx.invalidClient.remove(v.(negEntry).clientID, key)
}

// The stores below run under Cache.mu, from a fill whose generation is
// still current.

// storeState caches st, the state of the client named client.
func (c *Cache) storeState(client string, st keystore.ClientState, fetched time.Duration) {
	c.states.Delete(client) // unindexes the entry it replaces
	key := st.Name          // from the store: holds no caller's buffer
	if key != client {
		key = strings.Clone(client)
	}
	c.states.SetDefault(key, stateEntry{state: st, fetched: fetched})
	c.idx.states.add(st.ID, key)
}

// storeUnknown remembers that no client is named client.
func (c *Cache) storeUnknown(client string) {
	c.states.Delete(client)
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
	c.verified.Delete(key)
	c.verified.SetDefault(key, keyEntry{principal: p, fetched: fetched})
	c.idx.keysByClient.add(p.ClientID, key)
	c.idx.keysByKey.add(p.KeyID, key)
}

// storeInvalid remembers that the token under key is no key of client.
func (c *Cache) storeInvalid(key, client string) {
	c.verified.Delete(key)
	if c.invalid.ItemCount() >= c.opts.MaxNegative {
		return
	}
	// The client's id, when its state is cached, lets a change of that
	// client drop the entry; with none, any client change drops it.
	var cid int64
	if v, ok := c.states.Get(client); ok {
		cid = v.(stateEntry).state.ID
	}
	c.invalid.Delete(key)
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
