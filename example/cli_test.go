package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// oneLineOfStderr checks the contract's "one-line reason on stderr".
func oneLineOfStderr(t *testing.T, r result) {
	t.Helper()
	msg := strings.TrimSuffix(r.stderr, "\n")
	if msg == "" || strings.Contains(msg, "\n") {
		t.Errorf("want exactly one line on stderr, got %q", r.stderr)
	}
	if strings.Contains(msg, "  ") || strings.Contains(msg, " )") {
		t.Errorf("stray space in %q", msg)
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	every := [][]string{{"--help"}, {"-h"}, {"-help"}, {"help"}, {"clients", "--help"}, {"keys", "-h"}, {"help", "keys"}, {"completion", "--help"}}
	for _, c := range commandPaths() {
		every = append(every, append(strings.Fields(c), "--help"), append(strings.Fields(c), "-h"),
			append([]string{"help"}, strings.Fields(c)...))
	}
	dir := t.TempDir()
	for _, args := range every {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			r := runBinary(t, dir, baseEnv(), args...)
			if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "Usage") {
				t.Fatalf("want exit 0, help on stdout (it was asked for), nothing on stderr; got %v", r)
			}
			if !strings.Contains(r.stdout, "Exit status") {
				t.Errorf("help does not document the exit codes:\n%s", r.stdout)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "llmauth.db")); err == nil {
		t.Error("help created llmauth.db")
	}

	top := runBinary(t, dir, baseEnv(), "--help").stdout
	for _, c := range commandPaths() {
		if !strings.Contains(top, c) {
			t.Errorf("top-level help does not list %q", c)
		}
	}
	for _, want := range []string{"DATABASE_URL", "llmauth.db", "postgres://", "sqlite:"} {
		if !strings.Contains(top, want) {
			t.Errorf("top-level help does not mention %q", want)
		}
	}
	// Each command's help lists its own flags.
	for args, flags := range map[string][]string{
		"serve":        {"--addr", "--metrics-addr", "--cache-ttl", "--stale-if-error", "--max-staleness", "--poll-interval", "--usage-flush-interval", "--log-level", "--log-format", "--trusted-proxy", "--database-url", "X-Forwarded-For"},
		"keys create":  {"--client", "--name", "--expires", "--json", "--database-url"},
		"keys list":    {"--client", "--json", "last_used_at"},
		"keys rotate":  {"--grace", "--json"},
		"keys revoke":  {"anonymous"},
		"clients list": {"--json", "requires_key", "locked"},
		"clients lock": {"401"},
	} {
		help := runBinary(t, dir, baseEnv(), append(strings.Fields(args), "--help")...).stdout
		for _, f := range flags {
			if !strings.Contains(help, f) {
				t.Errorf("help of %s does not mention %s", args, f)
			}
		}
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := runBinary(t, t.TempDir(), baseEnv(), "version")
	if r.code != 0 || strings.Count(r.stdout, "\n") != 1 || !strings.HasPrefix(r.stdout, "llmauth example ") {
		t.Fatalf("version: %v", r)
	}
	for _, flag := range []string{"--version", "-v"} {
		if f := runBinary(t, t.TempDir(), baseEnv(), flag); f.code != 0 || f.stdout != r.stdout || f.stderr != "" {
			t.Errorf("%s: %v; want what version prints, %q", flag, f, r.stdout)
		}
	}
}

// TestCompletion: "completion SHELL" prints a script on stdout and touches
// no database; the script's callback completes commands and flag values.
func TestCompletion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		r := runBinary(t, dir, baseEnv(), "completion", shell)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "example") || len(r.stdout) < 1000 {
			t.Errorf("completion %s: exit %d, stderr %q, %d bytes of script", shell, r.code, r.stderr, len(r.stdout))
		}
	}
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{""}, []string{"serve", "migrate", "clients", "keys", "version", "completion", "help"}},
		{[]string{"keys", ""}, []string{"create", "list", "revoke", "activate", "rotate", "delete"}},
		{[]string{"keys", "create", "--"}, []string{"--client", "--name", "--expires", "--json", "--database-url"}},
		{[]string{"serve", "--log-level", ""}, []string{"debug", "info", "warn", "error"}},
		{[]string{"--log-format", ""}, []string{"text", "json"}},
		{[]string{"help", "keys", "r"}, []string{"revoke", "rotate"}},
	} {
		r := runBinary(t, dir, baseEnv(), append([]string{"__completeNoDesc"}, tc.words...)...)
		for _, w := range tc.want {
			if r.code != 0 || !strings.Contains("\n"+r.stdout, "\n"+w+"\n") {
				t.Errorf("completing %q: want %s in %v", tc.words, w, r)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "llmauth.db")); err == nil {
		t.Error("completion created llmauth.db")
	}
}

