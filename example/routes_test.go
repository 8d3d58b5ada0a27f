package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmauth/llmauth/middleware"
)

// These tests run the routes in process (and so under the race detector),
// with a stand-in for the auth middleware.

type fakePinger struct{ err error }

func (p fakePinger) Ping(context.Context) error { return p.err }

// fakeAuth lets every request through as p.
func fakeAuth(p middleware.Principal) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.SetRequest(c.Request().WithContext(middleware.NewContext(c.Request().Context(), p)))
			return next(c)
		}
	}
}

func testRouter(t *testing.T, p middleware.Principal, db pinger, log *bytes.Buffer) *echo.Echo {
	t.Helper()
	if log == nil {
		log = &bytes.Buffer{}
	}
	return newRouter(routerConfig{
		auth:        fakeAuth(p),
		db:          db,
		registry:    prometheus.NewRegistry(),
		logger:      slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		accessLog:   true,
		ipExtractor: echo.ExtractIPDirect(),
		now:         func() time.Time { return time.Unix(1700000000, 0) },
	})
}

func serveOnce(e *echo.Echo, method, target, body string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func TestChatRoute(t *testing.T) {
	t.Parallel()
	anon := testRouter(t, middleware.Principal{Client: "bot", ClientID: 1, Anonymous: true}, fakePinger{}, nil)
	keyed := testRouter(t, middleware.Principal{Client: "bot", ClientID: 1, KeyID: 7, KeyName: "ci"}, fakePinger{}, nil)
	for _, tc := range []struct {
		name   string
		e      *echo.Echo
		body   string
		status int
		want   string
	}{
		{"anonymous", anon, `{"message":"hi"}`, 200, `{"client":"bot","anonymous":true,"key_id":null,"key_name":null,"reply":"hi"}`},
		{"keyed", keyed, `{"message":"hi"}`, 200, `{"client":"bot","anonymous":false,"key_id":7,"key_name":"ci","reply":"hi"}`},
		{"no body", keyed, ``, 200, `{"client":"bot","anonymous":false,"key_id":7,"key_name":"ci"}`},
		{"no message", anon, `{"other":1}`, 200, `{"client":"bot","anonymous":true,"key_id":null,"key_name":null}`},
		// Whatever else a caller sends is ignored: the route shows the
		// decision, and an acceptance test may post anything.
		{"not JSON", anon, `hello`, 200, `{"client":"bot","anonymous":true,"key_id":null,"key_name":null}`},
		{"form", keyed, `a=1&b=2`, 200, `{"client":"bot","anonymous":false,"key_id":7,"key_name":"ci"}`},
		{"array", anon, `["hi"]`, 200, `{"client":"bot","anonymous":true,"key_id":null,"key_name":null}`},
		{"message not a string", anon, `{"message":3}`, 200, `{"client":"bot","anonymous":true,"key_id":null,"key_name":null}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := serveOnce(tc.e, http.MethodPost, "/v1/clients/bot/chat", tc.body)
			if rec.Code != tc.status {
				t.Fatalf("status %d, body %s", rec.Code, rec.Body)
			}
			if tc.want != "" && strings.TrimSpace(rec.Body.String()) != tc.want {
				t.Errorf("body %s, want %s", rec.Body, tc.want)
			}
			if tc.status == 400 && !strings.Contains(rec.Body.String(), `"type":"invalid_request_error"`) {
				t.Errorf("400 body is not an OpenAI-style error: %s", rec.Body)
			}
		})
	}
	if rec := serveOnce(anon, http.MethodPost, "/v1/clients/bot/chat", strings.Repeat("x", 2<<20)); rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("2 MiB body: status %d", rec.Code)
	}
}

func TestChatCompletionsStub(t *testing.T) {
	t.Parallel()
	e := testRouter(t, middleware.Principal{Client: "bot", Anonymous: true}, fakePinger{}, nil)
	for _, tc := range []struct {
		name      string
		body      string
		status    int
		reply     string
		model     string
		param     string
		promptTok int
	}{
		{"string content", `{"model":"gpt-4o","messages":[{"role":"user","content":"hello llmauth"}]}`, 200, "hello llmauth", "gpt-4o", "", 2},
		{"content parts", `{"messages":[{"role":"user","content":[{"type":"text","text":"a b"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"c"}]}]}`, 200, "a b\nc", echoModel, "", 3},
		{"last user message", `{"model":"m","messages":[{"role":"system","content":"sys"},{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":"second"}]}`, 200, "second", "m", "", 4},
		{"no user message", `{"messages":[{"role":"system","content":"sys"}]}`, 200, "", echoModel, "", 1},
		{"null content", `{"messages":[{"role":"assistant","content":null,"tool_calls":[]},{"role":"user","content":"x"}]}`, 200, "x", echoModel, "", 1},
		{"unknown fields", `{"model":"m","temperature":0.2,"n":1,"messages":[{"role":"user","content":"x","name":"n"}]}`, 200, "x", "m", "", 1},
		{"bad JSON", `{"messages":`, 400, "", "", "", 0},
		{"empty body", ``, 400, "", "", "", 0},
		{"no messages", `{"model":"m"}`, 400, "", "", "messages", 0},
		{"empty messages", `{"messages":[]}`, 400, "", "", "messages", 0},
		{"messages not an array", `{"messages":"hi"}`, 400, "", "", "", 0},
		{"no role", `{"messages":[{"content":"x"}]}`, 400, "", "", "messages[0].role", 0},
		{"content a number", `{"messages":[{"role":"user","content":42}]}`, 400, "", "", "messages[0].content", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := serveOnce(e, http.MethodPost, "/v1/clients/bot/chat/completions", tc.body)
			if rec.Code != tc.status {
				t.Fatalf("status %d, body %s", rec.Code, rec.Body)
			}
			if tc.status != 200 {
				var body apiError
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Type != "invalid_request_error" || body.Error.Message == "" {
					t.Errorf("error body %s (%v)", rec.Body, err)
				}
				if tc.param != "" && (body.Error.Param == nil || *body.Error.Param != tc.param) {
					t.Errorf("param %v, want %s", body.Error.Param, tc.param)
				}
				if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
					t.Errorf("400 with Cache-Control %q, want no-store", cc)
				}
				return
			}
			var got completion
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(got.ID, "chatcmpl-") || got.Object != "chat.completion" || got.Created != 1700000000 || got.Model != tc.model {
				t.Errorf("envelope: %s", rec.Body)
			}
			if len(got.Choices) != 1 || got.Choices[0].Index != 0 || got.Choices[0].Message == nil ||
				got.Choices[0].Message.Role != "assistant" || got.Choices[0].Message.Content != tc.reply ||
				got.Choices[0].FinishReason == nil || *got.Choices[0].FinishReason != "stop" {
				t.Errorf("choices: %s", rec.Body)
			}
			if u := got.Usage; u == nil || u.PromptTokens != tc.promptTok || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
				t.Errorf("usage: %s", rec.Body)
			}
		})
	}
}

func TestChatCompletionsStream(t *testing.T) {
	t.Parallel()
	e := testRouter(t, middleware.Principal{Client: "bot", Anonymous: true}, fakePinger{}, nil)
	for _, includeUsage := range []bool{false, true} {
		body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"hello llmauth"}]}`
		if includeUsage {
			body = `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello llmauth"}]}`
		}
		rec := serveOnce(e, http.MethodPost, "/v1/clients/bot/chat/completions", body)
		if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream") {
			t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
		}
		var events []string
		sc := bufio.NewScanner(rec.Body)
		for sc.Scan() {
			if line := sc.Text(); line != "" {
				data, ok := strings.CutPrefix(line, "data: ")
				if !ok {
					t.Fatalf("not an SSE data line: %q", line)
				}
				events = append(events, data)
			}
		}
		if len(events) == 0 || events[len(events)-1] != "[DONE]" {
			t.Fatalf("stream does not end with [DONE]: %q", events)
		}
		var role, text, finish string
		var usage *completionUsage
		ids := map[string]bool{}
		for _, ev := range events[:len(events)-1] {
			var ch struct {
				ID      string `json:"id"`
				Object  string `json:"object"`
				Choices []struct {
					Delta        assistantDelta `json:"delta"`
					FinishReason *string        `json:"finish_reason"`
				} `json:"choices"`
				Usage *completionUsage `json:"usage"`
			}
			if err := json.Unmarshal([]byte(ev), &ch); err != nil {
				t.Fatalf("chunk %q: %v", ev, err)
			}
			if ch.Object != "chat.completion.chunk" {
				t.Errorf("object %q", ch.Object)
			}
			ids[ch.ID] = true
			for _, c := range ch.Choices {
				role += c.Delta.Role
				if c.Delta.Content != nil {
					text += *c.Delta.Content
				}
				if c.FinishReason != nil {
					finish = *c.FinishReason
				}
			}
			if ch.Usage != nil {
				usage = ch.Usage
			}
		}
		if role != "assistant" || text != "hello llmauth" || finish != "stop" || len(ids) != 1 {
			t.Errorf("stream: role %q text %q finish %q ids %v", role, text, finish, ids)
		}
		if (usage != nil) != includeUsage || (usage != nil && usage.TotalTokens != 4) {
			t.Errorf("include_usage %v: usage %+v", includeUsage, usage)
		}
	}
}

