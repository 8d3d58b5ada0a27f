package metrics

import (
	"errors"
	dto "github.com/prometheus/client_model/go"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// allFamilies lists every metric family, without the namespace.
var allFamilies = []string{
	"cache_fresh",
	"cache_invalidations_total",
	"cache_lease_lapses_total",
	"cache_lookups_total",
	"cache_stale_served_total",
	"change_events_total",
	"change_flushes_total",
	"change_listener_expected",
	"change_listener_up",
	"requests_total",
	"store_call_duration_seconds",
	"store_errors_total",
	"usage_dropped_total",
	"usage_flushes_total",
	"usage_keys_written_total",
}

func newTest(t *testing.T, opts Options) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(reg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m, reg
}

// exerciseAll calls every method once, so that every family has a series.
func exerciseAll(m *Metrics) {
	m.Decision("acme", OutcomeAuthenticated)
	m.CacheLookup(CacheClients, true)
	m.StaleServed(CacheKeys)
	m.Invalidated(InvalidatedClient)
	m.StoreCall(OpVerify, time.Millisecond, errors.New("down"))
	m.ChangeEvent("notify")
	m.ListenerUp(true)
	m.Flushed("backlog")
	m.LeaseChanged(false)
	m.UsageFlushed(3, nil)
	m.UsageDropped(1)
}

func gatheredNames(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help text", mf.GetName())
		}
	}
	return names
}

func TestNewFamilies(t *testing.T) {
	tests := []struct {
		name      string
		namespace string
		prefix    string
	}{
		{"default namespace", "", "llmauth_"},
		{"custom namespace", "acme_auth", "acme_auth_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg := newTest(t, Options{Namespace: tt.namespace})
			exerciseAll(m)
			var want []string
			for _, f := range allFamilies {
				want = append(want, tt.prefix+f)
			}
			if got := gatheredNames(t, reg); !slices.Equal(got, want) {
				t.Errorf("families:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestLint(t *testing.T) {
	m, reg := newTest(t, Options{})
	exerciseAll(m)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("GatherAndLint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestNewInvalid(t *testing.T) {
	tests := []struct {
		name string
		reg  prometheus.Registerer
		opts Options
	}{
		{"nil registerer", nil, Options{}},
		{"namespace starts with digit", prometheus.NewRegistry(), Options{Namespace: "1llmauth"}},
		{"namespace with dash", prometheus.NewRegistry(), Options{Namespace: "llm-auth"}},
		{"namespace with colon", prometheus.NewRegistry(), Options{Namespace: "llm:auth"}},
		{"buckets not increasing", prometheus.NewRegistry(), Options{DurationBuckets: []float64{0.1, 0.1}}},
		{"buckets decreasing", prometheus.NewRegistry(), Options{DurationBuckets: []float64{1, 0.5}}},
		{"bucket NaN", prometheus.NewRegistry(), Options{DurationBuckets: []float64{0.1, math.NaN()}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.reg, tt.opts)
			if err == nil {
				t.Fatal("New: want error, got nil")
			}
			if m != nil {
				t.Errorf("New: want nil *Metrics with error, got %v", m)
			}
			if reg, ok := tt.reg.(*prometheus.Registry); ok {
				if n, _ := testutil.GatherAndCount(reg); n != 0 {
					t.Errorf("registry holds %d series after failed New, want 0", n)
				}
			}
		})
	}
}

func TestNewInfBucket(t *testing.T) {
	// A trailing +Inf is implicit in Prometheus and accepted.
	m, reg := newTest(t, Options{DurationBuckets: []float64{0.5, math.Inf(+1)}})
	m.StoreCall("verify", time.Second, nil)
	if n, err := testutil.GatherAndCount(reg, "llmauth_store_call_duration_seconds"); err != nil || n != len(StoreOps) {
		t.Fatalf("GatherAndCount = %d, %v; want %d (one per op), nil", n, err, len(StoreOps))
	}
}

func TestDoubleRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(reg, Options{}); err != nil {
		t.Fatalf("first New: %v", err)
	}
	m, err := New(reg, Options{})
	if err == nil {
		t.Fatal("second New on the same registry: want error, got nil")
	}
	if m != nil {
		t.Errorf("second New: want nil *Metrics, got %v", m)
	}
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Errorf("second New: error %v does not wrap prometheus.AlreadyRegisteredError", err)
	}
	if !strings.Contains(err.Error(), "llmauth_requests_total") {
		t.Errorf("error %q does not name the metric", err)
	}

	// A different namespace on the same registry does not collide.
	if _, err := New(reg, Options{Namespace: "other"}); err != nil {
		t.Errorf("New with another namespace: %v", err)
	}
}

func TestFailedNewRollsBack(t *testing.T) {
	reg := prometheus.NewRegistry()
	// Occupy the last family New registers, so that every earlier one
	// succeeds before the failure. The squatter has the same descriptor as
	// New's (Prometheus remembers label names and help by metric name even
	// after Unregister).
	other, _ := newTest(t, Options{})
	squatter := other.usageDropped
	reg.MustRegister(squatter)
	if _, err := New(reg, Options{}); err == nil {
		t.Fatal("New: want error, got nil")
	}
	reg.Unregister(squatter)
	// Had New left its earlier collectors behind, this would fail.
	if _, err := New(reg, Options{}); err != nil {
		t.Fatalf("New after rollback: %v", err)
	}
}

func TestMustNew(t *testing.T) {
	reg := prometheus.NewRegistry()
	if m := MustNew(reg, Options{}); m == nil {
		t.Fatal("MustNew returned nil")
	}
	defer func() {
		if recover() == nil {
			t.Error("MustNew on a registry already holding the metrics did not panic")
		}
	}()
	MustNew(reg, Options{})
}

func TestMustNewNilRegisterer(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustNew(nil, ...) did not panic")
		}
	}()
	MustNew(nil, Options{})
}