// TestUsageErrors: bad usage and bad input exit 2 with one line on stderr,
// print nothing on stdout and write nothing (not even the database file).
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"nosuch"},
		{"clients"},
		{"clients", "frob"},
		{"clients", "create"},
		{"clients", "create", "a", "b"},
		{"clients", "create", "Bad_Name"},
		{"clients", "create", "--", "-leading-dash"},
		{"clients", "create", strings.Repeat("a", 64)},
		{"clients", "create", "tab\tname"},
		{"clients", "create", "foo", "--bogus"},
		{"clients", "list", "--bogus"},
		{"clients", "list", "extra"},
		{"clients", "delete", "UPPER"},
		{"clients", "lock"},
		{"clients", "lock", "Bad_Name"},
		{"clients", "lock", "a", "b"},
		{"clients", "unlock", "UPPER"},
		{"clients", "unlock", "--bogus", "a"},
		{"keys"},
		{"keys", "create"},
		{"keys", "create", "--client"},
		{"keys", "create", "--client", "Bad"},
		{"keys", "create", "--client", "foo", "--expires", "soon"},
		{"keys", "create", "--client", "foo", "--expires", "0s"},
		{"keys", "create", "--client", "foo", "--expires", "-5m"},
		{"keys", "create", "--client", "foo", "extra"},
		{"keys", "list"},
		{"keys", "list", "--client", "-x"},
		{"keys", "revoke"},
		{"keys", "revoke", "abc"},
		{"keys", "revoke", "0"},
		{"keys", "revoke", "--", "-3"},
		{"keys", "revoke", "1", "2"},
		{"keys", "activate", "x"},
		{"keys", "delete", "1.5"},
		{"keys", "rotate", "1", "--grace", "-1s"},
		{"keys", "rotate", "1", "--grace", "later"},
		{"--addr", "127.0.0.1:1", "migrate"},
		{"--bogus"},
		{"migrate", "extra"},
		{"serve", "--addr", "nonsense"},
		{"serve", "--addr", "127.0.0.1:99999"},
		{"serve", "--addr", "127.0.0.1:http"},
		{"serve", "--log-level", "loud"},
		{"serve", "--log-format", "xml"},
		{"serve", "--cache-ttl", "0s"},
		{"serve", "--poll-interval", "-1s"},
		{"serve", "--trusted-proxy", "not-a-cidr"},
		{"serve", "--metrics-addr", "nonsense"},
		{"serve", "--metrics-addr", "127.0.0.1:-1"},
		{"--metrics-addr", "127.0.0.1:9", "migrate"},
		{"--log-level", "loud"},
		{"help", "nosuch"},
	} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			db := filepath.Join(dir, "store.db")
			r := runBinary(t, dir, baseEnv(), append(args, "--database-url", "sqlite:"+db)...)
			if r.code != 2 || r.stdout != "" {
				t.Fatalf("want exit 2 and nothing on stdout; got %v", r)
			}
			oneLineOfStderr(t, r)
			for _, f := range []string{db, filepath.Join(dir, "llmauth.db")} {
				if _, err := os.Stat(f); err == nil {
					t.Errorf("%s was created", f)
				}
			}
		})
	}
}

