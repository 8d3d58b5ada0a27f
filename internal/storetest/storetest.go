// Package storetest is the conformance suite every key store runs: the SQL
// store on PostgreSQL and on SQLite, and the cache over each. One suite,
// so that the implementations cannot drift apart.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"github.com/jmoiron/sqlx"
	"hash/crc32"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// Clock is a settable clock shared by the store and the suite.
type Clock struct{ ns atomic.Int64 }

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock {
	c := &Clock{}
	c.Set(t)
	return c
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// Harness is one store under test.
type Harness struct {
	// Admin writes clients and keys.
	Admin *sqlstore.Store
	// Decider answers the per-request questions: the SQL store itself, or a
	// cache over it.
	Decider keystore.Store
	// Sync, when set, is called after every write so that a cache can
	// observe it (through its change feed) before the next read.
	Sync func(t testing.TB)
	// Break makes the database unreachable for the rest of the test.
	Break func(t testing.TB)
	// DB is the pool under Admin, for plain SQL as an operator types it.
	DB *sqlx.DB
}

// Factory builds a harness on a fresh, migrated database whose store uses
// clock.
type Factory func(t *testing.T, clock *Clock) Harness

// Run runs the whole suite.
func Run(t *testing.T, newHarness Factory) {
	t.Run("ClientNames", func(t *testing.T) { testClientNames(t, newHarness) })
	t.Run("ClientLifecycle", func(t *testing.T) { testClientLifecycle(t, newHarness) })
	t.Run("KeyInputs", func(t *testing.T) { testKeyInputs(t, newHarness) })
	t.Run("Decisions", func(t *testing.T) { testDecisions(t, newHarness) })
	t.Run("RevokeActivateDelete", func(t *testing.T) { testRevokeActivateDelete(t, newHarness) })
	t.Run("LockUnlock", func(t *testing.T) { testLockUnlock(t, newHarness) })
	t.Run("Rotate", func(t *testing.T) { testRotate(t, newHarness) })
	t.Run("DeleteClient", func(t *testing.T) { testDeleteClient(t, newHarness) })
	t.Run("TouchKeys", func(t *testing.T) { testTouchKeys(t, newHarness) })
	t.Run("Concurrency", func(t *testing.T) { testConcurrency(t, newHarness) })
	t.Run("Unavailable", func(t *testing.T) { testUnavailable(t, newHarness) })
}

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func setup(t *testing.T, f Factory) (Harness, *Clock, context.Context) {
	t.Helper()
	clock := NewClock(epoch)
	h := f(t, clock)
	if h.Sync == nil {
		h.Sync = func(testing.TB) {}
	}
	return h, clock, context.Background()
}

func mustClient(t *testing.T, h Harness, name string) keystore.Client {
	t.Helper()
	c, err := h.Admin.CreateClient(context.Background(), name)
	if err != nil {
		t.Fatalf("CreateClient(%q): %v", name, err)
	}
	h.Sync(t)
	return c
}

func mustKey(t *testing.T, h Harness, client string, spec keystore.KeySpec) keystore.NewKey {
	t.Helper()
	k, err := h.Admin.CreateKey(context.Background(), client, spec)
	if err != nil {
		t.Fatalf("CreateKey(%q): %v", client, err)
	}
	h.Sync(t)
	return k
}

func wantErr(t *testing.T, what string, got, want error) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Fatalf("%s: unexpected error %v", what, got)
		}
		return
	}
	if !errors.Is(got, want) {
		t.Fatalf("%s: error %v, want %v", what, got, want)
	}
}

func testClientNames(t *testing.T, f Factory) {
	h, _, ctx := setup(t, f)
	tests := []struct {
		name    string
		wantErr error
	}{
		{"a", nil},
		{"0", nil},
		{"bot-1", nil},
		{"a" + strings.Repeat("b", 62), nil},
		{"", keystore.ErrInvalidName},
		{"-a", keystore.ErrInvalidName},
		{"A", keystore.ErrInvalidName},
		{"a_b", keystore.ErrInvalidName},
		{"a b", keystore.ErrInvalidName},
		{"a.b", keystore.ErrInvalidName},
		{"bot\n", keystore.ErrInvalidName},
		{"é", keystore.ErrInvalidName},
		{"a" + strings.Repeat("b", 63), keystore.ErrInvalidName},
		{"_unknown", keystore.ErrInvalidName},
		{"a/../b", keystore.ErrInvalidName},
	}
	valid := 0
	for _, tt := range tests {
		_, err := h.Admin.CreateClient(ctx, tt.name)
		wantErr(t, fmt.Sprintf("CreateClient(%q)", tt.name), err, tt.wantErr)
		if tt.wantErr == nil {
			valid++
		}
		if got := keystore.ValidClientName(tt.name); got != (tt.wantErr == nil) {
			t.Errorf("ValidClientName(%q) = %v", tt.name, got)
		}
	}
	list, err := h.Admin.ListClients(ctx)
	wantErr(t, "ListClients", err, nil)
	if len(list) != valid {
		t.Fatalf("ListClients: %d clients, want %d (a refused name must write nothing)", len(list), valid)
	}
}

