package llmauth_test

// The benchmarks of issue 10, in one file so that one `go test -bench`
// process measures every case against the baselines beside it. One Echo
// app per case, each serving POST /v1/clients/:client/chat with the same
// empty handler, so that a case's ns/op minus BenchmarkBare's is what its
// authentication costs. `go run ./internal/benchreport` runs them and
// writes the ratios to docs/BENCHMARKS.md.
//
// The two large benchmarks are sized by environment variables, so that CI
// can run every benchmark once (-benchtime=1x) at a small size:
//
//	LLMAUTH_BENCH_CACHE_ENTRIES  verified keys in BenchmarkCacheApply's cache (default 1000000)
//	LLMAUTH_BENCH_BACKLOG        change rows BenchmarkPollBacklog catches up on (default 1000000)

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	echomw "github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmauth/llmauth"
	"github.com/llmauth/llmauth/internal/loadgen/target"
	"github.com/llmauth/llmauth/internal/pgtest"
	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

const (
	benchOpen   = "bench-open"   // a client with no key
	benchSecure = "bench-secure" // a client with one key
)

// benchHandler is every case's handler: whatever a case costs beyond
// BenchmarkBare is its middleware's.
func benchHandler(c echo.Context) error { return c.NoContent(http.StatusOK) }

// benchApp is one case's Echo app.
func benchApp(mw ...echo.MiddlewareFunc) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.POST(target.ChatRoute, benchHandler, mw...)
	return e
}

// discardWriter is a ResponseWriter that keeps the status and nothing
// else, so that the recorder's own allocations do not count.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }

func chatRequest(client, token string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/v1/clients/"+client+"/chat", nil)
	if token != "" {
		req.Header.Set(echo.HeaderAuthorization, "Bearer "+token)
	}
	return req
}

// serve runs req through e in a loop and fails unless every answer is
// want. before, when set, adjusts the request before each round.
func serve(b *testing.B, e *echo.Echo, req *http.Request, want int, before func(i int, r *http.Request)) {
	b.Helper()
	w := &discardWriter{h: http.Header{}}
	e.ServeHTTP(w, req) // warm: caches filled, pools primed
	if w.status != want {
		b.Fatalf("status %d, want %d", w.status, want)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if before != nil {
			before(i, req)
			i++
		}
		clear(w.h)
		w.status = 0
		e.ServeHTTP(w, req)
		if w.status != want {
			b.Fatalf("status %d, want %d", w.status, want)
		}
	}
}

// serveParallel is serve from GOMAXPROCS goroutines.
func serveParallel(b *testing.B, e *echo.Echo, req *http.Request, want int) {
	b.Helper()
	w := &discardWriter{h: http.Header{}}
	e.ServeHTTP(w, req)
	if w.status != want {
		b.Fatalf("status %d, want %d", w.status, want)
	}
	var bad atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: http.Header{}}
		r := req.Clone(context.Background())
		for pb.Next() {
			clear(w.h)
			w.status = 0
			e.ServeHTTP(w, r)
			if w.status != want {
				bad.Add(1)
			}
		}
	})
	if n := bad.Load(); n > 0 {
		b.Fatalf("%d answers were not %d", n, want)
	}
}

