package llmauth_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDashboardVariables: every template variable of dashboards/llmauth.json
// reads a series and label the stack exports; the client variable exists
// and panels use it; the watcher's flushes and the lease have panels.
// TestDashboardsMatchMetrics checks the panels' queries themselves.
func TestDashboardVariables(t *testing.T) {
	s := newStack(t, "sqlite:"+filepath.Join(t.TempDir(), "vars.db"))
	s.m.Decision("demo", "anonymous") // a client label value besides _unknown
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
		Templating struct {
			List []struct {
				Name, Type, Query, AllValue string
				IncludeAll, Multi           bool
			}
		}
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}

	labelValues := regexp.MustCompile(`^label_values\((llmauth_[a-z_]+), ([a-z_]+)\)$`)
	vars := map[string]string{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = v.Query
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(llmauth_…, label)", v.Name, v.Query)
			continue
		}
		if !exported[m[1]][m[2]] {
			t.Errorf("variable %s: %s has no label %q in a scrape", v.Name, m[1], m[2])
		}
		if !v.IncludeAll || !v.Multi || v.AllValue != ".*" {
			t.Errorf("variable %s: want includeAll, multi and allValue .*, like job", v.Name)
		}
	}
	if got := vars["client"]; got != "label_values(llmauth_requests_total, client)" {
		t.Errorf("client variable query %q", got)
	}

	var perClient, flushes, fresh []string
	for _, p := range dash.Panels {
		for _, q := range p.Targets {
			if strings.Contains(q.Expr, `client=~"$client"`) {
				perClient = append(perClient, p.Title)
			}
			if strings.Contains(q.Expr, "llmauth_change_flushes_total{") && strings.Contains(q.Expr, "by (reason)") {
				flushes = append(flushes, p.Title)
			}
			if strings.Contains(q.Expr, "llmauth_cache_fresh{") {
				fresh = append(fresh, p.Title)
			}
		}
	}
	if len(perClient) == 0 {
		t.Error(`no panel filters on client=~"$client"`)
	}
	if len(flushes) == 0 {
		t.Error("no panel shows llmauth_change_flushes_total by reason")
	}
	if len(fresh) == 0 {
		t.Error("no panel shows llmauth_cache_fresh")
	}
	// Every panel that uses $client says so in its title, so that a
	// reader knows the panel is filtered.
	for _, title := range slices.Compact(perClient) {
		if !strings.Contains(title, "$client") {
			t.Errorf("panel %q filters on $client but its title does not show it", title)
		}
	}
}
