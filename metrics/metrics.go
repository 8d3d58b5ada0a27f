package metrics

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultNamespace is the metric name prefix used when Options.Namespace is
// empty.
const DefaultNamespace = "llmauth"

// UnknownClient is the client label value of a decision about no existing
// client: the request names no client, or a name that is not a valid
// client name (outcome unknown_client), or the client's state could not be
// read (outcome unavailable). A decision about an existing client is
// counted under that client's name whatever its outcome: a missing,
// invalid or malformed credential sent to a client is the client's. Any
// client value given to Decision that is not a valid client name is
// recorded as UnknownClient too. A valid client name never starts with '_',
// so it cannot collide with a real client.
const UnknownClient = "_unknown"

// Outcome label values of llmauth_requests_total, one per way an
// authentication decision can end. Any other string given to Decision is
// recorded as "other".
const (
	// OutcomeAnonymous is a request let through without a key because its
	// client requires none.
	OutcomeAnonymous = "anonymous"
	// OutcomeAuthenticated is a request let through on a valid key.
	OutcomeAuthenticated = "authenticated"
	// OutcomeMissingToken is a request refused (401) because it carried no
	// Authorization header while its client requires a key.
	OutcomeMissingToken = "missing_token"
	// OutcomeInvalidToken is a request refused (401) because its token is
	// not an active, unexpired key of the client: unknown, revoked,
	// expired, another client's, or failing the token format or checksum.
	OutcomeInvalidToken = "invalid_token"
	// OutcomeMalformed is a request refused (400) because its
	// Authorization header is not one well-formed Bearer credential:
	// several headers, another scheme, an empty token or one with
	// characters RFC 6750 does not allow. A well-formed credential that is
	// no valid token (bad format or checksum) is OutcomeInvalidToken.
	OutcomeMalformed = "malformed"
	// OutcomeUnknownClient is a request (404) for a name that is no client,
	// counted under UnknownClient.
	OutcomeUnknownClient = "unknown_client"
	// OutcomeUnavailable is a request refused (503) because the key store
	// could not answer: counted under the client's name once its state was
	// read, under UnknownClient before.
	OutcomeUnavailable = "unavailable"
	// OutcomeThrottled is a request refused (429) because its source sent
	// the client more invalid or malformed credentials than the throttling
	// budget allows.
	OutcomeThrottled = "throttled"
	// OutcomeCanceled is a request whose caller went away before the key
	// store answered: no decision, and no outage either.
	OutcomeCanceled = "canceled"
)

// outcomes are the Outcome constants; New starts UnknownClient's series
// of each at zero.
var outcomes = []string{
	OutcomeAnonymous, OutcomeAuthenticated, OutcomeMissingToken, OutcomeInvalidToken,
	OutcomeMalformed, OutcomeUnknownClient, OutcomeUnavailable, OutcomeThrottled,
	OutcomeCanceled,
}

// Label values known in advance, besides the outcomes and FlushReasons.
// New starts a series of each at zero, so that every one shows from the
// first scrape: rate() and absence alerts work before the first event,
// and dashboards list them all.
//
// They are the names keystore/cache reports to its Observer. This package
// imports nothing of keystore, so the names are kept here; a test in the
// root package (metrics_names_test.go) checks that every name the cache
// uses is among them.
const (
	// CacheClients, CacheUnknownClients, CacheKeys and CacheInvalidTokens
	// are the cache label values of llmauth_cache_lookups_total and
	// llmauth_cache_stale_served_total: keystore/cache's client states,
	// names that are no client, verified keys and tokens that failed.
	CacheClients        = "clients"
	CacheUnknownClients = "unknown_clients"
	CacheKeys           = "keys"
	CacheInvalidTokens  = "invalid_tokens"

	// OpClientState and OpVerify are the op label values of
	// llmauth_store_call_duration_seconds and llmauth_store_errors_total:
	// the two questions the cache asks the key store on a miss.
	OpClientState = "client_state"
	OpVerify      = "verify"

	// InvalidatedClient, InvalidatedKey and InvalidatedFlush are the
	// reason label values of llmauth_cache_invalidations_total: a client's
	// rows changed, a key or its link changed, everything was dropped.
	InvalidatedClient = "client"
	InvalidatedKey    = "key"
	InvalidatedFlush  = "flush"
)

