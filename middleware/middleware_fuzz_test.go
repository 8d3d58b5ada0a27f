package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/middleware"
)

// Fixed, well-formed tokens, so that the seeds are the same on every run.
const (
	lockedToken = "llmk_lPBUhKK15mAfICEr4WqoJuPEjevtCEnDufM1sLMINvW2BUytlvAE7Y322D9Sb"
	otherToken  = "llmk_DQBRD6dlP9m2BY8AqhI0LqTQGrNd6JqqOi45fDernw03mm5mbsgglQJ4arR4E"
)

// memStore is an in-memory keystore.Store: "locked" and "other" each have
// one key, "open" has none, "down" cannot be read and "verify-down" can be
// read but not verified.
type memStore struct {
	clients map[string]keystore.ClientState
	keys    map[string]keystore.Digest // client → its one key's digest
}

func newMemStore(t testing.TB) *memStore {
	s := &memStore{
		clients: map[string]keystore.ClientState{
			"locked":      {ID: 1, Name: "locked", RequiresKey: true},
			"open":        {ID: 2, Name: "open"},
			"other":       {ID: 3, Name: "other", RequiresKey: true},
			"verify-down": {ID: 4, Name: "verify-down", RequiresKey: true},
		},
		keys: map[string]keystore.Digest{},
	}
	for client, raw := range map[string]string{"locked": lockedToken, "other": otherToken, "verify-down": lockedToken} {
		tok, err := keystore.ParseToken(raw)
		if err != nil {
			t.Fatal(err)
		}
		s.keys[client] = tok.Digest()
	}
	return s
}

func (s *memStore) ClientState(ctx context.Context, client string) (keystore.ClientState, error) {
	if client == "down" {
		return keystore.ClientState{}, fmt.Errorf("%w: memStore down", keystore.ErrUnavailable)
	}
	st, ok := s.clients[client]
	if !ok {
		return keystore.ClientState{}, keystore.ErrUnknownClient
	}
	return st, nil
}

func (s *memStore) Verify(ctx context.Context, client string, tok keystore.Token) (keystore.VerifiedKey, error) {
	if client == "verify-down" {
		return keystore.VerifiedKey{}, fmt.Errorf("%w: memStore verify down", keystore.ErrUnavailable)
	}
	d, ok := s.keys[client]
	if !ok || !tok.Digest().Equal(d) {
		return keystore.VerifiedKey{}, keystore.ErrInvalidToken
	}
	st := s.clients[client]
	return keystore.VerifiedKey{KeyID: st.ID * 10, KeyName: "k", ClientID: st.ID, Client: client}, nil
}

// labelRecorder remembers the client labels of the decisions it is told.
type labelRecorder struct {
	mu     sync.Mutex
	labels []string
}

func (r *labelRecorder) Decision(client, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.labels = append(r.labels, client)
}

func (r *labelRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.labels
	r.labels = nil
	return l
}

// fuzzBearer is RFC 6750 §2.1's credentials with RFC 7235's
// case-insensitive scheme.
var fuzzBearer = regexp.MustCompile(`^[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9._~+/-]+=*)$`)

// fuzzResponse is what the handler behind the middleware answers.
type fuzzResponse struct {
	Principal middleware.Principal `json:"principal"`
	Found     bool                 `json:"found"`
	Param     string               `json:"param"`
}