func TestModelsAndProbes(t *testing.T) {
	t.Parallel()
	e := testRouter(t, middleware.Principal{Client: "bot", Anonymous: true}, fakePinger{}, nil)
	rec := serveOnce(e, http.MethodGet, "/v1/clients/bot/models", "")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"id":"llmauth-echo"`) || !strings.Contains(rec.Body.String(), `"object":"list"`) {
		t.Errorf("models: %d %s", rec.Code, rec.Body)
	}
	if rec := serveOnce(e, http.MethodGet, "/healthz", ""); rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"status":"ok"}` {
		t.Errorf("healthz: %d %s", rec.Code, rec.Body)
	}
	if rec := serveOnce(e, http.MethodGet, "/readyz", ""); rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"status":"ready"}` {
		t.Errorf("readyz: %d %s", rec.Code, rec.Body)
	}
	down := testRouter(t, middleware.Principal{}, fakePinger{err: errors.New("connection refused")}, nil)
	rec = serveOnce(down, http.MethodGet, "/readyz", "")
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" || strings.Contains(rec.Body.String(), "refused") {
		t.Errorf("readyz with the database down: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	for _, probe := range []struct {
		router *echo.Echo
		path   string
		want   int
	}{{e, "/healthz", 200}, {e, "/readyz", 200}, {down, "/healthz", 200}, {down, "/readyz", 503}} {
		if rec := serveOnce(probe.router, http.MethodHead, probe.path, ""); rec.Code != probe.want {
			t.Errorf("HEAD %s: %d, want %d", probe.path, rec.Code, probe.want)
		}
	}
	if rec := serveOnce(e, http.MethodGet, "/metrics", ""); rec.Code != 200 {
		t.Errorf("metrics: %d", rec.Code)
	}
}

// TestRequestLog: one line per request with the route pattern, status and
// client, and never a header, the query string or the raw path.
func TestRequestLog(t *testing.T) {
	t.Parallel()
	var log bytes.Buffer
	e := testRouter(t, middleware.Principal{Client: "bot", Anonymous: true}, fakePinger{}, &log)
	serveOnce(e, http.MethodPost, "/v1/clients/bot/chat?api_key=querysecret", `{"message":"bodysecret"}`,
		"Authorization", "Bearer headersecret", "Cookie", "session=cookiesecret", "X-Forwarded-For", "203.0.113.7")
	out := log.String()
	for _, secret := range []string{"querysecret", "bodysecret", "headersecret", "cookiesecret", "api_key", "203.0.113.7"} {
		if strings.Contains(out, secret) {
			t.Errorf("the request log contains %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"method=POST", "route=/v1/clients/:client/chat", "status=200", "client=bot", "latency=", "remote_ip=192.0.2.1"} {
		if !strings.Contains(out, want) {
			t.Errorf("the request log lacks %q:\n%s", want, out)
		}
	}
}

func TestIPExtractor(t *testing.T) {
	t.Parallel()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "10.1.2.3:5555"
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	for _, tc := range []struct {
		proxies []string
		want    string
	}{
		{nil, "10.1.2.3"},
		{[]string{"192.168.0.0/16"}, "10.1.2.3"}, // private ranges are not trusted by default
		{[]string{"10.0.0.0/8"}, "203.0.113.9"},
	} {
		o := defaultServeOptions()
		for _, p := range tc.proxies {
			if err := o.trustedProxies.Set(p); err != nil {
				t.Fatal(err)
			}
		}
		if got := o.ipExtractor()(req); got != tc.want {
			t.Errorf("trusted %v: got %s, want %s", tc.proxies, got, tc.want)
		}
	}
}

// TestServeInProcess runs serve through run, so that the race detector
// watches the wiring, and stops it through its context.
func TestServeInProcess(t *testing.T) {
	t.Parallel()
	db := "sqlite:" + filepath.Join(t.TempDir(), "llmauth.db")
	var stdout, cliErr bytes.Buffer
	noEnv := func(string) string { return "" }
	for _, args := range [][]string{{"clients", "create", "bot"}, {"keys", "create", "--client", "bot"}} {
		stdout.Reset()
		if code := run(t.Context(), append(args, "--database-url", db), &stdout, &cliErr, noEnv); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, cliErr.String())
		}
	}
	token := strings.TrimSpace(stdout.String())

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stderr := &syncBuffer{}
	var out bytes.Buffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"--database-url", db, "--addr", "127.0.0.1:0", "--log-format", "json", "--usage-flush-interval", "1h"}, &out, stderr, noEnv)
	}()
	var base string
	eventually(t, 30*time.Second, "listening", func() bool {
		if m := listeningRE.FindStringSubmatch(stderr.String()); m != nil {
			base = m[1]
			return true
		}
		return false
	})
	if r := do(t, http.MethodPost, base+"/v1/clients/bot/chat", "", "Authorization", "Bearer "+token); r.status != 200 {
		t.Errorf("valid token: %d %s", r.status, r.body)
	}
	if r := do(t, http.MethodPost, base+"/v1/clients/bot/chat", ""); r.status != 401 {
		t.Errorf("no token: %d", r.status)
	}
	cancel()
	select {
	case code := <-exited:
		if code != 0 {
			t.Errorf("exit %d; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	if out.Len() != 0 {
		t.Errorf("serve wrote to stdout: %q", out.String())
	}
	// JSON logs, one object per line.
	sc := bufio.NewScanner(strings.NewReader(stderr.String()))
	for sc.Scan() {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Errorf("--log-format json wrote a non-JSON line: %q", sc.Text())
		}
	}
	// The shutdown flush wrote last_used_at.
	stdout.Reset()
	if code := run(t.Context(), []string{"keys", "list", "--client", "bot", "--json", "--database-url", db}, &stdout, &cliErr, noEnv); code != 0 {
		t.Fatal(cliErr.String())
	}
	if !strings.Contains(stdout.String(), `"last_used_at": "`) {
		t.Errorf("last_used_at not written at shutdown: %s", stdout.String())
	}
}

// TestWrongMethod: a method no route serves is 405, and the auth
// middleware, mounted per route, never sees it.
func TestWrongMethod(t *testing.T) {
	t.Parallel()
	var decided int
	e := newRouter(routerConfig{
		auth: func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error { decided++; return next(c) }
		},
		db:          fakePinger{},
		registry:    prometheus.NewRegistry(),
		logger:      slog.New(slog.DiscardHandler),
		ipExtractor: echo.ExtractIPDirect(),
		now:         time.Now,
	})
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/v1/clients/bot/chat", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/v1/clients/bot/chat/completions", http.StatusMethodNotAllowed},
		{http.MethodPost, "/v1/clients/bot/nothing-here", http.StatusNotFound},
	} {
		if rec := serveOnce(e, tc.method, tc.path, ""); rec.Code != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, rec.Code, tc.status)
		}
	}
	if decided != 0 {
		t.Fatalf("the auth middleware ran %d times for unserved routes", decided)
	}
}
