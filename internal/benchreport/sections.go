//go:build unix

package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// requestCases are the request benchmarks in report order, with what
// each measures and its baseline.
var requestCases = []struct{ name, what, baseline string }{
	{"BenchmarkBare", "no middleware: the baseline", ""},
	{"BenchmarkEchoKeyAuthSHA256", "Echo KeyAuth, SHA-256 digest looked up in memory", "BenchmarkBare"},
	{"BenchmarkNaiveKeyAuthPostgres", "naive: KeyAuth + one sqlx query per request on PostgreSQL", "BenchmarkBare"},
	{"BenchmarkMiddlewareValid", "this middleware: valid token, warm cache", "BenchmarkBare"},
	{"BenchmarkMiddlewareAnonymous", "this middleware: open client, no token", "BenchmarkBare"},
	{"BenchmarkMiddlewareInvalid", "this middleware: invalid token (negative cache), a new source each request", "BenchmarkBare"},
	{"BenchmarkMiddlewareUnknownClient", "this middleware: unknown client (negative cache)", "BenchmarkBare"},
	{"BenchmarkBareParallel", "no middleware, RunParallel on every core", ""},
	{"BenchmarkMiddlewareValidParallel", "this middleware: valid token, RunParallel on every core", "BenchmarkBareParallel"},
}

func (r *report) writeMicro(b *strings.Builder) {
	m := r.micro
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Middleware micro-benchmarks\n\n")
	w("`benchmark_test.go`: one Echo app per case, each serving POST /v1/clients/:client/chat with the same empty\n")
	w("handler through `e.ServeHTTP` (no network), so that a case's ns/op minus the bare app's is what its\n")
	w("authentication costs. This middleware runs as `llmauth.New` builds it (SQLite store, cache, watcher, metrics,\n")
	w("usage audit). %d runs, each a process of the test binary running every case once in turn (`-benchtime %s`).\n",
		r.opts.count, r.opts.benchtime)
	w("Figures are medians over the runs, ns/op range in brackets; overheads and their ratios are taken within each run\n")
	w("(case and baseline from the same process), then the median over runs, so that a burst of load from elsewhere\n")
	w("on the shared machine moves a case and its baseline together.\n\n")
	w("| case | what | ns/op | B/op | allocs/op | overhead over baseline | allocs over baseline | overhead ÷ KeyAuth+SHA-256's |\n")
	w("|---|---|---|---|---|---|---|---|\n")
	for _, c := range requestCases {
		res, ok := m.Requests[c.name]
		if !ok {
			continue
		}
		over, allocs, ratio := "", "", ""
		if d, ok := m.overhead(c.name, c.baseline); ok && c.baseline != "" {
			over = ns(d)
			a, _ := m.allocsOver(c.name, c.baseline)
			allocs = fmt.Sprintf("%+.0f", a)
			if q, ok := m.overheadRatio(c.name, "BenchmarkEchoKeyAuthSHA256", "BenchmarkBare"); ok && c.baseline == "BenchmarkBare" {
				ratio = fmt.Sprintf("%.2f×", q)
			}
		}
		w("| %s | %s | %s (%s–%s) | %.0f | %.0f | %s | %s | %s |\n", strings.TrimPrefix(c.name, "Benchmark"), c.what,
			ns(res.Metrics["ns/op"]), ns(res.Spread[0]), ns(res.Spread[1]), res.Metrics["B/op"], res.Metrics["allocs/op"], over, allocs, ratio)
	}
	w("\nThe parallel cases run on %d cores; their ns/op is wall time per request across all of them.\n", r.machine.Cores)
	w("The invalid-token case sends each request from another source address (a pool of 65,536, more than the\n")
	w("throttle remembers), so every answer is a 401 of a source with budget left; one source alone gets 429 after\n")
	w("20 failed attempts (the default budget).\n\n")

	w("### Cache and watcher at scale\n\n")
	w("`LLMAUTH_BENCH_CACHE_ENTRIES=%d LLMAUTH_BENCH_BACKLOG=%d`, `-benchtime 2x` (each figure is the mean of two\n", r.opts.cacheSize, r.opts.backlog)
	w("rounds; the heap figures are the larger of the two).\n\n")
	w("| case | what | time/op | per row | peak heap | live heap | B/op | allocs/op |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range []struct{ name, what string }{
		{"BenchmarkPollBacklog/postgres", fmt.Sprintf("watcher catches up on %d change rows, PostgreSQL", r.opts.backlog)},
		{"BenchmarkPollBacklog/sqlite", fmt.Sprintf("watcher catches up on %d change rows, SQLite", r.opts.backlog)},
		{"BenchmarkCacheApply/one-key", fmt.Sprintf("Apply of one revoked key (2 change rows), %d keys cached", r.opts.cacheSize)},
		{"BenchmarkCacheApply/bulk-10k", fmt.Sprintf("Apply of 10,000 key changes, %d keys cached", r.opts.cacheSize)},
	} {
		res, ok := m.Scale[c.name]
		if !ok {
			continue
		}
		perRow, peak, live := "", "", ""
		if v, ok := res.Metrics["ns/row"]; ok {
			perRow = ns(v)
			peak = fmt.Sprintf("%.1f MiB", res.Metrics["peak-heap-MiB"])
			live = fmt.Sprintf("%.1f MiB", res.Metrics["live-heap-MiB"])
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %.0f |\n", strings.TrimPrefix(c.name, "Benchmark"), c.what,
			dur(time.Duration(res.Metrics["ns/op"])), perRow, peak, live, mib(int64(res.Metrics["B/op"])), res.Metrics["allocs/op"])
	}
	w("\nPeak heap is the most the heap in use (HeapAlloc, sampled every millisecond) grew over the poll, garbage not yet\n")
	w("collected included; live heap is what was still reachable, after a collection, when the changes reached the\n")
	w("cache. While Apply runs it holds the cache's lock: no lookup can fill an entry meanwhile.\n\n")
}

