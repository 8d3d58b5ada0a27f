package promtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// APIError is an error answer of Prometheus's HTTP API.
type APIError struct {
	Status int    // HTTP status
	Type   string // errorType: "bad_data" for a query that does not parse, "execution", "timeout", …
	Msg    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("prometheus api: %d %s: %s", e.Status, e.Type, e.Msg)
}

// Sample is one series of a query result with its value at the query's
// time (the last value, for a range vector). A scalar result is one
// Sample with no labels.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// Rule is one rule as /api/v1/rules reports it.
type Rule struct {
	Group     string
	Name      string
	Type      string // "alerting" or "recording"
	Health    string // "ok", "err" or "unknown" (not evaluated yet)
	LastError string
	State     string // of an alert: "inactive", "pending" or "firing"
}

// Target is one scrape target as /api/v1/targets reports it.
type Target struct {
	ScrapeURL string
	Health    string // "up", "down" or "unknown"
	LastError string
}

// Query evaluates expr now (an instant query) and returns its series.
func (s *Server) Query(ctx context.Context, expr string) ([]Sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := s.api.call(ctx, true, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var r []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(data.Result, &r); err != nil {
			return nil, err
		}
		out := make([]Sample, 0, len(r))
		for _, e := range r {
			v, err := sampleValue(e.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, Sample{Metric: e.Metric, Value: v})
		}
		return out, nil
	case "matrix":
		var r []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		}
		if err := json.Unmarshal(data.Result, &r); err != nil {
			return nil, err
		}
		out := make([]Sample, 0, len(r))
		for _, e := range r {
			if len(e.Values) == 0 {
				continue
			}
			v, err := sampleValue(e.Values[len(e.Values)-1])
			if err != nil {
				return nil, err
			}
			out = append(out, Sample{Metric: e.Metric, Value: v})
		}
		return out, nil
	case "scalar":
		var r [2]any
		if err := json.Unmarshal(data.Result, &r); err != nil {
			return nil, err
		}
		v, err := sampleValue(r)
		if err != nil {
			return nil, err
		}
		return []Sample{{Value: v}}, nil
	default:
		return nil, fmt.Errorf("prometheus api: query %q: result type %q", expr, data.ResultType)
	}
}

// sampleValue reads the value of a [time, "value"] pair.
func sampleValue(pair [2]any) (float64, error) {
	s, ok := pair[1].(string)
	if !ok {
		return 0, fmt.Errorf("prometheus api: sample value %v is not a string", pair[1])
	}
	return strconv.ParseFloat(s, 64) // reads NaN, +Inf and -Inf too
}

// LabelValues returns the values label takes, in the series match selects
// when it is not empty.
func (s *Server) LabelValues(ctx context.Context, label, match string) ([]string, error) {
	params := url.Values{}
	if match != "" {
		params.Set("match[]", match)
	}
	var values []string
	err := s.api.call(ctx, false, "/api/v1/label/"+url.PathEscape(label)+"/values", params, &values)
	return values, err
}

// Rules returns every rule Prometheus has loaded.
func (s *Server) Rules(ctx context.Context) ([]Rule, error) {
	var data struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Name      string `json:"name"`
				Type      string `json:"type"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
				State     string `json:"state"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := s.api.call(ctx, false, "/api/v1/rules", nil, &data); err != nil {
		return nil, err
	}
	var out []Rule
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			out = append(out, Rule{Group: g.Name, Name: r.Name, Type: r.Type, Health: r.Health, LastError: r.LastError, State: r.State})
		}
	}
	return out, nil
}

// Targets returns the active scrape targets.
func (s *Server) Targets(ctx context.Context) ([]Target, error) {
	var data struct {
		ActiveTargets []struct {
			ScrapeURL string `json:"scrapeUrl"`
			Health    string `json:"health"`
			LastError string `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := s.api.call(ctx, false, "/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
		return nil, err
	}
	out := make([]Target, 0, len(data.ActiveTargets))
	for _, t := range data.ActiveTargets {
		out = append(out, Target(t))
	}
	return out, nil
}

// apiClient calls one Prometheus's HTTP API.
type apiClient struct {
	base   string
	client *http.Client
}

func newAPIClient(base string) *apiClient {
	return &apiClient{base: base, client: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{Proxy: nil},
	}}
}

// close drops the idle connections, and with them their goroutines.
func (c *apiClient) close() { c.client.CloseIdleConnections() }

// ready reports whether /-/ready answers 200.
func (c *apiClient) ready(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/-/ready", nil)
	if err != nil {
		return false
	}
	res, err := c.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// call calls path with params, in the query string of a GET or, with
// post, as a form (a long query then fits), and decodes the answer's data
// into out.
func (c *apiClient) call(ctx context.Context, post bool, path string, params url.Values, out any) error {
	var req *http.Request
	var err error
	if post {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, strings.NewReader(params.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, c.base+path+"?"+params.Encode(), nil)
	}
	if err != nil {
		return err
	}
	res, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("prometheus api: %w", err)
	}
	defer res.Body.Close()
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&env); err != nil {
		return fmt.Errorf("prometheus api: %s: status %d, %w", path, res.StatusCode, err)
	}
	if env.Status != "success" {
		return &APIError{Status: res.StatusCode, Type: env.ErrorType, Msg: env.Error}
	}
	return json.Unmarshal(env.Data, out)
}