// CacheNames, StoreOps and InvalidationReasons list the constants above,
// by label.
var (
	CacheNames          = []string{CacheClients, CacheUnknownClients, CacheKeys, CacheInvalidTokens}
	StoreOps            = []string{OpClientState, OpVerify}
	InvalidationReasons = []string{InvalidatedClient, InvalidatedKey, InvalidatedFlush}
)

// outcomeOther is recorded in place of an outcome string that is not one of
// the Outcome constants.
const outcomeOther = "other"

// maxClientLen is the longest client name recorded as a label value.
const maxClientLen = 63

// defaultDurationBuckets suits calls to a database: 0.5 ms to 2.5 s.
var defaultDurationBuckets = []float64{
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
}

// Options configures New. The zero value is ready to use.
type Options struct {
	// Namespace prefixes every metric name, followed by '_'. It must match
	// [a-zA-Z_][a-zA-Z0-9_]*. Empty means DefaultNamespace ("llmauth").
	Namespace string

	// DurationBuckets are the upper bounds, in seconds and strictly
	// increasing, of the llmauth_store_call_duration_seconds histogram.
	// Empty means buckets suited to database calls, from 0.0005 to 2.5.
	DurationBuckets []float64
}

// Metrics records llmauth's metrics. Create one with New or MustNew; it is
// safe for concurrent use. A nil *Metrics is valid and every method on it is a
// no-op.
type Metrics struct {
	requests      *prometheus.CounterVec
	cacheLookups  *prometheus.CounterVec
	staleServed   *prometheus.CounterVec
	invalidations *prometheus.CounterVec
	storeDuration *prometheus.HistogramVec
	storeErrors   *prometheus.CounterVec
	changeEvents  *prometheus.CounterVec
	listenerUp    prometheus.Gauge
	listenerWant  prometheus.Gauge
	feedFlushes   *prometheus.CounterVec
	leaseFresh    prometheus.Gauge
	leaseLapses   prometheus.Counter
	usageFlushes  *prometheus.CounterVec
	usageKeys     prometheus.Counter
	usageDropped  prometheus.Counter

	// byClient holds, per client label value, the counters of every
	// outcome: a decision costs one lock-free map load, and a client's
	// first decision starts all its outcomes at zero, so that rate() sees
	// every later one. Bounded by the number of clients that exist.
	byClient sync.Map // string -> *clientCounters
	// lookups holds the counters of the known caches, by cacheIndex.
	lookups [][2]prometheus.Counter // [miss, hit]
}

// clientCounters are one client's llmauth_requests_total series, by
// outcomeIndex.
type clientCounters [10]prometheus.Counter // outcomes, then outcomeOther