func TestNilReceiver(t *testing.T) {
	var m *Metrics
	// None of these may panic.
	m.Decision("acme", OutcomeAuthenticated)
	m.Decision("EVIL\n", "bogus")
	m.CacheLookup(CacheClients, true)
	m.CacheLookup(CacheClients, false)
	m.StaleServed(CacheClients)
	m.Invalidated(InvalidatedFlush)
	m.StoreCall("verify", time.Second, nil)
	m.StoreCall("verify", time.Second, errors.New("down"))
	m.ChangeEvent("poll")
	m.ListenerUp(true)
	m.ListenerUp(false)
	m.UsageFlushed(10, nil)
	m.UsageFlushed(0, errors.New("down"))
	m.UsageDropped(5)
}

func TestDecisionBounding(t *testing.T) {
	tests := []struct {
		name        string
		client      string
		outcome     string
		wantClient  string
		wantOutcome string
	}{
		{"valid client", "acme", OutcomeAuthenticated, "acme", OutcomeAuthenticated},
		{"digits and dash", "bot-42", OutcomeAnonymous, "bot-42", OutcomeAnonymous},
		{"leading digit", "9bot", OutcomeInvalidToken, "9bot", OutcomeInvalidToken},
		{"63 bytes", strings.Repeat("a", 63), OutcomeMalformed, strings.Repeat("a", 63), OutcomeMalformed},
		{"placeholder", UnknownClient, OutcomeMissingToken, UnknownClient, OutcomeMissingToken},
		{"placeholder unknown client", UnknownClient, OutcomeUnknownClient, UnknownClient, OutcomeUnknownClient},
		{"placeholder unavailable", UnknownClient, OutcomeUnavailable, UnknownClient, OutcomeUnavailable},
		{"throttled", "acme", OutcomeThrottled, "acme", OutcomeThrottled},
		{"newline", "EVIL\n", OutcomeInvalidToken, UnknownClient, OutcomeInvalidToken},
		{"64 bytes", strings.Repeat("a", 64), OutcomeAuthenticated, UnknownClient, OutcomeAuthenticated},
		{"empty", "", OutcomeMissingToken, UnknownClient, OutcomeMissingToken},
		{"upper case", "Acme", OutcomeAuthenticated, UnknownClient, OutcomeAuthenticated},
		{"leading dash", "-acme", OutcomeAuthenticated, UnknownClient, OutcomeAuthenticated},
		{"other underscore name", "_admin", OutcomeAuthenticated, UnknownClient, OutcomeAuthenticated},
		{"placeholder with suffix", UnknownClient + "x", OutcomeAuthenticated, UnknownClient, OutcomeAuthenticated},
		{"space", "a b", OutcomeAuthenticated, UnknownClient, OutcomeAuthenticated},
		{"quote and brace", `a"}`, OutcomeAuthenticated, UnknownClient, OutcomeAuthenticated},
		{"non-ASCII", "café", OutcomeAuthenticated, UnknownClient, OutcomeAuthenticated},
		{"invalid UTF-8", "a\xff", OutcomeAuthenticated, UnknownClient, OutcomeAuthenticated},
		{"NUL", "a\x00", OutcomeAuthenticated, UnknownClient, OutcomeAuthenticated},
		{"unknown outcome", "acme", "bogus", "acme", "other"},
		{"empty outcome", "acme", "", "acme", "other"},
		{"outcome wrong case", "acme", "Authenticated", "acme", "other"},
		{"outcome other passed through", "acme", "other", "acme", "other"},
		{"both bad", "EVIL\n", "x\ny", UnknownClient, "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTest(t, Options{})
			m.Decision(tt.client, tt.outcome)
			m.Decision(tt.client, tt.outcome)
			if n := nonZero(t, m.requests); n != 1 {
				t.Fatalf("non-zero series = %d, want 1", n)
			}
			if got := testutil.ToFloat64(m.requests.WithLabelValues(tt.wantClient, tt.wantOutcome)); got != 2 {
				t.Errorf("requests_total{client=%q,outcome=%q} = %v, want 2", tt.wantClient, tt.wantOutcome, got)
			}
		})
	}
}

