package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	echomw "github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/middleware"
)

// echoModel is the model the completions stub reports when the request
// names none, and the one /models lists.
const echoModel = "llmauth-echo"

// pinger is the readiness check: sqlstore.Store implements it.
type pinger interface {
	Ping(ctx context.Context) error
}

// routerConfig is what the HTTP routes need.
type routerConfig struct {
	// auth is the llmauth middleware in front of /v1/clients/:client.
	auth echo.MiddlewareFunc
	// db answers /readyz: nil while ready.
	db pinger
	// registry is exposed on /metrics; nil when metrics are served on a
	// listener of their own (newMetricsRouter), so that /metrics is 404 here.
	registry *prometheus.Registry
	// logger receives one line per request with accessLog, else only
	// handler failures.
	logger *slog.Logger
	// accessLog turns on the one-line-per-request log (--access-log).
	accessLog bool
	// ipExtractor decides the remote IP that logs show.
	ipExtractor echo.IPExtractor
	// now is the clock of "created" fields.
	now func() time.Time
}

// newRouter builds the Echo app: probes and metrics in the open, the LLM
// routes behind the auth middleware.
func newRouter(cfg routerConfig) *echo.Echo {
	if cfg.now == nil {
		cfg.now = time.Now
	}
	e := newEcho(cfg.logger, cfg.ipExtractor, cfg.accessLog)
	e.Use(echomw.BodyLimit("1M"))

	// Probes answer HEAD too: some load balancers' health checks send it.
	probe := []string{http.MethodGet, http.MethodHead}
	e.Match(probe, "/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.Match(probe, "/readyz", readyz(cfg.db, cfg.logger))
	if cfg.registry != nil {
		mountMetrics(e, cfg.registry)
	}

	// The middleware goes on each route, not on the group: group middleware
	// also runs for paths and methods no route serves, which would count
	// them as decisions and turn a 405 into a 404.
	g := e.Group("/v1/clients/:client")
	g.POST("/chat", chat, cfg.auth)
	g.POST("/chat/completions", chatCompletions(cfg.now), cfg.auth)
	g.GET("/models", models(cfg.now), cfg.auth)
	return e
}

// routeNames names the route of a request for the logs: its registered
// template, or unloggedValue when no route served it (Echo then reports
// the raw path, which a caller chose). The routes are registered after
// the middleware that uses it, so the set of templates is taken at the
// first request, once.
type routeNames struct {
	once   sync.Once
	routes map[string]bool
}

func (r *routeNames) of(c echo.Context) string {
	r.once.Do(func() {
		r.routes = map[string]bool{}
		for _, rt := range c.Echo().Routes() {
			r.routes[rt.Path] = true
		}
	})
	if route := c.Path(); r.routes[route] {
		return route
	}
	return unloggedValue
}

// requestLogger is serve's access log (--access-log): one line per request
// with method, route template, status, latency, remote IP and client, and
// the middleware's outcome: "anonymous" or "authenticated" for a request it
// passed, the refusal's outcome otherwise (with its cause for a 503, at
// warn), so that a refusal is still one line. Never headers, the query
// string or the raw path, where a token could hide.
func requestLogger(log *slog.Logger, names *routeNames) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			if err := next(c); err != nil {
				c.Error(err)
			}
			route := names.of(c)
			level := slog.LevelInfo
			switch route {
			case "/healthz", "/readyz", "/metrics":
				level = slog.LevelDebug // probes and scrapes would drown the rest
			}
			// Only values the server chose, or checked, reach the log: a
			// caller can put a token in any field it controls.
			client := c.Param("client")
			if !keystore.ValidClientName(client) {
				client = unloggedValue
			}
			attrs := []slog.Attr{
				slog.String("method", middleware.LoggedMethod(c.Request().Method)),
				slog.String("route", route),
				slog.Int("status", c.Response().Status),
				slog.Duration("latency", time.Since(start)),
				slog.String("remote_ip", c.RealIP()),
				slog.String("client", client),
			}
			if e, ok := middleware.RefusalFrom(c); ok {
				attrs[5] = slog.String("client", e.Client)
				attrs = append(attrs, slog.String("outcome", string(e.Outcome)))
				if e.Outcome == middleware.OutcomeUnavailable {
					level = slog.LevelWarn
					attrs = append(attrs, slog.String("err", e.Err.Error()))
				}
			} else if p, ok := middleware.PrincipalFrom(c); ok {
				outcome := middleware.OutcomeAuthenticated
				if p.Anonymous {
					outcome = middleware.OutcomeAnonymous
				}
				attrs = append(attrs, slog.String("outcome", string(outcome)))
			}
			log.LogAttrs(c.Request().Context(), level, "request", attrs...)
			return nil
		}
	}
}

