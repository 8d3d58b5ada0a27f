package cache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/llmauth/llmauth/internal/pgtest"
	"github.com/llmauth/llmauth/internal/storetest"
	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

var sqliteURL = storetest.SQLiteURL

func rawHarness(url func(testing.TB) string) storetest.Factory { return storetest.SQL(url) }

// cachedHarness is the cache over the SQL store, kept current by a watcher
// that the suite drives synchronously through Sync.
func cachedHarness(url func(testing.TB) string) storetest.Factory {
	raw := rawHarness(url)
	return func(t *testing.T, clock *storetest.Clock) storetest.Harness {
		h := raw(t, clock)
		c, err := cache.New(h.Admin, cache.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		w, err := sqlstore.NewWatcher(context.Background(), h.Admin, c, sqlstore.WatcherOptions{PollInterval: time.Hour, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Close() })
		h.Decider = c
		h.Sync = func(t testing.TB) {
			t.Helper()
			if err := w.Poll(context.Background()); err != nil {
				t.Fatalf("Poll: %v", err)
			}
		}
		return h
	}
}

func TestCacheConformanceSQLite(t *testing.T) {
	t.Parallel()
	storetest.Run(t, cachedHarness(sqliteURL))
}

func TestCacheConformancePostgres(t *testing.T) {
	t.Parallel()
	storetest.Run(t, cachedHarness(pgtest.NewDatabase))
}

// spy counts the calls that reach the real store and can hold them.
type spy struct {
	keystore.Store
	states, verifies atomic.Int32
	gate             chan struct{} // when set, calls wait for it to close
	fail             atomic.Bool   // when set, calls fail as unavailable
}

func (s *spy) ClientState(ctx context.Context, client string) (keystore.ClientState, error) {
	s.states.Add(1)
	if err := s.hold(ctx); err != nil {
		return keystore.ClientState{}, err
	}
	return s.Store.ClientState(ctx, client)
}

func (s *spy) Verify(ctx context.Context, client string, tok keystore.Token) (keystore.VerifiedKey, error) {
	s.verifies.Add(1)
	if err := s.hold(ctx); err != nil {
		return keystore.VerifiedKey{}, err
	}
	return s.Store.Verify(ctx, client, tok)
}

func (s *spy) hold(ctx context.Context) error {
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return fmt.Errorf("spy: %w: %w", keystore.ErrUnavailable, ctx.Err())
		}
	}
	if s.fail.Load() {
		return fmt.Errorf("spy: %w: database down", keystore.ErrUnavailable)
	}
	return nil
}

