package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore"
)

// serveOptions are the flags of serve, the default command.
type serveOptions struct {
	*app

	addr               string
	metricsAddr        string
	cacheTTL           time.Duration
	staleIfError       time.Duration
	maxStaleness       time.Duration
	pollInterval       time.Duration
	usageFlushInterval time.Duration
	logLevel           string
	logFormat          string
	trustedProxies     cidrList
	throttleBurst      int
	throttleRate       float64
	maxLookups         int
	accessLog          bool
}

// defaultServeOptions are serve's flags when none is given.
func defaultServeOptions() serveOptions {
	return serveOptions{
		addr:               "127.0.0.1:8080",
		cacheTTL:           30 * time.Second,
		maxStaleness:       keystore.StalenessPromise,
		pollInterval:       defaultPollInterval,
		usageFlushInterval: 5 * time.Second,
		logLevel:           "info",
		logFormat:          "text",
		throttleBurst:      20,
		throttleRate:       1,
		maxLookups:         16,
	}
}

const serveLong = `Serve HTTP until SIGINT or SIGTERM. This is the default command.

Routes:
  POST /v1/clients/NAME/chat              protected; replies {"client", "anonymous",
                                          "key_id", "key_name", "reply"}, where reply
                                          echoes the request's "message"
  POST /v1/clients/NAME/chat/completions  protected; OpenAI Chat Completions stub
                                          whose assistant echoes the last user message
                                          ("stream": true gives server-sent events):
                                          point an OpenAI SDK at base URL
                                          http://HOST:PORT/v1/clients/NAME
  GET  /v1/clients/NAME/models            protected; lists the one model
  GET  /healthz                           200 while the process runs
  GET  /readyz                            200 while the database answers, else 503
  GET  /metrics                           Prometheus metrics (llmauth_requests_total
                                          by client and outcome, cache, store, ...);
                                          with --metrics-addr, on that listener only
                                          (the main one then answers 404)

A client with no active key answers anyone. Once it has an active key, it
needs "Authorization: Bearer TOKEN" with a valid key of that client: 401
without a token or with a bad one, 400 for a malformed Authorization header,
404 for an unknown client, 503 (with Retry-After) when the database cannot
tell. Changes made by any process reach every server within a second.

The remote IP in logs is the peer address: X-Forwarded-For is not trusted
unless the peer is in a --trusted-proxy range.

With the embedded default database and no client yet, serve creates the
clients demo-open (no key) and demo-secure (one key) and prints, once, how
to call them with curl.

Logs go to stderr; the line "listening on http://ADDR" gives the bound
address. SIGINT or SIGTERM shut down gracefully: requests in flight finish
(up to 10s), pending last-used times are written, and the exit status is 0
(1 if they could not be written).
`