// benchStack is the whole stack as the example serves it (metrics and
// usage audit on) over a SQLite file, with an open client and a keyed
// one; it returns the key's token.
func benchStack(b *testing.B) (*llmauth.Stack, string) {
	b.Helper()
	ctx := context.Background()
	url := "sqlite:" + filepath.Join(b.TempDir(), "bench.db")
	stack, err := llmauth.New(ctx, url, llmauth.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = stack.Close(context.Background()) })
	for _, name := range []string{benchOpen, benchSecure} {
		if _, err := stack.Store.CreateClient(ctx, name); err != nil {
			b.Fatal(err)
		}
	}
	key, err := stack.Store.CreateKey(ctx, benchSecure, keystore.KeySpec{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	if err := stack.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	return stack, key.Token.Reveal()
}

// BenchmarkBare is the baseline: the route with no middleware.
func BenchmarkBare(b *testing.B) {
	serve(b, benchApp(), chatRequest(benchSecure, ""), http.StatusOK, nil)
}

// BenchmarkBareParallel is BenchmarkBare from GOMAXPROCS goroutines, the
// baseline of BenchmarkMiddlewareValidParallel.
func BenchmarkBareParallel(b *testing.B) {
	serveParallel(b, benchApp(), chatRequest(benchSecure, ""), http.StatusOK)
}

// BenchmarkEchoKeyAuthSHA256 is Echo's KeyAuth with a validator that
// looks the token's SHA-256 digest up in memory: the least any key check
// costs.
func BenchmarkEchoKeyAuthSHA256(b *testing.B) {
	token, _ := keystore.NewToken()
	digests := map[[sha256.Size]byte]bool{sha256.Sum256([]byte(token.Reveal())): true}
	auth := echomw.KeyAuth(func(key string, _ echo.Context) (bool, error) {
		return digests[sha256.Sum256([]byte(key))], nil
	})
	serve(b, benchApp(auth), chatRequest(benchSecure, token.Reveal()), http.StatusOK, nil)
}

// BenchmarkNaiveKeyAuthPostgres is the naive design (see
// internal/loadgen/target.Naive): KeyAuth and one sqlx query per request
// on PostgreSQL, no cache.
func BenchmarkNaiveKeyAuthPostgres(b *testing.B) {
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, pgtest.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	if err := sqlstore.Migrate(ctx, db); err != nil {
		b.Fatal(err)
	}
	store, err := sqlstore.New(ctx, db, sqlstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.CreateClient(ctx, benchSecure); err != nil {
		b.Fatal(err)
	}
	key, err := store.CreateKey(ctx, benchSecure, keystore.KeySpec{})
	if err != nil {
		b.Fatal(err)
	}
	naive, err := target.Naive(db)
	if err != nil {
		b.Fatal(err)
	}
	serve(b, benchApp(naive), chatRequest(benchSecure, key.Token.Reveal()), http.StatusOK, nil)
}

// BenchmarkMiddlewareValid is a valid token of a keyed client, its state
// and key in the warm cache.
func BenchmarkMiddlewareValid(b *testing.B) {
	stack, token := benchStack(b)
	serve(b, benchApp(stack.Middleware), chatRequest(benchSecure, token), http.StatusOK, nil)
}

// BenchmarkMiddlewareValidParallel is BenchmarkMiddlewareValid from
// GOMAXPROCS goroutines.
func BenchmarkMiddlewareValidParallel(b *testing.B) {
	stack, token := benchStack(b)
	serveParallel(b, benchApp(stack.Middleware), chatRequest(benchSecure, token), http.StatusOK)
}

// BenchmarkMiddlewareAnonymous is a request without a token to an open
// client.
func BenchmarkMiddlewareAnonymous(b *testing.B) {
	stack, _ := benchStack(b)
	serve(b, benchApp(stack.Middleware), chatRequest(benchOpen, ""), http.StatusOK, nil)
}

// BenchmarkMiddlewareInvalid is a well-formed token that is no key,
// answered from the negative cache. Each request comes from another
// source address (a pool larger than the throttle remembers), so that
// every answer is the 401 of a source with budget left, never a 429.
func BenchmarkMiddlewareInvalid(b *testing.B) {
	stack, _ := benchStack(b)
	bogus, _ := keystore.NewToken()
	addrs := make([]string, 1<<16)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.%d.%d.1:40000", i>>8, i&0xff)
	}
	serve(b, benchApp(stack.Middleware), chatRequest(benchSecure, bogus.Reveal()), http.StatusUnauthorized,
		func(i int, r *http.Request) { r.RemoteAddr = addrs[i&(len(addrs)-1)] })
}

// BenchmarkMiddlewareUnknownClient is a request for a name that is no
// client, answered from the negative cache.
func BenchmarkMiddlewareUnknownClient(b *testing.B) {
	stack, _ := benchStack(b)
	serve(b, benchApp(stack.Middleware), chatRequest("bench-nobody", ""), http.StatusNotFound, nil)
}

// sizeFromEnv reads a positive size from the environment.
func sizeFromEnv(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// BenchmarkPollBacklog times a watcher catching up on a backlog of
// LLMAUTH_BENCH_BACKLOG change rows (written at once, as a bulk import
// does) and the heap it takes meanwhile: peak-heap-MiB is the most the
// heap in use grew over the poll (sampled every millisecond, garbage
// included), live-heap-MiB what was live (after a collection) when the
// changes reached the cache. Target: under 32 MiB.
func BenchmarkPollBacklog(b *testing.B) {
	b.Run("postgres", func(b *testing.B) { benchPollBacklog(b, pgtest.NewDatabase(b)) })
	b.Run("sqlite", func(b *testing.B) { benchPollBacklog(b, "sqlite:"+filepath.Join(b.TempDir(), "backlog.db")) })
}

// measuringSink is a cache that counts what the watcher gives it and
// measures the live heap when changes arrive.
type measuringSink struct {
	*cache.Cache
	applied, flushed int
	onApply          func()
}

func (s *measuringSink) Apply(changes []keystore.Change) {
	s.applied += len(changes)
	if s.onApply != nil {
		s.onApply()
	}
	s.Cache.Apply(changes)
}

func (s *measuringSink) Flush() { s.flushed++; s.Cache.Flush() }

func benchPollBacklog(b *testing.B, url string) {
	ctx := context.Background()
	rows := sizeFromEnv(b, "LLMAUTH_BENCH_BACKLOG", 1_000_000)
	db, err := sqlstore.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	if err := sqlstore.Migrate(ctx, db); err != nil {
		b.Fatal(err)
	}
	store, err := sqlstore.New(ctx, db, sqlstore.Options{QueryTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.CreateClient(ctx, benchOpen); err != nil {
		b.Fatal(err) // the change log's first row: the watcher starts after it
	}
	// No lease: a lapsed one would have the watcher poll by itself,
	// taking part of the backlog before the benchmark's poll.
	c, err := cache.New(store, cache.Options{NoChangeFeed: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	sink := &measuringSink{Cache: c}
	// Only the benchmark polls: the poller's first tick is an hour away.
	w, err := sqlstore.NewWatcher(ctx, store, sink, sqlstore.WatcherOptions{PollInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = w.Close() })

	insert := db.Rebind(`INSERT INTO llmauth_changes (source, llm_client_id, api_key_id)
SELECT 'key', 1 + g % 1000, g FROM generate_series(1, ?) g`)
	if db.DriverName() == "sqlite" {
		insert = `WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < ?)
INSERT INTO llmauth_changes (source, llm_client_id, api_key_id) SELECT 'key', 1 + g % 1000, g FROM s`
	}
	var peak, live uint64
	var ms runtime.MemStats
	var last time.Time
	for b.Loop() {
		b.StopTimer()
		if _, err := db.ExecContext(ctx, insert, rows); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		base := ms.HeapAlloc
		sink.onApply = func() {
			if time.Since(last) < 50*time.Millisecond {
				return // a watcher that applies in batches is measured now and then
			}
			b.StopTimer()
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			live = max(live, m.HeapAlloc-min(base, m.HeapAlloc))
			last = time.Now()
			b.StartTimer()
		}
		done := make(chan struct{})
		sampled := make(chan uint64)
		go sampleHeap(base, done, sampled)
		applied := sink.applied
		sink.flushed = 0 // the watcher's start flushed the cache once
		b.StartTimer()
		err := w.Poll(ctx)
		b.StopTimer()
		close(done)
		peak = max(peak, <-sampled)
		if err != nil {
			b.Fatal(err)
		}
		// Up to the watcher's limit (50,000 rows) the backlog is applied
		// change by change; beyond it the cache is flushed instead.
		got := sink.applied - applied
		if !(got == rows && sink.flushed == 0) && !(rows > 50000 && got == 0 && sink.flushed == 1) {
			b.Fatalf("applied %d changes of %d, %d flushes", got, rows, sink.flushed)
		}
		last = time.Time{}
		b.StartTimer()
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(live)/(1<<20), "live-heap-MiB")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(rows), "ns/row")
}

// sampleHeap reports the largest growth of the heap in use (HeapAlloc,
// read through runtime/metrics, which does not stop the world) over base
// until done closes.
func sampleHeap(base uint64, done <-chan struct{}, out chan<- uint64) {
	var peak uint64
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		metrics.Read(sample)
		if v := sample[0].Value.Uint64(); v > base {
			peak = max(peak, v-base)
		}
		select {
		case <-done:
			out <- peak
			return
		case <-t.C:
		}
	}
}

// BenchmarkCacheApply times Cache.Apply, the invalidation a change event
// causes, on a cache holding LLMAUTH_BENCH_CACHE_ENTRIES verified keys (10
// per client) and their clients' states, filled through Verify and
// ClientState over an in-memory store. "one-key" is one key revoked (the
// two change rows its trigger writes), "bulk-10k" 10,000 changes at once
// (the keys of 1,000 clients). Entries dropped are filled again between
// rounds, untimed, so that every round finds the cache full.
func BenchmarkCacheApply(b *testing.B) {
	f := newApplyFixture(b, sizeFromEnv(b, "LLMAUTH_BENCH_CACHE_ENTRIES", 1_000_000))
	b.Run("one-key", func(b *testing.B) {
		k := f.keys[0]
		f.run(b, []keystore.Change{
			{ID: 1, Source: keystore.SourceKey, ClientID: k.clientID, KeyID: k.id},
			{ID: 2, Source: keystore.SourceKey, KeyID: k.id},
		})
	})
	b.Run("bulk-10k", func(b *testing.B) {
		changes := make([]keystore.Change, 0, 10_000)
		for i, k := range f.keys[:min(len(f.keys), 10_000)] {
			changes = append(changes, keystore.Change{ID: int64(i + 1), Source: keystore.SourceKey, ClientID: k.clientID, KeyID: k.id})
		}
		f.run(b, changes)
	})
}

// memKey is a key of the in-memory store.
type memKey struct {
	id, clientID int64
	client       string
	token        keystore.Token // kept for the first 10,000 keys only
}

// memStore is a keystore.Store in memory: every client requires a key.
type memStore struct {
	clients map[string]int64
	keys    map[string]memKey // by lookup id
}

func (m *memStore) ClientState(_ context.Context, name string) (keystore.ClientState, error) {
	id, ok := m.clients[name]
	if !ok {
		return keystore.ClientState{}, keystore.ErrUnknownClient
	}
	return keystore.ClientState{ID: id, Name: name, RequiresKey: true}, nil
}

func (m *memStore) Verify(_ context.Context, client string, token keystore.Token) (keystore.VerifiedKey, error) {
	k, ok := m.keys[token.LookupID()]
	if !ok || k.client != client {
		return keystore.VerifiedKey{}, keystore.ErrInvalidToken
	}
	return keystore.VerifiedKey{KeyID: k.id, ClientID: k.clientID, Client: client}, nil
}

type applyFixture struct {
	cache *cache.Cache
	keys  []memKey // the first 10,000, with their tokens
}

func newApplyFixture(b *testing.B, entries int) *applyFixture {
	ctx := context.Background()
	store := &memStore{clients: map[string]int64{}, keys: make(map[string]memKey, entries)}
	c, err := cache.New(store, cache.Options{NoChangeFeed: true, TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	f := &applyFixture{cache: c}
	for i := range entries {
		cid := int64(i/10 + 1)
		name := fmt.Sprintf("client-%07d", cid)
		if i%10 == 0 {
			store.clients[name] = cid
			if _, err := c.ClientState(ctx, name); err != nil {
				b.Fatal(err)
			}
		}
		token, err := keystore.NewToken()
		if err != nil {
			b.Fatal(err)
		}
		k := memKey{id: int64(i + 1), clientID: cid, client: name}
		store.keys[token.LookupID()] = k
		if _, err := c.Verify(ctx, name, token); err != nil {
			b.Fatal(err)
		}
		if i < 10_000 {
			k.token = token
			f.keys = append(f.keys, k)
		}
	}
	return f
}

// run times Apply(changes) and fills the cache again after each round.
func (f *applyFixture) run(b *testing.B, changes []keystore.Change) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		f.cache.Apply(changes)
		b.StopTimer()
		for _, k := range f.keys {
			if _, err := f.cache.ClientState(ctx, k.client); err != nil {
				b.Fatal(err)
			}
			if _, err := f.cache.Verify(ctx, k.client, k.token); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
}
