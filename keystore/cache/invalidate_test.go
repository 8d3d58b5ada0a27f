package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

// applyFixture caches, over a mapStore:
//
//	state  a (id 1), b (id 2), c (id 3)        unknown  ghost
//	key    a/ka (key 10), b/kb (key 20),       invalid  c/ka (client id 3),
//	       a/kab and b/kab (key 30, two links)          d/ka (client id 0:
//	                                                    d's state not cached)
type applyFixture struct {
	store  *mapStore
	obs    *eventLog
	cache  *Cache
	tokens map[string]keystore.Token // ka, kb, kab
}

// entry names one cached answer: a state ("a"), an unknown name
// ("ghost") or a token presented to a client ("a/ka").
var applyEntries = []string{"a", "b", "c", "ghost", "a/ka", "b/kb", "a/kab", "b/kab", "c/ka", "d/ka"}

func newApplyFixture(t *testing.T) *applyFixture {
	t.Helper()
	f := &applyFixture{store: newMapStore(), obs: newEventLog(), tokens: map[string]keystore.Token{}}
	for i, n := range []string{"a", "b", "c"} {
		f.store.setClient(keystore.ClientState{ID: int64(i + 1), Name: n, RequiresKey: true})
	}
	for _, k := range []struct {
		name    string
		id      int64
		clients []string
	}{{"ka", 10, []string{"a"}}, {"kb", 20, []string{"b"}}, {"kab", 30, []string{"a", "b"}}} {
		f.tokens[k.name] = mustToken(t)
		for _, c := range k.clients {
			cid := f.store.clients[c].ID
			f.store.link(f.tokens[k.name], keystore.VerifiedKey{KeyID: k.id, ClientID: cid, Client: c})
		}
	}
	clock := &fakeClock{now: leaseT0}
	c, err := New(f.store, Options{NoChangeFeed: true, Now: clock.Now, Observer: f.obs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	f.cache = c
	for _, e := range applyEntries {
		f.lookup(t, e)
	}
	if got := f.cached(t); !slices.Equal(got, applyEntries) {
		t.Fatalf("primed %v, want %v", got, applyEntries)
	}
	f.obs.take()
	return f
}

// lookup asks the cache for entry e, through ClientState or Verify.
func (f *applyFixture) lookup(t *testing.T, e string) {
	t.Helper()
	ctx := context.Background()
	client, token, isKey := cut(e)
	if !isKey {
		_, _ = f.cache.ClientState(ctx, client)
		return
	}
	_, _ = f.cache.Verify(ctx, client, f.tokens[token])
}

// cached returns the entries of applyEntries that the cache answers
// without the store.
func (f *applyFixture) cached(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, e := range applyEntries {
		client, token, isKey := cut(e)
		var err error
		if isKey {
			_, err = f.cache.PeekVerify(client, f.tokens[token])
		} else {
			_, err = f.cache.PeekClientState(client)
		}
		if !errors.Is(err, keystore.ErrNotCached) {
			out = append(out, e)
		}
	}
	return out
}

func cut(e string) (client, token string, isKey bool) {
	for i := range len(e) {
		if e[i] == '/' {
			return e[:i], e[i+1:], true
		}
	}
	return e, "", false
}

func TestCacheApply(t *testing.T) {
	key := keystore.SourceKey
	tests := []struct {
		name       string
		changes    []keystore.Change
		wantKept   []string
		wantReason []string
	}{
		{name: "empty batch",
			wantKept: applyEntries},
		{name: "client row",
			changes:    []keystore.Change{{Source: keystore.SourceClient, ClientID: 1}},
			wantKept:   []string{"b", "c", "b/kb", "b/kab", "c/ka"},
			wantReason: []string{"client"}},
		{name: "client row of a client not cached",
			changes:    []keystore.Change{{Source: keystore.SourceClient, ClientID: 99}},
			wantKept:   []string{"a", "b", "c", "a/ka", "b/kb", "a/kab", "b/kab", "c/ka"},
			wantReason: []string{"client"}},
		{name: "key linked to one client",
			changes:    []keystore.Change{{Source: key, ClientID: 1, KeyID: 10}, {Source: key, KeyID: 10}},
			wantKept:   []string{"b", "c", "ghost", "b/kb", "b/kab", "c/ka"},
			wantReason: []string{"key"}},
		{name: "key alone",
			changes:    []keystore.Change{{Source: key, KeyID: 30}},
			wantKept:   []string{"a", "b", "c", "ghost", "a/ka", "b/kb", "c/ka", "d/ka"},
			wantReason: []string{"key"}},
		{name: "link",
			changes:    []keystore.Change{{Source: keystore.SourceLink, ClientID: 2, KeyID: 20}},
			wantKept:   []string{"a", "c", "ghost", "a/ka", "a/kab", "c/ka"},
			wantReason: []string{"key"}},
		{name: "client and key in one batch, twice over",
			changes: []keystore.Change{
				{Source: keystore.SourceClient, ClientID: 3}, {Source: key, KeyID: 20},
				{Source: keystore.SourceClient, ClientID: 3}, {Source: key, KeyID: 20},
			},
			wantKept:   []string{"a", "b", "a/ka", "a/kab", "b/kab"},
			wantReason: []string{"key"}},
		{name: "change with no id",
			changes:    []keystore.Change{{Source: key}},
			wantKept:   applyEntries,
			wantReason: []string{"client"}},
		{name: "flush",
			changes:    []keystore.Change{{Source: key, KeyID: 10}, {Source: keystore.SourceFlush}},
			wantReason: []string{"flush"}},
		{name: "batch over the flush threshold",
			changes:    make([]keystore.Change, flushAbove+1), // no id: would drop nothing
			wantReason: []string{"flush"}},
		{name: "batch at the flush threshold",
			changes:    make([]keystore.Change, flushAbove),
			wantKept:   applyEntries,
			wantReason: []string{"client"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newApplyFixture(t)
			f.cache.Apply(tt.changes)
			_, reasons := f.obs.take()
			if !slices.Equal(reasons, tt.wantReason) {
				t.Errorf("Invalidated(%q), want %q", reasons, tt.wantReason)
			}
			if got := f.cached(t); !slices.Equal(got, tt.wantKept) {
				t.Errorf("kept %v, want %v", got, tt.wantKept)
			}
			checkIndexes(t, f.cache)
			// What was dropped is filled again, and indexed again.
			for _, e := range applyEntries {
				f.lookup(t, e)
			}
			if got := f.cached(t); !slices.Equal(got, applyEntries) {
				t.Errorf("after filling again: cached %v, want %v", got, applyEntries)
			}
			checkIndexes(t, f.cache)
		})
	}
}

// TestCacheApplyStopsFills: a fill in flight when a change is applied,
// even one about another client, does not store what it read.
func TestCacheApplyStopsFills(t *testing.T) {
	for _, change := range []keystore.Change{
		{Source: keystore.SourceClient, ClientID: 99},
		{Source: keystore.SourceKey, KeyID: 99},
	} {
		t.Run(fmt.Sprintf("%+v", change), func(t *testing.T) {
			gate := make(chan struct{})
			store := &gatedStore{mapStore: newMapStore(), gate: gate, entered: make(chan struct{}, 1)}
			store.setClient(keystore.ClientState{ID: 1, Name: "a"})
			c, err := New(store, Options{NoChangeFeed: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			done := make(chan error)
			go func() {
				_, err := c.ClientState(context.Background(), "a")
				done <- err
			}()
			<-store.entered
			c.Apply([]keystore.Change{change})
			close(gate)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if _, err := c.PeekClientState("a"); !errors.Is(err, keystore.ErrNotCached) {
				t.Errorf("a read from before the change was cached: PeekClientState = %v", err)
			}
			checkIndexes(t, c)
		})
	}
}

// gatedStore holds ClientState calls until gate closes, telling entered.
type gatedStore struct {
	*mapStore
	gate    chan struct{}
	entered chan struct{}
}

func (s *gatedStore) ClientState(ctx context.Context, client string) (keystore.ClientState, error) {
	s.entered <- struct{}{}
	<-s.gate
	return s.mapStore.ClientState(ctx, client)
}

// TestCacheIndexesFollowReplacement: a client deleted and created again
// under the same name has its new entries indexed under the new id only,
// so that a change of the old id leaves them.
func TestCacheIndexesFollowReplacement(t *testing.T) {
	ctx := context.Background()
	store := newMapStore()
	clock := &fakeClock{now: leaseT0}
	c, err := New(store, Options{NoChangeFeed: true, Now: clock.Now, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tok := mustToken(t)
	store.setClient(keystore.ClientState{ID: 1, Name: "a"})
	store.link(tok, keystore.VerifiedKey{KeyID: 10, ClientID: 1, Client: "a"})
	_, _ = c.ClientState(ctx, "a")
	_, _ = c.Verify(ctx, "a", tok)
	_, _ = c.Verify(ctx, "b", tok)

	store.setClient(keystore.ClientState{ID: 2, Name: "a"})
	store.link(tok, keystore.VerifiedKey{KeyID: 11, ClientID: 2, Client: "a"})
	clock.Add(time.Minute) // past the TTL by the cache's clock: asked again
	_, _ = c.ClientState(ctx, "a")
	_, _ = c.Verify(ctx, "a", tok)
	clock.Add(-time.Minute)
	checkIndexes(t, c)
	c.Apply([]keystore.Change{{Source: keystore.SourceClient, ClientID: 1}, {Source: keystore.SourceKey, KeyID: 10}})
	if _, err := c.PeekClientState("a"); err != nil {
		t.Errorf("a change of the old client id dropped the new state: %v", err)
	}
	if _, err := c.PeekVerify("a", tok); err != nil {
		t.Errorf("a change of the old ids dropped the new key entry: %v", err)
	}
	checkIndexes(t, c)
}

// TestCacheIndexesFollowExpiry: the sweep's deletions unindex what they
// delete.
func TestCacheIndexesFollowExpiry(t *testing.T) {
	ctx := context.Background()
	store := newMapStore()
	c, err := New(store, Options{NoChangeFeed: true, TTL: 20 * time.Millisecond, NegativeTTL: 20 * time.Millisecond, CleanupInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tok := mustToken(t)
	store.setClient(keystore.ClientState{ID: 1, Name: "a"})
	store.link(tok, keystore.VerifiedKey{KeyID: 10, ClientID: 1, Client: "a"})
	_, _ = c.ClientState(ctx, "a")
	_, _ = c.Verify(ctx, "a", tok)
	_, _ = c.Verify(ctx, "b", tok)
	checkIndexed(t, c)
	time.Sleep(30 * time.Millisecond)
	c.deleteExpired()
	checkIndexes(t, c)
	if !c.idx.empty() {
		t.Errorf("indexes after every entry expired: %+v", c.idx)
	}
}

// TestCacheIndexesUnderLoad runs lookups, fills, changes, flushes and
// sweeps at once (for the race detector), then checks the indexes.
func TestCacheIndexesUnderLoad(t *testing.T) {
	ctx := context.Background()
	store := newMapStore()
	const clients = 20
	tokens := make([]keystore.Token, clients)
	for i := range clients {
		name := fmt.Sprintf("c%d", i)
		store.setClient(keystore.ClientState{ID: int64(i + 1), Name: name})
		tokens[i] = mustToken(t)
		// Key i is linked to clients i and i+1.
		for _, j := range []int{i, (i + 1) % clients} {
			store.link(tokens[i], keystore.VerifiedKey{KeyID: int64(100 + i), ClientID: int64(j + 1), Client: fmt.Sprintf("c%d", j)})
		}
	}
	c, err := New(store, Options{NoChangeFeed: true, TTL: 20 * time.Millisecond, NegativeTTL: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("c%d", r.IntN(clients+5)) // some unknown
				tok := tokens[r.IntN(clients)]
				switch r.IntN(4) {
				case 0:
					_, _ = c.ClientState(ctx, name)
				case 1:
					_, _ = c.Verify(ctx, name, tok)
				case 2:
					_, _ = c.PeekVerify(name, tok)
				default:
					_, _ = c.PeekClientState(name)
				}
			}
		})
	}
	wg.Go(func() {
		r := rand.New(rand.NewPCG(99, 1))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch {
			case i%50 == 49:
				c.Flush()
			case i%7 == 0:
				c.deleteExpired()
			default:
				c.Apply([]keystore.Change{
					{Source: keystore.SourceKey, ClientID: int64(r.IntN(clients) + 1), KeyID: int64(100 + r.IntN(clients))},
					{Source: keystore.SourceKey, KeyID: int64(100 + r.IntN(clients))},
				})
			}
			time.Sleep(100 * time.Microsecond)
		}
	})
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	checkIndexed(t, c)
	// Once everything has expired and been swept, nothing is left
	// indexed: no deletion was missed.
	time.Sleep(30 * time.Millisecond)
	c.deleteExpired()
	checkIndexes(t, c)
	if !c.idx.empty() {
		t.Errorf("indexes after every entry expired: %+v", c.idx)
	}
}