// New creates llmauth's collectors and registers them on reg. It never uses
// the global default registry. It returns an error, and leaves reg as it
// found it, when reg is nil, opts is invalid, or a registration fails (for
// example because reg already holds these metrics); registration errors are
// wrapped, so errors.As finds a prometheus.AlreadyRegisteredError.
func New(reg prometheus.Registerer, opts Options) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil prometheus.Registerer")
	}
	ns := opts.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	if !validNamespace(ns) {
		return nil, fmt.Errorf("metrics: invalid namespace %q: must match [a-zA-Z_][a-zA-Z0-9_]*", ns)
	}
	buckets := defaultDurationBuckets
	if len(opts.DurationBuckets) > 0 {
		if err := validBuckets(opts.DurationBuckets); err != nil {
			return nil, err
		}
		buckets = opts.DurationBuckets
	}
	buckets = append([]float64(nil), buckets...)

	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns,
			Name:      "requests_total",
			Help:      "Authentication decisions, by client (" + UnknownClient + " when no client was established) and outcome.",
		}, []string{"client", "outcome"}),
		cacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: "cache",
			Name:      "lookups_total",
			Help:      "Lookups in the decision caches, by cache and result (hit or miss).",
		}, []string{"cache", "result"}),
		staleServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: "cache",
			Name:      "stale_served_total",
			Help:      "Decisions served from cache past their TTL because the key store was unavailable (opt-in stale-if-error window), by cache.",
		}, []string{"cache"}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: "cache",
			Name:      "invalidations_total",
			Help:      "Cache invalidations, by reason (client, key or flush).",
		}, []string{"reason"}),
		storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns,
			Subsystem: "store",
			Name:      "call_duration_seconds",
			Help:      "Duration of calls to the key store in seconds, failed calls included, by operation.",
			Buckets:   buckets,
		}, []string{"op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: "store",
			Name:      "errors_total",
			Help:      "Calls to the key store that returned an error, by operation.",
		}, []string{"op"}),
		changeEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: "change",
			Name:      "events_total",
			Help:      "Key store change events received, by path (notify for a LISTEN/NOTIFY message, poll for a change found by polling).",
		}, []string{"path"}),
		listenerUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns,
			Subsystem: "change",
			Name:      "listener_up",
			Help:      "Whether the change listener is connected to the key store (1) or not (0).",
		}),
		listenerWant: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns,
			Subsystem: "change",
			Name:      "listener_expected",
			Help:      "Whether this instance keeps a change listener (1: PostgreSQL LISTEN/NOTIFY) or polls the change log only (0: SQLite).",
		}),
		feedFlushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: "change",
			Name:      "flushes_total",
			Help:      "Whole-cache flushes because the change feed could not prove every change was seen, by reason.",
		}, []string{"reason"}),
		leaseFresh: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns,
			Subsystem: "cache",
			Name:      "fresh",
			Help:      "Whether the cache has proof, within the staleness bound, that it has seen every change (1) or not (0: every decision goes to the key store).",
		}),
		leaseLapses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: "cache",
			Name:      "lease_lapses_total",
			Help:      "Times the cache's proof of freshness ran out (the change log was not read within the staleness bound).",
		}),
		usageFlushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: "usage",
			Name:      "flushes_total",
			Help:      "Flushes of buffered key usage to the key store, by result (ok or error).",
		}, []string{"result"}),
		usageKeys: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: "usage",
			Name:      "keys_written_total",
			Help:      "Key usage records written to the key store by usage flushes.",
		}),
		usageDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: "usage",
			Name:      "dropped_total",
			Help:      "Key usage records dropped without being written, for example because the usage buffer was full.",
		}),
	}

	// Every label value known in advance starts at zero, so that rate()
	// and absence alerts work before the first event, and dashboards see
	// every family at once.
	m.changeEvents.WithLabelValues("notify")
	m.changeEvents.WithLabelValues("poll")
	m.usageFlushes.WithLabelValues("ok")
	m.usageFlushes.WithLabelValues("error")
	for _, r := range FlushReasons {
		m.feedFlushes.WithLabelValues(r)
	}
	m.leaseFresh.Set(1)
	m.clientCounters(UnknownClient)
	m.lookups = make([][2]prometheus.Counter, len(CacheNames))
	for i, c := range CacheNames {
		m.lookups[i] = [2]prometheus.Counter{m.cacheLookups.WithLabelValues(c, "miss"), m.cacheLookups.WithLabelValues(c, "hit")}
		m.staleServed.WithLabelValues(c)
	}
	for _, op := range StoreOps {
		m.storeDuration.WithLabelValues(op)
		m.storeErrors.WithLabelValues(op)
	}
	for _, r := range InvalidationReasons {
		m.invalidations.WithLabelValues(r)
	}

	collectors := []struct {
		name string
		c    prometheus.Collector
	}{
		{"requests_total", m.requests},
		{"cache_lookups_total", m.cacheLookups},
		{"cache_stale_served_total", m.staleServed},
		{"cache_invalidations_total", m.invalidations},
		{"store_call_duration_seconds", m.storeDuration},
		{"store_errors_total", m.storeErrors},
		{"change_events_total", m.changeEvents},
		{"change_listener_up", m.listenerUp},
		{"change_listener_expected", m.listenerWant},
		{"change_flushes_total", m.feedFlushes},
		{"cache_fresh", m.leaseFresh},
		{"cache_lease_lapses_total", m.leaseLapses},
		{"usage_flushes_total", m.usageFlushes},
		{"usage_keys_written_total", m.usageKeys},
		{"usage_dropped_total", m.usageDropped},
	}
	for i, c := range collectors {
		if err := reg.Register(c.c); err != nil {
			for _, done := range collectors[:i] {
				reg.Unregister(done.c)
			}
			return nil, fmt.Errorf("metrics: registering %s_%s: %w", ns, c.name, err)
		}
	}
	return m, nil
}

// MustNew is like New but panics if New returns an error.
func MustNew(reg prometheus.Registerer, opts Options) *Metrics {
	m, err := New(reg, opts)
	if err != nil {
		panic(err)
	}
	return m
}

