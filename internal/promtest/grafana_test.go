package promtest

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestExpand(t *testing.T) {
	values := map[string]string{"job": ".*", "client": "(a|b)", "__rate_interval": "21s", "__interval": "20s", "__interval_ms": "20000"}
	tests := []struct {
		expr, want string
	}{
		{`rate(x{job=~"$job"}[$__rate_interval])`, `rate(x{job=~".*"}[21s])`},
		{`x{job=~"${job}",client=~"${client:regex}"}`, `x{job=~".*",client=~"(a|b)"}`},
		{`x{client=~"[[client]]"}[[[__interval]]]`, `x{client=~"(a|b)"}[20s]`},
		{`$__interval_ms / $__interval`, `20000 / 20s`},
		{`x{job=~"$jobs"}`, `x{job=~"$jobs"}`}, // unknown: left alone
		{`label_replace(x, "a", "$1", "b", "(.*)")`, `label_replace(x, "a", "$1", "b", "(.*)")`},
		{`x{a=~"end$"}`, `x{a=~"end$"}`},
	}
	for _, tt := range tests {
		if got := Expand(tt.expr, values); got != tt.want {
			t.Errorf("Expand(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

func TestLabelValues(t *testing.T) {
	tests := []struct {
		query, selector, label string
		ok                     bool
	}{
		{"label_values(llmauth_requests_total, client)", "llmauth_requests_total", "client", true},
		{`label_values(up{job=~"$job"}, instance)`, `up{job=~"$job"}`, "instance", true},
		{"label_values(job)", "", "job", true},
		{" label_values( x ,  y ) ", "x", "y", true},
		{"query_result(up)", "", "", false},
		{"metrics(llmauth_)", "", "", false},
		{"label_values(x, 1y)", "", "", false},
	}
	for _, tt := range tests {
		sel, label, ok := LabelValues(tt.query)
		if sel != tt.selector || label != tt.label || ok != tt.ok {
			t.Errorf("LabelValues(%q) = %q, %q, %v; want %q, %q, %v", tt.query, sel, label, ok, tt.selector, tt.label, tt.ok)
		}
	}
}

func TestVariableValue(t *testing.T) {
	tests := []struct {
		name   string
		v      Variable
		values []string
		want   string
	}{
		{"all value", Variable{IncludeAll: true, Multi: true, AllValue: ".*"}, []string{"a", "b"}, ".*"},
		{"all as a regexp", Variable{IncludeAll: true}, []string{"a.b", "c"}, `(a\\.b|c)`},
		{"all of one", Variable{IncludeAll: true}, []string{"a.b"}, `a\\.b`},
		{"single", Variable{}, []string{"a.b", "c"}, "a.b"},
		{"multi without all", Variable{Multi: true}, []string{"a.b", "c"}, `a\\.b`},
		{"no values", Variable{IncludeAll: true, AllValue: ".*"}, nil, ""},
	}
	for _, tt := range tests {
		if got := tt.v.Value(tt.values); got != tt.want {
			t.Errorf("%s: Value(%q) = %q, want %q", tt.name, tt.values, got, tt.want)
		}
	}
}

func TestIntervals(t *testing.T) {
	tests := []struct {
		rng, interval, scrape time.Duration
		want                  map[string]string
	}{
		{6 * time.Hour, 20 * time.Second, time.Second, map[string]string{
			"__interval": "20s", "__interval_ms": "20000", "__rate_interval": "21s",
			"__range": "21600s", "__range_s": "21600", "__range_ms": "21600000"}},
		{time.Hour, 15 * time.Second, 15 * time.Second, map[string]string{
			"__interval": "15s", "__interval_ms": "15000", "__rate_interval": "1m",
			"__range": "3600s", "__range_s": "3600", "__range_ms": "3600000"}},
		{5 * time.Minute, 500 * time.Millisecond, time.Second, map[string]string{
			"__interval": "500ms", "__interval_ms": "500", "__rate_interval": "4s",
			"__range": "300s", "__range_s": "300", "__range_ms": "300000"}},
	}
	for _, tt := range tests {
		if got := Intervals(tt.rng, tt.interval, tt.scrape); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Intervals(%v, %v, %v) = %v, want %v", tt.rng, tt.interval, tt.scrape, got, tt.want)
		}
	}
}

func TestReadDashboard(t *testing.T) {
	const dash = `{
  "panels": [
    {"title": "A", "targets": [{"refId": "A", "expr": "up"}, {"refId": "B", "expr": "sum(up)"}]},
    {"title": "notes", "type": "text"},
    {"title": "row", "type": "row", "panels": [
      {"title": "nested", "targets": [{"refId": "A", "expr": "rate(x[$__rate_interval])"}, {"refId": "B"}]}
    ]}
  ],
  "templating": {"list": [
    {"name": "datasource", "type": "datasource", "query": "prometheus"},
    {"name": "job", "type": "query", "query": "label_values(up, job)", "includeAll": true, "multi": true, "allValue": ".*"},
    {"name": "client", "type": "query", "query": {"query": "label_values(x, client)", "refId": "V"}, "includeAll": true}
  ]}
}`
	path := filepath.Join(t.TempDir(), "dash.json")
	if err := os.WriteFile(path, []byte(dash), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDashboard(path)
	if err != nil {
		t.Fatal(err)
	}
	want := &Dashboard{
		Queries: []PanelQuery{
			{Panel: "A", RefID: "A", Expr: "up"},
			{Panel: "A", RefID: "B", Expr: "sum(up)"},
			{Panel: "nested", RefID: "A", Expr: "rate(x[$__rate_interval])"},
		},
		Variables: []Variable{
			{Name: "datasource", Type: "datasource", Query: "prometheus"},
			{Name: "job", Type: "query", Query: "label_values(up, job)", IncludeAll: true, Multi: true, AllValue: ".*"},
			{Name: "client", Type: "query", Query: "label_values(x, client)", IncludeAll: true},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadDashboard:\n got %+v\nwant %+v", got, want)
	}
}

func TestRuleNames(t *testing.T) {
	const rules = `groups:
  - name: g
    rules:
      - alert: First
        expr: up == 0
      - record: job:up:sum # a comment
        expr: sum by (job) (up)
      - expr: vector(1)
        alert: "Quoted"
        annotations:
          summary: "alert: not a rule"
`
	path := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := RuleNames(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"First", "job:up:sum", "Quoted"}; !reflect.DeepEqual(got, want) {
		t.Errorf("RuleNames = %q, want %q", got, want)
	}
}

func TestConfigYAML(t *testing.T) {
	got, err := Config{Targets: []string{"127.0.0.1:8080"}, RuleFiles: []string{"/r/alerts.yml"}}.yaml()
	if err != nil {
		t.Fatal(err)
	}
	const want = `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - "/r/alerts.yml"
scrape_configs:
  - job_name: "llmauth"
    static_configs:
      - targets:
          - "127.0.0.1:8080"
`
	if string(got) != want {
		t.Errorf("yaml:\n%s\nwant:\n%s", got, want)
	}
	if _, err := (Config{}).yaml(); err == nil {
		t.Error("a config without targets: no error")
	}
}
