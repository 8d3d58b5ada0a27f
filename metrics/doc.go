// Package metrics holds the Prometheus collectors for llmauth: the
// authentication decisions, the decision cache and its freshness lease,
// calls to the key store, the change feed and the usage flusher.
//
// The package knows Prometheus and nothing else of llmauth. Its collectors are
// registered on a registry the caller supplies, never on the global default
// one, and a nil *Metrics is valid: every method on it does nothing, so code
// that takes a *Metrics works unchanged when metrics are switched off.
//
// Labels stay bounded. The client label of llmauth_requests_total is an
// existing client's name or UnknownClient ("_unknown"), which stands for
// decisions about no existing client (an unknown or invalid name, or a
// client whose state could not be read); a refused credential sent to an
// existing client is counted under that client. Every label value known in
// advance (the outcomes under UnknownClient, CacheNames, StoreOps,
// InvalidationReasons, FlushReasons) has its series at zero from the first
// scrape.
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