// Decision counts one authentication decision in llmauth_requests_total.
// client is the client's name, or UnknownClient when none was established; a
// value that is not a valid client name (empty, longer than 63 bytes,
// starting with '-', or with a byte outside [a-z0-9-]) is recorded as
// UnknownClient, so that attacker-chosen strings never become label values.
// The caller still bounds cardinality: pass only names of existing clients. outcome is one of the
// Outcome constants; any other string is recorded as "other".
func (m *Metrics) Decision(client, outcome string) {
	if m == nil {
		return
	}
	i := outcomeIndex(outcome)
	if v, ok := m.byClient.Load(client); ok {
		v.(*clientCounters)[i].Inc()
		return
	}
	m.clientCounters(boundClient(client))[i].Inc()
}

// InitClient starts the llmauth_requests_total series of an existing
// client at zero, each outcome but unknown_client, as its first decision
// would: call it for the clients known at start-up, so that the first
// scrape shows them and rate() sees their first decisions. A name that is
// not a valid client name is ignored.
func (m *Metrics) InitClient(client string) {
	if m == nil || boundClient(client) != client || client == UnknownClient {
		return
	}
	m.clientCounters(client)
}

// clientCounters returns the counters of a client label value, creating
// them, all at zero, on first use.
func (m *Metrics) clientCounters(client string) *clientCounters {
	if v, ok := m.byClient.Load(client); ok {
		return v.(*clientCounters)
	}
	cc := new(clientCounters)
	for i, o := range outcomes {
		if o == OutcomeUnknownClient && client != UnknownClient {
			// Never counted under an existing client: no zero series.
			cc[i] = lazyCounter{vec: m.requests, labels: []string{client, o}}
			continue
		}
		cc[i] = m.requests.WithLabelValues(client, o)
	}
	// "other" is not started at zero: it exists only if a caller of
	// Decision passes an outcome this package does not know.
	cc[len(outcomes)] = lazyCounter{vec: m.requests, labels: []string{client, outcomeOther}}
	v, _ := m.byClient.LoadOrStore(client, cc)
	return v.(*clientCounters)
}

// lazyCounter creates its series at the first increment.
type lazyCounter struct {
	prometheus.Counter
	vec    *prometheus.CounterVec
	labels []string
}

func (c lazyCounter) Inc() { c.vec.WithLabelValues(c.labels...).Inc() }

// outcomeIndex is the index in outcomes of outcome, or len(outcomes) for
// outcomeOther.
func outcomeIndex(outcome string) int {
	switch outcome {
	case OutcomeAnonymous:
		return 0
	case OutcomeAuthenticated:
		return 1
	case OutcomeMissingToken:
		return 2
	case OutcomeInvalidToken:
		return 3
	case OutcomeMalformed:
		return 4
	case OutcomeUnknownClient:
		return 5
	case OutcomeUnavailable:
		return 6
	case OutcomeThrottled:
		return 7
	case OutcomeCanceled:
		return 8
	}
	return len(outcomes)
}

// CacheLookup counts one lookup in the named cache in
// llmauth_cache_lookups_total, as a hit or a miss. cache is one of
// CacheNames (any fixed name chosen by the code, never request data).
func (m *Metrics) CacheLookup(cache string, hit bool) {
	if m == nil {
		return
	}
	h := 0
	if hit {
		h = 1
	}
	if i := cacheIndex(cache); i >= 0 {
		m.lookups[i][h].Inc()
		return
	}
	m.cacheLookups.WithLabelValues(cache, [2]string{"miss", "hit"}[h]).Inc()
}

// StaleServed counts, in llmauth_cache_stale_served_total, one decision the
// named cache served past its TTL because the key store was unavailable,
// under the opt-in stale-if-error window.
func (m *Metrics) StaleServed(cache string) {
	if m == nil {
		return
	}
	m.staleServed.WithLabelValues(cache).Inc()
}

// Invalidated counts one cache invalidation in
// llmauth_cache_invalidations_total. reason is one of InvalidationReasons
// (any fixed string chosen by the code).
func (m *Metrics) Invalidated(reason string) {
	if m == nil {
		return
	}
	m.invalidations.WithLabelValues(reason).Inc()
}

// StoreCall records one call to the key store for operation op, one of
// StoreOps (any fixed string chosen by the code): it always
// observes d in llmauth_store_call_duration_seconds, and also counts the call
// in llmauth_store_errors_total when err is not nil. A negative d is observed
// as zero.
func (m *Metrics) StoreCall(op string, d time.Duration, err error) {
	if m == nil {
		return
	}
	if d < 0 {
		d = 0
	}
	m.storeDuration.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		m.storeErrors.WithLabelValues(op).Inc()
	}
}