func TestDecisionExposition(t *testing.T) {
	m, _ := newTest(t, Options{})
	m.Decision("acme", OutcomeAuthenticated)
	m.Decision("acme", OutcomeAuthenticated)
	m.Decision("acme", OutcomeInvalidToken)
	m.Decision(UnknownClient, OutcomeMissingToken)
	m.Decision("EVIL\n", OutcomeMissingToken)
	m.Decision(strings.Repeat("a", 64), "bogus")

	const want = `
# HELP llmauth_requests_total Authentication decisions, by client (_unknown when no client was established) and outcome.
# TYPE llmauth_requests_total counter
llmauth_requests_total{client="_unknown",outcome="anonymous"} 0
llmauth_requests_total{client="_unknown",outcome="authenticated"} 0
llmauth_requests_total{client="_unknown",outcome="canceled"} 0
llmauth_requests_total{client="_unknown",outcome="invalid_token"} 0
llmauth_requests_total{client="_unknown",outcome="malformed"} 0
llmauth_requests_total{client="_unknown",outcome="missing_token"} 2
llmauth_requests_total{client="_unknown",outcome="other"} 1
llmauth_requests_total{client="_unknown",outcome="throttled"} 0
llmauth_requests_total{client="_unknown",outcome="unavailable"} 0
llmauth_requests_total{client="_unknown",outcome="unknown_client"} 0
llmauth_requests_total{client="acme",outcome="anonymous"} 0
llmauth_requests_total{client="acme",outcome="authenticated"} 2
llmauth_requests_total{client="acme",outcome="canceled"} 0
llmauth_requests_total{client="acme",outcome="invalid_token"} 1
llmauth_requests_total{client="acme",outcome="malformed"} 0
llmauth_requests_total{client="acme",outcome="missing_token"} 0
llmauth_requests_total{client="acme",outcome="throttled"} 0
llmauth_requests_total{client="acme",outcome="unavailable"} 0
`
	if err := testutil.CollectAndCompare(m.requests, strings.NewReader(want), "llmauth_requests_total"); err != nil {
		t.Error(err)
	}
}

// startSeries is how many series a fresh registry holds: every label value
// known in advance at zero. requests_total: 9 outcomes of _unknown;
// cache_lookups_total: 4 caches x hit/miss; cache_stale_served_total: 4;
// cache_invalidations_total: 3; store_call_duration_seconds and
// store_errors_total: 2 ops each; change_events_total: 2; change_flushes_total:
// 8; usage_flushes_total: 2; and the 6 families without labels.
const startSeries = 9 + 8 + 4 + 3 + 2 + 2 + 2 + 8 + 2 + 6

