package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// metricsRE finds the metrics listener's address in serve's log.
var metricsRE = regexp.MustCompile(`metrics on (http://[0-9.:\[\]a-f]+)/metrics`)

// notFoundBody is the answer to a path no route serves.
const notFoundBody = `{"error":{"message":"no route matches this path","type":"not_found_error","param":null,"code":"unknown_route"}}` + "\n"

// zeroAtStart are series a scrape shows at zero before any request.
var zeroAtStart = []string{
	`llmauth_requests_total{client="_unknown",outcome="throttled"} 0`,
	`llmauth_cache_lookups_total{cache="unknown_clients",result="hit"} 0`,
	`llmauth_cache_stale_served_total{cache="keys"} 0`,
	// reason="flush" is 1: the change watcher flushes the cache as it
	// starts (see TestWatcherStartDropsEarlierEntries).
	`llmauth_cache_invalidations_total{reason="key"} 0`,
	`llmauth_store_errors_total{op="client_state"} 0`,
	`llmauth_store_call_duration_seconds_count{op="verify"} 0`,
}

// TestServeMetricsAddr: with --metrics-addr, /metrics moves to a listener
// of its own, which serves nothing else; the main listener answers 404
// for it. Both stop gracefully on SIGTERM.
func TestServeMetricsAddr(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "sqlite:"+filepath.Join(t.TempDir(), "llmauth.db"))
	c.ok("clients", "create", "bot")
	s := startServer(t, c.dir, baseEnv(), "--database-url", c.db, "--metrics-addr", "127.0.0.1:0")
	m := metricsRE.FindStringSubmatch(s.stderr.String())
	if m == nil {
		t.Fatalf("no \"metrics on\" line in the log:\n%s", s.stderr.String())
	}
	metricsBase := m[1]
	if metricsBase == s.base {
		t.Fatalf("metrics on the main listener %s", s.base)
	}

	first := do(t, http.MethodGet, metricsBase+"/metrics", "")
	if first.status != 200 || !strings.HasPrefix(first.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics on the metrics listener: %d %q", first.status, first.header.Get("Content-Type"))
	}
	for _, want := range zeroAtStart {
		if !strings.Contains(string(first.body), want+"\n") {
			t.Errorf("the first scrape lacks %s", want)
		}
	}

	if r := do(t, http.MethodGet, s.base+"/metrics", ""); r.status != 404 || string(r.body) != notFoundBody {
		t.Errorf("GET /metrics on the main listener: %d %q, want 404 %q", r.status, r.body, notFoundBody)
	}
	if r := s.chat("bot", ""); r.status != 200 {
		t.Fatalf("chat on the main listener: %d %s", r.status, r.body)
	}
	scrape := do(t, http.MethodGet, metricsBase+"/metrics", "")
	if v, ok := metricValue(string(scrape.body), "bot", "anonymous"); !ok || v != 1 {
		t.Errorf("llmauth_requests_total{client=\"bot\",outcome=\"anonymous\"} = %v (%v), want 1", v, ok)
	}
	for _, path := range []string{"/v1/clients/bot/chat", "/healthz", "/"} {
		if r := do(t, http.MethodPost, metricsBase+path, ""); r.status != 404 || string(r.body) != notFoundBody {
			t.Errorf("POST %s on the metrics listener: %d %q, want 404", path, r.status, r.body)
		}
	}

	if code := s.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, s.stderr.String())
	}
	if !strings.Contains(s.stderr.String(), "msg=stopped") {
		t.Errorf("no clean stop in the log:\n%s", s.stderr.String())
	}
	refusesConnections(t, metricsBase)
}

// TestServeMetricsDefault: without --metrics-addr, /metrics is on the
// main listener, as before.
func TestServeMetricsDefault(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "sqlite:"+filepath.Join(t.TempDir(), "llmauth.db"))
	s := startServer(t, c.dir, baseEnv(), "--database-url", c.db)
	r := do(t, http.MethodGet, s.base+"/metrics", "")
	if r.status != 200 {
		t.Fatalf("GET /metrics: %d %s", r.status, r.body)
	}
	for _, want := range zeroAtStart {
		if !strings.Contains(string(r.body), want+"\n") {
			t.Errorf("the first scrape lacks %s", want)
		}
	}
	if strings.Contains(s.stderr.String(), "metrics on") {
		t.Errorf("a metrics listener without --metrics-addr:\n%s", s.stderr.String())
	}
}

// TestServeMetricsAddrErrors: a malformed address is bad input (exit 2),
// a port in use a failure (exit 1); either way one line on stderr, nothing
// on stdout, and the database untouched.
func TestServeMetricsAddrErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() }) // not defer: the subtests run after this function returns
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"not HOST:PORT", []string{"--metrics-addr", "nonsense"}, 2,
			`example: serve: invalid --metrics-addr "nonsense": want HOST:PORT`},
		{"port out of range", []string{"--metrics-addr", "127.0.0.1:99999"}, 2,
			`example: serve: invalid --metrics-addr "127.0.0.1:99999": the port must be a number from 0 to 65535`},
		{"same as --addr", []string{"--addr", "127.0.0.1:18123", "--metrics-addr", "127.0.0.1:18123"}, 2,
			`example: serve: --metrics-addr "127.0.0.1:18123" is also --addr: give the metrics listener an address of its own`},
		{"port in use", []string{"--metrics-addr", busy.Addr().String()}, 1,
			"example: listen --metrics-addr: listen tcp " + busy.Addr().String() + ": bind: address already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			db := filepath.Join(dir, "store.db")
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--database-url", "sqlite:" + db}, tc.args...)
			r := runBinary(t, dir, baseEnv(), args...)
			if r.code != tc.code || r.stdout != "" || r.stderr != tc.stderr+"\n" {
				t.Fatalf("want exit %d, stderr %q, nothing on stdout; got %v", tc.code, tc.stderr, r)
			}
			if _, err := os.Stat(db); err == nil {
				t.Errorf("the database was created")
			}
		})
	}
}

// TestServeMetricsAddrInProcess stops serve through its context, under
// the race detector: both listeners close, and TestMain finds no
// goroutine left behind.
func TestServeMetricsAddrInProcess(t *testing.T) {
	t.Parallel()
	db := "sqlite:" + filepath.Join(t.TempDir(), "llmauth.db")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stderr := &syncBuffer{}
	var out bytes.Buffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"--database-url", db, "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"}, &out, stderr, emptyEnv)
	}()
	var base, metricsBase string
	eventually(t, 30*time.Second, "listening", func() bool {
		if m := listeningRE.FindStringSubmatch(stderr.String()); m != nil {
			base = m[1]
			return true
		}
		return false
	})
	if m := metricsRE.FindStringSubmatch(stderr.String()); m != nil {
		metricsBase = m[1]
	} else {
		t.Fatalf("no \"metrics on\" line:\n%s", stderr.String())
	}
	if r := do(t, http.MethodGet, metricsBase+"/metrics", ""); r.status != 200 {
		t.Errorf("scrape: %d", r.status)
	}
	if r := do(t, http.MethodGet, base+"/metrics", ""); r.status != 404 {
		t.Errorf("GET /metrics on the main listener: %d", r.status)
	}
	cancel()
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	if out.Len() != 0 {
		t.Errorf("serve wrote to stdout: %q", out.String())
	}
	refusesConnections(t, metricsBase)
	refusesConnections(t, base)
}

// refusesConnections fails the test unless nothing listens at base
// (http://HOST:PORT) any more.
func refusesConnections(t *testing.T, base string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second)
	if err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after shutdown", base)
	}
}
