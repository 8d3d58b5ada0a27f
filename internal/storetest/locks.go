package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

// testLockUnlock: a client requires a key while it has an active key OR is
// locked. Locking is idempotent, like revoking.
func testLockUnlock(t *testing.T, f Factory) {
	h, clock, ctx := setup(t, f)
	mustClient(t, h, "bot")
	mustClient(t, h, "keyed")

	state := func(client string, wantLocked, wantRequires bool) {
		t.Helper()
		st, err := h.Decider.ClientState(ctx, client)
		wantErr(t, "ClientState("+client+")", err, nil)
		if st.Locked != wantLocked || st.RequiresKey != wantRequires {
			t.Fatalf("ClientState(%q) = %+v, want Locked=%v RequiresKey=%v", client, st, wantLocked, wantRequires)
		}
	}
	listed := func(client string) keystore.ClientSummary {
		t.Helper()
		list, err := h.Admin.ListClients(ctx)
		wantErr(t, "ListClients", err, nil)
		for _, c := range list {
			if c.Name == client {
				return c
			}
		}
		t.Fatalf("ListClients lacks %q", client)
		return keystore.ClientSummary{}
	}
	state("bot", false, false)

	// A locked client with no key requires one: every caller is refused.
	c, err := h.Admin.LockClient(ctx, "bot")
	wantErr(t, "LockClient", err, nil)
	if !c.Locked || c.Name != "bot" || !c.UpdatedAt.Equal(clock.Now()) {
		t.Fatalf("LockClient = %+v", c)
	}
	h.Sync(t)
	state("bot", true, true)
	if has, err := h.Admin.HasActiveAPIKey(ctx, "bot"); err != nil || has {
		t.Fatalf("HasActiveAPIKey(locked, no key) = %v, %v; want false (the lock is not a key)", has, err)
	}
	if got := listed("bot"); !got.Locked || !got.RequiresKey || got.ActiveKeys != 0 {
		t.Fatalf("ListClients(locked) = %+v", got)
	}
	if got, err := h.Admin.GetClient(ctx, "bot"); err != nil || !got.Locked {
		t.Fatalf("GetClient(locked) = %+v, %v", got, err)
	}
	_, err = h.Decider.Verify(ctx, "bot", strangerToken(t))
	wantErr(t, "Verify(locked, no key)", err, keystore.ErrInvalidToken)

	// Locking it again changes nothing: no write, no change event.
	latest, err := h.latestChange(ctx)
	wantErr(t, "LatestChange", err, nil)
	clock.Advance(time.Minute)
	again, err := h.Admin.LockClient(ctx, "bot")
	wantErr(t, "LockClient(locked)", err, nil)
	if !again.Locked || !again.UpdatedAt.Equal(c.UpdatedAt) {
		t.Fatalf("locking a locked client wrote it: %+v, before %+v", again, c)
	}
	if after, err := h.latestChange(ctx); err != nil || after != latest {
		t.Fatalf("locking a locked client logged a change: %d -> %d (%v)", latest, after, err)
	}

	// Unlocked again, with no key: open.
	c, err = h.Admin.UnlockClient(ctx, "bot")
	wantErr(t, "UnlockClient", err, nil)
	if c.Locked {
		t.Fatalf("UnlockClient = %+v", c)
	}
	h.Sync(t)
	state("bot", false, false)
	if got := listed("bot"); got.Locked || got.RequiresKey {
		t.Fatalf("ListClients(unlocked) = %+v", got)
	}
	latest, _ = h.latestChange(ctx)
	if c, err := h.Admin.UnlockClient(ctx, "bot"); err != nil || c.Locked {
		t.Fatalf("UnlockClient(unlocked) = %+v, %v", c, err)
	}
	if after, err := h.latestChange(ctx); err != nil || after != latest {
		t.Fatalf("unlocking an unlocked client logged a change: %d -> %d (%v)", latest, after, err)
	}

	// A locked client with a key: its valid token verifies, others do not.
	k := mustKey(t, h, "keyed", keystore.KeySpec{Name: "main"})
	if _, err := h.Admin.LockClient(ctx, "keyed"); err != nil {
		t.Fatal(err)
	}
	h.Sync(t)
	state("keyed", true, true)
	p, err := h.Decider.Verify(ctx, "keyed", k.Token)
	wantErr(t, "Verify(locked, valid key)", err, nil)
	if p.KeyID != k.ID || p.Client != "keyed" {
		t.Fatalf("Verify(locked, valid key) = %+v", p)
	}
	_, err = h.Decider.Verify(ctx, "keyed", strangerToken(t))
	wantErr(t, "Verify(locked, unknown token)", err, keystore.ErrInvalidToken)

	// Revoking the last key of a locked client leaves it requiring a key.
	if _, err := h.Admin.DeactivateKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	h.Sync(t)
	state("keyed", true, true)
	_, err = h.Decider.Verify(ctx, "keyed", k.Token)
	wantErr(t, "Verify(revoked, locked)", err, keystore.ErrInvalidToken)
	// Deleting it too.
	wantErr(t, "DeleteKey", h.Admin.DeleteKey(ctx, k.ID), nil)
	h.Sync(t)
	state("keyed", true, true)

	// Errors callers branch on; a refused call writes nothing.
	latest, _ = h.latestChange(ctx)
	for _, call := range []func(context.Context, string) (keystore.Client, error){h.Admin.LockClient, h.Admin.UnlockClient} {
		_, err = call(ctx, "ghost")
		wantErr(t, "lock/unlock(unknown)", err, keystore.ErrUnknownClient)
		_, err = call(ctx, "Not A Name")
		wantErr(t, "lock/unlock(invalid)", err, keystore.ErrInvalidName)
	}
	if after, err := h.latestChange(ctx); err != nil || after != latest {
		t.Fatalf("refused lock calls logged a change: %d -> %d (%v)", latest, after, err)
	}

	// A deleted and recreated client starts unlocked.
	wantErr(t, "DeleteClient", h.Admin.DeleteClient(ctx, "keyed"), nil)
	mustClient(t, h, "keyed")
	state("keyed", false, false)
}
