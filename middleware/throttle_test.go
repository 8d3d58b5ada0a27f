package middleware_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
	"github.com/llmauth/llmauth/middleware"
)

// countingStore counts the store calls that reach the database, and the
// most that ran at once.
type countingStore struct {
	keystore.Store
	calls, inFlight, maxInFlight atomic.Int64
	delay                        time.Duration
}

func (s *countingStore) enter() func() {
	s.calls.Add(1)
	n := s.inFlight.Add(1)
	for {
		m := s.maxInFlight.Load()
		if n <= m || s.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	return func() { s.inFlight.Add(-1) }
}

func (s *countingStore) ClientState(ctx context.Context, client string) (keystore.ClientState, error) {
	defer s.enter()()
	return s.Store.ClientState(ctx, client)
}

func (s *countingStore) Verify(ctx context.Context, client string, tok keystore.Token) (keystore.VerifiedKey, error) {
	defer s.enter()()
	return s.Store.Verify(ctx, client, tok)
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// sourceHeader names the source of a test request, so that one test
// process can play many callers.
const sourceHeader = "X-Test-Source"

func sourceFromHeader(c echo.Context) string { return c.Request().Header.Get(sourceHeader) }

func TestThrottle(t *testing.T) {
	w := newWorld(t)
	fresh, err := w.store.CreateKey(context.Background(), "locked", keystore.KeySpec{Name: "fresh"})
	if err != nil {
		t.Fatal(err)
	}
	fresh2, err := w.store.CreateKey(context.Background(), "locked", keystore.KeySpec{Name: "fresh2"})
	if err != nil {
		t.Fatal(err)
	}
	unknown, err := keystore.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	db := &countingStore{Store: w.store}
	c, err := cache.New(db, cache.Options{NoChangeFeed: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	clock := &fakeClock{now: time.Now()}
	rec := &counter{}
	e := echo.New()
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error { return c.String(http.StatusOK, "ok") },
		middleware.WithConfig(middleware.Config{
			Store:    c,
			Metrics:  rec,
			Now:      clock.Now,
			Throttle: middleware.ThrottleConfig{Burst: 3, Rate: 0.5, Source: sourceFromHeader},
		}))

	const (
		valid     = "valid"     // w.key, verified by the first step
		fresh_    = "fresh"     // a valid key never verified before
		fresh2_   = "fresh2"    // another one
		guess     = "guess"     // a well-formed token of no key
		malformed = "malformed" // not a Bearer credential
		none      = "none"      // no Authorization header
		other     = "other"     // another client's key
	)
	auth := map[string]string{
		valid: "Bearer " + w.key.Token.Reveal(), fresh_: "Bearer " + fresh.Token.Reveal(),
		fresh2_: "Bearer " + fresh2.Token.Reveal(),
		guess:   "Bearer " + unknown.Reveal(), malformed: "Basic dXNlcjpwYXNz", other: "Bearer " + w.other.Token.Reveal(),
	}
	steps := []struct {
		name        string
		givenSource string
		givenClient string
		givenCreds  string
		givenWait   time.Duration // clock moves before the request
		expectCode  int
		expectRetry string
		expectCalls int64 // store calls this request makes
	}{
		{name: "a valid key is verified once", givenSource: "a", givenClient: "locked", givenCreds: valid, expectCode: 200, expectCalls: 2},
		{name: "1st failure", givenSource: "a", givenClient: "locked", givenCreds: guess, expectCode: 401, expectCalls: 1},
		{name: "2nd failure, the same guess (negative cache)", givenSource: "a", givenClient: "locked", givenCreds: guess, expectCode: 401},
		{name: "3rd failure, malformed", givenSource: "a", givenClient: "locked", givenCreds: malformed, expectCode: 400},
		{name: "budget spent: a guess", givenSource: "a", givenClient: "locked", givenCreds: guess, expectCode: 429, expectRetry: "2"},
		{name: "budget spent: malformed", givenSource: "a", givenClient: "locked", givenCreds: malformed, expectCode: 429, expectRetry: "2"},
		{name: "budget spent: another client's key", givenSource: "a", givenClient: "locked", givenCreds: other, expectCode: 429, expectRetry: "2"},
		{name: "budget spent: a valid key not yet verified", givenSource: "a", givenClient: "locked", givenCreds: fresh_, expectCode: 429, expectRetry: "2"},
		{name: "budget spent: a verified key still works", givenSource: "a", givenClient: "locked", givenCreds: valid, expectCode: 200},
		{name: "budget spent: no credentials is still 401", givenSource: "a", givenClient: "locked", givenCreds: none, expectCode: 401},
		{name: "another source is not throttled", givenSource: "b", givenClient: "locked", givenCreds: guess, expectCode: 401},
		{name: "another source's fresh key", givenSource: "b", givenClient: "locked", givenCreds: fresh_, expectCode: 200, expectCalls: 1},
		{name: "the same source against another client", givenSource: "a", givenClient: "other", givenCreds: guess, expectCode: 401, expectCalls: 2},
		{name: "the same source, an open client", givenSource: "a", givenClient: "open", givenCreds: guess, expectCode: 200, expectCalls: 1},
		{name: "1s later: still spent", givenSource: "a", givenClient: "locked", givenCreds: guess, givenWait: time.Second, expectCode: 429, expectRetry: "1"},
		{name: "2s later: one attempt regained", givenSource: "a", givenClient: "locked", givenCreds: guess, givenWait: time.Second, expectCode: 401},
		{name: "and spent again", givenSource: "a", givenClient: "locked", givenCreds: guess, expectCode: 429, expectRetry: "2"},
		{name: "b's fresh key is now verified", givenSource: "b", givenClient: "locked", givenCreds: fresh_, expectCode: 200},
		{name: "c: 1st failure", givenSource: "c", givenClient: "locked", givenCreds: guess, expectCode: 401},
		{name: "c: 2nd failure", givenSource: "c", givenClient: "locked", givenCreds: guess, expectCode: 401},
		{name: "c: a store call that succeeds takes the last attempt", givenSource: "c", givenClient: "locked", givenCreds: fresh2_, expectCode: 200, expectCalls: 1},
		{name: "c: and gives it back", givenSource: "c", givenClient: "locked", givenCreds: malformed, expectCode: 400},
		{name: "c: spent", givenSource: "c", givenClient: "locked", givenCreds: guess, expectCode: 429, expectRetry: "2"},
	}
	for _, s := range steps {
		clock.Add(s.givenWait)
		before := db.calls.Load()
		req := httptest.NewRequest(http.MethodPost, "/v1/clients/"+s.givenClient+"/chat", nil)
		req.Header.Set(sourceHeader, s.givenSource)
		if a := auth[s.givenCreds]; a != "" {
			req.Header.Set("Authorization", a)
		}
		res := httptest.NewRecorder()
		e.ServeHTTP(res, req)
		if res.Code != s.expectCode {
			t.Fatalf("%s: status %d, want %d (body %s)", s.name, res.Code, s.expectCode, res.Body)
		}
		if got := res.Header().Get("Retry-After"); got != s.expectRetry {
			t.Fatalf("%s: Retry-After %q, want %q", s.name, got, s.expectRetry)
		}
		if calls := db.calls.Load() - before; calls != s.expectCalls {
			t.Fatalf("%s: %d store calls, want %d", s.name, calls, s.expectCalls)
		}
		if s.expectCode == 429 {
			want := `{"error":{"message":"too many failed attempts: retry later","type":"rate_limit_error","code":"throttled"}}` + "\n"
			if res.Body.String() != want || res.Header().Get("Cache-Control") != "no-store" {
				t.Fatalf("%s: body %q, Cache-Control %q", s.name, res.Body, res.Header().Get("Cache-Control"))
			}
		}
	}
	if got := rec.get("locked/throttled"); got != 7 {
		t.Fatalf("locked/throttled counted %d times, want 7 (all: %v)", got, rec.n)
	}
}

func TestThrottleDisabled(t *testing.T) {
	w := newWorld(t)
	e := echo.New()
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error { return c.String(http.StatusOK, "ok") },
		middleware.WithConfig(middleware.Config{Store: w.store, Throttle: middleware.ThrottleConfig{Disabled: true}}))
	for i := range 50 {
		req := httptest.NewRequest(http.MethodPost, "/v1/clients/locked/chat", nil)
		req.Header.Set("Authorization", "Bearer "+w.spent.Token.Reveal())
		res := httptest.NewRecorder()
		e.ServeHTTP(res, req)
		if res.Code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: status %d, want 401", i+1, res.Code)
		}
	}
}

// TestColdLookupsDuringFlood shows the two defences together: guesses
// from many sources, each within its own budget, cannot take every store
// call slot for long, and legitimate first requests keep succeeding; the
// database never sees more than MaxConcurrentLookups calls at once.
func TestColdLookupsDuringFlood(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	const legit = 20
	var keys []keystore.NewKey
	for i := range legit {
		k, err := w.store.CreateKey(ctx, "locked", keystore.KeySpec{Name: fmt.Sprint("cold-", i)})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	// Every store call takes a while, as on a loaded database.
	db := &countingStore{Store: w.store, delay: 2 * time.Millisecond}
	c, err := cache.New(db, cache.Options{NoChangeFeed: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	const slots = 4
	rec := &counter{}
	e := echo.New()
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error { return c.String(http.StatusOK, "ok") },
		middleware.WithConfig(middleware.Config{
			Store: c, Metrics: rec, MaxConcurrentLookups: slots,
			// Generous for a test on a busy machine: what is under test is
			// that legitimate calls are not starved, not how fast they are.
			DecisionTimeout: 30 * time.Second,
			Throttle:        middleware.ThrottleConfig{Source: sourceFromHeader},
		}))
	do := func(source, token string) int {
		req := httptest.NewRequest(http.MethodPost, "/v1/clients/locked/chat", nil)
		req.Header.Set(sourceHeader, source)
		req.Header.Set("Authorization", "Bearer "+token)
		res := httptest.NewRecorder()
		e.ServeHTTP(res, req)
		return res.Code
	}

	stop := make(chan struct{})
	var flood sync.WaitGroup
	var guesses, throttled atomic.Int64
	for g := range 32 {
		flood.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tok, err := keystore.NewToken()
				if err != nil {
					panic(err)
				}
				// 8 sources per goroutine, 256 in all.
				switch do(fmt.Sprintf("10.0.%d.%d", g, i%8), tok.Reveal()) {
				case http.StatusUnauthorized:
					guesses.Add(1)
				case http.StatusTooManyRequests:
					throttled.Add(1)
				default:
					panic("a guess was not refused")
				}
			}
		})
	}
	// Let the flood fill the slots first.
	for guesses.Load() < 200 {
		time.Sleep(time.Millisecond)
	}
	for i, k := range keys {
		if code := do("192.0.2.1", k.Token.Reveal()); code != http.StatusOK {
			close(stop)
			flood.Wait()
			t.Fatalf("legitimate cold request %d during the flood: status %d, want 200", i, code)
		}
	}
	close(stop)
	flood.Wait()
	if got := db.maxInFlight.Load(); got > slots {
		t.Fatalf("%d store calls at once, want at most %d", got, slots)
	}
	if rec.get("locked/authenticated") != legit {
		t.Fatalf("authenticated %d, want %d", rec.get("locked/authenticated"), legit)
	}
	t.Logf("flood: %d guesses refused 401, %d throttled, %d store calls", guesses.Load(), throttled.Load(), db.calls.Load())
}

