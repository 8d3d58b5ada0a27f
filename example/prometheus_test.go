package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llmauth/llmauth/internal/promtest"
)

// The dashboard and the alert rules TestPrometheus loads.
const (
	dashboardFile = "../dashboards/llmauth.json"
	alertsFile    = "../dashboards/alerts.yml"
)

// promDeadline bounds how long, after the traffic, Prometheus may take to
// show it and to answer every dashboard query and rule.
const promDeadline = 60 * time.Second

// outcomes are the values of the outcome label the contract names.
var outcomes = []string{"anonymous", "authenticated", "missing_token", "invalid_token", "malformed",
	"unknown_client", "unavailable", "throttled"}

// TestPrometheus runs the dashboard and the alert rules against a real
// Prometheus (the prometheus binary on PATH; .ci/run unpacks Debian's):
// it scrapes an example server that gets traffic of every outcome, and
// every panel query must return at least one series, every template
// variable at least one value, and every rule evaluate with health ok.
// Without prometheus the test skips loudly;
// LLMAUTH_TEST_REQUIRE_PROMETHEUS=1 makes that a failure.
func TestPrometheus(t *testing.T) {
	t.Parallel()
	promtest.Require(t)
	dash, err := promtest.ReadDashboard(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	ruleNames, err := promtest.RuleNames(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(dash.Queries) == 0 || len(ruleNames) == 0 {
		t.Fatalf("%s has %d queries, %s %d rules", dashboardFile, len(dash.Queries), alertsFile, len(ruleNames))
	}

	db := filepath.Join(t.TempDir(), "llmauth.db")
	c := newCLI(t, "sqlite:"+db)
	for _, name := range []string{"open-bot", "secure-bot", "locked-bot", "guessed-bot"} {
		c.ok("clients", "create", name)
	}
	c.ok("clients", "lock", "locked-bot")
	secure := c.createKey("secure-bot")
	guessed := c.createKey("guessed-bot")
	s := startServer(t, c.dir, c.env, "--database-url", c.db)

	p := promtest.Start(t, promtest.Config{
		Job:       "llmauth",
		Targets:   []string{strings.TrimPrefix(s.base, "http://")},
		RuleFiles: []string{alertsFile},
		Interval:  time.Second,
	})
	ctx := t.Context()
	// A first scrape before the traffic, as in production, where the
	// counters were at zero once.
	waitFor(t, time.Now().Add(30*time.Second), "the scrape target is up", func() []string {
		return targetsDown(ctx, p)
	})

	counted := driveTraffic(t, s, db, secure.Token, guessed.Token)
	deadline := time.Now().Add(promDeadline)
	for _, o := range outcomes {
		if counted[o] == 0 && o != "throttled" {
			t.Errorf("the traffic produced no %s decision", o)
		}
	}
	if counted["throttled"] == 0 {
		t.Log("no request was throttled (429): this build has no throttle; the throttled series stays at zero")
	}
	t.Logf("traffic: %v", counted)

	// Prometheus has every decision: exactly the counts the responses
	// showed.
	waitFor(t, deadline, "Prometheus shows the traffic", func() []string {
		return countsDiffer(ctx, p, counted)
	})
	// A series the traffic created (a client's first decision of an
	// outcome) counts in rate() only from its second sample on.
	waitFor(t, deadline, "every series has a second sample", func() []string {
		return oneSample(ctx, p)
	})

	values := variableValues(t, ctx, p, dash, deadline)
	for name, want := range map[string][]string{
		"job":    {"llmauth"},
		"client": {"_unknown", "guessed-bot", "locked-bot", "open-bot", "secure-bot"},
	} {
		if got, ok := values[name]; ok && !slices.Equal(got, want) {
			t.Errorf("variable %s: values %q, want %q", name, got, want)
		}
	}

	// Each query as Grafana sends it: the variables with "All" selected,
	// the intervals of the dashboard's default range (6h) on a panel about
	// 1000 pixels wide, with the data source's scrape interval set to 1s.
	subst := promtest.Intervals(6*time.Hour, 20*time.Second, time.Second)
	for _, v := range dash.Variables {
		if vals, ok := values[v.Name]; ok {
			subst[v.Name] = v.Value(vals)
		}
	}
	type query struct{ where, expr string }
	pending := map[query]string{} // → why it is not done yet
	for _, q := range dash.Queries {
		pending[query{fmt.Sprintf("panel %q, target %s", q.Panel, q.RefID), promtest.Expand(q.Expr, subst)}] = "not run"
	}
	waitFor(t, deadline, "every dashboard query returns a series", func() []string {
		for q := range pending {
			samples, err := p.Query(ctx, q.expr)
			var apiErr *promtest.APIError
			switch {
			case errors.As(err, &apiErr) && apiErr.Type == "bad_data":
				t.Errorf("%s: Prometheus refuses %s: %v", q.where, q.expr, err)
				delete(pending, q) // it never will parse
			case err != nil:
				pending[q] = err.Error()
			case len(samples) == 0:
				pending[q] = "no series"
			default:
				delete(pending, q)
			}
		}
		var left []string
		for q, why := range pending {
			left = append(left, fmt.Sprintf("%s: %s\n    %s", q.where, why, q.expr))
		}
		return left
	})

	// Every rule of alerts.yml is loaded and evaluates cleanly.
	waitFor(t, deadline, "every rule is loaded with health ok", func() []string {
		return rulesNotOK(ctx, p, ruleNames)
	})
}

// driveTraffic sends requests of every outcome and returns how many of
// each the responses show. The guessed client gets 50 invalid tokens from
// one source, which a throttle answers with 429 once its budget is spent.
// Last, the SQLite file is replaced under the server, whose decisions
// then fail closed (unavailable).
func driveTraffic(t *testing.T, s *server, db, secureToken, guessedToken string) map[string]int {
	t.Helper()
	bearer := func(token string) []string { return []string{"Authorization", "Bearer " + token} }
	badChecksum := secureToken[:len(secureToken)-1] + flip(secureToken[len(secureToken)-1])
	tests := []struct {
		what   string
		client string
		header []string
		n      int
		want   string
	}{
		{"open client", "open-bot", nil, 3, "anonymous"},
		{"open client, a token it does not examine", "open-bot", bearer("not-examined"), 1, "anonymous"},
		{"keyed client, its token", "secure-bot", bearer(secureToken), 3, "authenticated"},
		{"keyed client, no header", "secure-bot", nil, 2, "missing_token"},
		{"locked client, no header", "locked-bot", nil, 1, "missing_token"},
		{"keyed client, another client's token", "secure-bot", bearer(guessedToken), 1, "invalid_token"},
		{"keyed client, bad checksum", "secure-bot", bearer(badChecksum), 1, "invalid_token"},
		{"locked client, a token", "locked-bot", bearer(secureToken), 1, "invalid_token"},
		{"keyed client, two headers", "secure-bot", append(bearer(secureToken), bearer(secureToken)...), 1, "malformed"},
		{"keyed client, bad characters", "secure-bot", bearer("abc,def"), 1, "malformed"},
		{"unknown client", "nobody", nil, 2, "unknown_client"},
		{"guessed client, one source guessing", "guessed-bot", bearer("guess-0123456789"), 50, "invalid_token"},
	}
	counted := map[string]int{}
	for _, tt := range tests {
		for range tt.n {
			r := do(t, http.MethodPost, s.base+"/v1/clients/"+tt.client+"/chat", `{"message":"ping"}`, tt.header...)
			got := outcomeOf(t, r)
			counted[got]++
			// A throttle may answer bad credentials with 429.
			if got != tt.want && !(got == "throttled" && (tt.want == "invalid_token" || tt.want == "malformed")) {
				t.Errorf("%s: outcome %s (%d %s), want %s", tt.what, got, r.status, r.body, tt.want)
			}
		}
	}

	// A file moved over the database: the server must not answer from
	// the old file or its cache (as in TestServeSQLiteFileReplaced).
	replacement := filepath.Join(t.TempDir(), "replacement.db")
	newCLI(t, "sqlite:"+replacement).ok("clients", "create", "open-bot")
	if err := os.Rename(replacement, db); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the open client fails closed", func() bool {
		got := outcomeOf(t, s.chat("open-bot", ""))
		counted[got]++
		return got == "unavailable"
	})
	return counted
}