// TestNegativeNumbers: a negative number where a key id or a name goes is
// refused as a bad argument, in the words of that argument's check, not as
// an unknown flag; a flag's own value may still start with a minus.
func TestNegativeNumbers(t *testing.T) {
	t.Parallel()
	const badID = `example: invalid key id "-1": want a positive integer (see keys list)` + "\n"
	for _, tc := range []struct {
		args       []string
		wantStderr string
	}{
		{[]string{"keys", "revoke", "-1"}, badID},
		{[]string{"keys", "activate", "-1"}, badID},
		{[]string{"keys", "delete", "-1"}, badID},
		{[]string{"keys", "rotate", "-1", "--grace", "1h"}, badID},
		{[]string{"keys", "rotate", "--json", "-1"}, badID},
		{[]string{"keys", "rotate", "--grace=1h", "-1"}, badID},
		{[]string{"keys", "rotate", "--grace", "-1", "3"}, "example: keys rotate: invalid --grace \"-1\": want a duration such as 90s, 720h or 30d\n"},
		{[]string{"keys", "revoke", "-1x"}, "example: keys revoke: unknown shorthand flag: '1' in -1x (see example keys revoke --help)\n"},
		{[]string{"clients", "create", "-1"}, "example: invalid client name \"-1\": must match ^[a-z0-9][a-z0-9-]{0,62}$\n"},
		{[]string{"keys", "create", "--client", "bot", "-5"}, "example: keys create: unexpected argument \"-5\" (usage: example keys create --client NAME [--name LABEL] [--description TEXT] [--expires DURATION] [--json])\n"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			r := runBinary(t, dir, baseEnv(), append(tc.args, "--database-url", "sqlite:"+filepath.Join(dir, "store.db"))...)
			if r.code != 2 || r.stdout != "" || r.stderr != tc.wantStderr {
				t.Fatalf("want exit 2 and stderr %q; got %v", tc.wantStderr, r)
			}
		})
	}
}

// TestDatabaseURLErrors: a malformed URL is bad input (2), an unreachable
// database a failure (1); neither leaks a password.
func TestDatabaseURLErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url  string
		code int
		// listsEmpty: a missing SQLite file, which clients list answers
		// as an empty database (see TestReadOnlyMissingDatabase); serve
		// still fails.
		listsEmpty bool
	}{
		{"mysql://localhost/x", 2, false},
		{"sqlite:", 2, false},
		{"sqlite:x.db?mode=ro", 2, false},
		{"postgres://user:hunter2@127.0.0.1:notaport/x", 2, false},
		{"postgres://user:hunter2\"q@127.0.0.1:notaport/x", 2, false},
		{"postgresql://user:hunter2@[::1/x", 2, false},
		{"llmauth.db", 2, false},
		{"postgres://user:hunter2@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", 1, false},
		{"sqlite:" + filepath.Join(t.TempDir(), "no", "such", "dir", "x.db"), 1, true},
	} {
		t.Run(tc.url, func(t *testing.T) {
			t.Parallel()
			runs := []result{runBinary(t, t.TempDir(), baseEnv(), "serve", "--addr", "127.0.0.1:0", "--database-url", tc.url)}
			if !tc.listsEmpty {
				runs = append(runs,
					runBinary(t, t.TempDir(), baseEnv(), "--database-url", tc.url, "clients", "list"),
					runBinary(t, t.TempDir(), baseEnv(), "clients", "list", "--database-url", tc.url),
					runBinary(t, t.TempDir(), baseEnv(envDatabaseURL+"="+tc.url), "clients", "list"))
			}
			for _, r := range runs {
				if r.code != tc.code || r.stdout != "" {
					t.Fatalf("want exit %d and nothing on stdout; got %v", tc.code, r)
				}
				oneLineOfStderr(t, r)
				if strings.Contains(r.stderr, "hunter2") {
					t.Errorf("stderr leaks the password: %q", r.stderr)
				}
			}
		})
	}
}

// TestDatabaseSelection: the flag wins over DATABASE_URL, which wins over
// the embedded default llmauth.db in the working directory.
func TestDatabaseSelection(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	envDB := filepath.Join(t.TempDir(), "env.db")
	flagDB := filepath.Join(t.TempDir(), "flag.db")

	if r := runBinary(t, dir, baseEnv(), "clients", "create", "in-default"); r.code != 0 {
		t.Fatal(r)
	}
	if _, err := os.Stat(filepath.Join(dir, "llmauth.db")); err != nil {
		t.Fatalf("the embedded default did not create llmauth.db: %v", err)
	}
	env := baseEnv(envDatabaseURL + "=sqlite:" + envDB)
	if r := runBinary(t, dir, env, "clients", "create", "in-env"); r.code != 0 {
		t.Fatal(r)
	}
	if r := runBinary(t, dir, env, "clients", "create", "in-flag", "--database-url", "file:"+flagDB); r.code != 0 {
		t.Fatal(r)
	}
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{baseEnv(), nil, "in-default"},
		{env, nil, "in-env"},
		{env, []string{"--database-url", "sqlite:" + flagDB}, "in-flag"},
	} {
		r := runBinary(t, dir, tc.env, append([]string{"clients", "list", "--json"}, tc.args...)...)
		var got []clientView
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 1 || got[0].Name != tc.want {
			t.Errorf("clients list %v: want only %s, got %v (%v)", tc.args, tc.want, r, err)
		}
	}
}

