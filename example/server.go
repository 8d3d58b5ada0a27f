package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/time/rate"

	"github.com/llmauth/llmauth"
	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
	"github.com/llmauth/llmauth/keystore/sqlstore"
	"github.com/llmauth/llmauth/middleware"
)

// Timeouts of the HTTP server and its shutdown.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 2 * time.Minute
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 10 * time.Second
)

// Demo clients, created on the embedded default database when it has no
// client at all.
const (
	demoOpenClient   = "demo-open"
	demoSecureClient = "demo-secure"
)

func parseLogLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, usagef("serve: invalid --log-level %q: want debug, info, warn or error", s)
}

// newLogger returns the process's logger, writing to w. Whatever looks
// like a token is cut to its public lookup id before it is written.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	lvl, _ := parseLogLevel(level)
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(redactingHandler{next: h, token: regexp.MustCompile(keystore.TokenPrefix + `[0-9A-Za-z]{12}[0-9A-Za-z]*`)})
}

// redactingHandler keeps tokens out of the logs. Neither the keystore nor
// the middleware logs one, but a caller can: a token pasted into the URL
// path ends up in the client parameter and the logged path.
type redactingHandler struct {
	next  slog.Handler
	token *regexp.Regexp
}

func (h redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h redactingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = h.attr(a)
	}
	return redactingHandler{next: h.next.WithAttrs(clean), token: h.token}
}

func (h redactingHandler) WithGroup(name string) slog.Handler {
	return redactingHandler{next: h.next.WithGroup(name), token: h.token}
}

