package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

// lockedClient is one element of "clients list --json", as a script reads
// it.
type lockedClient struct {
	Name        string `json:"name"`
	RequiresKey bool   `json:"requires_key"`
	Locked      bool   `json:"locked"`
	ActiveKeys  int    `json:"active_keys"`
}

func (c *cli) client(name string) lockedClient {
	c.t.Helper()
	var all []lockedClient
	r := c.ok("clients", "list", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &all); err != nil {
		c.t.Fatalf("clients list --json: %v in %q", err, r.stdout)
	}
	for _, cl := range all {
		if cl.Name == name {
			return cl
		}
	}
	c.t.Fatalf("clients list --json lacks %s: %s", name, r.stdout)
	return lockedClient{}
}

// TestCLILock walks "clients lock" and "clients unlock" on both stores: the
// state shows in "clients list", and revoking the last key of a locked
// client does not warn that it accepts anonymous requests (it does not).
func TestCLILock(t *testing.T) {
	t.Parallel()
	for _, sc := range stores() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, sc.newURL(t))
			c.ok("clients", "create", "bot")
			if got := c.client("bot"); got.Locked || got.RequiresKey {
				t.Fatalf("a new client: %+v", got)
			}

			r := c.ok("clients", "lock", "bot")
			if r.stdout != "" || !strings.Contains(r.stderr, "locked client bot") {
				t.Errorf("clients lock: %v", r)
			}
			if got := c.client("bot"); !got.Locked || !got.RequiresKey || got.ActiveKeys != 0 {
				t.Errorf("after lock: %+v", got)
			}
			if r := c.ok("clients", "list"); !strings.Contains(r.stdout, "LOCKED") {
				t.Errorf("clients list table has no LOCKED column:\n%s", r.stdout)
			}
			if r := c.ok("clients", "lock", "bot"); r.stdout != "" || !strings.Contains(r.stderr, "already locked") {
				t.Errorf("locking a locked client: %v", r)
			}

			// The first key of a locked client changes nothing for callers.
			r = c.ok("keys", "create", "--client", "bot")
			if strings.Contains(r.stderr, "now requires a key") {
				t.Errorf("a locked client's first key claims it now requires one: %q", r.stderr)
			}
			k := c.listKeys("bot")[0]
			r = c.ok("keys", "revoke", itoa(k.ID))
			if r.stdout != "" || !strings.Contains(r.stderr, "revoked") || strings.Contains(r.stderr, "anonymous") {
				t.Errorf("revoking the last key of a locked client: %v", r)
			}
			if !strings.Contains(r.stderr, "locked") {
				t.Errorf("revoking the last key of a locked client does not say it stays locked: %q", r.stderr)
			}
			if got := c.client("bot"); !got.RequiresKey {
				t.Errorf("after revoking the last key of a locked client: %+v", got)
			}
			c.ok("keys", "activate", itoa(k.ID))
			if r := c.ok("keys", "delete", itoa(k.ID)); strings.Contains(r.stderr, "anonymous") {
				t.Errorf("deleting the last key of a locked client: %v", r)
			}

			r = c.ok("clients", "unlock", "bot")
			if r.stdout != "" || !strings.Contains(r.stderr, "unlocked client bot") || !strings.Contains(r.stderr, "anonymous") {
				t.Errorf("unlocking a client without keys must warn it is open: %v", r)
			}
			if got := c.client("bot"); got.Locked || got.RequiresKey {
				t.Errorf("after unlock: %+v", got)
			}
			if r := c.ok("clients", "unlock", "bot"); !strings.Contains(r.stderr, "already unlocked") || strings.Contains(r.stderr, "anonymous") {
				t.Errorf("unlocking an unlocked client: %v", r)
			}

			// Unknown and invalid names, as the other clients commands.
			for _, args := range [][]string{{"clients", "lock", "ghost"}, {"clients", "unlock", "ghost"},
				{"clients", "lock", "Bad_Name"}, {"clients", "unlock", "--", "-x"}} {
				r := c.run(args...)
				if r.code != 2 || r.stdout != "" {
					t.Errorf("%v: want exit 2, nothing on stdout; got %v", args, r)
				}
				oneLineOfStderr(t, r)
			}
		})
	}
}

// TestServeLockedClient drives a locked client over real HTTP: with no key
// every caller gets 401, and a lock or an unlock made by the CLI in
// another process takes effect on the running server within a second.
func TestServeLockedClient(t *testing.T) {
	t.Parallel()
	for _, sc := range stores() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, sc.newURL(t))
			c.ok("clients", "create", "vault")
			s := startServer(t, c.dir, c.env, "--database-url", c.db)
			one := []*server{s}
			bound := func(what string, ds []time.Duration) {
				t.Helper()
				if ds[0] > propagationBound {
					t.Errorf("%s: seen after %v, over the %v bound", what, ds[0], propagationBound)
				}
			}

			// Cached as open, then locked by another process.
			if got := decodeChat(t, s.chat("vault", "")); !got.Anonymous {
				t.Fatalf("vault is not open: %+v", got)
			}
			bound("lock", measure(t, one, time.Millisecond, func() { c.ok("clients", "lock", "vault") }, "vault", "", http.StatusUnauthorized))

			r := s.chat("vault", "")
			refused(t, "locked, no header", r, http.StatusUnauthorized, `Bearer realm="llmauth"`)
			if !strings.Contains(string(r.body), `"missing_token"`) {
				t.Errorf("locked, no header: body %s, want code missing_token", r.body)
			}
			random, err := keystore.NewToken()
			if err != nil {
				t.Fatal(err)
			}
			r = s.chat("vault", random.Reveal())
			refused(t, "locked, random well-formed token", r, http.StatusUnauthorized, `Bearer realm="llmauth", error="invalid_token"`)
			if !strings.Contains(string(r.body), `"invalid_token"`) {
				t.Errorf("locked, random token: body %s, want code invalid_token", r.body)
			}

			// A key works on a locked client; revoking it leaves the client
			// closed.
			k := c.createKey("vault")
			eventually(t, propagationBound, "the new key works", func() bool { return s.chat("vault", k.Token).status == http.StatusOK })
			if rv := c.ok("keys", "revoke", itoa(k.ID)); strings.Contains(rv.stderr, "anonymous") {
				t.Errorf("revoking the last key of a locked client warned: %q", rv.stderr)
			}
			bound("revoke", measure(t, one, time.Millisecond, func() {}, "vault", k.Token, http.StatusUnauthorized))
			refused(t, "locked, last key revoked, no header", s.chat("vault", ""), http.StatusUnauthorized, `Bearer realm="llmauth"`)

			// Unlocked by another process: anonymous 200 within a second.
			bound("unlock", measure(t, one, time.Millisecond, func() { c.ok("clients", "unlock", "vault") }, "vault", "", http.StatusOK))
			if got := decodeChat(t, s.chat("vault", "")); !got.Anonymous || got.KeyID != nil {
				t.Errorf("after unlock: %+v", got)
			}
		})
	}
}