// TestRefusalDoesNotWaitForTheBody: a refusal is answered at once, without
// reading the body, and the connection is closed rather than held while
// net/http drains a slow body.
func TestRefusalDoesNotWaitForTheBody(t *testing.T) {
	w := newWorld(t)
	e := echo.New()
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error { return c.String(http.StatusOK, "ok") },
		middleware.WithConfig(middleware.Config{Store: w.store}))
	srv := httptest.NewUnstartedServer(e)
	// Far longer than the test's own deadline: if the server waited for
	// the body, the test would notice.
	srv.Config.ReadTimeout = 10 * time.Minute
	srv.Start()
	t.Cleanup(srv.Close)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Headers and a promise of 100000 bytes of body, of which 10 come.
	_, err = fmt.Fprintf(conn, "POST /v1/clients/locked/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"a\":\"b\",")
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body is incomplete: %v", err)
	}
	if res.StatusCode != http.StatusUnauthorized || !res.Close {
		t.Fatalf("status %d, Connection close %v; want 401 and close", res.StatusCode, res.Close)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	// The server closes its end instead of reading the rest.
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after the answer: %v, want EOF (connection closed by the server)", err)
	}
}

// TestThrottleLogsOncePerEpisode: a flood of guesses is one info line,
// when its source is first throttled; the rest go to debug, until the
// source is admitted again.
func TestThrottleLogsOncePerEpisode(t *testing.T) {
	w := newWorld(t)
	clock := &fakeClock{now: time.Now()}
	var logs syncBuffer
	e := echo.New()
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) },
		middleware.WithConfig(middleware.Config{
			Store: w.store, Now: clock.Now,
			Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			Throttle: middleware.ThrottleConfig{Burst: 1, Rate: 1},
		}))
	steps := []struct {
		wait        time.Duration
		expectCode  int
		expectLevel string
	}{
		{0, 401, "INFO"},
		{0, 429, "INFO"},
		{0, 429, "DEBUG"},
		{0, 429, "DEBUG"},
		{time.Second, 401, "INFO"}, // admitted again
		{0, 429, "INFO"},           // a new episode
		{0, 429, "DEBUG"},
	}
	for i, s := range steps {
		clock.Add(s.wait)
		logs.Reset()
		req := httptest.NewRequest(http.MethodPost, "/v1/clients/locked/chat", nil)
		req.Header.Set("Authorization", "Bearer "+w.spent.Token.Reveal())
		res := httptest.NewRecorder()
		e.ServeHTTP(res, req)
		line := logs.String()
		if res.Code != s.expectCode || strings.Count(line, "\n") != 1 || !strings.Contains(line, "level="+s.expectLevel+" ") {
			t.Fatalf("step %d: status %d, log %q; want %d and one %s line", i, res.Code, line, s.expectCode, s.expectLevel)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

// TestThrottleCountsCredentialsNotRequests: many requests at once with one
// valid key are one attempt in flight, not many: a busy caller with no
// failure is never throttled.
func TestThrottleCountsCredentialsNotRequests(t *testing.T) {
	w := newWorld(t)
	db := &countingStore{Store: w.store, delay: 30 * time.Millisecond}
	c, err := cache.New(db, cache.Options{NoChangeFeed: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	e := echo.New()
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) },
		middleware.WithConfig(middleware.Config{Store: c, Throttle: middleware.ThrottleConfig{Burst: 3}}))
	var wg sync.WaitGroup
	codes := make(chan int, 40)
	for range 40 {
		wg.Go(func() {
			req := httptest.NewRequest(http.MethodPost, "/v1/clients/locked/chat", nil)
			req.Header.Set("Authorization", "Bearer "+w.key.Token.Reveal())
			res := httptest.NewRecorder()
			e.ServeHTTP(res, req)
			codes <- res.Code
		})
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusNoContent {
			t.Fatalf("a concurrent request with a valid key got %d, want 204", code)
		}
	}
}

// TestVerifiedKeyOutlivesItsCacheEntry: a key verified once keeps working
// from a throttled source after its cache entry expired (it goes to the
// store again); a key never seen there still waits like a guess.
func TestVerifiedKeyOutlivesItsCacheEntry(t *testing.T) {
	w := newWorld(t)
	fresh, err := w.store.CreateKey(context.Background(), "locked", keystore.KeySpec{Name: "fresh"})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Now()}
	db := &countingStore{Store: w.store}
	c, err := cache.New(db, cache.Options{NoChangeFeed: true, TTL: time.Minute, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	e := echo.New()
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) },
		middleware.WithConfig(middleware.Config{Store: c, Now: clock.Now, Throttle: middleware.ThrottleConfig{Burst: 1, Rate: 0.001}}))
	steps := []struct {
		name        string
		givenWait   time.Duration
		givenToken  string
		expectCode  int
		expectCalls int64
	}{
		{"verified once", 0, w.key.Token.Reveal(), 204, 2},
		{"a failure spends the budget", 0, w.spent.Token.Reveal(), 401, 1},
		{"throttled", 0, w.spent.Token.Reveal(), 429, 0},
		{"the cached key works", 0, w.key.Token.Reveal(), 204, 0},
		{"its entry expired: to the store, not refused", 2 * time.Minute, w.key.Token.Reveal(), 204, 2},
		{"a key never seen from here waits", 0, fresh.Token.Reveal(), 429, 0},
	}
	for _, s := range steps {
		clock.Add(s.givenWait)
		before := db.calls.Load()
		req := httptest.NewRequest(http.MethodPost, "/v1/clients/locked/chat", nil)
		req.Header.Set("Authorization", "Bearer "+s.givenToken)
		res := httptest.NewRecorder()
		e.ServeHTTP(res, req)
		if res.Code != s.expectCode || db.calls.Load()-before != s.expectCalls {
			t.Fatalf("%s: status %d with %d store calls, want %d with %d", s.name, res.Code, db.calls.Load()-before, s.expectCode, s.expectCalls)
		}
	}
}

