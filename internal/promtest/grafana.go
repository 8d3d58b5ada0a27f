package promtest

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Dashboard is what a test needs of a Grafana dashboard: its panels'
// queries and its template variables.
type Dashboard struct {
	Queries   []PanelQuery
	Variables []Variable
}

// PanelQuery is one target of one panel, as written in the dashboard.
type PanelQuery struct {
	Panel string // the panel's title
	RefID string
	Expr  string
}

// Variable is one template variable.
type Variable struct {
	Name string
	Type string // "query", "custom", "constant", "textbox", "datasource", …
	// Query is the variable's query: label_values(…) for a query
	// variable, the comma-separated options of a custom one.
	Query      string
	IncludeAll bool
	Multi      bool
	AllValue   string
}

// ReadDashboard reads the dashboard JSON at path, panels nested in rows
// included.
func ReadDashboard(path string) (*Dashboard, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string          `json:"name"`
				Type       string          `json:"type"`
				Query      json.RawMessage `json:"query"`
				IncludeAll bool            `json:"includeAll"`
				Multi      bool            `json:"multi"`
				AllValue   string          `json:"allValue"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	d := &Dashboard{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				if t.Expr != "" {
					d.Queries = append(d.Queries, PanelQuery{Panel: p.Title, RefID: t.RefID, Expr: t.Expr})
				}
			}
			walk(p.Panels)
		}
	}
	walk(raw.Panels)
	for _, v := range raw.Templating.List {
		q, err := variableQuery(v.Query)
		if err != nil {
			return nil, fmt.Errorf("%s: variable %s: %w", path, v.Name, err)
		}
		d.Variables = append(d.Variables, Variable{Name: v.Name, Type: v.Type, Query: q,
			IncludeAll: v.IncludeAll, Multi: v.Multi, AllValue: v.AllValue})
	}
	return d, nil
}

// panel is a dashboard panel; a row holds its panels when collapsed.
type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// variableQuery reads a variable's query: a string, or (Grafana 10 and
// later) an object whose "query" field is.
func variableQuery(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", fmt.Errorf("query is neither a string nor an object with a query: %s", raw)
	}
	return obj.Query, nil
}

var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(?:(.+?)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// LabelValues reads a variable query of the form label_values(label) or
// label_values(selector, label), which Grafana answers from Prometheus's
// /api/v1/label/LABEL/values?match[]=SELECTOR.
func LabelValues(query string) (selector, label string, ok bool) {
	m := labelValuesRE.FindStringSubmatch(query)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// Value is what Grafana puts in a query for v when all of values are
// selected: with an "All" option, the variable's custom all value, or
// else every value as one regular expression; without one, the first
// value (Grafana's default selection).
func (v Variable) Value(values []string) string {
	switch {
	case len(values) == 0:
		return ""
	case !v.IncludeAll && !v.Multi:
		return values[0]
	case !v.IncludeAll:
		return promRegexpEscape(values[0])
	case v.AllValue != "":
		return v.AllValue
	case len(values) == 1:
		return promRegexpEscape(values[0])
	}
	quoted := make([]string, len(values))
	for i, s := range values {
		quoted[i] = promRegexpEscape(s)
	}
	return "(" + strings.Join(quoted, "|") + ")"
}

// promRegexpEscape escapes a value for a regular expression inside a
// PromQL string, as Grafana's Prometheus data source does.
func promRegexpEscape(s string) string {
	return strings.ReplaceAll(regexp.QuoteMeta(s), `\`, `\\`)
}

// Intervals returns Grafana's interval variables for a dashboard showing
// rng, whose panels get one point per interval, from a data source whose
// scrape interval is scrape: __interval, __interval_ms, __range,
// __range_s, __range_ms and __rate_interval, which Grafana sets to
// max(__interval + scrape, 4 × scrape).
func Intervals(rng, interval, scrape time.Duration) map[string]string {
	rate := max(interval+scrape, 4*scrape)
	return map[string]string{
		"__interval":      grafanaDuration(interval),
		"__interval_ms":   strconv.FormatInt(interval.Milliseconds(), 10),
		"__rate_interval": grafanaDuration(rate),
		"__range":         strconv.FormatInt(int64(rng.Seconds()), 10) + "s",
		"__range_s":       strconv.FormatInt(int64(rng.Seconds()), 10),
		"__range_ms":      strconv.FormatInt(rng.Milliseconds(), 10),
	}
}

// grafanaDuration writes d in its largest whole unit, as Grafana does:
// 6h, 1m, 21s, 500ms.
func grafanaDuration(d time.Duration) string {
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if d >= u.unit && d%u.unit == 0 {
			return strconv.FormatInt(int64(d/u.unit), 10) + u.name
		}
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// variableRE matches the three spellings of a variable: $name,
// ${name} or ${name:format}, and [[name]] or [[name:format]].
var variableRE = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)`)

// Expand replaces the variables in expr by their values, as Grafana does
// before it sends a query; a variable values does not name stays as
// written (Grafana leaves unknown variables alone).
func Expand(expr string, values map[string]string) string {
	return variableRE.ReplaceAllStringFunc(expr, func(ref string) string {
		m := variableRE.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3] // exactly one is set
		if v, ok := values[name]; ok {
			return v
		}
		return ref
	})
}

var ruleNameRE = regexp.MustCompile(`^\s*(?:-\s+)?(alert|record):\s*("?)([^"#\s]+)("?)\s*(?:#.*)?$`)

// RuleNames returns the name of every alerting and recording rule in the
// Prometheus rule file at path, in file order.
func RuleNames(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var names []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if m := ruleNameRE.FindStringSubmatch(line); m != nil {
			names = append(names, m[3])
		}
	}
	return names, nil
}