// unloggedValue stands in the request log for a value a caller chose that
// is not a valid one: it starts with '_', which no valid value can.
const unloggedValue = "_other"

// readyz answers 200 while the database answers within a second and the
// cache's freshness is confirmed, 503 otherwise.
func readyz(db pinger, log *slog.Logger) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), time.Second)
		defer cancel()
		if err := db.Ping(ctx); err != nil {
			log.Warn("not ready", "err", err)
			h := c.Response().Header()
			h.Set(echo.HeaderRetryAfter, "1")
			h.Set(echo.HeaderCacheControl, "no-store")
			return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	}
}

// apiError is an OpenAI-style error body.
type apiError struct {
	Error apiErrorDetail `json:"error"`
}

type apiErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func badRequest(c echo.Context, param, format string, args ...any) error {
	body := apiError{Error: apiErrorDetail{Message: fmt.Sprintf(format, args...), Type: "invalid_request_error"}}
	if param != "" {
		body.Error.Param = &param
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusBadRequest, body)
}

// readJSONObject decodes the request body, which must be one JSON object,
// into v. An empty body is accepted when optional.
func readJSONObject(c echo.Context, v any, optional bool) error {
	raw, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return bodyReadError(err)
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		if optional {
			return nil
		}
		return errBadJSON
	}
	if raw[0] != '{' {
		return errBadJSON
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %w", errBadJSON, err)
	}
	return nil
}

var errBadJSON = errors.New("the request body must be a JSON object")

// bodyReadError turns a failure to read the request body into the
// caller's error it is: 413 over the body limit, 408 when the body did not
// arrive within the server's read timeout, 400 for a body cut short or
// badly framed (a malformed chunk, fewer bytes than Content-Length). A
// caller's bad body is never a 500.
func bodyReadError(err error) error {
	var he *echo.HTTPError
	var ne net.Error
	switch {
	case errors.As(err, &he):
		return err // the body limit's 413
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return echo.NewHTTPError(http.StatusRequestTimeout).SetInternal(err)
	}
	return echo.NewHTTPError(http.StatusBadRequest).SetInternal(err)
}

// chatResponse is the reply of POST /v1/clients/:client/chat.
type chatResponse struct {
	Client    string  `json:"client"`
	Anonymous bool    `json:"anonymous"`
	KeyID     *int64  `json:"key_id"`
	KeyName   *string `json:"key_name"`
	Reply     *string `json:"reply,omitempty"`
}

// chat says which client answered and who called, and echoes the
// request's "message" when the body is a JSON object that has one. Any
// other body is accepted and ignored: the route is there to show the
// decision, whatever a caller sends.
func chat(c echo.Context) error {
	p, ok := middleware.PrincipalFrom(c)
	if !ok {
		return echo.ErrInternalServerError
	}
	var req struct {
		Message *string `json:"message"`
	}
	if err := readJSONObject(c, &req, true); err != nil && !errors.Is(err, errBadJSON) {
		return err
	} else if err != nil {
		req.Message = nil
	}
	resp := chatResponse{Client: p.Client, Anonymous: p.Anonymous, Reply: req.Message}
	if !p.Anonymous {
		id, name := p.KeyID, p.KeyName
		resp.KeyID, resp.KeyName = &id, &name
	}
	return c.JSON(http.StatusOK, resp)
}