// TestKnownSeriesAtZero: before any event, the first scrape shows every
// label value known in advance, at zero.
func TestKnownSeriesAtZero(t *testing.T) {
	_, reg := newTest(t, Options{DurationBuckets: []float64{0.5}})
	if n, err := testutil.GatherAndCount(reg); err != nil || n != startSeries {
		t.Fatalf("series at start = %d, %v; want %d", n, err, startSeries)
	}
	const want = `
# HELP llmauth_cache_invalidations_total Cache invalidations, by reason (client, key or flush).
# TYPE llmauth_cache_invalidations_total counter
llmauth_cache_invalidations_total{reason="client"} 0
llmauth_cache_invalidations_total{reason="flush"} 0
llmauth_cache_invalidations_total{reason="key"} 0
# HELP llmauth_cache_lookups_total Lookups in the decision caches, by cache and result (hit or miss).
# TYPE llmauth_cache_lookups_total counter
llmauth_cache_lookups_total{cache="clients",result="hit"} 0
llmauth_cache_lookups_total{cache="clients",result="miss"} 0
llmauth_cache_lookups_total{cache="invalid_tokens",result="hit"} 0
llmauth_cache_lookups_total{cache="invalid_tokens",result="miss"} 0
llmauth_cache_lookups_total{cache="keys",result="hit"} 0
llmauth_cache_lookups_total{cache="keys",result="miss"} 0
llmauth_cache_lookups_total{cache="unknown_clients",result="hit"} 0
llmauth_cache_lookups_total{cache="unknown_clients",result="miss"} 0
# HELP llmauth_cache_stale_served_total Decisions served from cache past their TTL because the key store was unavailable (opt-in stale-if-error window), by cache.
# TYPE llmauth_cache_stale_served_total counter
llmauth_cache_stale_served_total{cache="clients"} 0
llmauth_cache_stale_served_total{cache="invalid_tokens"} 0
llmauth_cache_stale_served_total{cache="keys"} 0
llmauth_cache_stale_served_total{cache="unknown_clients"} 0
# HELP llmauth_requests_total Authentication decisions, by client (_unknown when no client was established) and outcome.
# TYPE llmauth_requests_total counter
llmauth_requests_total{client="_unknown",outcome="anonymous"} 0
llmauth_requests_total{client="_unknown",outcome="authenticated"} 0
llmauth_requests_total{client="_unknown",outcome="canceled"} 0
llmauth_requests_total{client="_unknown",outcome="invalid_token"} 0
llmauth_requests_total{client="_unknown",outcome="malformed"} 0
llmauth_requests_total{client="_unknown",outcome="missing_token"} 0
llmauth_requests_total{client="_unknown",outcome="throttled"} 0
llmauth_requests_total{client="_unknown",outcome="unavailable"} 0
llmauth_requests_total{client="_unknown",outcome="unknown_client"} 0
# HELP llmauth_store_call_duration_seconds Duration of calls to the key store in seconds, failed calls included, by operation.
# TYPE llmauth_store_call_duration_seconds histogram
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.5"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="+Inf"} 0
llmauth_store_call_duration_seconds_sum{op="client_state"} 0
llmauth_store_call_duration_seconds_count{op="client_state"} 0
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.5"} 0
llmauth_store_call_duration_seconds_bucket{op="verify",le="+Inf"} 0
llmauth_store_call_duration_seconds_sum{op="verify"} 0
llmauth_store_call_duration_seconds_count{op="verify"} 0
# HELP llmauth_store_errors_total Calls to the key store that returned an error, by operation.
# TYPE llmauth_store_errors_total counter
llmauth_store_errors_total{op="client_state"} 0
llmauth_store_errors_total{op="verify"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"llmauth_cache_invalidations_total", "llmauth_cache_lookups_total", "llmauth_cache_stale_served_total",
		"llmauth_requests_total", "llmauth_store_call_duration_seconds", "llmauth_store_errors_total"); err != nil {
		t.Error(err)
	}
	// The lists hold each name once: a duplicate would hide a missing one.
	for label, names := range map[string][]string{"cache": CacheNames, "op": StoreOps, "reason": InvalidationReasons, "outcome": outcomes} {
		seen := map[string]bool{}
		for _, n := range names {
			if seen[n] {
				t.Errorf("%s %q listed twice", label, n)
			}
			seen[n] = true
		}
	}
}

func TestCacheCounters(t *testing.T) {
	tests := []struct {
		name  string
		do    func(m *Metrics)
		c     func(m *Metrics) prometheus.Collector
		want  float64
		count int
	}{
		{
			name: "hits",
			do: func(m *Metrics) {
				m.CacheLookup(CacheKeys, true)
				m.CacheLookup(CacheKeys, true)
				m.CacheLookup(CacheKeys, false)
			},
			c:    func(m *Metrics) prometheus.Collector { return m.cacheLookups.WithLabelValues(CacheKeys, "hit") },
			want: 2,
		},
		{
			name: "misses",
			do: func(m *Metrics) {
				m.CacheLookup(CacheKeys, true)
				m.CacheLookup(CacheClients, false)
				m.CacheLookup(CacheClients, false)
				m.CacheLookup(CacheClients, false)
			},
			c:    func(m *Metrics) prometheus.Collector { return m.cacheLookups.WithLabelValues(CacheClients, "miss") },
			want: 3,
		},
		{
			name: "a cache name not known in advance gets its series",
			do: func(m *Metrics) {
				m.CacheLookup("decision", true)
				m.CacheLookup("decision", false)
				m.CacheLookup("decision", true)
			},
			c:     func(m *Metrics) prometheus.Collector { return m.cacheLookups.WithLabelValues("decision", "hit") },
			want:  2,
			count: 2,
		},
		{
			name: "stale served",
			do: func(m *Metrics) {
				m.StaleServed(CacheKeys)
				m.StaleServed(CacheKeys)
				m.StaleServed(CacheClients)
			},
			c:    func(m *Metrics) prometheus.Collector { return m.staleServed.WithLabelValues(CacheKeys) },
			want: 2,
		},
		{
			name: "invalidations",
			do: func(m *Metrics) {
				m.Invalidated(InvalidatedClient)
				m.Invalidated(InvalidatedKey)
				m.Invalidated(InvalidatedKey)
				m.Invalidated(InvalidatedFlush)
			},
			c:    func(m *Metrics) prometheus.Collector { return m.invalidations.WithLabelValues(InvalidatedKey) },
			want: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg := newTest(t, Options{})
			tt.do(m)
			// Count before ToFloat64: WithLabelValues would create a series.
			n, err := testutil.GatherAndCount(reg)
			if err != nil {
				t.Fatal(err)
			}
			// Only a label value not known in advance adds series.
			if want := startSeries + tt.count; n != want {
				t.Errorf("series = %d, want %d", n, want)
			}
			if got := testutil.ToFloat64(tt.c(m)); got != tt.want {
				t.Errorf("value = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestStoreCall(t *testing.T) {
	m, _ := newTest(t, Options{DurationBuckets: []float64{0.125, 0.5}})
	m.StoreCall("verify", 62500*time.Microsecond, nil) // 0.0625 s
	m.StoreCall("verify", 250*time.Millisecond, errors.New("down"))
	m.StoreCall("verify", time.Second, nil)
	m.StoreCall("verify", -time.Second, errors.New("clock")) // observed as 0
	m.StoreCall("client_state", 500*time.Millisecond, nil)

	const want = `
# HELP llmauth_store_call_duration_seconds Duration of calls to the key store in seconds, failed calls included, by operation.
# TYPE llmauth_store_call_duration_seconds histogram
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.125"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.5"} 1
llmauth_store_call_duration_seconds_bucket{op="client_state",le="+Inf"} 1
llmauth_store_call_duration_seconds_sum{op="client_state"} 0.5
llmauth_store_call_duration_seconds_count{op="client_state"} 1
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.125"} 2
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.5"} 3
llmauth_store_call_duration_seconds_bucket{op="verify",le="+Inf"} 4
llmauth_store_call_duration_seconds_sum{op="verify"} 1.3125
llmauth_store_call_duration_seconds_count{op="verify"} 4
# HELP llmauth_store_errors_total Calls to the key store that returned an error, by operation.
# TYPE llmauth_store_errors_total counter
llmauth_store_errors_total{op="client_state"} 0
llmauth_store_errors_total{op="verify"} 2
`
	if err := testutil.CollectAndCompare(m.storeDuration, strings.NewReader(want), "llmauth_store_call_duration_seconds"); err != nil {
		t.Error(err)
	}
	if err := testutil.CollectAndCompare(m.storeErrors, strings.NewReader(want), "llmauth_store_errors_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.storeDuration); n != 2 {
		t.Errorf("duration series = %d, want 2", n)
	}
	if n := testutil.CollectAndCount(m.storeErrors); n != 2 {
		t.Errorf("error series = %d, want 2 (one per op, at zero without errors)", n)
	}
}

func TestStoreCallDefaultBuckets(t *testing.T) {
	m, _ := newTest(t, Options{})
	m.StoreCall("verify", 3*time.Millisecond, nil)
	const want = `
