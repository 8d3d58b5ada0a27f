package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// TestCLITimesByHand: whatever a time column holds (PostgreSQL's infinity
// and -infinity, SQLite text typed by hand, or junk an older schema let
// through), the server decides on its key (200 while it has not expired,
// else 401; never 503) and the CLI lists the row exactly, lists the rows
// beside it, and can rotate, revoke, activate and delete it: every command
// exits 0.
func TestCLITimesByHand(t *testing.T) {
	t.Parallel()
	const (
		earliest = "0000-01-01T00:00:00Z"
		latest   = "9999-12-31T23:59:59.999999Z"
	)
	sqlite, postgres := stores()[0], stores()[1]
	for _, tc := range []struct {
		name  string
		store storeCase
		// legacy: drop the triggers that guard the time columns first,
		// as in a database written before they existed.
		legacy bool
		expr   string
		// want is what every time column reads as in --json; expires is
		// expires_at ("null": never), state the key's state.
		want, expires, state string
		// table is how the EXPIRES and CREATED columns print.
		tableExpires, tableCreated string
	}{
		{"postgres infinity", postgres, false, "'infinity'", latest, "null", "active", "never", "9999-12-31T23:59:59Z"},
		{"postgres -infinity", postgres, false, "'-infinity'", earliest, `"` + earliest + `"`, "expired", earliest, earliest},
		{"postgres year 10000", postgres, false, "'10000-01-01 00:00:00+00'", latest, `"` + latest + `"`, "active", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"},
		{"sqlite by hand", sqlite, false, "'2999-01-02T15:04Z'", "2999-01-02T15:04:00Z", `"2999-01-02T15:04:00Z"`, "active", "2999-01-02T15:04:00Z", "2999-01-02T15:04:00Z"},
		{"sqlite junk from before", sqlite, true, "'junk'", earliest, `"` + earliest + `"`, "expired", earliest, earliest},
		{"sqlite integer from before", sqlite, true, "1700000000", earliest, `"` + earliest + `"`, "expired", earliest, earliest},
		{"sqlite infinity from before", sqlite, true, "'infinity'", latest, "null", "active", "never", "9999-12-31T23:59:59Z"},
		{"sqlite bare date and space from before", sqlite, true, "'2999-01-02 '", "2999-01-02T00:00:00Z", `"2999-01-02T00:00:00Z"`, "active", "2999-01-02T00:00:00Z", "2999-01-02T00:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, tc.store.newURL(t))
			c.ok("clients", "create", "odd")
			c.ok("clients", "create", "plain")
			odd := c.createKey("odd")
			other := c.createKey("odd")
			plain := c.createKey("plain")
			writeTimesByHand(t, c.db, tc.legacy, tc.expr, odd.ID)

			// The server: the odd key is decided on like any other, the
			// client stays locked, and the database counts as ready.
			srv := startServer(t, c.dir, c.env, "--database-url", c.db)
			wantStatus := http.StatusOK
			if tc.state == "expired" {
				wantStatus = http.StatusUnauthorized
			}
			for _, call := range []struct {
				token string
				want  int
			}{{odd.Token, wantStatus}, {"", http.StatusUnauthorized}, {other.Token, http.StatusOK}} {
				if r := srv.chat("odd", call.token); r.status != call.want {
					t.Errorf("chat with token %.12s: %d %s, want %d", call.token, r.status, r.body, call.want)
				}
			}
			if r := do(t, http.MethodGet, srv.base+"/readyz", ""); r.status != http.StatusOK {
				t.Errorf("readyz: %d", r.status)
			}

			// clients list: the odd client exactly, the plain one as
			// created.
			var clients []map[string]any
			if err := json.Unmarshal([]byte(c.ok("clients", "list", "--json").stdout), &clients); err != nil || len(clients) != 2 {
				t.Fatalf("clients list --json: %v %v", clients, err)
			}
			if clients[0]["name"] != "odd" || clients[0]["created_at"] != tc.want || clients[0]["requires_key"] != true ||
				clients[1]["name"] != "plain" || clients[1]["created_at"] == tc.want {
				t.Errorf("clients list --json: %v; want odd created at %s", clients, tc.want)
			}
			if r := c.ok("clients", "list"); !strings.Contains(r.stdout, tc.tableCreated) || !strings.Contains(r.stdout, "plain") {
				t.Errorf("clients list does not show %s:\n%s", tc.tableCreated, r.stdout)
			}

			// keys list: the odd key exactly, the key beside it as created.
			r := c.ok("keys", "list", "--client", "odd", "--json")
			var keys []map[string]json.RawMessage
			if err := json.Unmarshal([]byte(r.stdout), &keys); err != nil || len(keys) != 2 {
				t.Fatalf("keys list --json: %v %q", err, r.stdout)
			}
			want := map[string]string{
				"id": itoa(odd.ID), "expires_at": tc.expires, "last_used_at": `"` + tc.want + `"`,
				"created_at": `"` + tc.want + `"`, "state": `"` + tc.state + `"`, "active": "true",
			}
			for f, v := range want {
				if got := string(keys[0][f]); got != v {
					t.Errorf("keys list --json: %s = %s, want %s", f, got, v)
				}
			}
			if string(keys[1]["id"]) != itoa(other.ID) || string(keys[1]["state"]) != `"active"` || string(keys[1]["expires_at"]) != "null" {
				t.Errorf("keys list --json: the key beside it: %v", keys[1])
			}
			table := c.ok("keys", "list", "--client", "odd").stdout
			if line := lineOf(table, itoa(odd.ID)+" "); !strings.Contains(line, " "+tc.state+" ") ||
				!strings.Contains(line, " "+tc.tableExpires+" ") || !strings.HasSuffix(line, tc.tableCreated) {
				t.Errorf("keys list: the odd key's line %q; want %s, expires %s, created %s", line, tc.state, tc.tableExpires, tc.tableCreated)
			}

			// Every command on the odd row.
			if r := c.ok("keys", "rotate", itoa(odd.ID), "--grace", "1h"); !strings.Contains(r.stderr, "rotated key") {
				t.Errorf("keys rotate: %v", r)
			}
			c.ok("keys", "rotate", itoa(odd.ID), "--json")
			if r := c.ok("keys", "revoke", itoa(odd.ID)); !strings.Contains(r.stderr, "revoked key "+itoa(odd.ID)) {
				t.Errorf("keys revoke: %v", r)
			}
			if r := c.ok("keys", "activate", itoa(odd.ID)); !strings.Contains(r.stderr, "activated key "+itoa(odd.ID)) {
				t.Errorf("keys activate: %v", r)
			}
			if r := c.ok("keys", "delete", itoa(odd.ID)); !strings.Contains(r.stderr, "deleted key "+itoa(odd.ID)) {
				t.Errorf("keys delete: %v", r)
			}
			if ks := c.listKeys("odd"); len(ks) != 3 { // other and the two successors
				t.Errorf("after keys delete: %+v", ks)
			}
			c.ok("clients", "delete", "odd")
			if ks := c.listKeys("plain"); len(ks) != 1 || ks[0].ID != plain.ID || ks[0].State != "active" {
				t.Errorf("the plain client's keys: %+v", ks)
			}
		})
	}
}

