package cache

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

var (
	peekState = keystore.ClientState{ID: 7, Name: "bot", RequiresKey: true}
	peekOther = keystore.ClientState{ID: 8, Name: "other"}
)

// peekFixture is a cache with a change feed, confirmed at leaseT0, over a
// store with clients "bot" and "other" and three tokens of "bot": good,
// expiring (20s after leaseT0, inside the TTL) and bad (no key).
type peekFixture struct {
	clock                *fakeClock
	store                *mapStore
	obs                  *eventLog
	cache                *Cache
	good, expiring, bad  keystore.Token
	goodKey, expiringKey keystore.VerifiedKey
}

func newPeekFixture(t *testing.T) *peekFixture {
	t.Helper()
	f := &peekFixture{clock: &fakeClock{now: leaseT0}, store: newMapStore(), obs: newEventLog()}
	f.good, f.expiring, f.bad = mustToken(t), mustToken(t), mustToken(t)
	exp := leaseT0.Add(20 * time.Second)
	f.goodKey = keystore.VerifiedKey{KeyID: 3, KeyName: "k", ClientID: 7, Client: "bot"}
	f.expiringKey = keystore.VerifiedKey{KeyID: 4, ClientID: 7, Client: "bot", ExpiresAt: &exp}
	f.store.setClient(peekState)
	f.store.setClient(peekOther)
	f.store.link(f.good, f.goodKey)
	f.store.link(f.expiring, f.expiringKey)
	c, err := New(f.store, Options{TTL: 30 * time.Second, MaxStaleness: 500 * time.Millisecond, Now: f.clock.Now, Observer: f.obs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	c.Confirm(leaseT0)
	f.cache = c
	return f
}

// later moves the clock on by d and, when confirm is set, confirms the
// lease at the new time.
func (f *peekFixture) later(d time.Duration, confirm bool) {
	f.clock.Add(d)
	if confirm {
		f.cache.Confirm(f.clock.Now())
	}
}

func wantError(t *testing.T, what string, got, want error) {
	t.Helper()
	if (want == nil) != (got == nil) || !errors.Is(got, want) {
		t.Fatalf("%s: error %v, want %v", what, got, want)
	}
}

func TestPeekClientState(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name        string
		prime       []string // names looked up first
		advance     time.Duration
		confirm     bool // confirm the lease after advancing
		client      string
		want        keystore.ClientState
		wantErr     error
		wantLookups map[string]int
	}{
		{name: "hit", prime: []string{"bot"}, client: "bot",
			want: peekState, wantLookups: map[string]int{"clients hit": 1}},
		{name: "hit just inside the TTL", prime: []string{"bot"}, advance: 30*time.Second - 1, confirm: true, client: "bot",
			want: peekState, wantLookups: map[string]int{"clients hit": 1}},
		{name: "unknown client remembered", prime: []string{"ghost"}, client: "ghost",
			wantErr: keystore.ErrUnknownClient, wantLookups: map[string]int{"unknown_clients hit": 1}},
		{name: "never looked up", prime: []string{"other"}, client: "bot",
			wantErr: keystore.ErrNotCached, wantLookups: map[string]int{}},
		{name: "TTL passed", prime: []string{"bot"}, advance: 30 * time.Second, confirm: true, client: "bot",
			wantErr: keystore.ErrNotCached, wantLookups: map[string]int{}},
		{name: "lease lapsed", prime: []string{"bot"}, advance: 500 * time.Millisecond, client: "bot",
			wantErr: keystore.ErrNotCached, wantLookups: map[string]int{}},
		{name: "lease lapsed, unknown client", prime: []string{"ghost"}, advance: 500 * time.Millisecond, client: "ghost",
			wantErr: keystore.ErrNotCached, wantLookups: map[string]int{}},
		{name: "invalid name", client: "UPPER",
			wantErr: keystore.ErrUnknownClient, wantLookups: map[string]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newPeekFixture(t)
			for _, n := range tt.prime {
				_, _ = f.cache.ClientState(ctx, n)
			}
			f.later(tt.advance, tt.confirm)
			f.obs.take()
			calls := f.store.calls()

			got, err := f.cache.PeekClientState(tt.client)
			wantError(t, "PeekClientState", err, tt.wantErr)
			if got != tt.want {
				t.Errorf("PeekClientState = %+v, want %+v", got, tt.want)
			}
			if lookups, _ := f.obs.take(); !maps.Equal(lookups, tt.wantLookups) {
				t.Errorf("lookups counted %v, want %v", lookups, tt.wantLookups)
			}
			if n := f.store.calls() - calls; n != 0 {
				t.Fatalf("PeekClientState made %d store calls", n)
			}

			// ClientState agrees: the same answer without the store, or
			// the store asked.
			got2, err2 := f.cache.ClientState(ctx, tt.client)
			wantCalls := 0
			if errors.Is(tt.wantErr, keystore.ErrNotCached) {
				wantCalls = 1
			} else {
				wantError(t, "ClientState", err2, tt.wantErr)
				if got2 != got {
					t.Errorf("ClientState = %+v, PeekClientState %+v", got2, got)
				}
			}
			if n := f.store.calls() - calls; n != wantCalls {
				t.Errorf("ClientState after the peek made %d store calls, want %d", n, wantCalls)
			}
		})
	}
}

