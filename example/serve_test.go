package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llmauth/llmauth/internal/pgtest"
)

// metricValue returns the value of llmauth_requests_total{client, outcome}
// in a /metrics scrape, and whether the series exists.
func metricValue(scrape, client, outcome string) (float64, bool) {
	want := `llmauth_requests_total{client="` + client + `",outcome="` + outcome + `"} `
	sc := bufio.NewScanner(strings.NewReader(scrape))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// refused checks a refusal: its status, its RFC 6750 challenge and
// Cache-Control: no-store. It reports whether the status was right.
func refused(t *testing.T, what string, r response, status int, challenge string) bool {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status %d, want %d: %s", what, r.status, status, r.body)
		return false
	}
	if got := r.header.Get("WWW-Authenticate"); got != challenge {
		t.Errorf("%s: WWW-Authenticate %q, want %q", what, got, challenge)
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("%s: Cache-Control %q", what, got)
	}
	return true
}

// TestServeDecisionTable walks the contract's decision table over real
// HTTP, on both stores.
func TestServeDecisionTable(t *testing.T) {
	t.Parallel()
	for _, sc := range stores() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, sc.newURL(t))
			for _, name := range []string{"open-bot", "secure-bot", "other-bot"} {
				c.ok("clients", "create", name)
			}
			// The expiring key goes first so that it has expired by the
			// time it is tried.
			expiring := c.createKey("secure-bot", "--name", "short", "--expires", "3s")
			valid := c.createKey("secure-bot", "--name", "ci")
			other := c.createKey("other-bot")
			revoked := c.createKey("secure-bot", "--name", "old")
			c.ok("keys", "revoke", itoa(revoked.ID))
			deleted := c.createKey("secure-bot", "--name", "gone")
			c.ok("keys", "delete", itoa(deleted.ID))

			s := startServer(t, c.dir, c.env, "--database-url", c.db)

			// Open client: anonymous, Authorization not examined.
			for _, h := range [][]string{nil, {"Authorization", "Basic Zm9vOmJhcg=="}, {"Authorization", "Bearer garbage!!"},
				{"Authorization", "Bearer " + valid.Token}, {"Authorization", "a", "Authorization", "b"}} {
				r := do(t, http.MethodPost, s.base+"/v1/clients/open-bot/chat", `{"message":"hi"}`, h...)
				got := decodeChat(t, r)
				if got.Client != "open-bot" || !got.Anonymous || got.KeyID != nil || got.Reply != "hi" {
					t.Errorf("open client with %v: %s", h, r.body)
				}
			}

			// Keyed client, valid token.
			got := decodeChat(t, s.chat("secure-bot", valid.Token))
			if got.Client != "secure-bot" || got.Anonymous || got.KeyID == nil || *got.KeyID != valid.ID || got.KeyName == nil || *got.KeyName != "ci" {
				t.Errorf("valid token: %+v", got)
			}
			// Bearer is case-insensitive (RFC 7235).
			if r := do(t, http.MethodPost, s.base+"/v1/clients/secure-bot/chat", "", "Authorization", "bearer "+valid.Token); r.status != http.StatusOK {
				t.Errorf("lower-case bearer: %d %s", r.status, r.body)
			}

			// No Authorization: 401, challenge without error.
			refused(t, "no token", s.chat("secure-bot", ""), http.StatusUnauthorized, `Bearer realm="llmauth"`)

			// Every bad token: 401, one body, error="invalid_token".
			if time.Now().Before(*expiring.ExpiresAt) {
				time.Sleep(time.Until(*expiring.ExpiresAt) + 50*time.Millisecond)
			}
			badChecksum := valid.Token[:len(valid.Token)-1] + flip(valid.Token[len(valid.Token)-1])
			var firstBody []byte
			for what, token := range map[string]string{
				"another client's": other.Token,
				"revoked":          revoked.Token,
				"expired":          expiring.Token,
				"bad checksum":     badChecksum,
				"unknown":          deleted.Token,
				"not a token":      "abcdef",
			} {
				r := s.chat("secure-bot", token)
				if !refused(t, what+" token", r, http.StatusUnauthorized, `Bearer realm="llmauth", error="invalid_token"`) {
					continue
				}
				if firstBody == nil {
					firstBody = r.body
				} else if !bytes.Equal(firstBody, r.body) {
					t.Errorf("%s token: body %s differs from %s", what, r.body, firstBody)
				}
				if bytes.Contains(r.body, []byte(token)) {
					t.Errorf("%s token: the response repeats the token", what)
				}
			}

			// Not one well-formed Bearer credential: 400.
			for what, h := range map[string][]string{
				"two headers":    {"Authorization", "Bearer " + valid.Token, "Authorization", "Bearer " + valid.Token},
				"empty token":    {"Authorization", "Bearer "},
				"scheme only":    {"Authorization", "Bearer"},
				"bad characters": {"Authorization", "Bearer abc,def"},
				"two tokens":     {"Authorization", "Bearer " + valid.Token + " " + valid.Token},
				"basic scheme":   {"Authorization", "Basic Zm9vOmJhcg=="},
			} {
				r := do(t, http.MethodPost, s.base+"/v1/clients/secure-bot/chat", "", h...)
				refused(t, what, r, http.StatusBadRequest, `Bearer realm="llmauth", error="invalid_request"`)
			}

			// Unknown clients, including names no client can have.
			// A token pasted into the path must not reach the logs either.
			for _, name := range []string{"nobody", "Evil_Label", "x%22%7D%20injected", strings.Repeat("a", 64), valid.Token} {
				if r := s.chat(name, valid.Token); r.status != http.StatusNotFound {
					t.Errorf("unknown client %q: %d %s", name, r.status, r.body)
				}
			}

			// The completions stub and the models list sit behind the same
			// protection.
			body := `{"model":"gpt-test","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello llmauth"}]}`
			if r := do(t, http.MethodPost, s.base+"/v1/clients/secure-bot/chat/completions", body); r.status != http.StatusUnauthorized {
				t.Errorf("completions without token: %d", r.status)
			}
			r := do(t, http.MethodPost, s.base+"/v1/clients/secure-bot/chat/completions", body, "Authorization", "Bearer "+valid.Token)
			var comp completion
			if err := json.Unmarshal(r.body, &comp); err != nil || r.status != http.StatusOK || len(comp.Choices) != 1 ||
				comp.Choices[0].Message.Content != "hello llmauth" || comp.Model != "gpt-test" || comp.Object != "chat.completion" {
				t.Errorf("completions: %d %s", r.status, r.body)
			}
			if r := do(t, http.MethodGet, s.base+"/v1/clients/open-bot/models", ""); r.status != http.StatusOK || !bytes.Contains(r.body, []byte(echoModel)) {
				t.Errorf("models: %d %s", r.status, r.body)
			}

			// Probes.
			if r := do(t, http.MethodGet, s.base+"/healthz", ""); r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"ok"`)) {
				t.Errorf("healthz: %d %s", r.status, r.body)
			}
			if r := do(t, http.MethodGet, s.base+"/readyz", ""); r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"ready"`)) {
				t.Errorf("readyz: %d %s", r.status, r.body)
			}

			// Metrics: the right series, and no attacker-chosen label.
			scrape := string(do(t, http.MethodGet, s.base+"/metrics", "").body)
			for _, want := range []struct {
				client, outcome string
				min             float64
			}{
				{"open-bot", "anonymous", 5},
				{"secure-bot", "authenticated", 3},
				{"secure-bot", "missing_token", 2},
				{"secure-bot", "invalid_token", 6},
				{"secure-bot", "malformed", 6},
				{"_unknown", "unknown_client", 4},
			} {
				if v, ok := metricValue(scrape, want.client, want.outcome); !ok || v < want.min {
					t.Errorf("llmauth_requests_total{client=%q,outcome=%q} = %v (present %v), want >= %v", want.client, want.outcome, v, ok, want.min)
				}
			}
			for _, junk := range []string{"nobody", "Evil_Label", "injected", strings.Repeat("a", 64)} {
				if strings.Contains(scrape, junk) {
					t.Errorf("/metrics contains the junk client name %q", junk)
				}
			}
			if !strings.Contains(scrape, "go_goroutines") || !strings.Contains(scrape, "process_") {
				t.Error("/metrics lacks the Go and process collectors")
			}

			// No log line carries a token.
			if tok := tokenRE.FindString(s.stderr.String()); tok != "" {
				t.Errorf("the server log contains a token: %s", tok)
			}
			if !strings.Contains(s.stderr.String(), "route=/v1/clients/:client/chat") {
				t.Errorf("the request log lacks the route:\n%s", s.stderr.String())
			}
			if code := s.signal(syscall.SIGTERM); code != 0 {
				t.Errorf("exit code after SIGTERM: %d", code)
			}
		})
	}
}

