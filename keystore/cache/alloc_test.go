package cache

import (
	"context"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

// nopObserver receives every event and keeps none.
type nopObserver struct{}

func (nopObserver) CacheLookup(string, bool)               {}
func (nopObserver) StaleServed(string)                     {}
func (nopObserver) Invalidated(string)                     {}
func (nopObserver) StoreCall(string, time.Duration, error) {}
func (nopObserver) LeaseChanged(bool)                      {}

// TestCacheHitAllocs holds the hot path to its allocation budget: none
// for a client state, at most one for a key (hashing the token may copy
// it; the cache key itself is built on the stack).
func TestCacheHitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	ctx := context.Background()
	store := newMapStore()
	tok := mustToken(t)
	store.setClient(keystore.ClientState{ID: 7, Name: "bot", RequiresKey: true})
	store.link(tok, keystore.VerifiedKey{KeyID: 3, ClientID: 7, Client: "bot"})
	c, err := New(store, Options{NoChangeFeed: true, Observer: nopObserver{}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ClientState(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(ctx, "bot", tok); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
		max  float64
	}{
		{"ClientState", func() error { _, err := c.ClientState(ctx, "bot"); return err }, 0},
		{"PeekClientState", func() error { _, err := c.PeekClientState("bot"); return err }, 0},
		{"Verify", func() error { _, err := c.Verify(ctx, "bot", tok); return err }, 1},
		{"PeekVerify", func() error { _, err := c.PeekVerify("bot", tok); return err }, 1},
	}
	for _, tt := range tests {
		var err error
		got := testing.AllocsPerRun(100, func() { err = tt.call() })
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got > tt.max {
			t.Errorf("%s hit: %v allocations, want at most %v", tt.name, got, tt.max)
		}
	}
	if n := store.calls(); n != 2 {
		t.Errorf("%d store calls, want 2: every call after the first of each was a hit", n)
	}
}