func newCmdServe(a *app, runF func(context.Context, *serveOptions) error) *cobra.Command {
	o := defaultServeOptions()
	o.app = a
	if runF == nil {
		runF = serve
	}
	cmd := &cobra.Command{
		Use:   "serve [--addr HOST:PORT] [flags]",
		Short: "Serve HTTP until SIGINT or SIGTERM (the default command)",
		Long:  serveLong,
		Args:  exactArgs(),
		RunE:  func(cmd *cobra.Command, _ []string) error { return runF(cmd.Context(), &o) },
	}
	fs := cmd.Flags()
	fs.StringVar(&o.addr, "addr", o.addr, "listen on `HOST:PORT` (port 0 picks a free port; the log line \"listening on\" shows it)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", o.metricsAddr, "serve /metrics on a separate listener at `HOST:PORT` instead of the main one, which then answers 404 for it: keeps metrics off the public port (port 0 picks a free port; the log line \"metrics on\" shows it). Empty: /metrics on --addr")
	durationVar(fs, &o.cacheTTL, "cache-ttl", o.cacheTTL, "trust a cached client state or verified key for `DURATION` without asking the database; a change ends it early")
	durationVar(fs, &o.staleIfError, "stale-if-error", o.staleIfError, "while the database is down or cut off, serve cached decisions up to `DURATION` past --cache-ttl, giving up the one-second bound on changes (0: never)")
	durationVar(fs, &o.maxStaleness, "max-staleness", o.maxStaleness, "answer from the cache only while the change log was read successfully within `DURATION` (at most 1s); past it, ask the database or answer 503")
	durationVar(fs, &o.pollInterval, "poll-interval", o.pollInterval, "poll the change log every `DURATION`: the bound on propagation when PostgreSQL notifications are unavailable, and the only path on SQLite")
	durationVar(fs, &o.usageFlushInterval, "usage-flush-interval", o.usageFlushInterval, "write keys' last_used_at every `DURATION` (and once more at shutdown)")
	fs.StringVar(&o.logLevel, "log-level", o.logLevel, "log `LEVEL`: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", o.logFormat, "log `FORMAT`: text or json (logs go to stderr)")
	fs.IntVar(&o.throttleBurst, "throttle-burst", o.throttleBurst, "answer 429 to a source once it has sent `N` invalid or malformed credentials in a row to one client (0: no throttling)")
	fs.Float64Var(&o.throttleRate, "throttle-rate", o.throttleRate, "a throttled source regains `R` failed attempts per second against a client")
	fs.IntVar(&o.maxLookups, "max-concurrent-lookups", o.maxLookups, "run at most `N` database lookups for requests the cache cannot answer at once; others wait their turn")
	fs.BoolVar(&o.accessLog, "access-log", o.accessLog, "log one line per request (method, route, status, latency, client, outcome); without it, one line per refusal and per server error")
	fs.Var(&o.trustedProxies, "trusted-proxy", "trust X-Forwarded-For from proxies in this `CIDR` (repeatable); without it the peer address is the client IP")
	_ = cmd.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("log-format", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// validateServe refuses bad serve flags before anything starts.
// defaultPollInterval is --poll-interval's default: half the default
// staleness bound.
const defaultPollInterval = 500 * time.Millisecond

// minPollInterval keeps a mistyped --poll-interval from spinning the
// poller: 10ms is 100 statements a second per server.
const minPollInterval = 10 * time.Millisecond

func (o *serveOptions) validateServe() error {
	port, err := listenPort("--addr", o.addr)
	if err != nil {
		return err
	}
	if o.metricsAddr != "" {
		if _, err := listenPort("--metrics-addr", o.metricsAddr); err != nil {
			return err
		}
		// Port 0 picks a free port for each; any other port cannot serve both.
		if o.metricsAddr == o.addr && port != 0 {
			return usagef("serve: --metrics-addr %q is also --addr: give the metrics listener an address of its own", o.metricsAddr)
		}
	}
	if o.throttleBurst < 0 {
		return usagef("serve: --throttle-burst must not be negative (0 turns throttling off), got %d", o.throttleBurst)
	}
	if !(o.throttleRate >= 0.001) || o.throttleRate > 1e6 {
		return usagef("serve: --throttle-rate must be between 0.001 and 1000000 attempts per second, got %v", o.throttleRate)
	}
	if o.maxLookups < 1 {
		return usagef("serve: --max-concurrent-lookups must be at least 1, got %d", o.maxLookups)
	}
	for _, d := range []struct {
		name   string
		v      time.Duration
		zeroOK bool
	}{
		{"--cache-ttl", o.cacheTTL, false},
		{"--stale-if-error", o.staleIfError, true},
		{"--max-staleness", o.maxStaleness, false},
		{"--poll-interval", o.pollInterval, false},
		{"--usage-flush-interval", o.usageFlushInterval, false},
	} {
		if d.v < 0 && d.zeroOK {
			return usagef("serve: %s must not be negative (0 turns it off), got %s", d.name, d.v)
		}
		if d.v <= 0 && !d.zeroOK {
			return usagef("serve: %s must be a positive duration, got %s", d.name, d.v)
		}
	}
	if o.maxStaleness > keystore.StalenessPromise {
		return usagef("serve: --max-staleness %s exceeds the %s bound on changes", o.maxStaleness, keystore.StalenessPromise)
	}
	if o.pollInterval < minPollInterval {
		return usagef("serve: --poll-interval %s is below %s", o.pollInterval, minPollInterval)
	}
	// A poll must renew the lease before it lapses, with a poll's own
	// time to spare.
	if o.pollInterval > o.maxStaleness/2 {
		return usagef("serve: --poll-interval %s (default %s) must be at most half of --max-staleness %s (default %s), so that a poll renews the lease before it lapses",
			o.pollInterval, defaultPollInterval, o.maxStaleness, keystore.StalenessPromise)
	}
	if _, err := parseLogLevel(o.logLevel); err != nil {
		return err
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return usagef("serve: invalid --log-format %q: want text or json", o.logFormat)
	}
	return nil
}

// listenPort checks that addr, the value of flag, is HOST:PORT with a
// numeric port, and returns the port.
func listenPort(flag, addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, usagef("serve: invalid %s %q: want HOST:PORT", flag, addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return 0, usagef("serve: invalid %s %q: the port must be a number from 0 to 65535", flag, addr)
	}
	return n, nil
}

// cidrList is a repeatable flag of CIDR ranges.
type cidrList []*net.IPNet

func (l *cidrList) String() string {
	if l == nil {
		return ""
	}
	s := make([]string, len(*l))
	for i, n := range *l {
		s[i] = n.String()
	}
	return strings.Join(s, ",")
}

func (l *cidrList) Set(v string) error {
	_, n, err := net.ParseCIDR(v)
	if err != nil {
		return fmt.Errorf("not a CIDR range like 10.0.0.0/8")
	}
	*l = append(*l, n)
	return nil
}

func (l *cidrList) Type() string { return "cidr" }