func testClientLifecycle(t *testing.T, f Factory) {
	h, clock, ctx := setup(t, f)
	c := mustClient(t, h, "bot")
	if c.ID <= 0 || c.Name != "bot" || !c.CreatedAt.Equal(clock.Now()) || !c.UpdatedAt.Equal(clock.Now()) {
		t.Fatalf("CreateClient = %+v", c)
	}
	_, err := h.Admin.CreateClient(ctx, "bot")
	wantErr(t, "duplicate CreateClient", err, keystore.ErrClientExists)

	got, err := h.Admin.GetClient(ctx, "bot")
	wantErr(t, "GetClient", err, nil)
	if got.ID != c.ID || got.Name != "bot" || !got.CreatedAt.Equal(c.CreatedAt) {
		t.Fatalf("GetClient = %+v, want %+v", got, c)
	}
	_, err = h.Admin.GetClient(ctx, "nobody")
	wantErr(t, "GetClient(unknown)", err, keystore.ErrUnknownClient)
	_, err = h.Decider.ClientState(ctx, "nobody")
	wantErr(t, "ClientState(unknown)", err, keystore.ErrUnknownClient)
	_, err = h.Decider.ClientState(ctx, "Not A Name")
	wantErr(t, "ClientState(invalid)", err, keystore.ErrUnknownClient)

	mustClient(t, h, "alpha")
	mustKey(t, h, "alpha", keystore.KeySpec{Name: "k"})
	list, err := h.Admin.ListClients(ctx)
	wantErr(t, "ListClients", err, nil)
	if len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "bot" {
		t.Fatalf("ListClients = %+v, want alpha, bot", list)
	}
	if !list[0].RequiresKey || list[0].ActiveKeys != 1 || list[0].Keys != 1 || list[1].RequiresKey || list[1].Keys != 0 {
		t.Fatalf("ListClients counts = %+v", list)
	}
}