// outcomeOf reads the outcome a response shows.
func outcomeOf(t *testing.T, r response) string {
	t.Helper()
	challenge := r.header.Get("WWW-Authenticate")
	switch {
	case r.status == http.StatusOK:
		var c chatReply
		if err := json.Unmarshal(r.body, &c); err != nil {
			t.Fatalf("200 with body %s: %v", r.body, err)
		}
		if c.Anonymous {
			return "anonymous"
		}
		return "authenticated"
	case r.status == http.StatusUnauthorized && strings.Contains(challenge, `error="invalid_token"`):
		return "invalid_token"
	case r.status == http.StatusUnauthorized:
		return "missing_token"
	case r.status == http.StatusBadRequest:
		return "malformed"
	case r.status == http.StatusNotFound:
		return "unknown_client"
	case r.status == http.StatusTooManyRequests:
		return "throttled"
	case r.status == http.StatusServiceUnavailable:
		return "unavailable"
	}
	t.Fatalf("unexpected response %d %s", r.status, r.body)
	return ""
}

// waitFor calls check until it returns nothing, and fails the test with
// what it last returned if deadline passes first.
func waitFor(t *testing.T, deadline time.Time, what string, check func() []string) {
	t.Helper()
	start := time.Now()
	for {
		left := check()
		if len(left) == 0 {
			t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) || t.Context().Err() != nil {
			slices.Sort(left)
			t.Fatalf("%s: not by the deadline (%v); still:\n  %s", what, time.Since(start).Round(time.Millisecond), strings.Join(left, "\n  "))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// targetsDown lists the scrape targets that are not up.
func targetsDown(ctx context.Context, p *promtest.Server) []string {
	targets, err := p.Targets(ctx)
	if err != nil {
		return []string{err.Error()}
	}
	if len(targets) == 0 {
		return []string{"no active target"}
	}
	var down []string
	for _, tg := range targets {
		if tg.Health != "up" {
			down = append(down, fmt.Sprintf("%s: %s %s", tg.ScrapeURL, tg.Health, tg.LastError))
		}
	}
	return down
}

// countsDiffer lists the outcomes whose count in Prometheus is not the
// one the traffic produced.
func countsDiffer(ctx context.Context, p *promtest.Server, want map[string]int) []string {
	samples, err := p.Query(ctx, `sum by (outcome) (llmauth_requests_total{job="llmauth"})`)
	if err != nil {
		return []string{err.Error()}
	}
	got := map[string]float64{}
	for _, s := range samples {
		got[s.Metric["outcome"]] = s.Value
	}
	var differ []string
	for _, o := range slices.Sorted(maps.Keys(got)) {
		if got[o] != float64(want[o]) {
			differ = append(differ, fmt.Sprintf("outcome %s: %v in Prometheus, %d sent", o, got[o], want[o]))
		}
	}
	for _, o := range outcomes {
		if _, ok := got[o]; !ok {
			differ = append(differ, fmt.Sprintf("outcome %s: no series in Prometheus, %d sent", o, want[o]))
		}
	}
	return differ
}

// oneSample lists the llmauth_requests_total series Prometheus has only
// one sample of in the last minute.
func oneSample(ctx context.Context, p *promtest.Server) []string {
	samples, err := p.Query(ctx, `count_over_time(llmauth_requests_total{job="llmauth"}[1m]) < 2`)
	if err != nil {
		return []string{err.Error()}
	}
	var one []string
	for _, s := range samples {
		one = append(one, fmt.Sprintf("client %s, outcome %s", s.Metric["client"], s.Metric["outcome"]))
	}
	return one
}

// variableValues asks Prometheus what each label_values variable of the
// dashboard takes, as Grafana does, and fails the test on a variable
// query of another kind.
func variableValues(t *testing.T, ctx context.Context, p *promtest.Server, dash *promtest.Dashboard, deadline time.Time) map[string][]string {
	t.Helper()
	values := map[string][]string{}
	for _, v := range dash.Variables {
		switch v.Type {
		case "datasource":
			continue
		case "custom":
			for opt := range strings.SplitSeq(v.Query, ",") {
				values[v.Name] = append(values[v.Name], strings.TrimSpace(opt))
			}
			continue
		case "constant", "textbox":
			values[v.Name] = []string{v.Query}
			continue
		case "query":
		default:
			t.Errorf("variable %s: type %q is not one this test fills in", v.Name, v.Type)
			continue
		}
		selector, label, ok := promtest.LabelValues(v.Query)
		if !ok {
			t.Errorf("variable %s: query %q is not label_values(…), which this test can ask Prometheus", v.Name, v.Query)
			continue
		}
		waitFor(t, deadline, "variable "+v.Name+" has values", func() []string {
			vals, err := p.LabelValues(ctx, label, selector)
			if err != nil {
				return []string{err.Error()}
			}
			if len(vals) == 0 {
				return []string{fmt.Sprintf("/api/v1/label/%s/values?match[]=%s returned none", label, url.QueryEscape(selector))}
			}
			values[v.Name] = vals
			return nil
		})
	}
	return values
}

// rulesNotOK lists what is wrong with the rules Prometheus has loaded: a
// rule of the file it lacks, one it has that the file lacks, and every
// rule whose health is not ok or that has an error.
func rulesNotOK(ctx context.Context, p *promtest.Server, want []string) []string {
	rules, err := p.Rules(ctx)
	if err != nil {
		return []string{err.Error()}
	}
	var bad, loaded []string
	for _, r := range rules {
		loaded = append(loaded, r.Name)
		if r.Health != "ok" || r.LastError != "" {
			bad = append(bad, fmt.Sprintf("rule %s (group %s): health %q, lastError %q", r.Name, r.Group, r.Health, r.LastError))
		}
	}
	slices.Sort(loaded)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(loaded, want) {
		bad = append(bad, fmt.Sprintf("rules loaded %q, %s has %q", loaded, alertsFile, want))
	}
	return bad
}