// TestCLI walks every command on both stores.
func TestCLI(t *testing.T) {
	t.Parallel()
	for _, sc := range stores() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, sc.newURL(t))

			// Empty lists are [] in JSON.
			c.ok("migrate")
			c.ok("migrate")
			if r := c.ok("clients", "list", "--json"); strings.TrimSpace(r.stdout) != "[]" {
				t.Errorf("clients list --json on an empty database: %q", r.stdout)
			}

			// Flags before and after positionals.
			if r := c.ok("clients", "create", "bot-a"); r.stdout != "" {
				t.Errorf("clients create printed %q on stdout", r.stdout)
			}
			if r := runBinary(t, c.dir, c.env, "--database-url", c.db, "clients", "create", "bot-b"); r.code != 0 {
				t.Fatal(r)
			}
			if r := runBinary(t, c.dir, c.env, "clients", "--database-url", c.db, "create", "bot-c"); r.code != 0 {
				t.Fatal(r)
			}
			if r := runBinary(t, c.dir, baseEnv(envDatabaseURL+"="+c.db), "clients", "create", "bot-d"); r.code != 0 {
				t.Fatal(r)
			}
			if r := c.ok("keys", "list", "--json", "--client", "bot-a"); strings.TrimSpace(r.stdout) != "[]" {
				t.Errorf("keys list --json of a client without keys: %q", r.stdout)
			}

			// Bad input that needs the database: exit 2, one line, no write.
			before := c.ok("clients", "list", "--json").stdout
			for _, args := range [][]string{
				{"clients", "create", "bot-a"},
				{"clients", "delete", "ghost"},
				{"clients", "lock", "ghost"},
				{"clients", "unlock", "ghost"},
				{"keys", "create", "--client", "ghost"},
				{"keys", "list", "--client", "ghost"},
				{"keys", "revoke", "999999"},
				{"keys", "activate", "999999"},
				{"keys", "rotate", "999999"},
				{"keys", "delete", "999999"},
				{"keys", "create", "--client", "bot-a", "--name", strings.Repeat("n", 201)},
			} {
				r := c.run(args...)
				if r.code != 2 || r.stdout != "" {
					t.Errorf("%v: want exit 2, nothing on stdout; got %v", args, r)
				}
				oneLineOfStderr(t, r)
			}
			if after := c.ok("clients", "list", "--json").stdout; after != before {
				t.Errorf("a refused command changed the clients:\nbefore %s\nafter %s", before, after)
			}

			// keys create: the token alone on one line.
			r := c.ok("keys", "create", "--client", "bot-a", "--name", "plain")
			if !tokenRE.MatchString(r.stdout) || strings.TrimSpace(r.stdout) != tokenRE.FindString(r.stdout) || !strings.HasSuffix(r.stdout, "\n") || strings.Count(r.stdout, "\n") != 1 {
				t.Errorf("keys create stdout is not the token alone on one line: %q", r.stdout)
			}
			if !strings.Contains(r.stderr, "now requires a key") {
				t.Errorf("the first key does not say the client now requires a key: %q", r.stderr)
			}
			plain := strings.TrimSpace(r.stdout)

			// keys create --json.
			r = c.ok("keys", "create", "--json", "--client", "bot-a", "--name", "ci", "--expires", "720h")
			var raw map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
				t.Fatalf("keys create --json: %v in %q", err, r.stdout)
			}
			for _, f := range []string{"id", "token", "client", "name", "prefix", "expires_at", "created_at"} {
				if _, ok := raw[f]; !ok {
					t.Errorf("keys create --json lacks %q: %s", f, r.stdout)
				}
			}
			var ci createdKey
			_ = json.Unmarshal([]byte(r.stdout), &ci)
			if ci.Client != "bot-a" || ci.Name != "ci" || !tokenRE.MatchString(ci.Token) || !strings.HasPrefix(ci.Token, ci.Prefix) || ci.ExpiresAt == nil {
				t.Errorf("keys create --json: %+v", ci)
			} else if d := time.Until(*ci.ExpiresAt); d < 719*time.Hour || d > 721*time.Hour {
				t.Errorf("expires_at %v is not 720h away", ci.ExpiresAt)
			}
			noExpiry := c.createKey("bot-a")
			if r := c.ok("keys", "create", "--client", "bot-a", "--json"); !strings.Contains(r.stdout, `"expires_at": null`) {
				t.Errorf("expires_at is not null without --expires: %s", r.stdout)
			}

			// keys list: never the token or its digest.
			r = c.ok("keys", "list", "--client", "bot-a", "--json")
			var listed []map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil || len(listed) != 4 {
				t.Fatalf("keys list --json: %v, %q", err, r.stdout)
			}
			for _, k := range listed {
				for _, f := range []string{"id", "name", "active", "expires_at", "last_used_at", "state", "prefix", "created_at"} {
					if _, ok := k[f]; !ok {
						t.Errorf("keys list --json lacks %q: %v", f, k)
					}
				}
				for f := range k {
					if strings.Contains(f, "token") || strings.Contains(f, "digest") || strings.Contains(f, "secret") || strings.Contains(f, "hash") {
						t.Errorf("keys list --json has a field %q", f)
					}
				}
			}
			table := c.ok("keys", "list", "--client", "bot-a")
			for _, out := range []string{r.stdout, table.stdout} {
				if tokenRE.MatchString(out) || strings.Contains(out, plain[20:]) {
					t.Errorf("keys list shows a token: %s", out)
				}
			}
			if !strings.Contains(table.stdout, "ID") || !strings.Contains(table.stdout, "LAST USED") || !strings.Contains(table.stdout, `"ci"`) {
				t.Errorf("keys list table:\n%s", table.stdout)
			}

			// clients list.
			r = c.ok("clients", "list", "--json")
			var clients []map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &clients); err != nil || len(clients) != 4 {
				t.Fatalf("clients list --json: %v %q", err, r.stdout)
			}
			for _, cl := range clients {
				for _, f := range []string{"name", "requires_key", "locked", "active_keys", "keys", "created_at"} {
					if _, ok := cl[f]; !ok {
						t.Errorf("clients list --json lacks %q: %v", f, cl)
					}
				}
				if wantLocked := cl["name"] == "bot-a"; cl["requires_key"] != wantLocked {
					t.Errorf("client %v requires_key = %v", cl["name"], cl["requires_key"])
				}
			}
			if r := c.ok("clients", "list"); !strings.Contains(r.stdout, "REQUIRES KEY") || !strings.Contains(r.stdout, "bot-d") {
				t.Errorf("clients list table:\n%s", r.stdout)
			}

			// keys revoke: nothing on stdout, a confirmation, and a warning
			// only for the last active key.
			all := c.listKeys("bot-a")
			for i, k := range all {
				r := c.ok("keys", "revoke", itoa(k.ID))
				if r.stdout != "" || !strings.Contains(r.stderr, "revoked") {
					t.Errorf("keys revoke: %v", r)
				}
				last := i == len(all)-1
				if warned := strings.Contains(r.stderr, "anonymous"); warned != last {
					t.Errorf("revoking key %d of %d: warning about anonymous requests = %v; stderr %q", i+1, len(all), warned, r.stderr)
				}
			}
			for _, k := range c.listKeys("bot-a") {
				if k.Active || k.State != "revoked" {
					t.Errorf("after revoke: %+v", k)
				}
			}
			// Revoking again succeeds, says so, and warns no more.
			if r := c.ok("keys", "revoke", itoa(all[0].ID)); r.stdout != "" || !strings.Contains(r.stderr, "already revoked") || strings.Contains(r.stderr, "anonymous") {
				t.Errorf("revoking a revoked key: %v", r)
			}

			// keys activate locks the client again; keys rotate prints a
			// new token; keys delete of the last active key warns.
			c.ok("keys", "activate", itoa(noExpiry.ID))
			r = c.ok("keys", "rotate", itoa(noExpiry.ID), "--grace", "1h")
			if !tokenRE.MatchString(r.stdout) || strings.Count(r.stdout, "\n") != 1 {
				t.Errorf("keys rotate stdout: %q", r.stdout)
			}
			r = c.ok("keys", "rotate", itoa(noExpiry.ID), "--json")
			var rotated createdKey
			if err := json.Unmarshal([]byte(r.stdout), &rotated); err != nil || !tokenRE.MatchString(rotated.Token) || rotated.Client != "bot-a" {
				t.Errorf("keys rotate --json: %v %q", err, r.stdout)
			}
			for _, k := range c.listKeys("bot-a") {
				if k.Active {
					if r := c.ok("keys", "delete", itoa(k.ID)); r.stdout != "" {
						t.Errorf("keys delete printed %q", r.stdout)
					}
				}
			}
			if r := c.ok("clients", "list", "--json"); strings.Contains(r.stdout, `"requires_key": true`) {
				t.Errorf("a client still requires a key: %s", r.stdout)
			}

			// clients delete.
			c.ok("clients", "delete", "bot-a")
			if r := c.run("keys", "list", "--client", "bot-a"); r.code != 2 {
				t.Errorf("keys list of a deleted client: %v", r)
			}
		})
	}
}