func (h redactingHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.redact(v.String()))
	case slog.KindGroup:
		group := v.Group()
		clean := make([]slog.Attr, len(group))
		for i, g := range group {
			clean[i] = h.attr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(clean...)}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, h.redact(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, h.redact(x.String()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// redact keeps the prefix and lookup id of anything token-like: enough to
// tell which key it was, nothing of the secret.
func (h redactingHandler) redact(s string) string {
	if !strings.Contains(s, keystore.TokenPrefix) {
		return s
	}
	return h.token.ReplaceAllStringFunc(s, func(m string) string {
		return m[:len(keystore.TokenPrefix)+12] + "…"
	})
}

// refusalLogger is the middleware's logger: the process's, or, with the
// access log on, none, since each access line carries the refusal's
// outcome (and its cause, for a 503): one line per refusal either way.
func refusalLogger(logger *slog.Logger, accessLog bool) *slog.Logger {
	if accessLog {
		return slog.New(slog.DiscardHandler)
	}
	return logger
}

// ipExtractor trusts the peer address, or X-Forwarded-For from the
// configured proxies only: Echo's default would trust any private address.
func (o *serveOptions) ipExtractor() echo.IPExtractor {
	if len(o.trustedProxies) == 0 {
		return echo.ExtractIPDirect()
	}
	trust := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range o.trustedProxies {
		trust = append(trust, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(trust...)
}

// serve runs the HTTP server until ctx ends, then shuts down in order:
// server, then the key stack (watcher, last-used times, cache, database).
func serve(ctx context.Context, o *serveOptions) error {
	if err := o.validateServe(); err != nil {
		return err
	}
	logger := newLogger(o.stderr, o.logLevel, o.logFormat)
	url, embedded := o.databaseURL()

	// Listen before anything else: a port already in use must fail
	// before the database is touched, and must not eat the demo token,
	// which is shown only once.
	ln, metricsLn, err := o.listen()
	if err != nil {
		return err
	}
	// Serve closes them too; this covers the early returns.
	defer ln.Close()
	if metricsLn != nil {
		defer metricsLn.Close()
	}
	if created, err := o.prepareDatabase(writes); err != nil {
		return err
	} else if created != "" {
		logger.Info("created SQLite database " + created)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	stack, err := llmauth.New(ctx, url, llmauth.Options{
		Registerer: reg,
		Logger:     logger,
		Cache:      cache.Options{TTL: o.cacheTTL, StaleIfError: o.staleIfError, MaxStaleness: o.maxStaleness},
		Watcher:    sqlstore.WatcherOptions{PollInterval: o.pollInterval},
		Usage:      keystore.UsageOptions{FlushInterval: o.usageFlushInterval},
		Middleware: middleware.Config{
			Logger:               refusalLogger(logger, o.accessLog),
			MaxConcurrentLookups: o.maxLookups,
			// The source is the IP that the router's IPExtractor reports:
			// the peer, or X-Forwarded-For from --trusted-proxy only.
			Throttle: middleware.ThrottleConfig{Disabled: o.throttleBurst == 0, Burst: o.throttleBurst, Rate: rate.Limit(o.throttleRate)},
		},
	})
	if err != nil {
		return o.databaseError(err)
	}
	// On the normal path the stack is closed, and its error reported,
	// below; closing again is a no-op.
	defer stack.Close(context.WithoutCancel(ctx))

	var demoToken string
	if embedded {
		if demoToken, err = seedDemo(ctx, stack.Store); err != nil {
			logger.Warn("could not create the demo clients", "err", err)
		}
	}
	mainReg := reg
	if metricsLn != nil {
		mainReg = nil // /metrics is on its own listener only
	}
	router := newRouter(routerConfig{auth: stack.Middleware, db: readiness(stack.Ready), registry: mainReg, logger: logger, accessLog: o.accessLog, ipExtractor: o.ipExtractor()})

	servers := newHTTPServers(logger)
	servers.start(router, ln)
	if metricsLn != nil {
		servers.start(newMetricsRouter(reg, logger, o.ipExtractor(), o.accessLog), metricsLn)
		logger.Info("metrics on http://" + metricsLn.Addr().String() + "/metrics")
	}

	// The demo text comes first, so that whoever waits for "listening on"
	// has it already.
	if demoToken != "" {
		if o.logFormat == "json" {
			printDemoJSON(o.stderr, ln.Addr(), demoToken)
		} else {
			printDemo(o.stderr, ln.Addr(), demoToken)
		}
	}
	logger.Info("listening on http://"+ln.Addr().String(), "database", sqlstore.RedactURL(url))

	var failed error
	select {
	case failed = <-servers.failed:
	case <-ctx.Done():
		logger.Info("shutting down")
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	servers.shutdown(sctx)
	if failed != nil {
		return fmt.Errorf("serve: %w", failed)
	}
	if err := stack.Close(sctx); err != nil {
		return fmt.Errorf("at shutdown: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// listen opens serve's listeners: --addr, and --metrics-addr when set
// (nil otherwise).
func (o *serveOptions) listen() (main, metrics net.Listener, err error) {
	if main, err = net.Listen("tcp", o.addr); err != nil {
		return nil, nil, fmt.Errorf("listen: %w", err)
	}
	if o.metricsAddr != "" {
		if metrics, err = net.Listen("tcp", o.metricsAddr); err != nil {
			_ = main.Close()
			return nil, nil, fmt.Errorf("listen --metrics-addr: %w", err)
		}
	}
	return main, metrics, nil
}

// httpServers are the HTTP servers of serve: the main one, and the
// metrics one with --metrics-addr. They stop together.
type httpServers struct {
	logger  *slog.Logger
	running []runningServer
	// failed receives the error of a server that stopped on its own.
	failed chan error
}

type runningServer struct {
	srv  *http.Server
	done chan struct{} // closed when Serve has returned
}

func newHTTPServers(logger *slog.Logger) *httpServers {
	// Buffered, and sent to without blocking: the first failure is enough.
	return &httpServers{logger: logger, failed: make(chan error, 1)}
}

// start serves h on ln until shutdown.
func (s *httpServers) start(h http.Handler, ln net.Listener) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	r := runningServer{srv: srv, done: make(chan struct{})}
	s.running = append(s.running, r)
	go func() {
		defer close(r.done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			select {
			case s.failed <- err:
			default:
			}
		}
	}()
}

// shutdown stops the servers in the order they started, the main one
// first, so that scrapes meanwhile see its last requests counted: each
// lets requests in flight finish until ctx ends, then closes what is
// left. It returns when every Serve has returned.
func (s *httpServers) shutdown(ctx context.Context) {
	for _, r := range s.running {
		if err := r.srv.Shutdown(ctx); err != nil {
			s.logger.Warn("requests still in flight after the shutdown timeout; closing them", "err", err)
			_ = r.srv.Close()
		}
		<-r.done
	}
}

// readiness adapts llmauth.Stack.Ready to /readyz: nil while the database
// answers and the cache's freshness lease holds.
type readiness func(ctx context.Context) error

func (r readiness) Ping(ctx context.Context) error { return r(ctx) }

// seedDemo creates the demo clients when the database has no client at
// all, and returns the demo key's token ("" when nothing was created).
func seedDemo(ctx context.Context, store *sqlstore.Store) (string, error) {
	clients, err := store.ListClients(ctx)
	if err != nil || len(clients) > 0 {
		return "", err
	}
	for _, name := range []string{demoOpenClient, demoSecureClient} {
		if _, err := store.CreateClient(ctx, name); err != nil {
			if errors.Is(err, keystore.ErrClientExists) {
				return "", nil // another process seeded meanwhile
			}
			return "", err
		}
	}
	key, err := store.CreateKey(ctx, demoSecureClient, keystore.KeySpec{Name: "demo", Description: "created by example serve"})
	if err != nil {
		return "", err
	}
	return key.Token.Reveal(), nil
}

// printDemo tells the person who just started the server how to call the
// demo clients. The token is printed here once and nowhere else.
func printDemo(w io.Writer, addr net.Addr, token string) {
	base := demoBase(addr)
	fmt.Fprintf(w, `
Demo data created in %[1]s (this is shown only once):
  %[2]s   has no key: anyone may call it.
  %[3]s requires its key "demo", whose token is shown only now:
    %[4]s

Try:
  curl -sS -X POST %[5]s%[2]s/chat -H 'Content-Type: application/json' -d '{"message":"hello"}'
  curl -sS -X POST %[5]s%[3]s/chat -H 'Content-Type: application/json' -d '{"message":"hello"}'   # 401
  curl -sS -X POST %[5]s%[3]s/chat -H 'Authorization: Bearer %[4]s' -H 'Content-Type: application/json' -d '{"message":"hello"}'

`, sqlstore.DefaultSQLitePath, demoOpenClient, demoSecureClient, token, base)
}

// demoBase is the base URL of the demo's client routes.
func demoBase(addr net.Addr) string {
	host, port, _ := net.SplitHostPort(addr.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/v1/clients/"
}

// printDemoJSON is the demo banner for --log-format json: one JSON object
// on one line, in the shape of slog's JSON lines, so that a log pipeline
// keeps parsing. It is written directly, not through the logger, whose
// redaction would cut the token shown this once.
func printDemoJSON(w io.Writer, addr net.Addr, token string) {
	base := demoBase(addr)
	line, _ := json.Marshal(struct {
		Time         time.Time `json:"time"`
		Level        string    `json:"level"`
		Msg          string    `json:"msg"`
		Database     string    `json:"database"`
		OpenClient   string    `json:"open_client"`
		SecureClient string    `json:"secure_client"`
		KeyName      string    `json:"key_name"`
		Token        string    `json:"token"`
		OpenURL      string    `json:"open_url"`
		SecureURL    string    `json:"secure_url"`
	}{time.Now(), "INFO", "demo data created; the token is shown only now", sqlstore.DefaultSQLitePath,
		demoOpenClient, demoSecureClient, "demo", token, base + demoOpenClient + "/chat", base + demoSecureClient + "/chat"})
	fmt.Fprintf(w, "%s\n", line)
}
