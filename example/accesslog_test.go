package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmauth/llmauth"
	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/middleware"
)

// TestOneLinePerRefusal: without --access-log, a refusal is one line (the
// middleware's) and a request that passed is none; with it, every request
// is one line, a refusal's carrying its outcome, and the middleware writes
// nothing more.
func TestOneLinePerRefusal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, accessLog := range []bool{false, true} {
		t.Run(map[bool]string{false: "default", true: "access log"}[accessLog], func(t *testing.T) {
			t.Parallel()
			var logs lockedBuffer
			logger := newLogger(&logs, "info", "text")
			stack, err := llmauth.New(ctx, "sqlite:"+filepath.Join(t.TempDir(), "l.db"), llmauth.Options{
				Registerer: prometheus.NewRegistry(),
				Logger:     logger,
				Middleware: middleware.Config{Logger: refusalLogger(logger, accessLog)},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = stack.Close(context.Background()) })
			for _, c := range []string{"open-bot", "keyed-bot"} {
				if _, err := stack.Store.CreateClient(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
			key, err := stack.Store.CreateKey(ctx, "keyed-bot", keystore.KeySpec{})
			if err != nil {
				t.Fatal(err)
			}
			if err := stack.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			e := newRouter(routerConfig{auth: stack.Middleware, db: fakePinger{}, registry: prometheus.NewRegistry(),
				logger: logger, accessLog: accessLog, ipExtractor: echo.ExtractIPDirect()})
			for _, tc := range []struct {
				name          string
				client, auth  string
				expectStatus  int
				expectLines   int
				expectOutcome string
			}{
				{"anonymous", "open-bot", "", 200, map[bool]int{false: 0, true: 1}[accessLog], "anonymous"},
				{"authenticated", "keyed-bot", "Bearer " + key.Token.Reveal(), 200, map[bool]int{false: 0, true: 1}[accessLog], "authenticated"},
				{"missing token", "keyed-bot", "", 401, 1, "missing_token"},
				{"malformed", "keyed-bot", "Basic eDp5", 400, 1, "malformed"},
				{"unknown client", "no-such-bot", "", 404, 1, "unknown_client"},
			} {
				before := len(logs.String())
				req := httptest.NewRequest(http.MethodPost, "/v1/clients/"+tc.client+"/chat", strings.NewReader(`{}`))
				if tc.auth != "" {
					req.Header.Set("Authorization", tc.auth)
				}
				res := httptest.NewRecorder()
				e.ServeHTTP(res, req)
				lines := strings.Split(strings.TrimSpace(logs.String()[before:]), "\n")
				if lines[0] == "" {
					lines = nil
				}
				if res.Code != tc.expectStatus || len(lines) != tc.expectLines {
					t.Fatalf("%s: status %d, %d log lines %q; want %d and %d", tc.name, res.Code, len(lines), lines, tc.expectStatus, tc.expectLines)
				}
				if len(lines) == 1 && !strings.Contains(lines[0], "outcome="+tc.expectOutcome) {
					t.Fatalf("%s: log line %q lacks outcome=%s", tc.name, lines[0], tc.expectOutcome)
				}
			}
		})
	}
}
