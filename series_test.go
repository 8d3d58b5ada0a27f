package llmauth_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llmauth/llmauth"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// TestExistingClientsSeriesAtZero: the clients that exist at start-up
// have their request series at zero from the first scrape, every outcome
// that can be counted under a client.
func TestExistingClientsSeriesAtZero(t *testing.T) {
	ctx := context.Background()
	url := "sqlite:" + filepath.Join(t.TempDir(), "s.db")
	db, err := sqlstore.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlstore.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	admin, err := sqlstore.New(ctx, db, sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"alpha-bot", "beta-bot"} {
		if _, err := admin.CreateClient(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	_ = db.Close()

	reg := prometheus.NewRegistry()
	st, err := llmauth.New(ctx, url, llmauth.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	for _, c := range []string{"alpha-bot", "beta-bot"} {
		for _, o := range []string{"anonymous", "authenticated", "missing_token", "invalid_token", "malformed", "unavailable", "throttled", "canceled"} {
			if got := testutil.ToFloat64(mustCounter(t, reg, c, o)); got != 0 {
				t.Errorf("%s/%s = %v, want 0", c, o, got)
			}
		}
	}
	// 9 for _unknown, 8 for each existing client.
	if n, err := testutil.GatherAndCount(reg, "llmauth_requests_total"); err != nil || n != 9+2*8 {
		t.Fatalf("llmauth_requests_total has %d series (%v), want %d", n, err, 9+2*8)
	}
}

// mustCounter finds the llmauth_requests_total series of client and
// outcome in reg, failing the test if it does not exist.
func mustCounter(t *testing.T, reg *prometheus.Registry, client, outcome string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
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
				return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return m.GetCounter().GetValue() })
			}
		}
	}
	t.Fatalf("no series llmauth_requests_total{client=%q,outcome=%q}", client, outcome)
	return nil
}