func TestPeekVerify(t *testing.T) {
	ctx := context.Background()
	type lookup struct {
		client string
		token  func(*peekFixture) keystore.Token
	}
	good := func(f *peekFixture) keystore.Token { return f.good }
	expiring := func(f *peekFixture) keystore.Token { return f.expiring }
	bad := func(f *peekFixture) keystore.Token { return f.bad }
	none := func(*peekFixture) keystore.Token { return keystore.Token{} }
	tests := []struct {
		name        string
		prime       []lookup // Verify calls made first
		advance     time.Duration
		confirm     bool // confirm the lease after advancing
		peek        lookup
		want        func(*peekFixture) keystore.VerifiedKey
		wantErr     error
		wantLookups map[string]int
	}{
		{name: "hit", prime: []lookup{{"bot", good}}, peek: lookup{"bot", good},
			want: func(f *peekFixture) keystore.VerifiedKey { return f.goodKey }, wantLookups: map[string]int{"keys hit": 1}},
		{name: "hit before expires_at", prime: []lookup{{"bot", expiring}}, advance: 20*time.Second - 1, confirm: true, peek: lookup{"bot", expiring},
			want: func(f *peekFixture) keystore.VerifiedKey { return f.expiringKey }, wantLookups: map[string]int{"keys hit": 1}},
		{name: "invalid token remembered", prime: []lookup{{"bot", bad}}, peek: lookup{"bot", bad},
			wantErr: keystore.ErrInvalidToken, wantLookups: map[string]int{"invalid_tokens hit": 1}},
		{name: "expired key", prime: []lookup{{"bot", expiring}}, advance: 20 * time.Second, confirm: true, peek: lookup{"bot", expiring},
			wantErr: keystore.ErrInvalidToken, wantLookups: map[string]int{"keys hit": 1}},
		{name: "expired key, lease lapsed", prime: []lookup{{"bot", expiring}}, advance: 20 * time.Second, peek: lookup{"bot", expiring},
			wantErr: keystore.ErrInvalidToken, wantLookups: map[string]int{"keys hit": 1}},
		{name: "never verified", prime: []lookup{{"bot", good}}, peek: lookup{"bot", expiring},
			wantErr: keystore.ErrNotCached, wantLookups: map[string]int{}},
		{name: "verified for another client", prime: []lookup{{"bot", good}, {"other", bad}}, peek: lookup{"other", good},
			wantErr: keystore.ErrNotCached, wantLookups: map[string]int{}},
		{name: "TTL passed", prime: []lookup{{"bot", good}}, advance: 30 * time.Second, confirm: true, peek: lookup{"bot", good},
			wantErr: keystore.ErrNotCached, wantLookups: map[string]int{}},
		{name: "lease lapsed", prime: []lookup{{"bot", good}}, advance: 500 * time.Millisecond, peek: lookup{"bot", good},
			wantErr: keystore.ErrNotCached, wantLookups: map[string]int{}},
		{name: "lease lapsed, invalid token", prime: []lookup{{"bot", bad}}, advance: 500 * time.Millisecond, peek: lookup{"bot", bad},
			wantErr: keystore.ErrNotCached, wantLookups: map[string]int{}},
		{name: "invalid name", prime: []lookup{{"bot", good}}, peek: lookup{"Bot", good},
			wantErr: keystore.ErrInvalidToken, wantLookups: map[string]int{}},
		{name: "zero token", peek: lookup{"bot", none},
			wantErr: keystore.ErrInvalidToken, wantLookups: map[string]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newPeekFixture(t)
			for _, l := range tt.prime {
				_, _ = f.cache.Verify(ctx, l.client, l.token(f))
			}
			f.later(tt.advance, tt.confirm)
			f.obs.take()
			calls := f.store.calls()

			tok := tt.peek.token(f)
			got, err := f.cache.PeekVerify(tt.peek.client, tok)
			wantError(t, "PeekVerify", err, tt.wantErr)
			var want keystore.VerifiedKey
			if tt.want != nil {
				want = tt.want(f)
			}
			if got != want {
				t.Errorf("PeekVerify = %+v, want %+v", got, want)
			}
			if lookups, _ := f.obs.take(); !maps.Equal(lookups, tt.wantLookups) {
				t.Errorf("lookups counted %v, want %v", lookups, tt.wantLookups)
			}
			if n := f.store.calls() - calls; n != 0 {
				t.Fatalf("PeekVerify made %d store calls", n)
			}

			got2, err2 := f.cache.Verify(ctx, tt.peek.client, tok)
			wantCalls := 0
			if errors.Is(tt.wantErr, keystore.ErrNotCached) {
				wantCalls = 1
			} else {
				wantError(t, "Verify", err2, tt.wantErr)
				if got2 != got {
					t.Errorf("Verify = %+v, PeekVerify %+v", got2, got)
				}
			}
			if n := f.store.calls() - calls; n != wantCalls {
				t.Errorf("Verify after the peek made %d store calls, want %d", n, wantCalls)
			}
		})
	}
}