# HELP llmauth_store_call_duration_seconds Duration of calls to the key store in seconds, failed calls included, by operation.
# TYPE llmauth_store_call_duration_seconds histogram
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.0005"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.001"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.0025"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.005"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.01"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.025"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.05"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.1"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.25"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.5"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="1"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="2.5"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="+Inf"} 0
llmauth_store_call_duration_seconds_sum{op="client_state"} 0
llmauth_store_call_duration_seconds_count{op="client_state"} 0
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.0005"} 0
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.001"} 0
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.0025"} 0
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.005"} 1
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.01"} 1
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.025"} 1
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.05"} 1
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.1"} 1
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.25"} 1
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.5"} 1
llmauth_store_call_duration_seconds_bucket{op="verify",le="1"} 1
llmauth_store_call_duration_seconds_bucket{op="verify",le="2.5"} 1
llmauth_store_call_duration_seconds_bucket{op="verify",le="+Inf"} 1
llmauth_store_call_duration_seconds_sum{op="verify"} 0.003
llmauth_store_call_duration_seconds_count{op="verify"} 1
`
	if err := testutil.CollectAndCompare(m.storeDuration, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestBucketsCopied(t *testing.T) {
	buckets := []float64{0.125, 0.5}
	m, _ := newTest(t, Options{DurationBuckets: buckets})
	buckets[0] = 100 // must not affect the histogram
	m.StoreCall("verify", 250*time.Millisecond, nil)
	const want = `