// FuzzMiddleware drives the whole middleware, behind Echo's router, with
// random methods, paths (client names included) and Authorization
// headers (copies of them: 0, 1 or 2). Whatever comes in:
//
//   - 200 comes only from the handler, with the principal of the client
//     the route named; for a keyed client only with exactly one
//     Authorization header that is "Bearer" 1*SP and that client's token;
//   - the only 5xx is 503, and only for the clients whose store calls fail;
//   - metrics see only existing client names or _unknown;
//   - no response and no log line contains a token.
func FuzzMiddleware(f *testing.F) {
	store := newMemStore(f)
	rec := &labelRecorder{}
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{mu: &logMu, w: &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mw := middleware.WithConfig(middleware.Config{Store: store, Metrics: rec, Logger: logger})
	e := echo.New()
	handler := func(c echo.Context) error {
		p, found := middleware.PrincipalFrom(c)
		return c.JSON(http.StatusOK, fuzzResponse{Principal: p, Found: found, Param: c.Param("client")})
	}
	e.POST("/v1/clients/:client/chat", handler, mw)
	e.POST("/v1/clients/:client/chat/completions", handler, mw)
	e.GET("/v1/clients/:client/models", handler, mw)

	for _, c := range []struct {
		method, client, tail, auth string
		copies                     uint8
	}{
		{"POST", "locked", "/chat", "Bearer " + lockedToken, 1},
		{"POST", "locked", "/chat", "bearer   " + lockedToken, 1},
		{"POST", "locked", "/chat", "Bearer " + lockedToken, 2},
		{"POST", "locked", "/chat", "Bearer " + lockedToken, 0},
		{"POST", "locked", "/chat", "Bearer " + otherToken, 1},
		{"POST", "locked", "/chat", "Bearer " + lockedToken + "=", 1},
		{"POST", "locked", "/chat", "Bearer " + lockedToken[:65] + "x", 1},
		{"POST", "locked", "/chat", "Basic " + lockedToken, 1},
		{"POST", "locked", "/chat", lockedToken, 1},
		{"POST", "other", "/chat/completions", "Bearer " + otherToken, 1},
		{"GET", "locked", "/models", "BEARER " + lockedToken, 1},
		{"GET", "locked", "/chat", "Bearer " + lockedToken, 1},
		{"POST", "LOCKED", "/chat", "Bearer " + lockedToken, 1},
		{"POST", "lo%63ked", "/chat", "", 0},
		{"POST", "locked%2Fchat", "", "", 0},
		{"POST", "locked/", "/chat", "", 0},
		{"POST", "open", "/chat", "", 0},
		{"POST", "open", "/chat", "Bearer garbage", 1},
		{"POST", "open", "/chat/", "", 0},
		{"POST", "down", "/chat", "", 0},
		{"POST", "verify-down", "/chat", "Bearer " + lockedToken, 1},
		{"POST", "verify-down", "/chat", "Bearer x", 1},
		{"POST", "nobody", "/chat", "Bearer " + lockedToken, 1},
		{"POST", "_unknown", "/chat", "", 0},
		{"POST", "", "/chat", "", 0},
		{"PUT", "locked", "/chat", "Bearer " + lockedToken, 1},
		{"OPTIONS", "locked", "/chat", "", 0},
		{"HEAD", "locked", "/models", "", 0},
		{"POST", "locked", "/chat?client=open", "", 0},
		{"POST", "locked", "/chat#open", "", 0},
		{"POST", "open", "/../locked/chat", "", 0},
		{"POST", "-x", "/chat", "", 0},
	} {
		f.Add(c.method, c.client, c.tail, c.auth, c.copies)
	}

	f.Fuzz(func(t *testing.T, method, client, tail, auth string, copies uint8) {
		if !isToken(method) {
			return // net/http's server refuses such a request line
		}
		target := "/v1/clients/" + client + tail
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // the server refuses it too
		}
		req := (&http.Request{
			Method: method, URL: u, RequestURI: target, Host: "example.com", RemoteAddr: "192.0.2.1:1234",
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, Body: http.NoBody,
		}).WithContext(context.Background())
		n := int(copies % 3)
		for range n {
			req.Header.Add("Authorization", auth)
		}
		rec.take()
		logMu.Lock()
		logs.Reset()
		logMu.Unlock()

		res := httptest.NewRecorder()
		e.ServeHTTP(res, req)

		body := res.Body.String()
		switch {
		case res.Code >= 500 && res.Code != http.StatusServiceUnavailable:
			t.Fatalf("%s %q with %d× Authorization %q: status %d", method, target, n, auth, res.Code)
		case res.Code == http.StatusServiceUnavailable && !strings.Contains(u.Path, "down") && !strings.Contains(u.EscapedPath(), "down"):
			t.Fatalf("%s %q: 503 for a client whose store works", method, target)
		case res.Code == http.StatusOK:
			var got fuzzResponse
			if err := json.Unmarshal(res.Body.Bytes(), &got); err != nil {
				t.Fatalf("%s %q: 200 not from the handler: %q", method, target, body)
			}
			p := got.Principal
			if !got.Found || p.Client != got.Param {
				t.Fatalf("%s %q: 200 with principal %+v (found %v) for route client %q", method, target, p, got.Found, got.Param)
			}
			switch p.Client {
			case "open":
				if !p.Anonymous || p.KeyID != 0 {
					t.Fatalf("%s %q: open client passed with principal %+v", method, target, p)
				}
			case "locked", "other":
				want := map[string]string{"locked": lockedToken, "other": otherToken}[p.Client]
				m := fuzzBearer.FindStringSubmatch(auth)
				if n != 1 || m == nil || m[1] != want {
					t.Fatalf("%s %q with %d× Authorization %q: 200 for keyed client %q without its token", method, target, n, auth, p.Client)
				}
				if p.Anonymous || p.KeyID != store.clients[p.Client].ID*10 {
					t.Fatalf("%s %q: keyed client passed with principal %+v", method, target, p)
				}
			default:
				t.Fatalf("%s %q: 200 for client %q", method, target, p.Client)
			}
		}
		for _, l := range rec.take() {
			if _, ok := store.clients[l]; !ok && l != middleware.UnknownClientLabel {
				t.Fatalf("%s %q: metrics label %q is no client", method, target, l)
			}
		}
		logMu.Lock()
		logged := logs.String()
		logMu.Unlock()
		var headers strings.Builder
		for k, vs := range res.Header() {
			fmt.Fprintf(&headers, "%s: %s\n", k, strings.Join(vs, ", "))
		}
		for _, secret := range []string{lockedToken, otherToken, lockedToken[17:60], otherToken[17:60]} {
			if strings.Contains(body, secret) || strings.Contains(headers.String(), secret) || strings.Contains(logged, secret) {
				t.Fatalf("%s %q: a token shows in the response or the log:\n%s\n%s\n%s", method, target, headers.String(), body, logged)
			}
		}
		if m := fuzzBearer.FindStringSubmatch(auth); m != nil && len(m[1]) >= 16 && !strings.Contains(method, m[1]) && strings.Contains(logged, m[1]) {
			t.Fatalf("%s %q: the log shows the presented token: %s", method, target, logged)
		}
	})
}

// isToken reports whether s is an RFC 9110 token, as a method must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b <= ' ' || b >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, b) >= 0 {
			return false
		}
	}
	return true
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
