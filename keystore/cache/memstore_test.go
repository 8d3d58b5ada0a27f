package cache

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

// mapStore is a store in memory: client states by name, verified keys by
// client and digest. It counts the calls that reach it.
type mapStore struct {
	mu       sync.Mutex
	clients  map[string]keystore.ClientState
	keys     map[string]keystore.VerifiedKey
	states   int
	verifies int
}

func newMapStore() *mapStore {
	return &mapStore{clients: map[string]keystore.ClientState{}, keys: map[string]keystore.VerifiedKey{}}
}

func keyOf(client string, tok keystore.Token) string { return client + "/" + tok.Digest().String() }

func (s *mapStore) setClient(st keystore.ClientState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[st.Name] = st
}

// link makes tok a valid key of p.Client.
func (s *mapStore) link(tok keystore.Token, p keystore.VerifiedKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[keyOf(p.Client, tok)] = p
}

func (s *mapStore) ClientState(_ context.Context, client string) (keystore.ClientState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states++
	st, ok := s.clients[client]
	if !ok {
		return keystore.ClientState{}, fmt.Errorf("%w: %q", keystore.ErrUnknownClient, client)
	}
	return st, nil
}

func (s *mapStore) Verify(_ context.Context, client string, tok keystore.Token) (keystore.VerifiedKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.verifies++
	p, ok := s.keys[keyOf(client, tok)]
	if !ok {
		return keystore.VerifiedKey{}, keystore.ErrInvalidToken
	}
	return p, nil
}

func (s *mapStore) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.states + s.verifies
}

// eventLog is an Observer that records lookups and invalidations.
type eventLog struct {
	mu          sync.Mutex
	lookups     map[string]int // "cache hit" or "cache miss"
	invalidated []string
}

func newEventLog() *eventLog { return &eventLog{lookups: map[string]int{}} }

func (o *eventLog) CacheLookup(cache string, hit bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if hit {
		o.lookups[cache+" hit"]++
	} else {
		o.lookups[cache+" miss"]++
	}
}

func (o *eventLog) Invalidated(reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.invalidated = append(o.invalidated, reason)
}

func (*eventLog) StaleServed(string)                     {}
func (*eventLog) StoreCall(string, time.Duration, error) {}
func (*eventLog) LeaseChanged(bool)                      {}

// take returns the lookups and invalidations recorded so far and forgets
// them.
func (o *eventLog) take() (lookups map[string]int, invalidated []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	lookups, invalidated = o.lookups, o.invalidated
	o.lookups, o.invalidated = map[string]int{}, nil
	return lookups, invalidated
}

func mustToken(t testing.TB) keystore.Token {
	t.Helper()
	tok, err := keystore.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// checkIndexes fails t unless c's indexes list exactly the entries its
// caches hold, each under its ids. Entries past go-cache's expiry and not
// yet swept are indexed but hidden from Items: call it only where none
// can be.
func checkIndexes(t *testing.T, c *Cache) {
	t.Helper()
	compareIndexes(t, c, true)
}

// checkIndexed fails t unless every live entry of c's caches is indexed
// under its ids (what a change needs to find it).
func checkIndexed(t *testing.T, c *Cache) {
	t.Helper()
	compareIndexes(t, c, false)
}

func compareIndexes(t *testing.T, c *Cache, exact bool) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var want indexes
	for k, it := range c.states.Items() {
		want.states.add(it.Object.(stateEntry).state.ID, k)
	}
	for k, it := range c.verified.Items() {
		p := it.Object.(keyEntry).principal
		want.keysByClient.add(p.ClientID, k)
		want.keysByKey.add(p.KeyID, k)
	}
	for k, it := range c.invalid.Items() {
		want.invalidClient.add(it.Object.(negEntry).clientID, k)
	}
	for _, ix := range []struct {
		name      string
		got, want *refs
	}{
		{"states", &c.idx.states, &want.states},
		{"keysByClient", &c.idx.keysByClient, &want.keysByClient},
		{"keysByKey", &c.idx.keysByKey, &want.keysByKey},
		{"invalidClient", &c.idx.invalidClient, &want.invalidClient},
	} {
		got, want := ix.got.sets(), ix.want.sets()
		if !contains(got, want) || (exact && !contains(want, got)) {
			t.Errorf("index %s = %v, want %v", ix.name, printable(got), printable(want))
		}
	}
}

// empty reports whether x indexes nothing.
func (x *indexes) empty() bool {
	for _, r := range []*refs{&x.states, &x.keysByClient, &x.keysByKey, &x.invalidClient} {
		if len(r.first) != 0 || len(r.more) != 0 {
			return false
		}
	}
	return true
}

// sets flattens r for comparison.
func (r *refs) sets() map[int64]map[string]bool {
	out := map[int64]map[string]bool{}
	for id, k := range r.first {
		out[id] = map[string]bool{k: true}
		for k := range r.more[id] {
			out[id][k] = true
		}
	}
	for id := range r.more {
		if _, ok := r.first[id]; !ok {
			out[id] = map[string]bool{"<orphan set>": true}
		}
	}
	return out
}

// printable shows keys in hex: token keys are binary.
func printable(m map[int64]map[string]bool) map[int64][]string {
	out := map[int64][]string{}
	for id, ks := range m {
		for k := range ks {
			out[id] = append(out[id], hex.EncodeToString([]byte(k)))
		}
		slices.Sort(out[id])
	}
	return out
}

// contains reports whether every key of b is in a under the same id.
func contains(a, b map[int64]map[string]bool) bool {
	for id, ks := range b {
		for k := range ks {
			if !a[id][k] {
				return false
			}
		}
	}
	return true
}
