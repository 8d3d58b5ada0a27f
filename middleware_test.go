// End-to-end tests of the whole stack: Echo, the middleware, the cache, the
// change watcher and the SQL store on PostgreSQL and SQLite, with real
// Prometheus collectors, over real HTTP.
package llmauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/llmauth/llmauth"
	"github.com/llmauth/llmauth/internal/pgtest"
	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
	"github.com/llmauth/llmauth/metrics"
	"github.com/llmauth/llmauth/middleware"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// cache, watcher, listener and audit of the stack must stop when closed.
func TestMain(m *testing.M) {
	code := m.Run()
	http.DefaultClient.CloseIdleConnections() // the client's keep-alives are not ours
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

type stack struct {
	url   string
	st    *llmauth.Stack
	store *sqlstore.Store
	reg   *prometheus.Registry
	m     *metrics.Metrics
}

// newStack builds the stack as a user does: one llmauth.New call.
func newStack(t *testing.T, dbURL string) *stack {
	t.Helper()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	st, err := llmauth.New(ctx, dbURL, llmauth.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	store, m := st.Store, st.Metrics

	e := echo.New()
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	g := e.Group("/v1/clients/:client", st.Middleware)
	g.POST("/chat", func(c echo.Context) error {
		p, _ := middleware.PrincipalFrom(c)
		var keyID any
		if !p.Anonymous {
			keyID = p.KeyID
		}
		return c.JSON(http.StatusOK, map[string]any{"client": p.Client, "anonymous": p.Anonymous, "key_id": keyID})
	})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return &stack{url: srv.URL, st: st, store: store, reg: reg, m: m}
}

type response struct {
	status int
	header http.Header
	body   string
}

func (s *stack) chat(t *testing.T, client string, auth ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+"/v1/clients/"+client+"/chat", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range auth {
		req.Header.Add("Authorization", a)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header, string(b)}
}

// eventually retries check until it passes or the contract's second is up.
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen within 1s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStack(t *testing.T) {
	dbs := map[string]func(testing.TB) string{
		"sqlite":   func(t testing.TB) string { return "sqlite:" + filepath.Join(t.TempDir(), "stack.db") },
		"postgres": pgtest.NewDatabase,
	}
	for name, url := range dbs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testStack(t, newStack(t, url(t)))
		})
	}
}

