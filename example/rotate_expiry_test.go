package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// TestRotateExpiry: without --expires a successor inherits its old key's
// lifetime (expires_at - created_at), counted from the rotation, not the
// old key's expires_at; --expires DURATION and --expires never override it.
func TestRotateExpiry(t *testing.T) {
	t.Parallel()
	for _, sc := range stores() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, sc.newURL(t))
			c.ok("clients", "create", "bot")
			rotate := func(args ...string) (createdKey, result) {
				t.Helper()
				r := c.ok(append([]string{"keys", "rotate", "--json"}, args...)...)
				var k createdKey
				if err := json.Unmarshal([]byte(r.stdout), &k); err != nil {
					t.Fatalf("keys rotate --json: %v in %q", err, r.stdout)
				}
				// What was printed is what was stored.
				for _, l := range c.listKeys("bot") {
					if l.ID == k.ID && !sameTime(l.ExpiresAt, k.ExpiresAt) {
						t.Errorf("key %d: printed expires_at %v, listed %v", k.ID, k.ExpiresAt, l.ExpiresAt)
					}
				}
				return k, r
			}
			near := func(what string, got *time.Time, want time.Duration) {
				t.Helper()
				if got == nil {
					t.Errorf("%s: no expiry, want one %v from now", what, want)
				} else if d := time.Until(*got) - want; d < -time.Minute || d > time.Minute {
					t.Errorf("%s: expires at %v, %v from now; want %v from now", what, got, time.Until(*got).Round(time.Second), want)
				}
			}

			// A 30-day key on its 20th day.
			old := c.createKey("bot", "--expires", "30d")
			now := time.Now()
			setKeyTimes(t, c.db, old.ID, now.Add(-20*day), now.Add(10*day))
			k, r := rotate(itoa(old.ID))
			near("inherited", k.ExpiresAt, 30*day)
			if !strings.Contains(r.stderr, "(the old key's lifetime, 30d, from now)") {
				t.Errorf("keys rotate does not say the expiry was inherited: %q", r.stderr)
			}
			for _, l := range c.listKeys("bot") {
				if l.ID == old.ID {
					near("the old key, untouched", l.ExpiresAt, 10*day)
				}
			}
			// Its successor passes the same lifetime on.
			next, _ := rotate(itoa(k.ID))
			near("inherited twice", next.ExpiresAt, 30*day)

			k, _ = rotate(itoa(old.ID), "--expires", "2h")
			near("--expires 2h", k.ExpiresAt, 2*time.Hour)
			k, r = rotate(itoa(old.ID), "--expires", "never")
			if k.ExpiresAt != nil || !strings.Contains(r.stderr, "new key "+itoa(k.ID)+" never expires;") {
				t.Errorf("--expires never: %+v, %q", k, r.stderr)
			}

			// A key that never expires is followed by one that never expires.
			forever := c.createKey("bot")
			k, r = rotate(itoa(forever.ID))
			if k.ExpiresAt != nil || !strings.Contains(r.stderr, "never expires, like the old key") {
				t.Errorf("successor of a key without expiry: %+v, %q", k, r.stderr)
			}
			k, _ = rotate(itoa(forever.ID), "--expires", "1d12h")
			near("--expires 1d12h", k.ExpiresAt, 36*time.Hour)

			// A key with no lifetime to pass on (times written by hand) is
			// rotated all the same: its successor never expires, and a
			// warning says so.
			odd := c.createKey("bot", "--expires", "1h")
			setKeyTimes(t, c.db, odd.ID, now.Add(time.Hour), now.Add(time.Hour))
			k, r = rotate(itoa(odd.ID))
			if k.ExpiresAt != nil || !strings.HasPrefix(r.stderr, "warning: key "+itoa(odd.ID)+" has no lifetime to pass on (it expires at ") ||
				!strings.Contains(r.stderr, "): its successor never expires; rotate with --expires DURATION to give it one\n") {
				t.Errorf("rotating a key without lifetime: %+v, %q", k, r.stderr)
			}
			k, _ = rotate(itoa(odd.ID), "--expires", "1h")
			near("--expires 1h over a key without lifetime", k.ExpiresAt, time.Hour)

			for _, bad := range []string{"0", "0s", "-1h"} {
				r := c.run("keys", "rotate", itoa(old.ID), "--expires", bad)
				want := "example: keys rotate: --expires must be a positive duration or never, got " + formatDuration(mustParseDuration(t, bad)) + "\n"
				if r.code != 2 || r.stderr != want {
					t.Errorf("--expires %s: %v, want exit 2 and %q", bad, r, want)
				}
			}
		})
	}
}

// setKeyTimes writes a key's created_at and expires_at by plain SQL.
func setKeyTimes(t *testing.T, databaseURL string, id int64, created, expires time.Time) {
	t.Helper()
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE api_keys SET created_at = ?, expires_at = ? WHERE id = ?`), created.UTC(), expires.UTC(), id); err != nil {
		t.Fatal(err)
	}
}

func sameTime(a, b *time.Time) bool {
	return a == nil && b == nil || a != nil && b != nil && a.Equal(*b)
}

func mustParseDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := parseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