func (r *report) writeProfiles(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## CPU profiles\n\nWhere the time of two cases goes: the benchmark's whole process, the Echo app and the\n")
	w("stack's background work included; by flat time, then by cumulative time.\n\n")
	for _, p := range r.profiles {
		w("### %s\n\n```sh\n%s\n```\n\n```\n%s\n```\n\n```\n%s\n```\n\n", strings.TrimPrefix(p.Benchmark, "Benchmark"), p.Command, p.Top, p.Cum)
	}
}

func (r *report) writeLoad(b *strings.Builder) {
	l := r.load
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Load over loopback HTTP\n\n")
	w("The example server, built and run as a process with its default flags on %s, against the same chat handler\n", l.DB)
	w("(read the JSON body, echo its message, name client and caller) with no middleware (bare) and behind the naive\n")
	w("design (KeyAuth and one query per request on PostgreSQL), each a process of its own. `internal/loadgen` sends\n")
	w("`POST /v1/clients/NAME/chat` with a JSON body over %d keep-alive connections for %v after %v of warm-up;\n", r.opts.conns, r.opts.duration, r.opts.warmup)
	w("%d rounds, each running every server once per scenario, the first server rotating from round to round. The load\n", r.opts.rounds)
	w("generator shares the %d cores with the server it measures (and, for the naive server, with PostgreSQL).\n", r.machine.Cores)
	w("With its default flags the example writes no log line for a request it lets through; the `--access-log` row\n")
	w("(a line per request, to a file) shows what such a log costs.\n\n")
	w("```sh\n%s\n```\n\n", strings.Join(l.Setup, "\n"))
	for _, sc := range l.Scenarios {
		w("### %s\n\n", sc)
		w("| server | req/s (median) | min–max | ÷ bare | p50 | p99 | responses counted | not 200 | errors |\n|---|---|---|---|---|---|---|---|---|\n")
		bare := l.summary(targetBare, sc)
		for _, t := range l.Targets {
			s := l.summary(t, sc)
			ratio := ""
			if bare.Median > 0 {
				ratio = fmt.Sprintf("%.3f×", s.Median/bare.Median)
			}
			w("| %s | %.0f | %.0f–%.0f | %s | %s | %s | %d | %d | %d |\n", t, s.Median, s.Min, s.Max, ratio, dur(s.P50), dur(s.P99), s.Requests, s.Non200, s.Errors)
		}
		w("\n")
	}
	w("### Statements per request\n\n")
	w("Over the whole comparison (%d rounds), per server. Store calls are what the example's cache could not answer\n", r.opts.rounds)
	w("(`llmauth_store_call_duration_seconds_count` on its /metrics, per decision). The database columns count\n")
	w("everything the server's own database ran, background work included (change-log polls every 500 ms, LISTEN,\n")
	w("last-used writes), per request answered and per second. pg_stat_statements counts statements; without it\n")
	w("(it needs `shared_preload_libraries`, which the report leaves alone) PostgreSQL's transaction count stands in,\n")
	w("and it counts one transaction per Sync message, that is per round trip of a query outside a transaction: a\n")
	w("query with parameters is one with `binary_parameters=yes`, two without (see\n")
	w("[round trips](#round-trips-on-postgresql-libpq-with-and-without-binary_parametersyes); every server here opens\n")
	w("its pool with `sqlstore.Open`, as the default URL there). The naive server runs one query per request.\n\n")
	w("| server | requests answered | decisions | store calls | store calls / decision | on its database | per request | per second | counted by |\n")
	w("|---|---|---|---|---|---|---|---|---|\n")
	stmts := slices.Clone(l.Stmts)
	slices.SortFunc(stmts, func(a, b stmtCount) int { return slices.Index(l.Targets, a.Target) - slices.Index(l.Targets, b.Target) })
	for _, s := range stmts {
		dec, calls, callsPer := "–", "–", "–"
		if s.HasMetrics {
			dec, calls = fmt.Sprintf("%.0f", s.Decisions), fmt.Sprintf("%.0f", s.StoreCalls)
			callsPer = fmt.Sprintf("%.6f", s.StoreCalls/max(1, s.Decisions))
		}
		st, stPer, stRate, method := "–", "–", "–", "–"
		if s.Statements >= 0 {
			st = fmt.Sprint(s.Statements)
			stPer = fmt.Sprintf("%.4f", float64(s.Statements)/float64(max(1, s.Requests)))
			stRate = fmt.Sprintf("%.1f", float64(s.Statements)/s.Seconds)
			method = s.Method
		}
		w("| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", s.Target, s.Requests, dec, calls, callsPer, st, stPer, stRate, method)
	}
	w("\n")
}
