package cache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

// fillExpiring caches n client states and n verified keys, indexed, as
// fills would, all fetched now: they expire together.
func fillExpiring(c *Cache, n int) {
	fetched := c.opts.Now().Sub(c.base)
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range n {
		var k [sha256.Size]byte
		binary.LittleEndian.PutUint64(k[:], uint64(i))
		key, name, id := string(k[:]), "c"+strconv.Itoa(i), int64(i+1)
		c.states.SetDefault(name, stateEntry{state: keystore.ClientState{ID: id, Name: name}, fetched: fetched})
		c.idx.states.add(id, name)
		c.verified.SetDefault(key, keyEntry{principal: keystore.VerifiedKey{KeyID: id, ClientID: id, Client: name}, fetched: fetched})
		c.idx.keysByClient.add(id, key)
		c.idx.keysByKey.add(id, key)
	}
}

// maxOf records the largest duration it is given.
type maxOf struct{ d atomic.Int64 }

func (m *maxOf) add(d time.Duration) {
	for {
		old := m.d.Load()
		if int64(d) <= old || m.d.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

func (m *maxOf) get() time.Duration { return time.Duration(m.d.Load()) }

// TestSweepLockHold: entries filled together (after a flush, at start)
// expire together. Sweeping them must not hold Cache.mu for the whole
// pass (the change feed's Apply and Confirm, and every fill's store, wait
// for it, and a wait near MaxStaleness, 1s, lapses the lease), nor one
// go-cache's lock (every lookup waits for it, and a store waits for it
// holding Cache.mu). During a sweep of 500k expired entries, a probe takes
// Cache.mu every 100µs, another looks up, a change feed applies and
// confirms every millisecond, and misses are filled: none may wait
// anywhere near the bound. Before the fix, Cache.mu was held for the whole
// pass: about 0.4s here (1s under the race detector), 1.8s for 1.4M
// entries. The bound is a quarter of MaxStaleness, far above what the
// fix leaves (a few ms, tens under the race detector on a busy machine).
func TestSweepLockHold(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 500k entries")
	}
	const n = 250_000 // client states, and as many verified keys
	const bound = 250 * time.Millisecond
	store := newMapStore()
	c, err := New(store, Options{TTL: 20 * time.Millisecond, CleanupInterval: time.Hour, MaxConcurrentFetches: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Confirm(time.Now())
	fill := time.Now()
	fillExpiring(c, n)
	filled := time.Since(fill)
	time.Sleep(30 * time.Millisecond) // all past go-cache's expiry
	c.Confirm(time.Now())
	runtime.GC() // the fill's garbage: no collection during the sweep

	var wait, feed, peek, lookup maxOf
	var probes, feeds atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // how long Cache.mu is held by others
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			c.mu.Lock()
			c.mu.Unlock()
			wait.add(time.Since(t0))
			probes.Add(1)
			time.Sleep(100 * time.Microsecond)
		}
	})
	wg.Go(func() { // a change feed with nothing to drop
		for {
			select {
			case <-stop:
				return
			default:
			}
			seen := time.Now()
			c.Apply([]keystore.Change{{Source: keystore.SourceKey, KeyID: -1}})
			c.Confirm(seen)
			feed.add(time.Since(seen))
			feeds.Add(1)
			time.Sleep(time.Millisecond)
		}
	})
	wg.Go(func() { // lookups, which wait for a shard's lock while it is scanned
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			_, _ = c.PeekClientState("c" + strconv.Itoa(i%n))
			peek.add(time.Since(t0))
			time.Sleep(100 * time.Microsecond)
		}
	})
	wg.Go(func() { // misses, whose fills store under Cache.mu
		ctx := context.Background()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			if _, err := c.ClientState(ctx, "u"+strconv.Itoa(i)); !errors.Is(err, keystore.ErrUnknownClient) {
				t.Errorf("a miss during the sweep: %v", err)
				return
			}
			lookup.add(time.Since(t0))
			time.Sleep(time.Millisecond)
		}
	})
	time.Sleep(5 * time.Millisecond)
	start := time.Now()
	c.deleteExpired()
	swept := time.Since(start)
	time.Sleep(5 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("fill of %d+%d entries %v; sweep %v; longest wait for Cache.mu %v (%d probes); longest Apply+Confirm %v (%d); longest peek %v; longest miss %v",
		n, n, filled.Round(time.Millisecond), swept.Round(time.Millisecond), wait.get(), probes.Load(), feed.get(), feeds.Load(), peek.get(), lookup.get())
	if wait.get() >= bound {
		t.Errorf("Cache.mu was held %v at once during a sweep, want < %v", wait.get(), bound)
	}
	if feed.get() >= bound {
		t.Errorf("Apply+Confirm took %v during a sweep, want < %v", feed.get(), bound)
	}
	if peek.get() >= bound {
		t.Errorf("a lookup took %v during a sweep, want < %v", peek.get(), bound)
	}
	if lookup.get() >= bound {
		t.Errorf("a miss took %v during a sweep, want < %v", lookup.get(), bound)
	}
	checkIndexes(t, c)
}

