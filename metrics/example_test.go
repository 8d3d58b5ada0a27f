package metrics_test

import (
	"bufio"
	"fmt"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llmauth/llmauth/metrics"
)

// Record decisions and read the result back, as a test would.
func ExampleNew() {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}

	m.Decision("acme", metrics.OutcomeAuthenticated)
	m.Decision("acme", metrics.OutcomeAuthenticated)
	m.Decision(metrics.UnknownClient, metrics.OutcomeMissingToken)
	m.Decision("EVIL\n", metrics.OutcomeInvalidToken) // not a client name: recorded as _unknown

	// The placeholder's nine series exist from the start, at zero; a
	// client's eight (all outcomes but unknown_client) from its first
	// decision.
	series, err := testutil.GatherAndCount(reg, "llmauth_requests_total")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("series:", series)

	err = testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP llmauth_requests_total Authentication decisions, by client (_unknown when no client was established) and outcome.
# TYPE llmauth_requests_total counter
llmauth_requests_total{client="_unknown",outcome="anonymous"} 0
llmauth_requests_total{client="_unknown",outcome="authenticated"} 0
llmauth_requests_total{client="_unknown",outcome="canceled"} 0
llmauth_requests_total{client="_unknown",outcome="invalid_token"} 1
llmauth_requests_total{client="_unknown",outcome="malformed"} 0
llmauth_requests_total{client="_unknown",outcome="missing_token"} 1
llmauth_requests_total{client="_unknown",outcome="throttled"} 0
llmauth_requests_total{client="_unknown",outcome="unavailable"} 0
llmauth_requests_total{client="_unknown",outcome="unknown_client"} 0
llmauth_requests_total{client="acme",outcome="anonymous"} 0
llmauth_requests_total{client="acme",outcome="authenticated"} 2
llmauth_requests_total{client="acme",outcome="canceled"} 0
llmauth_requests_total{client="acme",outcome="invalid_token"} 0
llmauth_requests_total{client="acme",outcome="malformed"} 0
llmauth_requests_total{client="acme",outcome="missing_token"} 0
llmauth_requests_total{client="acme",outcome="throttled"} 0
llmauth_requests_total{client="acme",outcome="unavailable"} 0
`), "llmauth_requests_total")
	fmt.Println("as expected:", err == nil)
	// Output:
	// series: 17
	// as expected: true
}

// A nil *Metrics turns metrics off: every method is a no-op.
func ExampleMetrics_nil() {
	var m *metrics.Metrics
	m.Decision("acme", metrics.OutcomeAuthenticated)
	m.ListenerUp(true)
	fmt.Println("no panic")
	// Output: no panic
}

// Serve the registry's metrics over HTTP with promhttp.HandlerFor.
func ExampleMetrics_serving() {
	reg := prometheus.NewRegistry()
	m := metrics.MustNew(reg, metrics.Options{})
	m.Decision("acme", metrics.OutcomeAuthenticated)
	m.ListenerUp(true)

	handler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	// In a server: http.Handle("/metrics", handler).

	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))

	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, `llmauth_requests_total{client="acme",outcome="authenticated"`) || strings.HasPrefix(line, "llmauth_change_listener_up") {
			fmt.Println(line)
		}
	}
	// Output:
	// llmauth_change_listener_up 1
	// llmauth_requests_total{client="acme",outcome="authenticated"} 1
}