// flip returns a base62 character other than b.
func flip(b byte) string {
	if b == 'A' {
		return "B"
	}
	return "A"
}

// TestServeDatabaseDown: with the database stopped and nothing usable
// cached, the protected route answers 503 with Retry-After, never 200, and
// /readyz turns 503; both recover when the database is back.
func TestServeDatabaseDown(t *testing.T) {
	t.Parallel()
	pg := pgtest.StartServer(t)
	url := pgtest.NewDatabaseOn(t, pg.URL())
	c := newCLI(t, url)
	for _, name := range []string{"warm", "cold", "cold-open"} {
		c.ok("clients", "create", name)
	}
	warm := c.createKey("warm")
	cold := c.createKey("cold")

	s := startServer(t, c.dir, c.env, "--database-url", url)
	decodeChat(t, s.chat("warm", warm.Token))
	if r := do(t, http.MethodGet, s.base+"/readyz", ""); r.status != http.StatusOK {
		t.Fatalf("readyz before the outage: %d", r.status)
	}

	pg.Stop(t)
	eventually(t, 15*time.Second, "readyz turns 503", func() bool {
		return do(t, http.MethodGet, s.base+"/readyz", "").status == http.StatusServiceUnavailable
	})
	if r := do(t, http.MethodGet, s.base+"/readyz", ""); r.header.Get("Retry-After") == "" {
		t.Errorf("readyz 503 without Retry-After: %v", r.header)
	}
	for what, r := range map[string]response{
		"keyed client, valid token": s.chat("cold", cold.Token),
		"keyed client, no token":    s.chat("cold", ""),
		"open client":               s.chat("cold-open", ""),
	} {
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Errorf("%s with the database down: %d, Retry-After %q, body %s", what, r.status, r.header.Get("Retry-After"), r.body)
		}
	}
	if r := do(t, http.MethodGet, s.base+"/healthz", ""); r.status != http.StatusOK {
		t.Errorf("healthz with the database down: %d", r.status)
	}
	if v, ok := metricValue(string(do(t, http.MethodGet, s.base+"/metrics", "").body), "_unknown", "unavailable"); !ok || v < 3 {
		t.Errorf("unavailable decisions counted %v", v)
	}

	pg.Start(t)
	eventually(t, 30*time.Second, "readyz recovers", func() bool {
		return do(t, http.MethodGet, s.base+"/readyz", "").status == http.StatusOK
	})
	eventually(t, 10*time.Second, "the keyed client recovers", func() bool {
		return s.chat("cold", cold.Token).status == http.StatusOK
	})
	if r := s.chat("cold-open", ""); r.status != http.StatusOK {
		t.Errorf("open client after recovery: %d", r.status)
	}
	if code := s.signal(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM: %d", code)
	}
}

