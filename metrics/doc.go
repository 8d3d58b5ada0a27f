// Package metrics holds the Prometheus collectors for llmauth: the
// authentication decisions, the decision cache, calls to the key store, the
// change listener and the usage flusher.
//
// The package knows Prometheus and nothing else of llmauth. Its collectors are
// registered on a registry the caller supplies, never on the global default
// one, and a nil *Metrics is valid: every method on it does nothing, so code
// that takes a *Metrics works unchanged when metrics are switched off.
//
// The smallest use:
//
//	reg := prometheus.NewRegistry()
//	m, err := metrics.New(reg, metrics.Options{})
//	if err != nil {
//		return err
//	}
//	m.Decision("acme", metrics.OutcomeAuthenticated)
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
package metrics