// expireSoon makes the entry under key in t expire in a millisecond, as
// if stored long ago; its index entries stay.
func expireSoon(t *shards, key string) {
	v, _ := t.Get(key)
	t.of(key).Set(key, v, time.Millisecond) // an overwrite: no eviction
}

// sweepDelete is a sweep's first half: go-cache deletes every expired
// entry of t, and the eviction hook queues them.
func sweepDelete(t *shards) {
	for _, g := range t.s {
		g.DeleteExpired()
	}
}

// TestSweepKeepsRefilledEntries: a sweep unindexes what go-cache deleted
// after the fact, a chunk at a time, while fills store; a fill that
// cached a swept key again, under the same ids or others, must keep its
// index entries (else no change would drop it: a stale answer), and the
// swept entry's other ids must go.
func TestSweepKeepsRefilledEntries(t *testing.T) {
	c, err := New(newMapStore(), Options{NoChangeFeed: true, TTL: time.Minute, NegativeTTL: time.Minute, CleanupInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k := func(i byte) string { var k [sha256.Size]byte; k[0] = i; return string(k[:]) }
	now := c.opts.Now().Sub(c.base)
	c.mu.Lock()
	c.storeState("a", keystore.ClientState{ID: 1, Name: "a"}, now)
	c.storeState("b", keystore.ClientState{ID: 2, Name: "b"}, now)
	c.storeKey(k(1), "a", keystore.VerifiedKey{KeyID: 10, ClientID: 1, Client: "a"}, now)
	c.storeKey(k(2), "a", keystore.VerifiedKey{KeyID: 11, ClientID: 1, Client: "a"}, now)
	c.storeKey(k(3), "b", keystore.VerifiedKey{KeyID: 12, ClientID: 2, Client: "b"}, now)
	c.storeInvalid(k(4), "a")
	for _, s := range []string{"a", "b"} {
		expireSoon(c.states, s)
	}
	for i := range byte(3) {
		expireSoon(c.verified, k(i+1))
	}
	expireSoon(c.invalid, k(4))
	c.mu.Unlock()
	time.Sleep(5 * time.Millisecond)

	for _, s := range []*shards{c.states, c.verified, c.invalid} {
		sweepDelete(s)
	}
	// Fills store meanwhile: "a" again with its id, k(1) with another key
	// id, k(2) with the same ids, k(4) invalid again; "b" and k(3) are
	// gone for good.
	c.mu.Lock()
	c.storeState("a", keystore.ClientState{ID: 1, Name: "a"}, now)
	c.storeKey(k(1), "a", keystore.VerifiedKey{KeyID: 13, ClientID: 1, Client: "a"}, now)
	c.storeKey(k(2), "a", keystore.VerifiedKey{KeyID: 11, ClientID: 1, Client: "a"}, now)
	c.storeInvalid(k(4), "a")
	c.mu.Unlock()
	c.unindexSwept(1)
	checkIndexes(t, c)
	if c.idx.empty() {
		t.Fatal("nothing indexed")
	}

	// A change of client 1 finds every refilled entry.
	c.Apply([]keystore.Change{{Source: keystore.SourceClient, ClientID: 1}})
	for _, s := range []struct {
		t   *shards
		key string
	}{{c.states, "a"}, {c.verified, k(1)}, {c.verified, k(2)}, {c.invalid, k(4)}} {
		if _, ok := s.t.Get(s.key); ok {
			t.Errorf("%q still cached after a change of its client", s.key)
		}
	}
	checkIndexes(t, c)
	if !c.idx.empty() {
		t.Errorf("indexes with nothing cached: %+v", c.idx)
	}
}

// TestDeleteDuringSweepUnindexesAtOnce: while a sweep's deletions wait to
// be unindexed, a deletion under Cache.mu (a change, here) still
// unindexes what it deletes before it returns, everywhere.
func TestDeleteDuringSweepUnindexesAtOnce(t *testing.T) {
	c, err := New(newMapStore(), Options{NoChangeFeed: true, TTL: time.Minute, CleanupInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k := func(i byte) string { var k [sha256.Size]byte; k[0] = i; return string(k[:]) }
	now := c.opts.Now().Sub(c.base)
	c.mu.Lock()
	c.storeKey(k(1), "a", keystore.VerifiedKey{KeyID: 10, ClientID: 1, Client: "a"}, now)
	c.storeKey(k(2), "a", keystore.VerifiedKey{KeyID: 11, ClientID: 1, Client: "a"}, now)
	expireSoon(c.verified, k(1))
	c.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	sweepDelete(c.verified) // k(1) deleted, not yet unindexed

	c.Apply([]keystore.Change{{Source: keystore.SourceKey, KeyID: 11}})
	c.mu.Lock()
	byClient, byKey := c.idx.keysByClient.sets(), c.idx.keysByKey.sets()
	c.mu.Unlock()
	if !byClient[1][k(1)] || byClient[1][k(2)] || len(byClient[1]) != 1 {
		t.Errorf("keysByClient[1] = %v, want only the swept key, not yet unindexed", printable(byClient)[1])
	}
	if _, ok := byKey[11]; ok {
		t.Errorf("keysByKey[11] = %v after the change dropped it", printable(byKey)[11])
	}
	c.unindexSwept(sweepChunk)
	checkIndexes(t, c)
	if !c.idx.empty() {
		t.Errorf("indexes with nothing cached: %+v", c.idx)
	}
}

// TestFillReleasesSlotBeforeStoring: a fill frees its store call slot
// when the call returns, before it waits for Cache.mu to store the
// answer: while Cache.mu is held (by a sweep's chunk, or Apply), other
// misses still reach the store, up to MaxConcurrentFetches at a time,
// rather than wait for slots held by fills that are only waiting.
func TestFillReleasesSlotBeforeStoring(t *testing.T) {
	store := newMapStore()
	c, err := New(store, Options{NoChangeFeed: true, MaxConcurrentFetches: 1, FetchTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	c.mu.Lock()
	done := make(chan error, 3)
	for _, name := range []string{"a", "b", "c"} {
		go func() {
			_, err := c.ClientState(ctx, name)
			done <- err
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for store.calls() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	calls := store.calls()
	c.mu.Unlock()
	for range 3 {
		if err := <-done; !errors.Is(err, keystore.ErrUnknownClient) {
			t.Errorf("ClientState: %v, want ErrUnknownClient", err)
		}
	}
	if calls != 3 {
		t.Errorf("%d of 3 misses reached the store while Cache.mu was held, with 1 slot", calls)
	}
}
