package cache

import (
	"hash/maphash"
	"maps"
	"time"

	gocache "github.com/patrickmn/go-cache"
)

// shardCount is how many go-caches hold the client states, and as many
// the verified keys. go-cache's DeleteExpired holds its cache's lock while
// it scans every entry and deletes the expired ones, up to a microsecond
// each: over one go-cache of a million entries, every lookup of it, and
// every store in it (which holds Cache.mu meanwhile), would wait most of a
// second. Split, a sweep holds one shard's lock at a time, for a
// sixty-fourth of that. Picking a shard costs a lookup about 10ns.
const shardCount = 64

// shards is a go-cache split by a seeded hash of the key. Its methods are
// go-cache's, applied to the key's shard or to every shard.
type shards struct {
	s    []*gocache.Cache
	mask uint64 // len(s)-1
	seed maphash.Seed
}

// newShards makes n go-caches (n a power of two) whose entries last ttl,
// with no janitor.
func newShards(n int, ttl time.Duration) *shards {
	t := &shards{s: make([]*gocache.Cache, n), mask: uint64(n - 1), seed: maphash.MakeSeed()}
	for i := range t.s {
		t.s[i] = gocache.New(ttl, 0)
	}
	return t
}

// of returns key's shard.
func (t *shards) of(key string) *gocache.Cache {
	if t.mask == 0 {
		return t.s[0]
	}
	return t.s[maphash.String(t.seed, key)&t.mask]
}

func (t *shards) Get(key string) (any, bool)   { return t.of(key).Get(key) }
func (t *shards) SetDefault(key string, v any) { t.of(key).SetDefault(key, v) }
func (t *shards) Delete(key string)            { t.of(key).Delete(key) }

// OnEvicted sets every shard's eviction hook.
func (t *shards) OnEvicted(f func(string, any)) {
	for _, g := range t.s {
		g.OnEvicted(f)
	}
}

// Flush empties every shard; it calls no eviction hook.
func (t *shards) Flush() {
	for _, g := range t.s {
		g.Flush()
	}
}

// ItemCount counts every shard's entries, expired ones not yet swept
// included.
func (t *shards) ItemCount() int {
	n := 0
	for _, g := range t.s {
		n += g.ItemCount()
	}
	return n
}

// Items returns every unexpired entry, for tests.
func (t *shards) Items() map[string]gocache.Item {
	all := map[string]gocache.Item{}
	for _, g := range t.s {
		maps.Copy(all, g.Items())
	}
	return all
}
