package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/llmauth/llmauth/middleware"
)

// TestErrorBodies: whatever Echo itself answers (no route, a method the
// route does not serve, a body over the limit, a handler's failure) comes
// in the OpenAI-style error format of the middleware's refusals, over real
// HTTP.
func TestErrorBodies(t *testing.T) {
	t.Parallel()
	e := testRouter(t, middleware.Principal{Client: "bot", Anonymous: true}, fakePinger{}, nil)
	e.GET("/fails", func(echo.Context) error { return errors.New("database exploded") })
	e.GET("/panics", func(echo.Context) error { panic("boom") })
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)

	const (
		notFound  = `{"error":{"message":"no route matches this path","type":"not_found_error","param":null,"code":"unknown_route"}}`
		internal  = `{"error":{"message":"internal error","type":"server_error","param":null,"code":"internal_error"}}`
		tooLarge  = `{"error":{"message":"the request body is too large","type":"invalid_request_error","param":null,"code":"request_too_large"}}`
		postOnly  = `{"error":{"message":"this route does not serve this method; allowed: OPTIONS, POST","type":"invalid_request_error","param":null,"code":"method_not_allowed"}}`
		probeOnly = `{"error":{"message":"this route does not serve this method; allowed: OPTIONS, GET, HEAD","type":"invalid_request_error","param":null,"code":"method_not_allowed"}}`
	)
	for _, tc := range []struct {
		method, path, body string
		status             int
		allow              string
		want               string // "" for an empty body
	}{
		{http.MethodGet, "/nothing-here", "", 404, "", notFound},
		{http.MethodPost, "/v1/clients/bot/nothing-here", "", 404, "", notFound},
		{http.MethodGet, "/v1/clients/bot", "", 404, "", notFound},
		// The path is never repeated: a caller can put a token in it.
		{http.MethodGet, "/llmk_secretsecretsecret", "", 404, "", notFound},
		{http.MethodHead, "/nothing-here", "", 404, "", ""},
		{http.MethodGet, "/v1/clients/bot/chat", "", 405, "OPTIONS, POST", postOnly},
		{http.MethodDelete, "/v1/clients/bot/chat/completions", "", 405, "OPTIONS, POST", postOnly},
		{http.MethodPost, "/healthz", "", 405, "OPTIONS, GET, HEAD", probeOnly},
		{http.MethodPost, "/v1/clients/bot/chat", strings.Repeat("x", 2<<20), 413, "", tooLarge},
		{http.MethodGet, "/fails", "", 500, "", internal},
		{http.MethodGet, "/panics", "", 500, "", internal},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			r := do(t, tc.method, srv.URL+tc.path, tc.body)
			if body := strings.TrimSuffix(string(r.body), "\n"); r.status != tc.status || body != tc.want {
				t.Fatalf("%d %q, want %d %q", r.status, r.body, tc.status, tc.want)
			}
			if tc.want != "" && r.header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", r.header.Get("Content-Type"))
			}
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			if strings.Contains(string(r.body), "secret") || strings.Contains(string(r.body), "exploded") {
				t.Errorf("the body repeats the request or the cause: %s", r.body)
			}
		})
	}
}