// TestCacheKeyOfSeveralClients: a key linked to two clients is cached
// once for each, and a token invalid for one stays valid for the other.
func TestCacheKeyOfSeveralClients(t *testing.T) {
	ctx := context.Background()
	f := newPeekFixture(t)
	shared := keystore.VerifiedKey{KeyID: 9, ClientID: 8, Client: "other"}
	f.store.link(f.good, shared)
	for range 2 {
		for _, c := range []string{"bot", "other", "ghost"} {
			_, _ = f.cache.Verify(ctx, c, f.good)
		}
	}
	if n := f.store.calls(); n != 3 {
		t.Errorf("%d store calls, want 3: one per client", n)
	}
	tests := []struct {
		client  string
		want    keystore.VerifiedKey
		wantErr error
	}{
		{"bot", f.goodKey, nil},
		{"other", shared, nil},
		{"ghost", keystore.VerifiedKey{}, keystore.ErrInvalidToken},
	}
	for _, tt := range tests {
		got, err := f.cache.PeekVerify(tt.client, f.good)
		wantError(t, "PeekVerify("+tt.client+")", err, tt.wantErr)
		if got != tt.want {
			t.Errorf("PeekVerify(%s) = %+v, want %+v", tt.client, got, tt.want)
		}
	}
}

// TestVerifyDropsExpiredKey: a peek at a key past its expires_at answers
// from memory and leaves the entry; Verify answers the same and drops it,
// so that the next lookup asks the store.
func TestVerifyDropsExpiredKey(t *testing.T) {
	ctx := context.Background()
	f := newPeekFixture(t)
	if _, err := f.cache.Verify(ctx, "bot", f.expiring); err != nil {
		t.Fatal(err)
	}
	f.later(20*time.Second, true)
	peek := func() error { _, err := f.cache.PeekVerify("bot", f.expiring); return err }
	verify := func() error { _, err := f.cache.Verify(ctx, "bot", f.expiring); return err }
	steps := []struct {
		name      string
		call      func() error
		wantErr   error
		wantCalls int // store calls so far
	}{
		{"PeekVerify", peek, keystore.ErrInvalidToken, 1},
		{"PeekVerify again", peek, keystore.ErrInvalidToken, 1},
		{"Verify", verify, keystore.ErrInvalidToken, 1},
		{"PeekVerify after Verify", peek, keystore.ErrNotCached, 1},
		{"Verify again", verify, nil, 2}, // mapStore ignores expiry
	}
	for _, s := range steps {
		wantError(t, s.name, s.call(), s.wantErr)
		if n := f.store.calls(); n != s.wantCalls {
			t.Fatalf("%s: %d store calls, want %d", s.name, n, s.wantCalls)
		}
	}
	checkIndexes(t, f.cache)
}
