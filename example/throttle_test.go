package main

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/llmauth/llmauth/keystore"
)

// TestServeThrottle: beyond --throttle-burst failed attempts from one
// source against one client, 429 throttled with Retry-After; a key the
// server already verified keeps working; the source is the peer address,
// and X-Forwarded-For counts only from a --trusted-proxy.
func TestServeThrottle(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "sqlite:"+t.TempDir()+"/llmauth.db")
	c.ok("clients", "create", "vault")
	c.ok("clients", "create", "other")
	valid := c.createKey("vault")
	c.createKey("other")
	guess, err := keystore.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		given []string // serve flags
		steps []throttleStep
	}{
		{
			name:  "peer address",
			given: []string{"--throttle-burst", "3", "--throttle-rate", "0.01"},
			steps: []throttleStep{
				{client: "vault", token: valid.Token, expectStatus: 200},
				{client: "vault", token: guess.Reveal(), expectStatus: 401},
				{client: "vault", token: "not!a!token", expectStatus: 400},
				{client: "vault", token: guess.Reveal(), expectStatus: 401},
				{client: "vault", token: guess.Reveal(), expectStatus: 429, expectRetryAfter: 100},
				// A forwarded header is the caller's word: it changes nothing.
				{client: "vault", token: guess.Reveal(), forwardedFor: "203.0.113.9", expectStatus: 429, expectRetryAfter: 100},
				{client: "vault", token: valid.Token, expectStatus: 200},
				{client: "vault", expectStatus: 401},
				{client: "other", token: guess.Reveal(), expectStatus: 401},
			},
		},
		{
			name:  "trusted proxy",
			given: []string{"--throttle-burst", "1", "--throttle-rate", "0.01", "--trusted-proxy", "127.0.0.1/32"},
			steps: []throttleStep{
				{client: "vault", token: guess.Reveal(), forwardedFor: "203.0.113.9", expectStatus: 401},
				{client: "vault", token: guess.Reveal(), forwardedFor: "203.0.113.9", expectStatus: 429, expectRetryAfter: 100},
				{client: "vault", token: guess.Reveal(), forwardedFor: "203.0.113.10", expectStatus: 401},
				{client: "vault", token: guess.Reveal(), expectStatus: 401},
			},
		},
		{
			name:  "off",
			given: []string{"--throttle-burst", "0"},
			steps: repeat(throttleStep{client: "vault", token: guess.Reveal(), expectStatus: 401}, 30),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, c.dir, c.env, append([]string{"--database-url", c.db}, tt.given...)...)
			throttled := 0
			for i, st := range tt.steps {
				h := []string{"X-Forwarded-For", st.forwardedFor}
				if st.token != "" {
					h = append(h, "Authorization", "Bearer "+st.token)
				}
				r := do(t, http.MethodPost, s.base+"/v1/clients/"+st.client+"/chat", `{"message":"hi"}`, h...)
				// Retry-After counts down as the budget refills: from the
				// full wait (1/rate) at the failure, to 1.
				retry := r.header.Get("Retry-After")
				seconds, err := strconv.Atoi(retry)
				retryOK := retry == "" && st.expectRetryAfter == 0 || err == nil && seconds >= 1 && seconds <= st.expectRetryAfter
				if r.status != st.expectStatus || !retryOK {
					t.Fatalf("step %d: status %d Retry-After %q, want %d and up to %d s (body %s)", i, r.status, retry, st.expectStatus, st.expectRetryAfter, r.body)
				}
				if r.status == http.StatusTooManyRequests {
					throttled++
					if !strings.Contains(string(r.body), `"code":"throttled"`) {
						t.Fatalf("step %d: body %s", i, r.body)
					}
				}
			}
			scrape := do(t, http.MethodGet, s.base+"/metrics", "")
			if got, ok := metricValue(string(scrape.body), "vault", "throttled"); (ok || throttled > 0) && got != float64(throttled) {
				t.Fatalf("llmauth_requests_total{client=vault,outcome=throttled} = %v (%v), want %d", got, ok, throttled)
			}
		})
	}
}

type throttleStep struct {
	client, token, forwardedFor string
	expectStatus                int
	expectRetryAfter            int // at most; 0: no Retry-After
}

func repeat(s throttleStep, n int) []throttleStep {
	out := make([]throttleStep, n)
	for i := range out {
		out[i] = s
	}
	return out
}