// hangingVerify is a store whose Verify answers only when its context
// ends: a caller that hangs up meanwhile is a fault a real database cannot
// produce on demand.
type hangingVerify struct{ keystore.Store }

func (h hangingVerify) Verify(ctx context.Context, client string, tok keystore.Token) (keystore.VerifiedKey, error) {
	<-ctx.Done()
	return keystore.VerifiedKey{}, fmt.Errorf("%w: %w", keystore.ErrUnavailable, ctx.Err())
}

// TestCallerGoneIsNotAnOutage: a caller that hangs up while its token is
// being checked is counted as canceled (not unavailable, which pages), is
// logged at debug, and spends its attempt, so that hanging up cannot buy
// free guesses.
func TestCallerGoneIsNotAnOutage(t *testing.T) {
	w := newWorld(t)
	rec := &counter{}
	var logs syncBuffer
	e := echo.New()
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) },
		middleware.WithConfig(middleware.Config{
			Store: hangingVerify{w.store}, Metrics: rec, DecisionTimeout: time.Minute,
			Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
			Throttle: middleware.ThrottleConfig{Burst: 1, Rate: 0.001},
		}))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/clients/locked/chat", nil)
	req.Header.Set("Authorization", "Bearer "+w.spent.Token.Reveal())
	res := httptest.NewRecorder()
	e.ServeHTTP(res, req)
	if res.Code != middleware.StatusClientClosedRequest || rec.get("locked/canceled") != 1 || rec.get("locked/unavailable") != 0 {
		t.Fatalf("status %d, decisions %v; want 499 counted as canceled", res.Code, rec.n)
	}
	if logs.String() != "" {
		t.Fatalf("logged at info or above: %q", logs.String())
	}
	// The attempt was spent: the next one from the same source is refused
	// without a store call.
	req = httptest.NewRequest(http.MethodPost, "/v1/clients/locked/chat", nil)
	req.Header.Set("Authorization", "Bearer "+w.spent.Token.Reveal())
	res = httptest.NewRecorder()
	e.ServeHTTP(res, req)
	if res.Code != http.StatusTooManyRequests {
		t.Fatalf("after hanging up: status %d, want 429", res.Code)
	}
}