func testStack(t *testing.T, s *stack) {
	ctx := context.Background()
	for _, n := range []string{"open", "locked", "other"} {
		if _, err := s.store.CreateClient(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	key, err := s.store.CreateKey(ctx, "locked", keystore.KeySpec{Name: "main"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.store.CreateKey(ctx, "other", keystore.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := s.store.CreateKey(ctx, "locked", keystore.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.DeactivateKey(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	// A well-formed token, checksum and all, that the store no longer
	// knows: its client was deleted with its keys.
	if _, err := s.store.CreateClient(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	unknown, err := s.store.CreateKey(ctx, "gone", keystore.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.store.DeleteClient(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	bearer := func(k keystore.NewKey) string { return "Bearer " + k.Token.Reveal() }
	realm := `Bearer realm="llmauth"`

	rows := []struct {
		name, client string
		auth         []string
		status       int
		www          string
		outcome      string
		label        string
	}{
		{"open client", "open", nil, 200, "", "anonymous", "open"},
		{"open client, header not examined", "open", []string{"Bearer", "junk"}, 200, "", "anonymous", "open"},
		{"valid token of the client", "locked", []string{bearer(key)}, 200, "", "authenticated", "locked"},
		{"no Authorization", "locked", nil, 401, realm, "missing_token", "locked"},
		{"unknown token", "locked", []string{bearer(unknown)}, 401, realm + `, error="invalid_token"`, "invalid_token", "locked"},
		{"revoked", "locked", []string{bearer(revoked)}, 401, realm + `, error="invalid_token"`, "invalid_token", "locked"},
		{"another client's key", "locked", []string{bearer(other)}, 401, realm + `, error="invalid_token"`, "invalid_token", "locked"},
		{"two headers", "locked", []string{bearer(key), bearer(key)}, 400, realm + `, error="invalid_request"`, "malformed", "locked"},
		{"bad characters", "locked", []string{"Bearer a,b"}, 400, realm + `, error="invalid_request"`, "malformed", "locked"},
		{"unknown client", "nobody", nil, 404, "", "unknown_client", "_unknown"},
		{"junk client name", "Robert');DROP", nil, 404, "", "unknown_client", "_unknown"},
	}
	var invalidBody string
	for _, r := range rows {
		before := requests(t, s, r.label, r.outcome)
		res := s.chat(t, r.client, r.auth...)
		if res.status != r.status || res.header.Get("WWW-Authenticate") != r.www {
			t.Fatalf("%s: %d %q, want %d %q (%s)", r.name, res.status, res.header.Get("WWW-Authenticate"), r.status, r.www, res.body)
		}
		if (r.status == 401 || r.status == 400) && res.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("%s: Cache-Control %q", r.name, res.header.Get("Cache-Control"))
		}
		if r.outcome == "invalid_token" {
			if invalidBody == "" {
				invalidBody = res.body
			} else if res.body != invalidBody {
				t.Fatalf("%s: body %q differs from %q", r.name, res.body, invalidBody)
			}
		}
		if got := requests(t, s, r.label, r.outcome) - before; got != 1 {
			t.Fatalf("%s: llmauth_requests_total{client=%q,outcome=%q} moved by %v, want 1", r.name, r.label, r.outcome, got)
		}
		if strings.Contains(res.body, key.Token.Reveal()) {
			t.Fatalf("%s: token in the body", r.name)
		}
	}
	var ok struct {
		Client    string `json:"client"`
		Anonymous bool   `json:"anonymous"`
		KeyID     *int64 `json:"key_id"`
	}
	res := s.chat(t, "locked", bearer(key))
	if err := json.Unmarshal([]byte(res.body), &ok); err != nil || ok.Client != "locked" || ok.Anonymous || ok.KeyID == nil || *ok.KeyID != key.ID {
		t.Fatalf("authenticated body %s", res.body)
	}

	// Expiry: the key stops at expires_at and the client stays locked.
	soon := time.Now().Add(2 * time.Second)
	expiring, err := s.store.CreateKey(ctx, "locked", keystore.KeySpec{ExpiresAt: &soon})
	if err != nil {
		t.Fatal(err)
	}
	if res := s.chat(t, "locked", bearer(expiring)); res.status != 200 {
		t.Fatalf("unexpired key: %d", res.status)
	}
	time.Sleep(time.Until(soon))
	if res := s.chat(t, "locked", bearer(expiring)); res.status != 401 || res.body != invalidBody {
		t.Fatalf("expired key: %d %s", res.status, res.body)
	}

	// Revoking the last active keys opens the client; a new key locks it.
	for _, k := range []keystore.NewKey{key, expiring} {
		if _, err := s.store.DeactivateKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "revoking the last key opens the client", func() bool { return s.chat(t, "locked").status == 200 })
	if _, err := s.store.CreateKey(ctx, "open", keystore.KeySpec{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a first key locks the client", func() bool { return s.chat(t, "open").status == 401 })

	// No attacker-chosen name became a label; cache metrics moved.
	if n := testutil.CollectAndCount(s.reg, "llmauth_requests_total"); n == 0 {
		t.Fatal("no request series")
	}
	exp, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(exp.Body)
	exp.Body.Close()
	text := string(body)
	for _, bad := range []string{"nobody", "Robert", "DROP"} {
		if strings.Contains(text, bad) {
			t.Fatalf("%q reached the metrics", bad)
		}
	}
	for _, want := range []string{`llmauth_cache_lookups_total{cache="clients",result="hit"}`, `llmauth_store_call_duration_seconds_count{op="verify"}`} {
		if !strings.Contains(text, want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
}

// requests reads llmauth_requests_total{client, outcome} from the
// registry, as a scrape would show it; 0 when the series does not exist.
func requests(t *testing.T, s *stack, client, outcome string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "llmauth_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["client"] == client && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestOutage stops a PostgreSQL of the test's own under a running stack:
// once the freshness lease has lapsed nothing is answered from the cache,
// every request gets 503 with Retry-After (never anonymous access), and
// service comes back without a restart.
func TestOutage(t *testing.T) {
	srv := pgtest.StartServer(t)
	s := newStack(t, pgtest.NewDatabaseOn(t, srv.URL()))
	ctx := context.Background()
	for _, n := range []string{"open", "locked", "cold"} {
		if _, err := s.store.CreateClient(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	key, err := s.store.CreateKey(ctx, "locked", keystore.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	cold, err := s.store.CreateKey(ctx, "cold", keystore.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	spare, err := s.store.CreateKey(ctx, "locked", keystore.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	// Apply the setup's own changes before warming: otherwise their
	// invalidations (by notification, or by the poller if the listener is
	// still connecting) may land after the warm-up and evict it.
	if err := s.st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Warm the cache for "locked" and its first key only.
	if res := s.chat(t, "locked", "Bearer "+key.Token.Reveal()); res.status != 200 {
		t.Fatalf("before the outage: %d", res.status)
	}

	srv.Stop(t)
	// Within the staleness bound of the last read of the change log the
	// cache may still answer (TestPartition covers that); past it, nothing
	// cached is used. Stopping a server takes a moment of its own, so the
	// rows run once the lease has lapsed.
	eventually(t, "the lease lapses", func() bool { return s.st.Cache.Fresh() != nil })
	rows := []struct {
		name, client, auth string
		status             int
	}{
		{"open client, state not cached", "open", "", 503},
		{"keyed client, state not cached, no token", "cold", "", 503},
		{"keyed client, state not cached, valid token", "cold", "Bearer " + cold.Token.Reveal(), 503},
		{"cached keyed client, no token", "locked", "", 503},
		{"cached keyed client, uncached token", "locked", "Bearer " + spare.Token.Reveal(), 503},
		{"cached keyed client, cached token inside TTL", "locked", "Bearer " + key.Token.Reveal(), 503},
	}
	for _, r := range rows {
		var auth []string
		if r.auth != "" {
			auth = append(auth, r.auth)
		}
		res := s.chat(t, r.client, auth...)
		if res.status != r.status {
			t.Fatalf("%s: %d, want %d (%s)", r.name, res.status, r.status, res.body)
		}
		if r.status == 503 && res.header.Get("Retry-After") == "" {
			t.Fatalf("%s: 503 without Retry-After", r.name)
		}
	}
	if got := requests(t, s, "_unknown", "unavailable"); got != 6 {
		t.Fatalf("unavailable decisions for unknown-state clients counted %v, want 6", got)
	}

	srv.Start(t)
	back := time.Now()
	deadline := back.Add(5 * time.Second)
	for res := s.chat(t, "open"); res.status != 200; res = s.chat(t, "open") {
		t.Logf("recovering: %d %s", res.status, res.body)
		if time.Now().After(deadline) {
			t.Fatal("no recovery within 5s of the database's return")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("OUTAGE recovery: first 200 %v after the database accepted connections", time.Since(back).Round(time.Millisecond))
	if res := s.chat(t, "cold", "Bearer "+cold.Token.Reveal()); res.status != 200 {
		t.Fatalf("after recovery: %d", res.status)
	}
	// The change feed works again: a revoke is seen within the second.
	if _, err := s.store.DeactivateKey(ctx, cold.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "revoke after recovery", func() bool { return s.chat(t, "cold").status == 200 })
}

// TestDashboardsMatchMetrics keeps dashboards/ honest: every llmauth_
// series a panel or alert queries is one the stack exports, with labels it
// has. With promtool on PATH it also checks every panel expression and
// alert rule, runs the alerts' unit tests (dashboards/alerts_test.yml) and
// lints a real scrape; LLMAUTH_TEST_REQUIRE_PROMTOOL=1 (set by .ci/run)
// makes a missing promtool a failure.
func TestDashboardsMatchMetrics(t *testing.T) {
	s := newStack(t, "sqlite:"+filepath.Join(t.TempDir(), "dash.db"))
	// Touch every family so that each has at least one series.
	s.m.Decision("demo", "anonymous")
	s.m.CacheLookup("clients", true)
	s.m.StaleServed("clients")
	s.m.Invalidated("flush")
	s.m.StoreCall("verify", time.Millisecond, nil)
	s.m.StoreCall("verify", time.Millisecond, errors.New("down"))
	s.m.ChangeEvent("poll")
	s.m.ListenerUp(true)
	s.m.UsageFlushed(1, nil)
	s.m.UsageDropped(1)
	res, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scrape, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	exported := exportedLabels(t, scrape)

	b, err := os.ReadFile("dashboards/llmauth.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("dashboards/llmauth.json is not a dashboard: %v", err)
	}
	// Each panel's queries, with the dashboard's variables as Grafana fills
	// them in.
	grafana := strings.NewReplacer(`$job`, `.+`, `$__rate_interval`, `5m`)
	var panelExprs []string
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, q := range p.Targets {
			panelExprs = append(panelExprs, grafana.Replace(q.Expr))
		}
	}
	rules, err := os.ReadFile("dashboards/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var alertExprs []string
	for _, line := range strings.Split(string(rules), "\n") {
		if e, ok := strings.CutPrefix(strings.TrimSpace(line), "expr: "); ok {
			alertExprs = append(alertExprs, e)
		}
	}
	if len(alertExprs) == 0 {
		t.Fatal("dashboards/alerts.yml has no rules")
	}
	for _, e := range append(slices.Clone(panelExprs), alertExprs...) {
		checkQueryLabels(t, e, exported)
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("LLMAUTH_TEST_REQUIRE_PROMTOOL") == "1" {
			t.Fatal("promtool not on PATH and LLMAUTH_TEST_REQUIRE_PROMTOOL=1")
		}
		t.Log("promtool not on PATH (Debian: apt-get install prometheus): expressions, rules and scrape not checked by Prometheus")
		return
	}
	run := func(stdin []byte, args ...string) {
		t.Helper()
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "dashboards"
		if stdin != nil {
			cmd.Stdin = strings.NewReader(string(stdin))
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run(nil, "check", "rules", "alerts.yml")
	run(nil, "test", "rules", "alerts_test.yml")
	run(scrape, "check", "metrics")
	// Prometheus parses the panels' queries as recording rules.
	var panelRules strings.Builder
	panelRules.WriteString("groups:\n  - name: panels\n    rules:\n")
	for i, e := range panelExprs {
		q, _ := json.Marshal(e) // a JSON string is a YAML double-quoted scalar
		fmt.Fprintf(&panelRules, "      - record: llmauth:panel_%d\n        expr: %s\n", i+1, q)
	}
	file := filepath.Join(t.TempDir(), "panels.yml")
	if err := os.WriteFile(file, []byte(panelRules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	run(nil, "check", "rules", file)
}

// exportedLabels parses a scrape and returns, for each series name it
// holds (histograms as their _bucket, _sum and _count series), the label
// names that series has, with the job and instance labels every scrape
// adds.
func exportedLabels(t *testing.T, scrape []byte) map[string]map[string]bool {
	t.Helper()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(scrape)))
	if err != nil {
		t.Fatalf("the scrape does not parse: %v", err)
	}
	out := map[string]map[string]bool{}
	add := func(series string, labels []*dto.LabelPair, extra ...string) {
		if out[series] == nil {
			out[series] = map[string]bool{"job": true, "instance": true}
		}
		for _, l := range labels {
			out[series][l.GetName()] = true
		}
		for _, l := range extra {
			out[series][l] = true
		}
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			if f.GetType() == dto.MetricType_HISTOGRAM {
				add(name+"_bucket", m.GetLabel(), "le")
				add(name+"_sum", m.GetLabel())
				add(name+"_count", m.GetLabel())
				continue
			}
			add(name, m.GetLabel())
		}
	}
	return out
}

var (
	selectorRE = regexp.MustCompile(`(llmauth_[a-z_]+)(\{[^}]*\})?`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	groupingRE = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// checkQueryLabels fails the test when expr selects an llmauth_ series
// the stack does not export, matches on a label that series lacks, or
// groups by a label none of its series has.
func checkQueryLabels(t *testing.T, expr string, exported map[string]map[string]bool) {
	t.Helper()
	sel := selectorRE.FindAllStringSubmatch(expr, -1)
	if len(sel) == 0 {
		t.Errorf("%s: queries no llmauth series", expr)
		return
	}
	union := map[string]bool{}
	for _, m := range sel {
		labels, ok := exported[m[1]]
		if !ok {
			t.Errorf("%s: queries %s, which the stack does not export", expr, m[1])
			continue
		}
		for l := range labels {
			union[l] = true
		}
		for _, mm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
			if !labels[mm[1]] {
				t.Errorf("%s: %s has no label %q", expr, m[1], mm[1])
			}
		}
	}
	for _, g := range groupingRE.FindAllStringSubmatch(expr, -1) {
		by := map[string]bool{}
		for _, l := range strings.Split(g[1], ",") {
			l = strings.TrimSpace(l)
			by[l] = true
			if l != "" && !union[l] {
				t.Errorf("%s: groups by %q, which none of its series has", expr, l)
			}
		}
		// histogram_quantile needs the buckets' bounds: an aggregation
		// that drops le leaves it nothing to compute with.
		if strings.Contains(expr, "histogram_quantile(") && !by["le"] {
			t.Errorf("%s: histogram_quantile over an aggregation without le", expr)
		}
	}
}

// TestFlushReasonsInStep: every reason a watcher flushes for has a series
// that starts at zero.
func TestFlushReasonsInStep(t *testing.T) {
	var want []string
	for _, r := range sqlstore.FlushReasons {
		want = append(want, string(r))
	}
	if !slices.Equal(metrics.FlushReasons, want) {
		t.Fatalf("metrics.FlushReasons = %q, sqlstore.FlushReasons = %q", metrics.FlushReasons, want)
	}
}