type fixture struct {
	store *sqlstore.Store
	spy   *spy
	clock *storetest.Clock
	key   keystore.NewKey
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	clock := storetest.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	h := rawHarness(sqliteURL)(t, clock)
	ctx := context.Background()
	for _, n := range []string{"open", "locked"} {
		if _, err := h.Admin.CreateClient(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	exp := clock.Now().Add(time.Hour)
	k, err := h.Admin.CreateKey(ctx, "locked", keystore.KeySpec{ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{store: h.Admin, spy: &spy{Store: h.Admin}, clock: clock, key: k}
}

// cache is a cache over the spy with no change feed (its tests are about
// TTLs and fills); the lease has tests of its own.
func (f *fixture) cache(t *testing.T, opts cache.Options) *cache.Cache {
	t.Helper()
	opts.Now = f.clock.Now
	opts.NoChangeFeed = true
	c, err := cache.New(f.spy, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestCacheTTL(t *testing.T) {
	f := newFixture(t)
	c := f.cache(t, cache.Options{TTL: 30 * time.Second})
	ctx := context.Background()
	steps := []struct {
		advance                 time.Duration
		wantStates, wantVerifie int32
	}{
		{0, 1, 1},                // miss, miss
		{29 * time.Second, 1, 1}, // inside TTL: hits
		{time.Second, 2, 2},      // TTL reached: asked again
		{time.Second, 2, 2},      // fresh again
	}
	for i, s := range steps {
		f.clock.Advance(s.advance)
		st, err := c.ClientState(ctx, "locked")
		if err != nil || !st.RequiresKey {
			t.Fatalf("step %d: ClientState = %+v, %v", i, st, err)
		}
		if _, err := c.Verify(ctx, "locked", f.key.Token); err != nil {
			t.Fatalf("step %d: Verify: %v", i, err)
		}
		if got := f.spy.states.Load(); got != s.wantStates {
			t.Fatalf("step %d: %d ClientState calls reached the store, want %d", i, got, s.wantStates)
		}
		if got := f.spy.verifies.Load(); got != s.wantVerifie {
			t.Fatalf("step %d: %d Verify calls reached the store, want %d", i, got, s.wantVerifie)
		}
	}
}

func TestCacheExpiryBeatsTTL(t *testing.T) {
	f := newFixture(t)
	c := f.cache(t, cache.Options{TTL: 24 * time.Hour})
	ctx := context.Background()
	if _, err := c.Verify(ctx, "locked", f.key.Token); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Hour - time.Nanosecond)
	if _, err := c.Verify(ctx, "locked", f.key.Token); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	f.clock.Advance(time.Nanosecond)
	if _, err := c.Verify(ctx, "locked", f.key.Token); !errors.Is(err, keystore.ErrInvalidToken) {
		t.Fatalf("at expires_at: %v, want ErrInvalidToken", err)
	}
	if got := f.spy.verifies.Load(); got != 1 {
		t.Fatalf("%d store calls, want 1: expiry is decided from the cached entry", got)
	}
	if st, err := c.ClientState(ctx, "locked"); err != nil || !st.RequiresKey {
		t.Fatalf("expired key opened the client: %+v, %v", st, err)
	}
}

func TestCacheNegativeCap(t *testing.T) {
	f := newFixture(t)
	const limit = 10
	c := f.cache(t, cache.Options{MaxNegative: limit, NegativeTTL: time.Minute})
	ctx := context.Background()
	names := make([]string, 3*limit)
	for i := range names {
		names[i] = fmt.Sprintf("ghost-%d", i)
	}
	for round := range 2 {
		for _, n := range names {
			if _, err := c.ClientState(ctx, n); !errors.Is(err, keystore.ErrUnknownClient) {
				t.Fatalf("ClientState(%s) = %v", n, err)
			}
		}
		want := int32(len(names) * (round + 1))
		if round == 1 {
			want -= limit // exactly the capped number was remembered
		}
		if got := f.spy.states.Load(); got != want {
			t.Fatalf("round %d: %d store calls, want %d", round, got, want)
		}
	}
	// Names that cannot be client names never reach the store or memory.
	for _, junk := range []string{"", "UPPER", "../etc", "a\x00b", string(make([]byte, 100))} {
		if _, err := c.ClientState(ctx, junk); !errors.Is(err, keystore.ErrUnknownClient) {
			t.Fatalf("ClientState(%q) = %v", junk, err)
		}
	}
	if got := f.spy.states.Load(); got != int32(2*len(names)-limit) {
		t.Fatalf("junk names reached the store: %d calls", got)
	}

	// Invalid tokens: same cap.
	var tokens []keystore.Token
	for range 3 * limit {
		k, err := f.store.CreateKey(ctx, "open", keystore.KeySpec{})
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, k.Token) // valid for "open", not for "locked"
	}
	for range 2 {
		for _, tok := range tokens {
			if _, err := c.Verify(ctx, "locked", tok); !errors.Is(err, keystore.ErrInvalidToken) {
				t.Fatalf("Verify(other client's key) = %v", err)
			}
		}
	}
	if got := f.spy.verifies.Load(); got != int32(2*len(tokens)-limit) {
		t.Fatalf("%d Verify calls reached the store, want %d", got, 2*len(tokens)-limit)
	}
}

func TestCacheSingleflight(t *testing.T) {
	f := newFixture(t)
	f.spy.gate = make(chan struct{})
	var misses atomic.Int32
	c := f.cache(t, cache.Options{Observer: cacheCounter{misses: &misses}})
	ctx := context.Background()
	const callers = 50
	var wg sync.WaitGroup
	errs := make(chan error, 2*callers)
	for range callers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := c.ClientState(ctx, "locked")
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := c.Verify(ctx, "locked", f.key.Token)
			errs <- err
		}()
	}
	// Every caller has missed the cache and the first store calls hang at
	// the gate, so no result can be cached yet: each caller is bound for
	// the flight in progress. A few instructions lie between a recorded
	// miss and joining the flight; the short sleep covers them.
	deadline := time.Now().Add(10 * time.Second)
	for (misses.Load() < 2*callers || f.spy.states.Load() < 1 || f.spy.verifies.Load() < 1) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if m := misses.Load(); m != 2*callers {
		t.Fatalf("%d of %d callers missed the cache within 10s", m, 2*callers)
	}
	time.Sleep(20 * time.Millisecond)
	close(f.spy.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if s, v := f.spy.states.Load(), f.spy.verifies.Load(); s != 1 || v != 1 {
		t.Fatalf("%d concurrent misses made %d ClientState and %d Verify store calls, want 1 each", callers, s, v)
	}
}

func TestCacheCallerDeadline(t *testing.T) {
	f := newFixture(t)
	f.spy.gate = make(chan struct{}) // the store hangs
	defer close(f.spy.gate)
	c := f.cache(t, cache.Options{FetchTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.ClientState(ctx, "locked")
	if !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("hanging store: %v, want ErrUnavailable", err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("caller waited %v past its deadline", waited)
	}
}

func TestCacheInvalidationDuringFill(t *testing.T) {
	f := newFixture(t)
	f.spy.gate = make(chan struct{})
	c := f.cache(t, cache.Options{})
	ctx := context.Background()
	done := make(chan error)
	go func() {
		_, err := c.ClientState(ctx, "locked")
		done <- err
	}()
	for f.spy.states.Load() < 1 {
		time.Sleep(time.Millisecond)
	}
	// The change lands while the read is in flight.
	c.Flush()
	close(f.spy.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := c.ClientState(ctx, "locked"); err != nil {
		t.Fatal(err)
	}
	if got := f.spy.states.Load(); got != 2 {
		t.Fatalf("a result read before an invalidation was cached: %d store calls, want 2", got)
	}
}

func TestCacheStaleIfError(t *testing.T) {
	tests := []struct {
		name         string
		staleIfError time.Duration
		age          time.Duration
		wantErr      error
	}{
		{"off: past TTL the outage shows", 0, 31 * time.Second, keystore.ErrUnavailable},
		{"inside TTL: served", 0, 10 * time.Second, nil},
		{"on: inside the window", time.Minute, 80 * time.Second, nil},
		{"on: past the window", time.Minute, 91 * time.Second, keystore.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			var stale atomic.Int32
			c := f.cache(t, cache.Options{TTL: 30 * time.Second, StaleIfError: tt.staleIfError, Observer: cacheCounter{stale: &stale}})
			ctx := context.Background()
			if _, err := c.ClientState(ctx, "locked"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Verify(ctx, "locked", f.key.Token); err != nil {
				t.Fatal(err)
			}
			f.spy.fail.Store(true)
			f.clock.Advance(tt.age)
			_, err1 := c.ClientState(ctx, "locked")
			_, err2 := c.Verify(ctx, "locked", f.key.Token)
			for _, err := range []error{err1, err2} {
				if (tt.wantErr == nil) != (err == nil) || (err != nil && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
			}
			wantStale := int32(0)
			if tt.wantErr == nil && tt.age >= 30*time.Second {
				wantStale = 2
			}
			if stale.Load() != wantStale {
				t.Fatalf("stale serves counted %d, want %d", stale.Load(), wantStale)
			}
			// An invalidated entry is never served stale.
			c.Flush()
			if _, err := c.ClientState(ctx, "locked"); !errors.Is(err, keystore.ErrUnavailable) {
				t.Fatalf("after Flush during outage: %v, want ErrUnavailable", err)
			}
		})
	}
}

// TestCacheStaleIfErrorAfterInvalidation drops an entry while its refresh
// hangs and then fails: the dropped entry must not be served stale.
func TestCacheStaleIfErrorAfterInvalidation(t *testing.T) {
	for _, which := range []string{"client state", "verified key"} {
		t.Run(which, func(t *testing.T) {
			f := newFixture(t)
			c := f.cache(t, cache.Options{TTL: time.Second, StaleIfError: time.Hour})
			ctx := context.Background()
			call := func() error {
				if which == "client state" {
					_, err := c.ClientState(ctx, "locked")
					return err
				}
				_, err := c.Verify(ctx, "locked", f.key.Token)
				return err
			}
			if err := call(); err != nil {
				t.Fatal(err)
			}
			f.clock.Advance(2 * time.Second) // past TTL, inside the stale window
			f.spy.gate = make(chan struct{})
			f.spy.fail.Store(true)
			calls := f.spy.states.Load() + f.spy.verifies.Load()
			done := make(chan error)
			go func() { done <- call() }()
			for f.spy.states.Load()+f.spy.verifies.Load() == calls {
				time.Sleep(time.Millisecond)
			}
			c.Flush() // the change event arrives while the refresh hangs
			close(f.spy.gate)
			if err := <-done; !errors.Is(err, keystore.ErrUnavailable) {
				t.Fatalf("served a dropped entry: %v", err)
			}
		})
	}
}

// cacheCounter is a CacheObserver that counts misses and stale serves
// into whichever counters are set.
type cacheCounter struct{ misses, stale *atomic.Int32 }

func (c cacheCounter) CacheLookup(_ string, hit bool) {
	if !hit && c.misses != nil {
		c.misses.Add(1)
	}
}

func (cacheCounter) LeaseChanged(bool) {}

func (c cacheCounter) StaleServed(string) {
	if c.stale != nil {
		c.stale.Add(1)
	}
}

func (cacheCounter) Invalidated(string)                     {}
func (cacheCounter) StoreCall(string, time.Duration, error) {}

func TestCacheCloseLeaksNothing(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	// Registered first, so it runs last: after the database pool is closed.
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	f := newFixture(t)
	c, err := cache.New(f.spy, cache.Options{CleanupInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ClientState(context.Background(), "open"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.Close() // twice is fine
}
