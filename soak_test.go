package llmauth_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmauth/llmauth"
	"github.com/llmauth/llmauth/internal/pgtest"
	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
	"github.com/llmauth/llmauth/middleware"
)

// soakDuration is how long each store's soak runs: LLMAUTH_SOAK_DURATION,
// default 12s (two stores: under the 60 s bound).
func soakDuration(t *testing.T) time.Duration {
	d := 12 * time.Second
	if v := os.Getenv("LLMAUTH_SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			t.Fatalf("LLMAUTH_SOAK_DURATION=%q: want a positive duration", v)
		}
	}
	return d
}

// TestSoak runs 64 concurrent callers over real HTTP (valid keys, guesses,
// anonymous callers) while another writer creates and revokes a key every
// 100 ms, and checks every answer against what was true when it was asked:
// no revoked key accepted more than a second after its revocation, no
// valid key refused, no guess accepted, anonymous callers answered by the
// client's state; and goroutines and heap flat.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: skipped with -short")
	}
	for _, sc := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "soak.db") }},
		{"postgres", func(t *testing.T) string { return pgtest.NewDatabase(t) }},
	} {
		t.Run(sc.name, func(t *testing.T) { soak(t, sc.url(t), soakDuration(t)) })
	}
}

// soakKey is a key of the keyed client as the writer knows it.
type soakKey struct {
	id      int64
	token   string
	revoked atomic.Int64 // unix nanos when its revocation committed; 0 while active
}

// soakWorld is what the writer has done, for the callers to check against.
type soakWorld struct {
	mu     sync.Mutex
	active []*soakKey // created and not being revoked
	byID   map[int64]*soakKey
}

func (w *soakWorld) pick(r *rand.Rand) *soakKey {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active[r.IntN(len(w.active))]
}

const (
	soakSourceHeader = "X-Soak-Source"
	soakBurst        = 10
)