// completionRequest is the part of a Chat Completions request the stub
// reads; other fields are accepted and ignored.
type completionRequest struct {
	Model         string              `json:"model"`
	Messages      []completionMessage `json:"messages"`
	Stream        bool                `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

type completionMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// messageText returns a message's text: content is a string, or an array
// of parts of which the "text" ones count.
func messageText(content json.RawMessage) (string, error) {
	content = bytes.TrimSpace(content)
	if len(content) == 0 || string(content) == "null" {
		return "", nil
	}
	var s string
	if content[0] == '"' {
		if err := json.Unmarshal(content, &s); err != nil {
			return "", err
		}
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(content, &parts); err != nil {
		return "", errors.New("content must be a string or an array of content parts")
	}
	texts := make([]string, 0, len(parts))
	for _, p := range parts {
		if p.Type == "text" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n"), nil
}

type completion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *completionUsage   `json:"usage,omitempty"`
}

type completionChoice struct {
	Index        int              `json:"index"`
	Message      *assistantOutput `json:"message,omitempty"`
	Delta        *assistantDelta  `json:"delta,omitempty"`
	Logprobs     *struct{}        `json:"logprobs"`
	FinishReason *string          `json:"finish_reason"`
}

type assistantOutput struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type assistantDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type completionUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// countTokens is a stand-in tokenizer: whitespace-separated words.
func countTokens(s string) int { return len(strings.Fields(s)) }

// chatCompletions is an OpenAI Chat Completions–compatible stub whose
// assistant echoes the last user message, as one JSON reply or, with
// "stream": true, as server-sent chunks.
func chatCompletions(now func() time.Time) echo.HandlerFunc {
	return func(c echo.Context) error {
		var req completionRequest
		if err := readJSONObject(c, &req, false); err != nil {
			if errors.Is(err, errBadJSON) {
				return badRequest(c, "", "%v", err)
			}
			return err
		}
		if len(req.Messages) == 0 {
			return badRequest(c, "messages", "messages must be a non-empty array")
		}
		reply, prompt := "", 0
		for i, m := range req.Messages {
			if m.Role == "" {
				return badRequest(c, fmt.Sprintf("messages[%d].role", i), "every message needs a role")
			}
			text, err := messageText(m.Content)
			if err != nil {
				return badRequest(c, fmt.Sprintf("messages[%d].content", i), "%v", err)
			}
			prompt += countTokens(text)
			if m.Role == "user" {
				reply = text
			}
		}
		model := req.Model
		if model == "" {
			model = echoModel
		}
		usage := &completionUsage{PromptTokens: prompt, CompletionTokens: countTokens(reply)}
		usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
		out := completion{ID: "chatcmpl-" + rand.Text(), Created: now().Unix(), Model: model}
		if req.Stream {
			return streamCompletion(c, out, reply, usage, req.StreamOptions != nil && req.StreamOptions.IncludeUsage)
		}
		stop := "stop"
		out.Object = "chat.completion"
		out.Choices = []completionChoice{{Message: &assistantOutput{Role: "assistant", Content: reply}, FinishReason: &stop}}
		out.Usage = usage
		return c.JSON(http.StatusOK, out)
	}
}

// streamCompletion sends the reply as chat.completion.chunk events: the
// role, the content, the finish reason, optionally the usage, then
// [DONE].
func streamCompletion(c echo.Context, base completion, reply string, usage *completionUsage, includeUsage bool) error {
	res := c.Response()
	h := res.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no")
	res.WriteHeader(http.StatusOK)

	stop := "stop"
	chunk := func(choices []completionChoice, u *completionUsage) completion {
		ch := base
		ch.Object = "chat.completion.chunk"
		ch.Choices = choices
		ch.Usage = u
		return ch
	}
	events := []completion{
		chunk([]completionChoice{{Delta: &assistantDelta{Role: "assistant"}}}, nil),
		chunk([]completionChoice{{Delta: &assistantDelta{Content: &reply}}}, nil),
		chunk([]completionChoice{{Delta: &assistantDelta{}, FinishReason: &stop}}, nil),
	}
	if includeUsage {
		events = append(events, chunk([]completionChoice{}, usage))
	}
	for _, ev := range events {
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(res, "data: %s\n\n", b); err != nil {
			return nil // the caller went away
		}
		res.Flush()
	}
	_, _ = io.WriteString(res, "data: [DONE]\n\n")
	res.Flush()
	return nil
}

// models lists the one model of the stub, for SDKs that ask.
func models(now func() time.Time) echo.HandlerFunc {
	started := now().Unix()
	return func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]any{
			"object": "list",
			"data": []map[string]any{
				{"id": echoModel, "object": "model", "created": started, "owned_by": "llmauth"},
			},
		})
	}
}
