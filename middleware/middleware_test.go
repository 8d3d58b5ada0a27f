package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
	"github.com/llmauth/llmauth/keystore/sqlstore"
	"github.com/llmauth/llmauth/middleware"
)

// world is a real SQLite store with an open client, a keyed client and a
// second keyed client.
type world struct {
	store             *sqlstore.Store
	key, other, spent keystore.NewKey
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "mw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := sqlstore.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	s, err := sqlstore.New(ctx, db, sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"open", "locked", "other"} {
		if _, err := s.CreateClient(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	w := &world{store: s}
	if w.key, err = s.CreateKey(ctx, "locked", keystore.KeySpec{Name: "main"}); err != nil {
		t.Fatal(err)
	}
	if w.spent, err = s.CreateKey(ctx, "locked", keystore.KeySpec{Name: "spent"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeactivateKey(ctx, w.spent.ID); err != nil {
		t.Fatal(err)
	}
	if w.other, err = s.CreateKey(ctx, "other", keystore.KeySpec{}); err != nil {
		t.Fatal(err)
	}
	return w
}

// counter is a Recorder that remembers every decision.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) Decision(client, outcome string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[client+"/"+outcome]++
}

func (c *counter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

const (
	challenge        = `Bearer realm="llmauth"`
	invalidTokenBody = `{"error":{"message":"invalid API key","type":"authentication_error","code":"invalid_token"}}` + "\n"
)

func TestDecisionTable(t *testing.T) {
	w := newWorld(t)
	// Change the last checksum character to a different one: replacing it
	// with a fixed character would leave the token intact whenever its
	// checksum already ended in that character (1 run in 62).
	raw := w.key.Token.Reveal()
	last := byte('x')
	if raw[len(raw)-1] == last {
		last = 'y'
	}
	badChecksum := raw[:len(raw)-1] + string(last)
	if _, err := keystore.ParseToken(badChecksum); !errors.Is(err, keystore.ErrMalformedToken) {
		t.Fatalf("ParseToken(bad checksum) = %v, want ErrMalformedToken", err)
	}
	tests := []struct {
		name                string
		givenClient         string
		givenAuthorization  []string
		expectHandlerCalled bool
		expectStatus        int
		expectWWW           string
		expectBody          string
		expectMetric        string
		expectKeyID         int64
	}{
		{name: "open client, anonymous", givenClient: "open", expectHandlerCalled: true, expectStatus: 200, expectMetric: "open/anonymous"},
		{name: "open client ignores a garbage header", givenClient: "open", givenAuthorization: []string{"Basic !!!", "x"}, expectHandlerCalled: true, expectStatus: 200, expectMetric: "open/anonymous"},
		{name: "open client ignores another client's token", givenClient: "open", givenAuthorization: []string{"Bearer " + w.key.Token.Reveal()}, expectHandlerCalled: true, expectStatus: 200, expectMetric: "open/anonymous"},
		{name: "valid token", givenClient: "locked", givenAuthorization: []string{"Bearer " + w.key.Token.Reveal()}, expectHandlerCalled: true, expectStatus: 200, expectMetric: "locked/authenticated", expectKeyID: w.key.ID},
		{name: "scheme is case-insensitive", givenClient: "locked", givenAuthorization: []string{"bEaReR " + w.key.Token.Reveal()}, expectHandlerCalled: true, expectStatus: 200, expectMetric: "locked/authenticated", expectKeyID: w.key.ID},
		{name: "no header", givenClient: "locked", expectStatus: 401, expectWWW: challenge, expectMetric: "locked/missing_token"},
		{name: "revoked key", givenClient: "locked", givenAuthorization: []string{"Bearer " + w.spent.Token.Reveal()}, expectStatus: 401, expectWWW: challenge + `, error="invalid_token"`, expectBody: invalidTokenBody, expectMetric: "locked/invalid_token"},
		{name: "another client's key", givenClient: "locked", givenAuthorization: []string{"Bearer " + w.other.Token.Reveal()}, expectStatus: 401, expectWWW: challenge + `, error="invalid_token"`, expectBody: invalidTokenBody, expectMetric: "locked/invalid_token"},
		{name: "bad checksum", givenClient: "locked", givenAuthorization: []string{"Bearer " + badChecksum}, expectStatus: 401, expectWWW: challenge + `, error="invalid_token"`, expectBody: invalidTokenBody, expectMetric: "locked/invalid_token"},
		{name: "not our token format", givenClient: "locked", givenAuthorization: []string{"Bearer sk-abc.def~ghi+/=="}, expectStatus: 401, expectWWW: challenge + `, error="invalid_token"`, expectBody: invalidTokenBody, expectMetric: "locked/invalid_token"},
		{name: "two headers", givenClient: "locked", givenAuthorization: []string{"Bearer " + w.key.Token.Reveal(), "Bearer " + w.key.Token.Reveal()}, expectStatus: 400, expectWWW: challenge + `, error="invalid_request"`, expectMetric: "locked/malformed"},
		{name: "empty token", givenClient: "locked", givenAuthorization: []string{"Bearer "}, expectStatus: 400, expectWWW: challenge + `, error="invalid_request"`, expectMetric: "locked/malformed"},
		{name: "scheme only", givenClient: "locked", givenAuthorization: []string{"Bearer"}, expectStatus: 400, expectWWW: challenge + `, error="invalid_request"`, expectMetric: "locked/malformed"},
		{name: "bad characters", givenClient: "locked", givenAuthorization: []string{"Bearer abc def"}, expectStatus: 400, expectWWW: challenge + `, error="invalid_request"`, expectMetric: "locked/malformed"},
		{name: "padding inside", givenClient: "locked", givenAuthorization: []string{"Bearer ab=c"}, expectStatus: 400, expectWWW: challenge + `, error="invalid_request"`, expectMetric: "locked/malformed"},
		{name: "basic scheme", givenClient: "locked", givenAuthorization: []string{"Basic dXNlcjpwYXNz"}, expectStatus: 400, expectWWW: challenge + `, error="invalid_request"`, expectMetric: "locked/malformed"},
		{name: "empty header", givenClient: "locked", givenAuthorization: []string{""}, expectStatus: 400, expectWWW: challenge + `, error="invalid_request"`, expectMetric: "locked/malformed"},
		{name: "unknown client", givenClient: "ghost", givenAuthorization: []string{"Bearer " + w.key.Token.Reveal()}, expectStatus: 404, expectMetric: "_unknown/unknown_client"},
		{name: "invalid client name", givenClient: "EVIL%0Aname", expectStatus: 404, expectMetric: "_unknown/unknown_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &counter{}
			e := echo.New()
			called := false
			var got middleware.Principal
			g := e.Group("/v1/clients/:client", middleware.WithConfig(middleware.Config{Store: w.store, Metrics: rec}))
			g.POST("/chat", func(c echo.Context) error {
				called = true
				got, _ = middleware.PrincipalFrom(c)
				return c.String(http.StatusOK, "ok")
			})
			req := httptest.NewRequest(http.MethodPost, "/v1/clients/"+tt.givenClient+"/chat", nil)
			for _, v := range tt.givenAuthorization {
				req.Header.Add("Authorization", v)
			}
			res := httptest.NewRecorder()
			e.ServeHTTP(res, req)

			if called != tt.expectHandlerCalled {
				t.Fatalf("handler called = %v", called)
			}
			if res.Code != tt.expectStatus {
				t.Fatalf("status %d, want %d (body %s)", res.Code, tt.expectStatus, res.Body)
			}
			if got := res.Header().Get("WWW-Authenticate"); got != tt.expectWWW {
				t.Fatalf("WWW-Authenticate %q, want %q", got, tt.expectWWW)
			}
			if tt.expectBody != "" && res.Body.String() != tt.expectBody {
				t.Fatalf("body %q, want %q", res.Body, tt.expectBody)
			}
			if cc := res.Header().Get("Cache-Control"); (res.Code == 401 || res.Code == 400) && cc != "no-store" {
				t.Fatalf("Cache-Control %q on %d", cc, res.Code)
			}
			if rec.get(tt.expectMetric) != 1 || len(rec.n) != 1 {
				t.Fatalf("metrics %v, want one %s", rec.n, tt.expectMetric)
			}
			if tok := w.key.Token.Reveal(); strings.Contains(res.Body.String(), tok) || strings.Contains(fmt.Sprint(res.Header()), tok) {
				t.Fatal("the response contains a token")
			}
			if called {
				wantAnon := tt.expectKeyID == 0
				if got.Client != tt.givenClient || got.Anonymous != wantAnon || got.KeyID != tt.expectKeyID || got.ClientID == 0 {
					t.Fatalf("principal %+v", got)
				}
			}
		})
	}
}

// faultStore fails or hangs: faults a real database cannot produce on
// demand for one call.
type faultStore struct {
	keystore.Store
	stateErr, verifyErr error
	hang                bool
}

func (f faultStore) ClientState(ctx context.Context, client string) (keystore.ClientState, error) {
	if f.hang {
		<-ctx.Done()
		return keystore.ClientState{}, fmt.Errorf("%w: %w", keystore.ErrUnavailable, ctx.Err())
	}
	if f.stateErr != nil {
		return keystore.ClientState{}, f.stateErr
	}
	return f.Store.ClientState(ctx, client)
}

func (f faultStore) Verify(ctx context.Context, client string, tok keystore.Token) (keystore.VerifiedKey, error) {
	if f.verifyErr != nil {
		return keystore.VerifiedKey{}, f.verifyErr
	}
	return f.Store.Verify(ctx, client, tok)
}

func TestFailClosed(t *testing.T) {
	w := newWorld(t)
	down := fmt.Errorf("%w: connection refused", keystore.ErrUnavailable)
	tests := []struct {
		name         string
		store        faultStore
		client       string
		auth         string
		expectMetric string
	}{
		{"state unavailable, open client", faultStore{Store: w.store, stateErr: down}, "open", "", "_unknown/unavailable"},
		{"state unavailable, keyed client", faultStore{Store: w.store, stateErr: down}, "locked", "", "_unknown/unavailable"},
		{"store breaks contract with a plain error", faultStore{Store: w.store, stateErr: errors.New("boom")}, "open", "", "_unknown/unavailable"},
		{"verify unavailable", faultStore{Store: w.store, verifyErr: down}, "locked", "Bearer " + w.key.Token.Reveal(), "locked/unavailable"},
		{"store hangs past the deadline", faultStore{Store: w.store, hang: true}, "open", "", "_unknown/unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &counter{}
			cfg := middleware.Config{Store: tt.store, Metrics: rec, RetryAfter: 1500 * time.Millisecond}
			if tt.store.hang {
				// Short, but only where the store hangs: the other rows
				// make real SQLite calls, which a loaded machine may
				// stall for longer than this.
				cfg.DecisionTimeout = 100 * time.Millisecond
			}
			e := echo.New()
			e.POST("/v1/clients/:client/chat", func(c echo.Context) error {
				t.Fatal("handler reached while the store is down")
				return nil
			}, middleware.WithConfig(cfg))
			req := httptest.NewRequest(http.MethodPost, "/v1/clients/"+tt.client+"/chat", nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			res := httptest.NewRecorder()
			e.ServeHTTP(res, req)
			if res.Code != http.StatusServiceUnavailable || res.Header().Get("Retry-After") != "2" {
				t.Fatalf("status %d Retry-After %q, want 503 and 2", res.Code, res.Header().Get("Retry-After"))
			}
			if rec.get(tt.expectMetric) != 1 {
				t.Fatalf("metrics %v, want %s", rec.n, tt.expectMetric)
			}
		})
	}
}

func TestResolvers(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		name     string
		resolver middleware.ClientResolver
		prepare  func(r *http.Request)
		want     int
	}{
		{"param", middleware.FromParam("bot"), func(r *http.Request) {}, 200},
		{"host label", middleware.FromHost("api.example.com"), func(r *http.Request) { r.Host = "open.api.example.com:8443" }, 200},
		{"host outside the domain", middleware.FromHost("api.example.com"), func(r *http.Request) { r.Host = "open.evil.com" }, 404},
		{"host with two labels", middleware.FromHost("api.example.com"), func(r *http.Request) { r.Host = "a.open.api.example.com" }, 404},
		{"header", middleware.FromHeader("X-LLM-Client"), func(r *http.Request) { r.Header.Set("X-LLM-Client", "open") }, 200},
		{"header twice", middleware.FromHeader("X-LLM-Client"), func(r *http.Request) {
			r.Header.Add("X-LLM-Client", "open")
			r.Header.Add("X-LLM-Client", "open")
		}, 404},
		{"header keyed client", middleware.FromHeader("X-LLM-Client"), func(r *http.Request) { r.Header.Set("X-LLM-Client", "locked") }, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := echo.New()
			e.GET("/bots/:bot", func(c echo.Context) error { return c.NoContent(200) },
				middleware.WithConfig(middleware.Config{Store: w.store, ClientResolver: tt.resolver}))
			req := httptest.NewRequest(http.MethodGet, "/bots/open", nil)
			tt.prepare(req)
			res := httptest.NewRecorder()
			e.ServeHTTP(res, req)
			if res.Code != tt.want {
				t.Fatalf("status %d, want %d", res.Code, tt.want)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		name    string
		config  middleware.Config
		wantErr bool
	}{
		{"store required", middleware.Config{}, true},
		{"realm with a quote", middleware.Config{Store: w.store, Realm: `a"b`}, true},
		{"negative timeout", middleware.Config{Store: w.store, DecisionTimeout: -1}, true},
		{"defaults", middleware.Config{Store: w.store}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.config.ToMiddleware()
			if (err != nil) != tt.wantErr {
				t.Fatalf("ToMiddleware: %v", err)
			}
		})
	}
	defer func() {
		if recover() == nil {
			t.Fatal("WithConfig did not panic on an invalid config")
		}
	}()
	middleware.WithConfig(middleware.Config{})
}

func TestHooksAndSkipper(t *testing.T) {
	w := newWorld(t)
	var logs strings.Builder
	var successes int
	var used []int64
	e := echo.New()
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error { return c.NoContent(204) },
		middleware.WithConfig(middleware.Config{
			Store:          w.store,
			Skipper:        func(c echo.Context) bool { return c.Request().Header.Get("X-Skip") == "1" },
			Logger:         slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			SuccessHandler: func(c echo.Context) { successes++ },
			Usage:          usageFunc(func(id int64, _ time.Time) { used = append(used, id) }),
			ErrorHandler: func(c echo.Context, err error) error {
				var e *middleware.Error
				if !errors.As(err, &e) {
					t.Fatalf("ErrorHandler got %T", err)
				}
				return c.String(499, string(e.Outcome))
			},
		}))
	do := func(client, auth, skip string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/v1/clients/"+client+"/chat?api_key="+w.key.Token.Reveal(), nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		req.Header.Set("X-Skip", skip)
		res := httptest.NewRecorder()
		e.ServeHTTP(res, req)
		return res
	}
	if res := do("locked", "", "1"); res.Code != 204 {
		t.Fatalf("skipped request: %d", res.Code)
	}
	// A token in the query string is never read.
	if res := do("locked", "", ""); res.Code != 499 || res.Body.String() != "missing_token" {
		t.Fatalf("custom ErrorHandler: %d %q", res.Code, res.Body)
	}
	if res := do("locked", "Bearer "+w.other.Token.Reveal(), ""); res.Code != 499 || res.Body.String() != "invalid_token" {
		t.Fatalf("custom ErrorHandler: %d %q", res.Code, res.Body)
	}
	if res := do("locked", "Bearer "+w.key.Token.Reveal(), ""); res.Code != 204 {
		t.Fatalf("valid: %d", res.Code)
	}
	if res := do("open", "", ""); res.Code != 204 {
		t.Fatalf("open: %d", res.Code)
	}
	if successes != 2 || len(used) != 1 || used[0] != w.key.ID {
		t.Fatalf("successes %d, usage %v", successes, used)
	}
	out := logs.String()
	for _, tok := range []keystore.NewKey{w.key, w.other} {
		if strings.Contains(out, tok.Token.Reveal()) || strings.Contains(out, tok.Token.Reveal()[17:]) {
			t.Fatal("a token reached the log")
		}
	}
	if !strings.Contains(out, "outcome=missing_token") || !strings.Contains(out, "outcome=invalid_token") {
		t.Fatalf("refusals not logged: %s", out)
	}
}

type usageFunc func(int64, time.Time)

func (f usageFunc) RecordUse(id int64, at time.Time) { f(id, at) }

func BenchmarkAuthenticated(b *testing.B) {
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "b.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := sqlstore.Migrate(ctx, db); err != nil {
		b.Fatal(err)
	}
	s, _ := sqlstore.New(ctx, db, sqlstore.Options{})
	_, _ = s.CreateClient(ctx, "bot")
	_, _ = s.CreateClient(ctx, "open")
	k, _ := s.CreateKey(ctx, "bot", keystore.KeySpec{})
	// No change feed here: entries are trusted for their TTL. Without one
	// and without this option, the cache could never prove its freshness
	// and every lookup would go to the store.
	cache, _ := cache.New(s, cache.Options{NoChangeFeed: true})
	defer cache.Close()
	handler := func(c echo.Context) error { return c.NoContent(204) }
	serve := func(store keystore.Store, client, auth string) func(b *testing.B) {
		return func(b *testing.B) {
			e := echo.New()
			if store == nil {
				e.POST("/v1/clients/:client/chat", handler)
			} else {
				e.POST("/v1/clients/:client/chat", handler, middleware.WithConfig(middleware.Config{Store: store}))
			}
			req := httptest.NewRequest(http.MethodPost, "/v1/clients/"+client+"/chat", nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			b.ReportAllocs()
			for b.Loop() {
				res := httptest.NewRecorder()
				e.ServeHTTP(res, req)
				if res.Code != 204 {
					b.Fatalf("status %d", res.Code)
				}
			}
		}
	}
	// The baseline, Echo with no middleware, runs first in the same
	// process, so that the x-baseline ratios do not depend on how busy the
	// machine is.
	var baseNs float64
	b.Run("baseline-no-middleware", func(b *testing.B) {
		serve(nil, "bot", "")(b)
		baseNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	for _, bc := range []struct {
		name, client, auth string
		store              keystore.Store
	}{
		{"anonymous-cached", "open", "", cache},
		{"bearer-cached", "bot", "Bearer " + k.Token.Reveal(), cache},
		{"bearer-uncached-sqlite", "bot", "Bearer " + k.Token.Reveal(), s},
	} {
		b.Run(bc.name, func(b *testing.B) {
			serve(bc.store, bc.client, bc.auth)(b)
			if baseNs > 0 {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/baseNs, "x-baseline")
			}
		})
	}
}

func TestRefusalFrom(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		name          string
		givenClient   string
		givenAuth     string
		expectRefused bool
		expectOutcome middleware.Outcome
		expectClient  string
	}{
		{name: "passed", givenClient: "open", expectRefused: false},
		{name: "missing token", givenClient: "locked", expectRefused: true, expectOutcome: middleware.OutcomeMissingToken, expectClient: "locked"},
		{name: "unknown client", givenClient: "ghost", expectRefused: true, expectOutcome: middleware.OutcomeUnknownClient, expectClient: middleware.UnknownClientLabel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := echo.New()
			var got *middleware.Error
			var refused bool
			outer := func(next echo.HandlerFunc) echo.HandlerFunc {
				return func(c echo.Context) error {
					err := next(c)
					got, refused = middleware.RefusalFrom(c)
					return err
				}
			}
			e.POST("/v1/clients/:client/chat", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) },
				outer, middleware.WithConfig(middleware.Config{Store: w.store}))
			req := httptest.NewRequest(http.MethodPost, "/v1/clients/"+tt.givenClient+"/chat", nil)
			e.ServeHTTP(httptest.NewRecorder(), req)
			if refused != tt.expectRefused {
				t.Fatalf("refused = %v, want %v", refused, tt.expectRefused)
			}
			if refused && (got.Outcome != tt.expectOutcome || got.Client != tt.expectClient) {
				t.Fatalf("refusal %+v, want outcome %s client %s", got, tt.expectOutcome, tt.expectClient)
			}
		})
	}
}
