// Package llmauth builds the whole authentication stack in one call: from a
// database URL (PostgreSQL or SQLite) it opens and migrates the database,
// and wires the SQL store, the TTL cache with its freshness lease, the
// change watcher (LISTEN on PostgreSQL, polling everywhere), the batched
// last-used audit, Prometheus metrics and the Echo middleware. One Close
// shuts it all down in order and writes the last-used times.
//
// A program with a store of its own needs none of this: it passes its
// keystore.Store to middleware.Config directly and links no SQL driver.
package llmauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
	"github.com/llmauth/llmauth/keystore/sqlstore"
	"github.com/llmauth/llmauth/metrics"
	"github.com/llmauth/llmauth/middleware"
)

// Options configures [New]. The zero value is ready to use: every part
// takes its own documented defaults.
type Options struct {
	// Registerer receives the metrics (never the global registry unless
	// you pass it). Default: nil, no metrics.
	Registerer prometheus.Registerer
	// Metrics configures the metric names and buckets.
	Metrics metrics.Options
	// Logger receives startup, lease, watcher, audit and refusal lines;
	// never a token. Default: discard.
	Logger *slog.Logger
	// Store configures the SQL store (query timeout, clock).
	Store sqlstore.Options
	// Cache configures the cache (TTL, negative TTL, staleness bound,
	// StaleIfError). Its Observer and Logger are set by New.
	Cache cache.Options
	// Watcher configures the change watcher (poll interval and timeout,
	// retention). Its PostgresURL, Observer and Logger are set by New: it
	// listens on PostgreSQL and polls on every database.
	Watcher sqlstore.WatcherOptions
	// Usage configures the last-used audit. Its Observer and Logger are
	// set by New.
	Usage keystore.UsageOptions
	// Middleware configures the middleware (skipper, client resolver,
	// realm, timeouts, handlers, throttling). Its Store, Metrics and Usage
	// are set by New, and its Logger too unless set (to log refusals
	// elsewhere, or not at all: an access log that records each request's
	// refusal through middleware.RefusalFrom may want the latter).
	Middleware middleware.Config
}

// Stack is a running authentication stack. Mount Middleware on your routes
// and call Close when the server has shut down.
type Stack struct {
	// Middleware authenticates a request per route.
	Middleware echo.MiddlewareFunc
	// Store manages clients and keys (create, list, revoke, rotate).
	Store *sqlstore.Store
	// Cache answers decisions; Middleware already uses it.
	Cache *cache.Cache
	// Metrics is nil unless Options.Registerer was set.
	Metrics *metrics.Metrics

	db      *sqlx.DB
	watcher *sqlstore.Watcher
	audit   *keystore.UsageAudit

	closeOnce sync.Once
	closeErr  error
}

// New opens databaseURL (postgres://…, postgresql://…, sqlite:PATH or
// file:PATH), applies pending migrations, and starts the stack. It returns
// an error wrapping keystore.ErrInvalidInput for a bad URL or option, and
// keystore.ErrUnavailable when the database does not answer; nothing is
// left running on error.
func New(ctx context.Context, databaseURL string, opts Options) (_ *Stack, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Stack{}
	defer func() {
		if err != nil {
			_ = s.Close(context.WithoutCancel(ctx))
		}
	}()
	if s.db, err = sqlstore.Open(ctx, databaseURL); err != nil {
		return nil, err
	}
	if err = sqlstore.Migrate(ctx, s.db); err != nil {
		return nil, err
	}
	if s.Store, err = sqlstore.New(ctx, s.db, opts.Store); err != nil {
		return nil, err
	}
	if opts.Registerer != nil {
		if s.Metrics, err = metrics.New(opts.Registerer, opts.Metrics); err != nil {
			return nil, err
		}
	}
	if s.Metrics != nil {
		s.initClientSeries(ctx, log)
	}
	copts := opts.Cache
	copts.Logger = log
	if copts.MaxConcurrentFetches == 0 {
		// One bound for both: the middleware's on callers making store
		// calls, the cache's on the calls themselves.
		copts.MaxConcurrentFetches = opts.Middleware.MaxConcurrentLookups
	}
	if s.Metrics != nil {
		copts.Observer = s.Metrics
	}
	if s.Cache, err = cache.New(s.Store, copts); err != nil {
		return nil, err
	}
	wopts := opts.Watcher
	wopts.Logger = log
	wopts.PostgresURL = ""
	if isPostgres(databaseURL) {
		wopts.PostgresURL = databaseURL
	}
	if s.Metrics != nil {
		wopts.Observer = s.Metrics
	}
	if s.watcher, err = sqlstore.NewWatcher(ctx, s.Store, s.Cache, wopts); err != nil {
		return nil, err
	}
	uopts := opts.Usage
	uopts.Logger = log
	if s.Metrics != nil {
		uopts.Observer = s.Metrics
	}
	if s.audit, err = keystore.NewUsageAudit(s.Store, uopts); err != nil {
		return nil, err
	}
	mcfg := opts.Middleware
	mcfg.Store, mcfg.Usage = s.Cache, s.audit
	if mcfg.Logger == nil {
		mcfg.Logger = log
	}
	if s.Metrics != nil {
		mcfg.Metrics = s.Metrics
	}
	if s.Middleware, err = mcfg.ToMiddleware(); err != nil {
		return nil, err
	}
	return s, nil
}

// MaxInitialClientSeries caps how many existing clients New starts the
// request series of at zero (metrics.Metrics.InitClient): with more
// clients, the rest get theirs at their first decision.
const MaxInitialClientSeries = 1000

// initClientSeries starts the request series of the clients that exist,
// so that the first scrape has them. A failure only costs that.
func (s *Stack) initClientSeries(ctx context.Context, log *slog.Logger) {
	clients, err := s.Store.ListClients(ctx)
	if err != nil {
		log.Warn("could not list the clients to start their metrics at zero", "err", err)
		return
	}
	for i, c := range clients {
		if i == MaxInitialClientSeries {
			break
		}
		s.Metrics.InitClient(c.Name)
	}
}

func isPostgres(databaseURL string) bool {
	return strings.HasPrefix(databaseURL, "postgres://") || strings.HasPrefix(databaseURL, "postgresql://")
}

// Ready reports whether the stack can decide requests now: nil while the
// database answers and the cache's freshness lease holds; otherwise an
// error wrapping keystore.ErrUnavailable. Serve it as a readiness probe.
func (s *Stack) Ready(ctx context.Context) error {
	if err := s.Cache.Fresh(); err != nil {
		return err
	}
	return s.Store.Ping(ctx)
}

// Sync reads the change log once and applies it: when it returns nil,
// every change committed before the call is reflected in the cache. The
// watcher does this by itself every poll interval; call Sync where a
// program writes keys and must see the effect at once (tests, tools).
func (s *Stack) Sync(ctx context.Context) error { return s.watcher.Poll(ctx) }

// Close stops the watcher, writes pending last-used times (bounded by
// ctx), stops the cache and closes the database, in that order. Call it
// after the HTTP server has shut down, so that no request uses the stack
// any more. Calling it again returns the first result.
func (s *Stack) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.watcher != nil {
			errs = append(errs, s.watcher.Close())
		}
		if s.audit != nil {
			if err := s.audit.Close(ctx); err != nil {
				errs = append(errs, fmt.Errorf("llmauth: writing last-used times: %w", err))
			}
		}
		if s.Cache != nil {
			errs = append(errs, s.Cache.Close())
		}
		if s.db != nil {
			errs = append(errs, s.db.Close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
