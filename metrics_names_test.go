package llmauth_test

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
	"github.com/llmauth/llmauth/metrics"
)

// The metrics package imports nothing of keystore, so it keeps its own
// list of the label values the cache reports, and starts their series at
// zero. These tests keep the two in step.

// TestMetricsKnowCacheNames: every cache keystore/cache names is among the
// cache label values metrics starts at zero.
func TestMetricsKnowCacheNames(t *testing.T) {
	for _, name := range []string{cache.Clients, cache.UnknownClients, cache.Keys, cache.InvalidTokens} {
		if !slices.Contains(metrics.CacheNames, name) {
			t.Errorf("cache name %q is not in metrics.CacheNames %q: its series would not exist before its first lookup", name, metrics.CacheNames)
		}
	}
}

// TestMetricsKnowReportedLabels drives a real stack through hits, misses,
// invalidations of each kind and a flush, then scrapes /metrics: every
// cache, op and reason value the cache reported must be one that metrics
// knows in advance, so no series appears later than the first scrape.
func TestMetricsKnowReportedLabels(t *testing.T) {
	s := newStack(t, "sqlite:"+filepath.Join(t.TempDir(), "names.db"))
	ctx := context.Background()
	for _, name := range []string{"open", "locked"} {
		if _, err := s.store.CreateClient(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	key, err := s.store.CreateKey(ctx, "locked", keystore.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	spare, err := s.store.CreateKey(ctx, "locked", keystore.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := s.store.CreateKey(ctx, "open", keystore.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.DeactivateKey(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	bearer := func(k keystore.NewKey) string { return "Bearer " + k.Token.Reveal() }
	for range 2 { // a miss, then a hit, in each cache
		for _, call := range []struct {
			client string
			auth   []string
			status int
		}{
			{"open", nil, 200},
			{"nobody", nil, 404},
			{"locked", []string{bearer(key)}, 200},
			{"locked", []string{bearer(gone)}, 401},
		} {
			if res := s.chat(t, call.client, call.auth...); res.status != call.status {
				t.Fatalf("%s %v: %d, want %d", call.client, call.auth != nil, res.status, call.status)
			}
		}
	}
	// A key change, a client change and a flush.
	if _, err := s.store.DeactivateKey(ctx, spare.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.CreateClient(ctx, "late"); err != nil {
		t.Fatal(err)
	}
	if err := s.st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	s.st.Cache.Flush()

	res, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scrape, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(scrape)))
	if err != nil {
		t.Fatalf("the scrape does not parse: %v", err)
	}
	// value sums the series that match labels (a histogram counts its
	// observations): -1 when there is none.
	value := func(family string, labels ...string) float64 {
		sum := -1.0
		for _, m := range families[family].GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			match := true
			for i := 0; i+1 < len(labels); i += 2 {
				match = match && got[labels[i]] == labels[i+1]
			}
			if !match {
				continue
			}
			if sum < 0 {
				sum = 0
			}
			if h := m.GetHistogram(); h != nil {
				sum += float64(h.GetSampleCount())
			} else {
				sum += m.GetCounter().GetValue()
			}
		}
		return sum
	}
	for _, tc := range []struct {
		family, label string
		known         []string
		seen          []string // values this run must have moved
	}{
		{"llmauth_cache_lookups_total", "cache", metrics.CacheNames, []string{cache.Clients, cache.UnknownClients, cache.Keys, cache.InvalidTokens}},
		{"llmauth_cache_stale_served_total", "cache", metrics.CacheNames, nil},
		{"llmauth_store_call_duration_seconds", "op", metrics.StoreOps, metrics.StoreOps},
		{"llmauth_store_errors_total", "op", metrics.StoreOps, nil},
		{"llmauth_cache_invalidations_total", "reason", metrics.InvalidationReasons, metrics.InvalidationReasons},
	} {
		f, ok := families[tc.family]
		if !ok {
			t.Errorf("%s is not in the scrape", tc.family)
			continue
		}
		var values []string
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == tc.label && !slices.Contains(values, l.GetValue()) {
					values = append(values, l.GetValue())
				}
			}
		}
		slices.Sort(values)
		want := slices.Sorted(slices.Values(tc.known))
		if !slices.Equal(values, want) {
			t.Errorf("%s{%s}: values %q, want exactly the known %q", tc.family, tc.label, values, want)
		}
		for _, v := range tc.seen {
			if got := value(tc.family, tc.label, v); got < 1 {
				t.Errorf("%s{%s=%q} = %v after the run, want at least 1", tc.family, tc.label, v, got)
			}
		}
	}
	// Each cache counted a hit on the second round.
	for _, c := range []string{cache.Clients, cache.UnknownClients, cache.Keys, cache.InvalidTokens} {
		if got := value("llmauth_cache_lookups_total", "cache", c, "result", "hit"); got < 1 {
			t.Errorf("llmauth_cache_lookups_total{cache=%q,result=\"hit\"} = %v, want at least 1", c, got)
		}
	}
}