// TestServeSQLiteFileReplaced: a backup moved over the SQLite file of a
// running server (here one in which the client is open) must not be
// answered from the old file or from the cache: every decision fails
// closed with 503 until a restart opens the new file.
func TestServeSQLiteFileReplaced(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "llmauth.db")
	c := newCLI(t, "sqlite:"+path)
	c.ok("clients", "create", "bot")
	key := c.createKey("bot")
	s := startServer(t, c.dir, c.env, "--database-url", c.db)
	decodeChat(t, s.chat("bot", key.Token)) // cached: state and key

	backup := filepath.Join(t.TempDir(), "backup.db")
	newCLI(t, "sqlite:"+backup).ok("clients", "create", "bot") // no key: open
	if err := os.Rename(backup, path); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "readyz turns 503", func() bool {
		return do(t, http.MethodGet, s.base+"/readyz", "").status == http.StatusServiceUnavailable
	})
	eventually(t, 5*time.Second, "the cached decision is dropped", func() bool {
		return s.chat("bot", key.Token).status == http.StatusServiceUnavailable
	})
	for what, r := range map[string]response{"with the old token": s.chat("bot", key.Token), "anonymous": s.chat("bot", "")} {
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Errorf("%s after the file was replaced: %d %s", what, r.status, r.body)
		}
	}
	if !strings.Contains(s.stderr.String(), "replaced or removed") {
		t.Errorf("no log line says the file was replaced:\n%s", s.stderr.String())
	}
	// Last-used times still pending (the key's uses above, unless a
	// periodic flush wrote them first) cannot be written: the shutdown
	// then says so and fails.
	code := s.signal(syscall.SIGTERM)
	want := 0
	if strings.Contains(s.stderr.String(), "at shutdown: llmauth: writing last-used times") {
		want = 1
	}
	if code != want {
		t.Errorf("exit code after SIGTERM: %d, want %d", code, want)
	}

	// A restart opens the new file, where the client is open.
	s = startServer(t, c.dir, c.env, "--database-url", c.db)
	if got := decodeChat(t, s.chat("bot", "")); !got.Anonymous {
		t.Fatalf("after the restart: %+v", got)
	}
}