func testKeyInputs(t *testing.T, f Factory) {
	h, clock, ctx := setup(t, f)
	mustClient(t, h, "bot")
	past := clock.Now().Add(-time.Second)
	now := clock.Now()
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) // beyond what both databases keep
	tests := []struct {
		name    string
		client  string
		spec    keystore.KeySpec
		wantErr error
	}{
		{"unknown client", "ghost", keystore.KeySpec{}, keystore.ErrUnknownClient},
		{"invalid client name", "Bad Name", keystore.KeySpec{}, keystore.ErrInvalidName},
		{"oversized name", "bot", keystore.KeySpec{Name: strings.Repeat("x", 201)}, keystore.ErrInvalidInput},
		{"oversized description", "bot", keystore.KeySpec{Description: strings.Repeat("x", 1001)}, keystore.ErrInvalidInput},
		{"control characters", "bot", keystore.KeySpec{Name: "a\x00b"}, keystore.ErrInvalidInput},
		{"invalid utf-8", "bot", keystore.KeySpec{Name: "\xff"}, keystore.ErrInvalidInput},
		{"expiry in the past", "bot", keystore.KeySpec{ExpiresAt: &past}, keystore.ErrInvalidInput},
		{"expiry now", "bot", keystore.KeySpec{ExpiresAt: &now}, keystore.ErrInvalidInput},
		{"expiry after the year 9999", "bot", keystore.KeySpec{ExpiresAt: &far}, keystore.ErrInvalidInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := h.Admin.CreateKey(ctx, tt.client, tt.spec)
			wantErr(t, "CreateKey", err, tt.wantErr)
			if !k.Token.IsZero() {
				t.Fatal("a refused CreateKey returned a token")
			}
		})
	}
	keys, err := h.Admin.ListKeys(ctx, "bot")
	wantErr(t, "ListKeys", err, nil)
	if len(keys) != 0 {
		t.Fatalf("refused CreateKey calls wrote %d keys", len(keys))
	}
	_, err = h.Admin.ListKeys(ctx, "ghost")
	wantErr(t, "ListKeys(unknown)", err, keystore.ErrUnknownClient)

	in := clock.Now().Add(time.Hour)
	k := mustKey(t, h, "bot", keystore.KeySpec{Name: "ci", Description: "for CI – ünïcode ok", ExpiresAt: &in})
	if _, err := keystore.ParseToken(k.Token.Reveal()); err != nil {
		t.Fatalf("created token does not parse: %v", err)
	}
	if !strings.HasPrefix(k.Token.Reveal(), k.Prefix) || k.Prefix != keystore.TokenPrefix+k.Token.LookupID() {
		t.Fatalf("prefix %q does not start token", k.Prefix)
	}
	keys, err = h.Admin.ListKeys(ctx, "bot")
	wantErr(t, "ListKeys", err, nil)
	if len(keys) != 1 {
		t.Fatalf("ListKeys: %d keys, want 1", len(keys))
	}
	got := keys[0]
	if got.ID != k.ID || got.Client != "bot" || got.Name != "ci" || got.Description != "for CI – ünïcode ok" ||
		!got.Active || got.State != keystore.KeyActive || got.ExpiresAt == nil || !got.ExpiresAt.Equal(in) ||
		got.LastUsedAt != nil || !got.CreatedAt.Equal(clock.Now()) || got.Prefix != k.Prefix {
		t.Fatalf("ListKeys()[0] = %+v, created %+v", got, k.APIKey)
	}
	if s := fmt.Sprintf("%v %+v %#v", k, k, k); strings.Contains(s, k.Token.Reveal()) {
		t.Fatal("formatting a NewKey reveals the token")
	}
}