func soak(t *testing.T, url string, duration time.Duration) {
	ctx := context.Background()
	st, err := llmauth.New(ctx, url, llmauth.Options{Middleware: middleware.Config{
		// Each caller is a source of its own, as callers behind a trusted
		// proxy would be.
		Throttle: middleware.ThrottleConfig{Burst: soakBurst, Source: func(c echo.Context) string { return c.Request().Header.Get(soakSourceHeader) }},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	// The writer is another process as far as the server knows: a store
	// of its own on the same database.
	db, err := sqlstore.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	admin, err := sqlstore.New(ctx, db, sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"open-bot", "keyed-bot", "other-bot"} {
		if _, err := admin.CreateClient(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	world := &soakWorld{byID: map[int64]*soakKey{}}
	newKey := func(client string) *soakKey {
		k, err := admin.CreateKey(ctx, client, keystore.KeySpec{Name: "soak"})
		if err != nil {
			t.Error(err)
			return nil
		}
		return &soakKey{id: k.ID, token: k.Token.Reveal()}
	}
	// The first key is never revoked: the keyed client always requires one.
	for range 8 {
		k := newKey("keyed-bot")
		world.active = append(world.active, k)
		world.byID[k.id] = k
	}
	otherKey := newKey("other-bot")

	e := echo.New()
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error {
		p, _ := middleware.PrincipalFrom(c)
		return c.String(http.StatusOK, fmt.Sprint(p.KeyID))
	}, st.Middleware)
	ts := httptest.NewServer(e)
	t.Cleanup(ts.Close)
	srv := ts.URL
	httpClient := &http.Client{Timeout: time.Minute, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}}
	t.Cleanup(httpClient.CloseIdleConnections)

	type tally struct {
		requests, unavailable atomic.Int64
		mu                    sync.Mutex
		wrong                 []string
	}
	var got tally
	wrong := func(format string, args ...any) {
		got.mu.Lock()
		defer got.mu.Unlock()
		if len(got.wrong) < 20 {
			got.wrong = append(got.wrong, fmt.Sprintf(format, args...))
		}
	}
	send := func(source, target, token string) (int, string) {
		req, err := http.NewRequest(http.MethodPost, srv+"/v1/clients/"+target+"/chat", strings.NewReader(`{"message":"hi"}`))
		if err != nil {
			panic(err)
		}
		req.Header.Set(soakSourceHeader, source)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := httpClient.Do(req)
		if err != nil {
			wrong("%s: %v", source, err)
			return 0, ""
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		got.requests.Add(1)
		if res.StatusCode == http.StatusServiceUnavailable {
			got.unavailable.Add(1) // fail closed: never a wrong decision
		}
		return res.StatusCode, string(b)
	}

	baseline := runtime.NumGoroutine()
	stop := make(chan struct{})
	running := func() bool {
		select {
		case <-stop:
			return false
		default:
			return true
		}
	}
	var callers sync.WaitGroup
	// 32 callers with valid keys.
	for i := range 32 {
		callers.Go(func() {
			r := rand.New(rand.NewPCG(uint64(i), 1))
			source := fmt.Sprint("valid-", i)
			failures := 0
			for running() {
				k := world.pick(r)
				start := time.Now()
				code, body := send(source, "keyed-bot", k.token)
				revoked := k.revoked.Load()
				switch code {
				case http.StatusOK:
					if body != fmt.Sprint(k.id) {
						wrong("key %d answered as key %s", k.id, body)
					}
					if revoked != 0 && start.Sub(time.Unix(0, revoked)) > keystore.StalenessPromise {
						wrong("key %d accepted %v after its revocation", k.id, start.Sub(time.Unix(0, revoked)))
					}
				case http.StatusUnauthorized:
					failures++
					// Refused: right only if the revocation was under way,
					// i.e. the key had left the active set when asked.
					if !world.revoking(k) {
						wrong("valid key %d refused (401)", k.id)
					}
				case http.StatusTooManyRequests:
					if failures < soakBurst {
						wrong("valid caller %s throttled after %d failures", source, failures)
					}
				case http.StatusServiceUnavailable:
				default:
					wrong("valid key %d: status %d", k.id, code)
				}
			}
		})
	}
	// 16 guessers: random well-formed tokens, another client's key,
	// garbage.
	for i := range 16 {
		callers.Go(func() {
			source := fmt.Sprint("guess-", i)
			for n := 0; running(); n++ {
				var token string
				switch n % 3 {
				case 0:
					tok, err := keystore.NewToken()
					if err != nil {
						panic(err)
					}
					token = tok.Reveal()
				case 1:
					token = otherKey.token
				case 2:
					token = "llmk_" + strings.Repeat("A", 61)
				}
				switch code, _ := send(source, "keyed-bot", token); code {
				case http.StatusUnauthorized, http.StatusTooManyRequests, http.StatusServiceUnavailable:
				default:
					wrong("guess %d from %s: status %d", n%3, source, code)
				}
			}
		})
	}
	// 16 anonymous callers: the open client passes them, the keyed one
	// never does.
	for i := range 16 {
		callers.Go(func() {
			source := fmt.Sprint("anon-", i)
			for n := 0; running(); n++ {
				target, want := "open-bot", http.StatusOK
				if n%2 == 1 {
					target, want = "keyed-bot", http.StatusUnauthorized
				}
				if code, _ := send(source, target, ""); code != want && code != http.StatusServiceUnavailable {
					wrong("anonymous caller of %s: status %d, want %d", target, code, want)
				}
			}
		})
	}

	// The writer: every 100 ms, a new key and a revoked one.
	var writer sync.WaitGroup
	var created, revokedN atomic.Int64
	writer.Go(func() {
		r := rand.New(rand.NewPCG(7, 7))
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for running() {
			<-tick.C
			if k := newKey("keyed-bot"); k != nil {
				world.add(k)
				created.Add(1)
			}
			if k := world.takeForRevocation(r); k != nil {
				if _, err := admin.DeactivateKey(ctx, k.id); err != nil {
					t.Error(err)
					continue
				}
				k.revoked.Store(time.Now().UnixNano())
				revokedN.Add(1)
			}
		}
	})

	// Goroutines and heap, after warm-up and at each quarter.
	type sample struct {
		goroutines int
		heap       uint64
	}
	measure := func() sample {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return sample{runtime.NumGoroutine(), ms.HeapInuse}
	}
	var samples []sample
	for q := range 5 {
		time.Sleep(duration / 5)
		if q > 0 {
			samples = append(samples, measure())
		}
	}
	close(stop)
	callers.Wait()
	writer.Wait()
	// Connections come and go with the traffic (a refusal closes its
	// connection); once the callers are gone, so are their goroutines.
	httpClient.CloseIdleConnections()
	ts.CloseClientConnections()
	settled := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > baseline+4 && time.Now().Before(settled) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline+4 {
		t.Errorf("%d goroutines after the soak, %d before it", n, baseline)
	}

	first, last := samples[0], samples[len(samples)-1]
	t.Logf("%d requests, %d answered 503, %d keys created, %d revoked; goroutines %d before, %d→%d during; heap in use %d→%d KiB",
		got.requests.Load(), got.unavailable.Load(), created.Load(), revokedN.Load(),
		baseline, first.goroutines, last.goroutines, first.heap>>10, last.heap>>10)
	for _, w := range got.wrong {
		t.Error(w)
	}
	if n := got.requests.Load(); n < 1000 {
		t.Errorf("only %d requests: the soak did not soak", n)
	}
	if u := got.unavailable.Load(); u*10 > got.requests.Load() {
		t.Errorf("%d of %d requests answered 503: the server was unavailable for most of the soak", u, got.requests.Load())
	}
	// Flat: no growth with time beyond noise. The keys created during the
	// soak are a few hundred rows; caches and budgets are capped. (With 64
	// callers, 64 connections and their reads and writes, the goroutine
	// count during the soak moves with the traffic: it is checked above,
	// after the soak.)
	if last.heap > first.heap*3/2+8<<20 {
		t.Errorf("heap in use grew from %d to %d KiB", first.heap>>10, last.heap>>10)
	}
}

func (w *soakWorld) add(k *soakKey) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.active = append(w.active, k)
	w.byID[k.id] = k
}

// takeForRevocation removes a random key from the active set, never the
// first, so that callers stop picking it before it is revoked.
func (w *soakWorld) takeForRevocation(r *rand.Rand) *soakKey {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.active) < 2 {
		return nil
	}
	i := 1 + r.IntN(len(w.active)-1)
	k := w.active[i]
	w.active = append(w.active[:i], w.active[i+1:]...)
	return k
}

// revoking reports whether k has left the active set (its revocation is
// under way or done).
func (w *soakWorld) revoking(k *soakKey) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.active {
		if a == k {
			return false
		}
	}
	return true
}