var demoTokenRE = regexp.MustCompile(`Bearer (llmk_[0-9A-Za-z]{61})`)

// TestServeDemo: on the embedded default with no client, serve creates the
// demo clients once and says how to call them; a restart keeps the data
// and creates nothing.
func TestServeDemo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := baseEnv()

	// A first start that cannot listen must not create the demo: its token
	// would be lost, since it is shown only once.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if r := runBinary(t, dir, env, "serve", "--addr", busy.Addr().String()); r.code != 1 || !strings.Contains(r.stderr, "listen") {
		t.Fatalf("serve on a busy port: %v", r)
	}
	busy.Close()
	if _, err := os.Stat(filepath.Join(dir, "llmauth.db")); err == nil {
		t.Fatal("a failed start created the database")
	}

	s := startServer(t, dir, env)
	out := s.stderr.String()
	m := demoTokenRE.FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "demo-secure") || !strings.Contains(out, "demo-open") || !strings.Contains(out, "curl") {
		t.Fatalf("no demo instructions on stderr:\n%s", out)
	}
	token := m[1]
	if got := decodeChat(t, s.chat("demo-secure", token)); got.Anonymous || got.KeyName == nil || *got.KeyName != "demo" {
		t.Errorf("demo token: %+v", got)
	}
	if r := s.chat("demo-secure", ""); r.status != http.StatusUnauthorized {
		t.Errorf("demo-secure without token: %d", r.status)
	}
	if got := decodeChat(t, s.chat("demo-open", "")); !got.Anonymous {
		t.Errorf("demo-open: %+v", got)
	}
	if code := s.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code after SIGTERM: %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "llmauth.db")); err != nil {
		t.Fatalf("llmauth.db: %v", err)
	}

	s = startServer(t, dir, env)
	if out := s.stderr.String(); strings.Contains(out, "Demo data") || tokenRE.MatchString(out) {
		t.Errorf("the restart printed the demo again:\n%s", out)
	}
	decodeChat(t, s.chat("demo-secure", token))
	r := runBinary(t, dir, env, "clients", "list", "--json")
	var clients []clientView
	if err := json.Unmarshal([]byte(r.stdout), &clients); err != nil || len(clients) != 2 {
		t.Errorf("clients after restart: %v %v", err, r)
	}
	if code := s.signal(syscall.SIGINT); code != 0 {
		t.Errorf("exit code after SIGINT: %d", code)
	}

	// A database named explicitly gets no demo, even when empty.
	explicit := startServer(t, dir, env, "--database-url", "sqlite:"+filepath.Join(t.TempDir(), "x.db"))
	if strings.Contains(explicit.stderr.String(), "Demo data") {
		t.Error("demo created on an explicit database")
	}
}