// writeTimesByHand sets every time column of client odd's rows and of key
// id's rows to expr, by plain SQL.
func writeTimesByHand(t *testing.T, databaseURL string, legacy bool, expr string, id int64) {
	t.Helper()
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if legacy {
		var names []string
		if err := db.Select(&names, `SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%times%'`); err != nil || len(names) == 0 {
			t.Fatalf("time triggers: %v %v", names, err)
		}
		for _, n := range names {
			db.MustExec(`DROP TRIGGER ` + n)
		}
	}
	for _, q := range []string{
		`UPDATE llm_clients SET created_at = ` + expr + `, updated_at = ` + expr + ` WHERE name = 'odd'`,
		`UPDATE api_keys SET expires_at = ` + expr + `, last_used_at = ` + expr + `, created_at = ` + expr + `, updated_at = ` + expr + ` WHERE id = ?`,
		`UPDATE llm_client_api_keys SET created_at = ` + expr + `, updated_at = ` + expr + ` WHERE api_key_id = ?`,
	} {
		var args []any
		if strings.Contains(q, "?") {
			args = append(args, id)
		}
		if _, err := db.ExecContext(ctx, db.Rebind(q), args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// lineOf returns the first line of out that starts with prefix.
func lineOf(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimRight(l, " ")
		}
	}
	return ""
}