// ChangeEvent counts one key store change event in
// llmauth_change_events_total. path is "notify" for an event delivered by the
// listener, "poll" for one found by polling.
func (m *Metrics) ChangeEvent(path string) {
	if m == nil {
		return
	}
	m.changeEvents.WithLabelValues(path).Inc()
}

// ListenerExpected sets llmauth_change_listener_expected: 1 when the
// instance keeps a change listener (PostgreSQL), 0 when it polls only
// (SQLite). The watcher calls it once at start.
func (m *Metrics) ListenerExpected(expected bool) {
	if m == nil {
		return
	}
	if expected {
		m.listenerWant.Set(1)
	} else {
		m.listenerWant.Set(0)
	}
}

// ListenerUp sets llmauth_change_listener_up to 1 when the change listener
// is connected and to 0 when it is not.
func (m *Metrics) ListenerUp(up bool) {
	if m == nil {
		return
	}
	if up {
		m.listenerUp.Set(1)
	} else {
		m.listenerUp.Set(0)
	}
}

// FlushReasons are the reason label values of llmauth_change_flushes_total,
// each the name of a keystore/sqlstore FlushReason; their series start at zero.
var FlushReasons = []string{
	"listener_reconnect", "unreadable_notification", "ids_backwards", "rows_missing",
	"hole_expired", "backlog", "recovered", "database_replaced",
}

// Flushed counts one whole-cache flush in llmauth_change_flushes_total.
// reason is one of FlushReasons (a fixed string chosen by the code).
func (m *Metrics) Flushed(reason string) {
	if m == nil {
		return
	}
	m.feedFlushes.WithLabelValues(reason).Inc()
}

// LeaseChanged sets llmauth_cache_fresh, and counts a lapse in
// llmauth_cache_lease_lapses_total when fresh is false.
func (m *Metrics) LeaseChanged(fresh bool) {
	if m == nil {
		return
	}
	if fresh {
		m.leaseFresh.Set(1)
		return
	}
	m.leaseFresh.Set(0)
	m.leaseLapses.Inc()
}

// UsageFlushed records one flush of buffered key usage: it counts the flush
// in llmauth_usage_flushes_total as "ok" when err is nil and "error"
// otherwise, and adds keys, the number of usage records the flush actually
// wrote, to llmauth_usage_keys_written_total. keys below 1 add nothing.
func (m *Metrics) UsageFlushed(keys int, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.usageFlushes.WithLabelValues(result).Inc()
	if keys > 0 {
		m.usageKeys.Add(float64(keys))
	}
}

// UsageDropped adds n usage records dropped without being written to
// llmauth_usage_dropped_total. n below 1 adds nothing.
func (m *Metrics) UsageDropped(n int) {
	if m == nil {
		return
	}
	if n > 0 {
		m.usageDropped.Add(float64(n))
	}
}

// boundClient returns client if it is UnknownClient or a valid client name
// (^[a-z0-9][a-z0-9-]{0,62}$, the key store's rule), and UnknownClient
// otherwise.
func boundClient(client string) string {
	if client == UnknownClient {
		return client
	}
	if len(client) == 0 || len(client) > maxClientLen || client[0] == '-' {
		return UnknownClient
	}
	for i := 0; i < len(client); i++ {
		c := client[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return UnknownClient
		}
	}
	return client
}

// cacheIndex is the index of cache in CacheNames, or -1.
func cacheIndex(cache string) int {
	switch cache {
	case CacheClients:
		return 0
	case CacheUnknownClients:
		return 1
	case CacheKeys:
		return 2
	case CacheInvalidTokens:
		return 3
	}
	return -1
}

// validNamespace reports whether ns matches [a-zA-Z_][a-zA-Z0-9_]*.
func validNamespace(ns string) bool {
	if ns == "" {
		return false
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// validBuckets returns an error unless b is strictly increasing and free of
// NaN, which prometheus.NewHistogramVec would otherwise panic on.
func validBuckets(b []float64) error {
	for i, v := range b {
		if math.IsNaN(v) {
			return fmt.Errorf("metrics: DurationBuckets[%d] is NaN", i)
		}
		if i > 0 && v <= b[i-1] {
			return fmt.Errorf("metrics: DurationBuckets not strictly increasing at index %d (%v after %v)", i, v, b[i-1])
		}
	}
	return nil
}