// testDecisions walks the decision table: HasActiveAPIKey and Verify for
// every state a key can be in.
func testDecisions(t *testing.T, f Factory) {
	h, clock, ctx := setup(t, f)
	mustClient(t, h, "open")
	locked := mustClient(t, h, "locked")
	mustClient(t, h, "other")
	mustClient(t, h, "expiring")
	valid := mustKey(t, h, "locked", keystore.KeySpec{Name: "main"})
	revoked := mustKey(t, h, "locked", keystore.KeySpec{Name: "old"})
	if _, err := h.Admin.DeactivateKey(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	h.Sync(t)
	foreign := mustKey(t, h, "other", keystore.KeySpec{})
	soon := clock.Now().Add(time.Minute)
	expiring := mustKey(t, h, "expiring", keystore.KeySpec{ExpiresAt: &soon})

	// A well-formed token that no key has.
	stranger := strangerToken(t)

	states := []struct {
		client      string
		requiresKey bool
	}{{"open", false}, {"locked", true}, {"other", true}, {"expiring", true}}
	for _, s := range states {
		st, err := h.Decider.ClientState(ctx, s.client)
		wantErr(t, "ClientState("+s.client+")", err, nil)
		if st.Name != s.client || st.RequiresKey != s.requiresKey || st.ID <= 0 {
			t.Errorf("ClientState(%q) = %+v, want RequiresKey=%v", s.client, st, s.requiresKey)
		}
		has, err := h.Admin.HasActiveAPIKey(ctx, s.client)
		wantErr(t, "HasActiveAPIKey", err, nil)
		if has != s.requiresKey {
			t.Errorf("HasActiveAPIKey(%q) = %v", s.client, has)
		}
	}

	verify := []struct {
		name    string
		client  string
		token   keystore.Token
		wantErr error
		wantKey int64
	}{
		{"valid key of the client", "locked", valid.Token, nil, valid.ID},
		{"revoked key", "locked", revoked.Token, keystore.ErrInvalidToken, 0},
		{"another client's key", "locked", foreign.Token, keystore.ErrInvalidToken, 0},
		{"key presented to an open client", "open", valid.Token, keystore.ErrInvalidToken, 0},
		{"unknown token", "locked", stranger, keystore.ErrInvalidToken, 0},
		{"zero token", "locked", keystore.Token{}, keystore.ErrInvalidToken, 0},
		{"unknown client", "ghost", valid.Token, keystore.ErrInvalidToken, 0},
		{"unexpired key", "expiring", expiring.Token, nil, expiring.ID},
	}
	for _, tt := range verify {
		t.Run(tt.name, func(t *testing.T) {
			p, err := h.Decider.Verify(ctx, tt.client, tt.token)
			wantErr(t, "Verify", err, tt.wantErr)
			if tt.wantErr == nil && (p.KeyID != tt.wantKey || p.Client != tt.client || p.ClientID <= 0) {
				t.Fatalf("Verify = %+v, want key %d of %s", p, tt.wantKey, tt.client)
			}
			if tt.wantErr != nil && errors.Is(err, keystore.ErrUnavailable) {
				t.Fatalf("Verify: invalid credentials reported as unavailable: %v", err)
			}
		})
	}
	p, _ := h.Decider.Verify(ctx, "locked", valid.Token)
	if p.KeyName != "main" || p.ClientID != locked.ID {
		t.Fatalf("Verify principal = %+v", p)
	}

	// Expiry: the key stops working at expires_at, but the client stays
	// locked.
	clock.Set(soon)
	_, err := h.Decider.Verify(ctx, "expiring", expiring.Token)
	wantErr(t, "Verify(expired)", err, keystore.ErrInvalidToken)
	st, err := h.Decider.ClientState(ctx, "expiring")
	wantErr(t, "ClientState(expired only)", err, nil)
	if !st.RequiresKey {
		t.Fatal("a client whose only key expired must stay locked")
	}
	keys, _ := h.Admin.ListKeys(ctx, "expiring")
	if len(keys) != 1 || keys[0].State != keystore.KeyExpired || !keys[0].Active {
		t.Fatalf("expired key listed as %+v", keys)
	}
}

// strangerToken returns a well-formed token that belongs to no key: the
// suite builds it from the documented format (prefix, 55 base62
// characters, CRC32 of the rest as 6 base62 digits), which also checks
// that ParseToken follows that format.
func strangerToken(t *testing.T) keystore.Token {
	t.Helper()
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	payload := keystore.TokenPrefix + strings.Repeat("Zz9", 55/3) + "Zz9"[:55%3]
	sum := crc32.ChecksumIEEE([]byte(payload))
	var enc [6]byte
	for i := 5; i >= 0; i-- {
		enc[i] = alphabet[sum%62]
		sum /= 62
	}
	tok, err := keystore.ParseToken(payload + string(enc[:]))
	if err != nil {
		t.Fatalf("a token built to the documented format does not parse: %v", err)
	}
	return tok
}

func testRevokeActivateDelete(t *testing.T, f Factory) {
	h, clock, ctx := setup(t, f)
	mustClient(t, h, "bot")
	k1 := mustKey(t, h, "bot", keystore.KeySpec{})
	k2 := mustKey(t, h, "bot", keystore.KeySpec{})

	requires := func(want bool) {
		t.Helper()
		st, err := h.Decider.ClientState(ctx, "bot")
		wantErr(t, "ClientState", err, nil)
		if st.RequiresKey != want {
			t.Fatalf("RequiresKey = %v, want %v", st.RequiresKey, want)
		}
	}
	verifies := func(k keystore.NewKey, want error) {
		t.Helper()
		_, err := h.Decider.Verify(ctx, "bot", k.Token)
		wantErr(t, fmt.Sprintf("Verify(key %d)", k.ID), err, want)
	}

	got, err := h.Admin.DeactivateKey(ctx, k1.ID)
	wantErr(t, "DeactivateKey", err, nil)
	if got.Active || got.State != keystore.KeyRevoked || got.Client != "bot" {
		t.Fatalf("DeactivateKey = %+v", got)
	}
	h.Sync(t)
	requires(true) // k2 still active
	verifies(k1, keystore.ErrInvalidToken)
	verifies(k2, nil)

	// Revoking it again changes nothing: no write, no change event.
	latest, err := h.latestChange(ctx)
	wantErr(t, "LatestChange", err, nil)
	clock.Advance(time.Minute)
	again, err := h.Admin.DeactivateKey(ctx, k1.ID)
	wantErr(t, "DeactivateKey(revoked)", err, nil)
	if again.Active || !again.UpdatedAt.Equal(got.UpdatedAt) {
		t.Fatalf("revoking a revoked key wrote it: %+v, before %+v", again, got)
	}
	if after, err := h.latestChange(ctx); err != nil || after != latest {
		t.Fatalf("revoking a revoked key logged a change: %d -> %d (%v)", latest, after, err)
	}

	_, err = h.Admin.DeactivateKey(ctx, k2.ID)
	wantErr(t, "DeactivateKey", err, nil)
	h.Sync(t)
	requires(false) // last active key revoked: open
	verifies(k2, keystore.ErrInvalidToken)

	got, err = h.Admin.ActivateKey(ctx, k1.ID)
	wantErr(t, "ActivateKey", err, nil)
	if !got.Active || got.State != keystore.KeyActive {
		t.Fatalf("ActivateKey = %+v", got)
	}
	h.Sync(t)
	requires(true)
	verifies(k1, nil)

	wantErr(t, "DeleteKey", h.Admin.DeleteKey(ctx, k1.ID), nil)
	h.Sync(t)
	requires(false)
	verifies(k1, keystore.ErrInvalidToken)
	_, err = h.Admin.GetKey(ctx, k1.ID)
	wantErr(t, "GetKey(deleted)", err, keystore.ErrKeyNotFound)

	for _, id := range []int64{k1.ID, 0, -1, 1 << 40} {
		_, err = h.Admin.DeactivateKey(ctx, id)
		wantErr(t, fmt.Sprintf("DeactivateKey(%d)", id), err, keystore.ErrKeyNotFound)
		_, err = h.Admin.ActivateKey(ctx, id)
		wantErr(t, fmt.Sprintf("ActivateKey(%d)", id), err, keystore.ErrKeyNotFound)
		wantErr(t, fmt.Sprintf("DeleteKey(%d)", id), h.Admin.DeleteKey(ctx, id), keystore.ErrKeyNotFound)
	}
}

func testRotate(t *testing.T, f Factory) {
	h, clock, ctx := setup(t, f)
	mustClient(t, h, "bot")
	old := mustKey(t, h, "bot", keystore.KeySpec{Name: "prod", Description: "d"})

	// Without grace: both work until the old one is revoked.
	nk, err := h.Admin.RotateKey(ctx, old.ID, keystore.RotateSpec{})
	wantErr(t, "RotateKey", err, nil)
	h.Sync(t)
	if nk.ID == old.ID || nk.Name != "prod" || nk.Description != "d" || nk.Client != "bot" || nk.Token.IsZero() {
		t.Fatalf("RotateKey = %+v", nk.APIKey)
	}
	for _, k := range []keystore.NewKey{old, nk} {
		if _, err := h.Decider.Verify(ctx, "bot", k.Token); err != nil {
			t.Fatalf("after rotation, key %d: %v", k.ID, err)
		}
	}

	// With grace: the previous key expires after it.
	third, err := h.Admin.RotateKey(ctx, nk.ID, keystore.RotateSpec{Grace: time.Minute})
	wantErr(t, "RotateKey(grace)", err, nil)
	h.Sync(t)
	if _, err := h.Decider.Verify(ctx, "bot", nk.Token); err != nil {
		t.Fatalf("inside grace: %v", err)
	}
	clock.Advance(time.Minute)
	_, err = h.Decider.Verify(ctx, "bot", nk.Token)
	wantErr(t, "Verify after grace", err, keystore.ErrInvalidToken)
	if _, err := h.Decider.Verify(ctx, "bot", third.Token); err != nil {
		t.Fatalf("new key after grace: %v", err)
	}

	// The successor's own expiry, checked like a new key's.
	expires := clock.Now().Add(2 * time.Hour).Truncate(time.Second)
	fourth, err := h.Admin.RotateKey(ctx, third.ID, keystore.RotateSpec{ExpiresAt: &expires})
	wantErr(t, "RotateKey(expires)", err, nil)
	if fourth.ExpiresAt == nil || !fourth.ExpiresAt.Equal(expires) {
		t.Fatalf("RotateKey(expires): expires_at %v, want %v", fourth.ExpiresAt, expires)
	}
	h.Sync(t)
	if _, err := h.Decider.Verify(ctx, "bot", fourth.Token); err != nil {
		t.Fatalf("successor with an expiry: %v", err)
	}
	clock.Advance(2 * time.Hour)
	_, err = h.Decider.Verify(ctx, "bot", fourth.Token)
	wantErr(t, "Verify after the successor's expiry", err, keystore.ErrInvalidToken)
	past := clock.Now().Add(-time.Second)
	_, err = h.Admin.RotateKey(ctx, third.ID, keystore.RotateSpec{ExpiresAt: &past})
	wantErr(t, "RotateKey(expiry in the past)", err, keystore.ErrInvalidInput)

	_, err = h.Admin.RotateKey(ctx, nk.ID, keystore.RotateSpec{Grace: -time.Second})
	wantErr(t, "RotateKey(negative grace)", err, keystore.ErrInvalidInput)
	_, err = h.Admin.RotateKey(ctx, 1<<40, keystore.RotateSpec{})
	wantErr(t, "RotateKey(unknown)", err, keystore.ErrKeyNotFound)
	if _, err := h.Admin.DeactivateKey(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	_, err = h.Admin.RotateKey(ctx, old.ID, keystore.RotateSpec{})
	wantErr(t, "RotateKey(revoked)", err, keystore.ErrInvalidInput)
	keys, _ := h.Admin.ListKeys(ctx, "bot")
	if len(keys) != 4 {
		t.Fatalf("refused rotations wrote keys: %d keys, want 4", len(keys))
	}
}

func testDeleteClient(t *testing.T, f Factory) {
	h, _, ctx := setup(t, f)
	mustClient(t, h, "bot")
	mustClient(t, h, "keep")
	k := mustKey(t, h, "bot", keystore.KeySpec{})
	kept := mustKey(t, h, "keep", keystore.KeySpec{})

	wantErr(t, "DeleteClient", h.Admin.DeleteClient(ctx, "bot"), nil)
	h.Sync(t)
	_, err := h.Decider.ClientState(ctx, "bot")
	wantErr(t, "ClientState(deleted)", err, keystore.ErrUnknownClient)
	_, err = h.Decider.Verify(ctx, "bot", k.Token)
	wantErr(t, "Verify(deleted client)", err, keystore.ErrInvalidToken)
	_, err = h.Admin.GetKey(ctx, k.ID)
	wantErr(t, "GetKey(key of deleted client)", err, keystore.ErrKeyNotFound)
	if _, err := h.Decider.Verify(ctx, "keep", kept.Token); err != nil {
		t.Fatalf("other client's key after delete: %v", err)
	}
	wantErr(t, "DeleteClient(again)", h.Admin.DeleteClient(ctx, "bot"), keystore.ErrUnknownClient)
	wantErr(t, "DeleteClient(invalid)", h.Admin.DeleteClient(ctx, "NO"), keystore.ErrInvalidName)

	// The name is free again, and the new client starts open.
	mustClient(t, h, "bot")
	st, err := h.Decider.ClientState(ctx, "bot")
	wantErr(t, "ClientState(recreated)", err, nil)
	if st.RequiresKey {
		t.Fatal("a recreated client inherited keys")
	}
}

func testTouchKeys(t *testing.T, f Factory) {
	h, clock, ctx := setup(t, f)
	mustClient(t, h, "bot")
	k := mustKey(t, h, "bot", keystore.KeySpec{})
	t1 := clock.Now().Add(time.Second)
	t0 := clock.Now().Add(500 * time.Millisecond)
	wantErr(t, "TouchKeys", h.Admin.TouchKeys(ctx, map[int64]time.Time{k.ID: t1, 1 << 40: t1}), nil)
	wantErr(t, "TouchKeys(older)", h.Admin.TouchKeys(ctx, map[int64]time.Time{k.ID: t0}), nil)
	wantErr(t, "TouchKeys(empty)", h.Admin.TouchKeys(ctx, nil), nil)
	got, err := h.Admin.GetKey(ctx, k.ID)
	wantErr(t, "GetKey", err, nil)
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(t1) {
		t.Fatalf("last_used_at = %v, want %v (never moves back)", got.LastUsedAt, t1)
	}
}

func testConcurrency(t *testing.T, f Factory) {
	h, _, ctx := setup(t, f)
	const workers = 8

	// Concurrent creates of one name: exactly one wins.
	var wins, dups atomic.Int32
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.Admin.CreateClient(ctx, "race")
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, keystore.ErrClientExists):
				dups.Add(1)
			default:
				t.Errorf("CreateClient: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || dups.Load() != workers-1 {
		t.Fatalf("concurrent CreateClient: %d won, %d duplicates", wins.Load(), dups.Load())
	}

	// Concurrent key creation, each worker revoking every other key it made,
	// while readers ask the decision questions.
	const perWorker = 4
	ids := make(chan int64, workers*perWorker)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := h.Decider.ClientState(ctx, "race"); err != nil {
					t.Errorf("ClientState: %v", err)
					return
				}
			}
		}()
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				k, err := h.Admin.CreateKey(ctx, "race", keystore.KeySpec{Name: fmt.Sprintf("k%d", i)})
				if err != nil {
					t.Errorf("CreateKey: %v", err)
					return
				}
				if i%2 == 1 {
					if _, err := h.Admin.DeactivateKey(ctx, k.ID); err != nil {
						t.Errorf("DeactivateKey: %v", err)
						return
					}
				} else {
					ids <- k.ID
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(ids)
	h.Sync(t)
	list, err := h.Admin.ListClients(ctx)
	wantErr(t, "ListClients", err, nil)
	if len(list) != 1 || list[0].Keys != workers*perWorker || list[0].ActiveKeys != workers*perWorker/2 {
		t.Fatalf("after concurrent writes: %+v, want %d keys, %d active", list, workers*perWorker, workers*perWorker/2)
	}
	for id := range ids {
		k, err := h.Admin.GetKey(ctx, id)
		if err != nil || !k.Active {
			t.Fatalf("key %d: %+v %v", id, k, err)
		}
	}
}