# HELP llmauth_store_call_duration_seconds Duration of calls to the key store in seconds, failed calls included, by operation.
# TYPE llmauth_store_call_duration_seconds histogram
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.125"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="0.5"} 0
llmauth_store_call_duration_seconds_bucket{op="client_state",le="+Inf"} 0
llmauth_store_call_duration_seconds_sum{op="client_state"} 0
llmauth_store_call_duration_seconds_count{op="client_state"} 0
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.125"} 0
llmauth_store_call_duration_seconds_bucket{op="verify",le="0.5"} 1
llmauth_store_call_duration_seconds_bucket{op="verify",le="+Inf"} 1
llmauth_store_call_duration_seconds_sum{op="verify"} 0.25
llmauth_store_call_duration_seconds_count{op="verify"} 1
`
	if err := testutil.CollectAndCompare(m.storeDuration, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestChangeEvents(t *testing.T) {
	tests := []struct {
		name       string
		events     []string
		wantNotify float64
		wantPoll   float64
	}{
		{"none: both series exist at zero", nil, 0, 0},
		{"notify only", []string{"notify", "notify"}, 2, 0},
		{"mixed", []string{"notify", "poll", "poll", "poll"}, 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTest(t, Options{})
			for _, e := range tt.events {
				m.ChangeEvent(e)
			}
			if n := testutil.CollectAndCount(m.changeEvents); n != 2 {
				t.Errorf("series = %d, want 2", n)
			}
			if got := testutil.ToFloat64(m.changeEvents.WithLabelValues("notify")); got != tt.wantNotify {
				t.Errorf("notify = %v, want %v", got, tt.wantNotify)
			}
			if got := testutil.ToFloat64(m.changeEvents.WithLabelValues("poll")); got != tt.wantPoll {
				t.Errorf("poll = %v, want %v", got, tt.wantPoll)
			}
		})
	}
}

func TestListenerUp(t *testing.T) {
	tests := []struct {
		name  string
		calls []bool
		want  float64
	}{
		{"initially down", nil, 0},
		{"up", []bool{true}, 1},
		{"up then down", []bool{true, false}, 0},
		{"down then up", []bool{false, true}, 1},
		{"up twice", []bool{true, true}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTest(t, Options{})
			for _, up := range tt.calls {
				m.ListenerUp(up)
			}
			if got := testutil.ToFloat64(m.listenerUp); got != tt.want {
				t.Errorf("listener_up = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	down := errors.New("down")
	type flush struct {
		keys int
		err  error
	}
	tests := []struct {
		name        string
		flushes     []flush
		dropped     []int
		wantOK      float64
		wantErr     float64
		wantKeys    float64
		wantDropped float64
	}{
		{"nothing", nil, nil, 0, 0, 0, 0},
		{"one ok flush", []flush{{5, nil}}, nil, 1, 0, 5, 0},
		{"empty ok flush", []flush{{0, nil}}, nil, 1, 0, 0, 0},
		{"failed flush", []flush{{0, down}}, nil, 0, 1, 0, 0},
		{"partial failure counts written keys", []flush{{2, down}}, nil, 0, 1, 2, 0},
		{"mixed", []flush{{5, nil}, {0, down}, {7, nil}}, []int{3, 4}, 2, 1, 12, 7},
		{"negative ignored", []flush{{-3, nil}}, []int{-1, 0}, 1, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTest(t, Options{})
			for _, f := range tt.flushes {
				m.UsageFlushed(f.keys, f.err)
			}
			for _, n := range tt.dropped {
				m.UsageDropped(n)
			}
			if n := testutil.CollectAndCount(m.usageFlushes); n != 2 {
				t.Errorf("flush series = %d, want 2", n)
			}
			checks := []struct {
				name string
				c    prometheus.Collector
				want float64
			}{
				{"flushes ok", m.usageFlushes.WithLabelValues("ok"), tt.wantOK},
				{"flushes error", m.usageFlushes.WithLabelValues("error"), tt.wantErr},
				{"keys written", m.usageKeys, tt.wantKeys},
				{"dropped", m.usageDropped, tt.wantDropped},
			}
			for _, c := range checks {
				if got := testutil.ToFloat64(c.c); got != c.want {
					t.Errorf("%s = %v, want %v", c.name, got, c.want)
				}
			}
		})
	}
}

func TestConcurrent(t *testing.T) {
	m, reg := newTest(t, Options{})
	const workers, per = 8, 500
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range per {
				m.Decision("acme", OutcomeAuthenticated)
				m.CacheLookup(CacheKeys, i%2 == 0)
				m.StoreCall("verify", time.Millisecond, nil)
				m.ChangeEvent("poll")
				m.ListenerUp(i%2 == 0)
				m.UsageFlushed(1, nil)
				m.UsageDropped(1)
			}
		})
		wg.Go(func() {
			for range per {
				if _, err := reg.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	const total = workers * per
	checks := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"requests", m.requests.WithLabelValues("acme", OutcomeAuthenticated), total},
		{"cache hits", m.cacheLookups.WithLabelValues(CacheKeys, "hit"), total / 2},
		{"cache misses", m.cacheLookups.WithLabelValues(CacheKeys, "miss"), total / 2},
		{"change poll", m.changeEvents.WithLabelValues("poll"), total},
		{"flushes ok", m.usageFlushes.WithLabelValues("ok"), total},
		{"keys written", m.usageKeys, total},
		{"dropped", m.usageDropped, total},
	}
	for _, c := range checks {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
}

// nonZero counts the series of c whose value is not zero.
func nonZero(t *testing.T, c prometheus.Collector) int {
	t.Helper()
	ch := make(chan prometheus.Metric, 100)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		if pb.GetCounter().GetValue() != 0 {
			n++
		}
	}
	return n
}

func TestFeedMetrics(t *testing.T) {
	m, reg := newTest(t, Options{})
	for _, r := range FlushReasons {
		if got := testutil.ToFloat64(m.feedFlushes.WithLabelValues(r)); got != 0 {
			t.Errorf("flushes{reason=%q} = %v at start, want 0", r, got)
		}
	}
	if got := testutil.ToFloat64(m.leaseFresh); got != 1 {
		t.Errorf("cache_fresh = %v at start, want 1", got)
	}
	m.Flushed("ids_backwards")
	m.Flushed("ids_backwards")
	m.LeaseChanged(false)
	if got := testutil.ToFloat64(m.feedFlushes.WithLabelValues("ids_backwards")); got != 2 {
		t.Errorf("flushes{ids_backwards} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.leaseFresh); got != 0 {
		t.Errorf("cache_fresh after a lapse = %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.leaseLapses); got != 1 {
		t.Errorf("lease_lapses_total = %v, want 1", got)
	}
	m.LeaseChanged(true)
	if got := testutil.ToFloat64(m.leaseFresh); got != 1 {
		t.Errorf("cache_fresh after restore = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.leaseLapses); got != 1 {
		t.Errorf("lease_lapses_total after restore = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "llmauth_change_flushes_total"); err != nil || n != len(FlushReasons) {
		t.Errorf("flush series = %d, %v; want %d", n, err, len(FlushReasons))
	}
}