// TestServeKilledKeepsKeys: a SIGKILLed server loses no committed key.
func TestServeKilledKeepsKeys(t *testing.T) {
	t.Parallel()
	for _, sc := range stores() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, sc.newURL(t))
			c.ok("clients", "create", "bot")
			first := c.createKey("bot")
			s := startServer(t, c.dir, c.env, "--database-url", c.db, "--usage-flush-interval", "100ms")
			decodeChat(t, s.chat("bot", first.Token))
			made := []createdKey{first}
			for i := 0; i < 3; i++ {
				made = append(made, c.createKey("bot", "--name", "k"+strconv.Itoa(i)))
				decodeChat(t, s.chat("bot", made[len(made)-1].Token))
			}
			if code := s.signal(syscall.SIGKILL); code != -1 {
				t.Logf("exit code after SIGKILL: %d", code)
			}
			listed := c.listKeys("bot")
			if len(listed) != len(made) {
				t.Fatalf("after SIGKILL: %d keys listed, %d created", len(listed), len(made))
			}
			for i, k := range listed {
				if k.ID != made[i].ID || !k.Active {
					t.Errorf("key %d after SIGKILL: %+v", made[i].ID, k)
				}
			}
			// And a new server accepts them.
			s = startServer(t, c.dir, c.env, "--database-url", c.db)
			for _, k := range made {
				decodeChat(t, s.chat("bot", k.Token))
			}
		})
	}
}

// TestServeShutdownFlushesUsage: SIGTERM exits 0 after writing
// last_used_at, which with a one-hour flush interval only the shutdown
// flush can have written.
func TestServeShutdownFlushesUsage(t *testing.T) {
	t.Parallel()
	for _, sc := range stores() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, sc.newURL(t))
			c.ok("clients", "create", "bot")
			used := c.createKey("bot", "--name", "used")
			unused := c.createKey("bot", "--name", "unused")
			s := startServer(t, c.dir, c.env, "--database-url", c.db, "--usage-flush-interval", "1h")
			before := time.Now().Add(-time.Second)
			decodeChat(t, s.chat("bot", used.Token))
			decodeChat(t, s.chat("bot", used.Token))
			for _, k := range c.listKeys("bot") {
				if k.LastUsedAt != nil {
					t.Fatalf("last_used_at written before shutdown: %+v", k)
				}
			}
			if code := s.signal(syscall.SIGTERM); code != 0 {
				t.Fatalf("exit code after SIGTERM: %d; stderr:\n%s", code, s.stderr.String())
			}
			for _, k := range c.listKeys("bot") {
				switch k.ID {
				case used.ID:
					if k.LastUsedAt == nil || k.LastUsedAt.Before(before) || k.LastUsedAt.After(time.Now().Add(time.Second)) {
						t.Errorf("used key after shutdown: last_used_at %v", k.LastUsedAt)
					}
				case unused.ID:
					if k.LastUsedAt != nil {
						t.Errorf("unused key got last_used_at %v", k.LastUsedAt)
					}
				}
			}
		})
	}
}

// TestServeDemoJSON: with --log-format json every line of stderr is one
// JSON object, the demo banner included, and its token works.
func TestServeDemoJSON(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startServer(t, dir, baseEnv(), "--log-format", "json")
	var token string
	for _, line := range strings.Split(strings.TrimSpace(s.stderr.String()), "\n") {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("a stderr line is not JSON: %q", line)
		}
		if obj["secure_client"] == "demo-secure" {
			token, _ = obj["token"].(string)
			if obj["level"] != "INFO" || obj["open_client"] != "demo-open" || !strings.HasSuffix(obj["secure_url"].(string), "/v1/clients/demo-secure/chat") {
				t.Errorf("demo line: %v", obj)
			}
		}
	}
	if !tokenRE.MatchString(token) {
		t.Fatalf("no demo token in the JSON lines:\n%s", s.stderr.String())
	}
	if got := decodeChat(t, s.chat("demo-secure", token)); got.Anonymous || got.KeyName == nil || *got.KeyName != "demo" {
		t.Errorf("demo token: %+v", got)
	}
}
