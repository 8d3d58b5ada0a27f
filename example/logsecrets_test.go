package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/middleware"
)

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestNoSecretInLogs sends a token in every field a caller controls (the
// client segment raw, upper-cased, percent-encoded; the method; the query;
// headers other than Authorization), through the server's own logger at
// debug level in both formats, and asserts that no 16-character run of the
// secret appears in any log line.
func TestNoSecretInLogs(t *testing.T) {
	t.Parallel()
	tok, err := keystore.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	raw := tok.Reveal()
	secret := raw[len(keystore.TokenPrefix)+12:]
	upper := strings.ToUpper(raw)
	enc := url.PathEscape(raw)
	pct := ""
	for _, b := range []byte(raw) {
		pct += "%" + strings.ToUpper(string("0123456789abcdef"[b>>4])+string("0123456789abcdef"[b&15]))
	}
	requests := []struct {
		method, target string
		header         []string
	}{
		{http.MethodPost, "/v1/clients/" + raw + "/chat", nil},
		{http.MethodPost, "/v1/clients/" + upper + "/chat", nil},
		{http.MethodPost, "/v1/clients/" + enc + "/chat", nil},
		{http.MethodPost, "/v1/clients/" + pct + "/chat", nil},
		{http.MethodPost, "/" + raw, nil},
		{http.MethodPost, "/v1/clients/bot/chat?key=" + raw, nil},
		{http.MethodGet, "/v1/clients/bot/chat/" + pct, nil},
		{strings.ToUpper(raw[:20]) + raw[20:], "/v1/clients/bot/chat", nil},
		{raw, "/healthz", nil},
		{http.MethodPost, "/v1/clients/bot/chat", []string{"X-Api-Key", raw, "Cookie", "k=" + raw, "User-Agent", raw, "X-Forwarded-For", raw, "Referer", "http://x/" + raw}},
		{http.MethodPost, "/v1/clients/bot/chat", []string{"Authorization", "Bearer " + raw}},
	}
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			var logs lockedBuffer
			e := newRouter(routerConfig{
				auth:        fakeAuth(middleware.Principal{Client: "bot", ClientID: 1, Anonymous: true}),
				db:          fakePinger{},
				registry:    prometheus.NewRegistry(),
				logger:      newLogger(&logs, "debug", format),
				accessLog:   true, // the log that writes caller-controlled fields
				ipExtractor: echo.ExtractIPDirect(),
			})
			for _, r := range requests {
				req := httptest.NewRequest(http.MethodGet, "/", strings.NewReader(`{}`))
				req.Method = r.method
				req.URL, _ = url.Parse(r.target)
				req.RequestURI = r.target
				for i := 0; i+1 < len(r.header); i += 2 {
					req.Header.Add(r.header[i], r.header[i+1])
				}
				e.ServeHTTP(httptest.NewRecorder(), req)
			}
			out := logs.String()
			if strings.Count(out, "\n") < len(requests) {
				t.Fatalf("expected a log line per request, got:\n%s", out)
			}
			lower, upperOut := strings.ToLower(out), strings.ToUpper(out)
			for i := 0; i+16 <= len(secret); i++ {
				run := secret[i : i+16]
				if strings.Contains(out, run) || strings.Contains(lower, strings.ToLower(run)) || strings.Contains(upperOut, strings.ToUpper(run)) {
					t.Fatalf("a 16-character run of the secret (%q…) reached the %s log:\n%s", run[:4], format, out)
				}
			}
		})
	}
}