// TestRefusalFloodIsNotALogFlood: of many refusals of one kind from one
// source, one line a second reaches the log at info.
func TestRefusalFloodIsNotALogFlood(t *testing.T) {
	w := newWorld(t)
	var logs syncBuffer
	clock := &fakeClock{now: time.Now()}
	e := echo.New()
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) },
		middleware.WithConfig(middleware.Config{Store: w.store, Now: clock.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
	send := func(client string) {
		req := httptest.NewRequest(http.MethodPost, "/v1/clients/"+client+"/chat", nil)
		e.ServeHTTP(httptest.NewRecorder(), req)
	}
	for range 100 {
		send("locked")  // missing token
		send("no-such") // unknown client
	}
	if n := strings.Count(logs.String(), "\n"); n != 2 {
		t.Fatalf("%d lines for 200 refusals of two kinds within a second, want 2:\n%s", n, logs.String())
	}
	clock.Add(time.Second)
	send("locked")
	if !strings.Contains(logs.String(), "suppressed=99") {
		t.Fatalf("the next line does not count the 99 suppressed:\n%s", logs.String())
	}
}

// TestGoodTokenStaysGoodForItsClient: a valid key once sent to the wrong
// client (a 401 there) is still remembered as valid for its own.
func TestGoodTokenStaysGoodForItsClient(t *testing.T) {
	w := newWorld(t)
	clock := &fakeClock{now: time.Now()}
	c, err := cache.New(w.store, cache.Options{NoChangeFeed: true, TTL: time.Minute, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	e := echo.New()
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) },
		middleware.WithConfig(middleware.Config{Store: c, Now: clock.Now, Throttle: middleware.ThrottleConfig{Burst: 1, Rate: 0.001}}))
	steps := []struct {
		name       string
		givenWait  time.Duration
		client     string
		token      string
		expectCode int
	}{
		{"valid for its client", 0, "locked", w.key.Token.Reveal(), 204},
		{"sent to another client", 0, "other", w.key.Token.Reveal(), 401},
		{"a failure against its client", 0, "locked", w.spent.Token.Reveal(), 401},
		{"throttled", 0, "locked", w.spent.Token.Reveal(), 429},
		{"its entry expired: still good for its client", 2 * time.Minute, "locked", w.key.Token.Reveal(), 204},
	}
	for _, s := range steps {
		clock.Add(s.givenWait)
		req := httptest.NewRequest(http.MethodPost, "/v1/clients/"+s.client+"/chat", nil)
		req.Header.Set("Authorization", "Bearer "+s.token)
		res := httptest.NewRecorder()
		e.ServeHTTP(res, req)
		if res.Code != s.expectCode {
			t.Fatalf("%s: status %d, want %d", s.name, res.Code, s.expectCode)
		}
	}
}