func testUnavailable(t *testing.T, f Factory) {
	if f == nil {
		return
	}
	h, _, ctx := setup(t, f)
	mustClient(t, h, "bot")
	k := mustKey(t, h, "bot", keystore.KeySpec{})

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err := h.Admin.ClientState(cancelled, "bot")
	wantErr(t, "ClientState(cancelled ctx)", err, keystore.ErrUnavailable)
	_, err = h.Admin.Verify(cancelled, "bot", k.Token)
	wantErr(t, "Verify(cancelled ctx)", err, keystore.ErrUnavailable)
	_, err = h.Admin.CreateKey(cancelled, "bot", keystore.KeySpec{})
	wantErr(t, "CreateKey(cancelled ctx)", err, keystore.ErrUnavailable)

	if h.Break == nil {
		t.Fatal("harness has no Break")
	}
	h.Break(t)
	ops := []struct {
		name string
		call func() error
	}{
		{"Ping", func() error { return h.Admin.Ping(ctx) }},
		{"CreateClient", func() error { _, err := h.Admin.CreateClient(ctx, "new"); return err }},
		{"GetClient", func() error { _, err := h.Admin.GetClient(ctx, "bot"); return err }},
		{"ListClients", func() error { _, err := h.Admin.ListClients(ctx); return err }},
		{"CreateKey", func() error { _, err := h.Admin.CreateKey(ctx, "bot", keystore.KeySpec{}); return err }},
		{"ListKeys", func() error { _, err := h.Admin.ListKeys(ctx, "bot"); return err }},
		{"DeactivateKey", func() error { _, err := h.Admin.DeactivateKey(ctx, k.ID); return err }},
		{"RotateKey", func() error { _, err := h.Admin.RotateKey(ctx, k.ID, keystore.RotateSpec{}); return err }},
		{"DeleteKey", func() error { return h.Admin.DeleteKey(ctx, k.ID) }},
		{"DeleteClient", func() error { return h.Admin.DeleteClient(ctx, "bot") }},
		{"LockClient", func() error { _, err := h.Admin.LockClient(ctx, "bot"); return err }},
		{"UnlockClient", func() error { _, err := h.Admin.UnlockClient(ctx, "bot"); return err }},
		{"HasActiveAPIKey", func() error { _, err := h.Admin.HasActiveAPIKey(ctx, "bot"); return err }},
		{"ClientState", func() error { _, err := h.Admin.ClientState(ctx, "bot"); return err }},
		{"Verify", func() error { _, err := h.Admin.Verify(ctx, "bot", k.Token); return err }},
		{"TouchKeys", func() error { return h.Admin.TouchKeys(ctx, map[int64]time.Time{k.ID: time.Now()}) }},
	}
	for _, op := range ops {
		err := op.call()
		if !errors.Is(err, keystore.ErrUnavailable) {
			t.Errorf("%s on a broken database: %v, want ErrUnavailable", op.name, err)
		}
		if errors.Is(err, keystore.ErrInvalidToken) || errors.Is(err, keystore.ErrUnknownClient) {
			t.Errorf("%s on a broken database: %v must not look like a decision", op.name, err)
		}
	}
}