func itoa(id int64) string { return strconv.FormatInt(id, 10) }

// TestConcurrentFirstRun: commands started together on a fresh database
// (a deploy that starts several servers, a script that creates clients in
// parallel) all migrate it and succeed.
func TestConcurrentFirstRun(t *testing.T) {
	t.Parallel()
	// SQLite rounds are cheap, and opening a fresh file from several
	// processes at once failed about one time in a hundred before Open
	// retried SQLITE_BUSY: run enough of them to see that.
	rounds := map[string]int{"sqlite": 25, "postgres": 3}
	const parallel = 5
	for _, sc := range stores() {
		t.Run(sc.name, func(t *testing.T) {
			for round := range rounds[sc.name] {
				c := newCLI(t, sc.newURL(t))
				results := make(chan result, parallel)
				for i := range parallel {
					go func() {
						if i == 0 {
							results <- c.run("migrate")
							return
						}
						results <- c.run("clients", "create", fmt.Sprintf("bot-%d", i))
					}()
				}
				for range parallel {
					if r := <-results; r.code != 0 {
						t.Errorf("round %d: %v", round, r)
					}
				}
				var got []clientView
				if err := json.Unmarshal([]byte(c.ok("clients", "list", "--json").stdout), &got); err != nil || len(got) != parallel-1 {
					t.Errorf("round %d: clients after the first run: %v (%v)", round, got, err)
				}
			}
		})
	}
}

