//go:build unix

package main

import (
	"fmt"
	"strings"
	"time"
)

func (r *report) writeScale(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Store at scale\n\n")
	w("%d clients and %d keys written in bulk in the store's schema (after `sqlstore.Migrate`), each key the SHA-256\n", r.opts.clients, r.opts.keys)
	w("digest of a real token (`keystore.NewToken`). Every tenth client has no key (open); the others share the keys\n")
	w("round-robin (about %.0f each); every 20th key is revoked, every 10th expires in a year. Then the store\n", float64(r.opts.keys)/float64(r.opts.clients-r.opts.clients/10))
	w("(`sqlstore.Store`, no cache) answers cold calls: each for another client or key, drawn at random over the\n")
	w("whole set, one at a time. \"Cold\" means no application cache; the database's own buffers hold what the\n")
	w("bulk load and vacuum left there.\n\n")
	w("| database | written in | vacuum + analyze | size | how |\n|---|---|---|---|---|\n")
	for _, s := range r.scale {
		w("| %s | %s | %s | %s | %s |\n", s.Dialect, dur(s.Insert), dur(s.Finish), mib(s.SizeBytes), s.Method)
	}
	w("\n| database | operation | pool | calls | p50 | p90 | p99 | max | mean | target (p99) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.scale {
		goal := 2 * time.Millisecond
		if s.Dialect == "sqlite" {
			goal = 500 * time.Microsecond
		}
		for _, l := range s.Latencies {
			verdict := "met"
			if l.P99 >= goal {
				verdict = "**MISSED**"
			}
			if l.Variant != variantDefault {
				verdict = "(for comparison)"
			}
			w("| %s | %s | %s | %d | %s | %s | %s | %s | %s | < %v: %s |\n", s.Dialect, l.Op, l.Variant, l.N,
				dur(l.P50), dur(l.P90), dur(l.P99), dur(l.Max), dur(l.Mean), goal, verdict)
		}
	}
	for _, s := range r.scale {
		if s.Dialect != "postgres" {
			continue
		}
		w("\n### Round trips on PostgreSQL: lib/pq with and without `binary_parameters=yes`\n\n")
		w("lib/pq, without `binary_parameters=yes`, sends a query with parameters as Parse/Describe/Sync, waits, then\n")
		w("Bind/Execute/Sync: two round trips; with it, one. Two pools set the parameter either way; the default URL\n")
		w("sets nothing and shows what `sqlstore.Open` makes of it. Round trips are counted by a proxy that reads the\n")
		w("messages the store sends (each Sync or simple Query is one wait for the server); latencies are those of the\n")
		w("table above, the three pools alternating call by call. The benchmark changes nothing in the store.\n\n")
		w("| operation | pool | round trips per call | p50 | p99 | mean |\n|---|---|---|---|---|---|\n")
		for _, rt := range s.RoundTrips {
			l := findLatency(s, rt.Op, rt.Variant)
			w("| %s | %s | %d | %s | %s | %s |\n", rt.Op, rt.Variant, rt.Trips, dur(l.P50), dur(l.P99), dur(l.Mean))
		}
		for _, op := range []string{opClientState, opVerify} {
			t, bp := findLatency(s, op, variantText), findLatency(s, op, variantBinary)
			if t.N > 0 && bp.N > 0 {
				w("\n%s: `binary_parameters=yes` against `=no` changes p50 by %s (%+.0f%%), p99 by %s (%+.0f%%) and the mean by %s (%+.0f%%).", op,
					signed(bp.P50-t.P50), pct(bp.P50, t.P50), signed(bp.P99-t.P99), pct(bp.P99, t.P99), signed(bp.Mean-t.Mean), pct(bp.Mean, t.Mean))
			}
		}
		w("\n")
		if len(s.Explain) > 0 {
			missed := false
			for _, l := range s.Latencies {
				if l.Op == opClientState && l.Variant == variantDefault && l.P99 >= 2*time.Millisecond {
					missed = true
				}
			}
			why := "for reference: the ClientState p99 target was met"
			if missed {
				why = "because the ClientState p99 target was missed"
			}
			w("\n### Query plans on PostgreSQL\n\n`EXPLAIN (ANALYZE, BUFFERS)` of the statements the store sent (as the proxy read them), %s.\n", why)
			w("Compare each plan's Execution Time with the latencies above: the rest is the round trips, the driver,\n")
			w("the database/sql pool and waiting for a core.\n\n")
			for _, e := range s.Explain {
				w("**%s** with (%s):\n\n```sql\n%s\n```\n\n```\n%s\n```\n\n", e.Op, e.Args, e.Query, e.Plan)
			}
		}
	}
	w("\n")
	for _, s := range r.scale {
		w("%s: %s.\n", s.Dialect, s.LatencyNote)
	}
	w("\n")
}

func findLatency(s scaleResult, op, variant string) latency {
	for _, l := range s.Latencies {
		if l.Op == op && l.Variant == variant {
			return l
		}
	}
	return latency{}
}

func pct(a, b time.Duration) float64 { return 100 * float64(a-b) / float64(max(1, b)) }

func signed(d time.Duration) string {
	if d < 0 {
		return "−" + dur(-d)
	}
	return "+" + dur(d)
}

func (r *report) writeReproduce(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Reproduce\n\nFrom the repository root, with PostgreSQL at `LLMAUTH_TEST_DATABASE_URL` (default\n")
	w("`postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable`; the report creates databases of its own and drops them):\n\n")
	w("```sh\n")
	w("go run ./internal/benchreport%s   # this report\n", argString(r.opts.args))
	w("go run ./internal/benchreport -quick                       # small sizes, a few minutes: checks that it all runs\n")
	w("go run ./internal/benchreport -parts micro -out /tmp/b.md  # one part: micro, profiles, load, scale\n")
	w("go run ./internal/benchreport -h                           # sizes: -clients -keys -samples -rounds -duration -conns ...\n")
	if r.micro != nil {
		for _, c := range r.micro.Commands {
			w("%s\n", c)
		}
	}
	for _, p := range r.profiles {
		w("%s\n", p.Command)
	}
	w("go run ./internal/loadgen/cmd/loadgen -url http://127.0.0.1:8080/v1/clients/NAME/chat -c 32 -d 5s -H 'Authorization: Bearer TOKEN'\n")
	w("```\n\nCI (`.ci/run`) runs every benchmark once, small: `LLMAUTH_BENCH_CACHE_ENTRIES=10000 LLMAUTH_BENCH_BACKLOG=10000`\n")
	w("with `-run '^$' -bench . -benchtime=1x`.\n")
}