// TestServeStalenessFlags pins the words of every refusal of the staleness
// flags: a poll must renew the lease before it lapses.
func TestServeStalenessFlags(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-staleness", "2s"}, "example: serve: --max-staleness 2s exceeds the 1s bound on changes"},
		{[]string{"--max-staleness", "500ms"}, "example: serve: --poll-interval 500ms (default 500ms) must be at most half of --max-staleness 500ms (default 1s), so that a poll renews the lease before it lapses"},
		{[]string{"--poll-interval", "999ms"}, "example: serve: --poll-interval 999ms (default 500ms) must be at most half of --max-staleness 1s (default 1s), so that a poll renews the lease before it lapses"},
		{[]string{"--poll-interval", "1ns"}, "example: serve: --poll-interval 1ns is below 10ms"},
		{[]string{"--stale-if-error", "-1s"}, "example: serve: --stale-if-error must not be negative (0 turns it off), got -1s"},
		{[]string{"--max-staleness", "0s"}, "example: serve: --max-staleness must be a positive duration, got 0s"},
	} {
		t.Run(strings.Join(tt.args, "_"), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			r := runBinary(t, dir, baseEnv(), append([]string{"serve", "--database-url", "sqlite:" + filepath.Join(dir, "k.db")}, tt.args...)...)
			if r.code != 2 || r.stdout != "" || strings.TrimSpace(r.stderr) != tt.want {
				t.Fatalf("got %v\nwant exit 2 and stderr %q", r, tt.want)
			}
		})
	}
}
