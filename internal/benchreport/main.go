//go:build unix

// Command benchreport runs every performance measurement of the module
// and writes docs/BENCHMARKS.md:
//
//	go run ./internal/benchreport                  # full size, about 15 minutes on 2 cores
//	go run ./internal/benchreport -quick           # small sizes, about 3 minutes
//	go run ./internal/benchreport -parts load      # one part (micro, profiles, load, scale)
//
// The parts: the middleware micro-benchmarks of benchmark_test.go (one
// `go test` process, so every ratio compares figures of one run), the
// cache and watcher benchmarks at scale, CPU profiles of two cases, a load
// comparison over loopback HTTP (the built example server against the
// same handler with no middleware and behind the naive design, in
// interleaved rounds, with internal/loadgen), and a store at scale
// (100,000 clients and 1,000,000 keys on PostgreSQL and SQLite: cold
// latencies, round trips, statements per request).
//
// It needs the PostgreSQL at LLMAUTH_TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable), on which
// it creates databases of its own, with random names, and drops them.
// Figures are reported as measured, targets met or not.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/llmauth/llmauth/internal/pgtest"
)

// options are the command's flags.
type options struct {
	out          string
	parts        []string
	adminURL     string
	clients      int
	keys         int
	samples      int
	rounds       int
	duration     time.Duration
	warmup       time.Duration
	conns        int
	loadDB       string
	benchtime    string
	count        int
	cacheSize    int
	backlog      int
	loggedTarget bool
	args         []string // the command line, for the report
}

var allParts = []string{"micro", "profiles", "load", "scale"}

func parseFlags(args []string) (options, error) {
	o := options{args: args}
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	parts := fs.String("parts", strings.Join(allParts, ","), "comma-separated parts to run: "+strings.Join(allParts, ", "))
	quick := fs.Bool("quick", false, "small sizes, few rounds: a check that everything runs, not figures to publish")
	fs.StringVar(&o.out, "out", "docs/BENCHMARKS.md", "write the report to `FILE`")
	fs.StringVar(&o.adminURL, "database-url", pgtest.ServerURL(), "PostgreSQL server `URL` on which databases are created and dropped")
	fs.IntVar(&o.clients, "clients", 100_000, "clients in the store at scale")
	fs.IntVar(&o.keys, "keys", 1_000_000, "keys in the store at scale")
	fs.IntVar(&o.samples, "samples", 5000, "cold store calls per operation and store, for latency percentiles")
	fs.IntVar(&o.rounds, "rounds", 7, "interleaved rounds of the load comparison (the median counts)")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "counted length of one load run")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "uncounted start of one load run")
	fs.IntVar(&o.conns, "conns", 32, "keep-alive connections of one load run")
	fs.StringVar(&o.loadDB, "load-db", "postgres", "database of the example server under load: postgres or sqlite")
	fs.BoolVar(&o.loggedTarget, "access-log-example", true, "also load the example with --access-log, to show what a log line per request costs")
	fs.StringVar(&o.benchtime, "benchtime", "1s", "go test -benchtime of the micro-benchmarks")
	fs.IntVar(&o.count, "count", 5, "go test -count of the micro-benchmarks (the median counts)")
	fs.IntVar(&o.cacheSize, "cache-entries", 1_000_000, "LLMAUTH_BENCH_CACHE_ENTRIES of BenchmarkCacheApply")
	fs.IntVar(&o.backlog, "backlog", 1_000_000, "LLMAUTH_BENCH_BACKLOG of BenchmarkPollBacklog")
	serve := fs.String("serve-target", "", "internal: serve the bare or naive target (see internal/loadgen/target) and exit on SIGTERM")
	addr := fs.String("addr", "127.0.0.1:0", "internal: listen address of -serve-target")
	targetDB := fs.String("target-database-url", "", "internal: database of -serve-target naive")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *serve != "" {
		os.Exit(serveTarget(*serve, *addr, *targetDB))
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range map[string]any{
			"clients": 10_000, "keys": 100_000, "samples": 1000, "rounds": 3, "duration": 2 * time.Second,
			"warmup": 500 * time.Millisecond, "benchtime": "200ms", "count": 2, "cache-entries": 100_000, "backlog": 100_000,
		} {
			if !set[name] {
				_ = fs.Set(name, fmt.Sprint(v))
			}
		}
	}
	for p := range strings.SplitSeq(*parts, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !slices.Contains(allParts, p) {
			return o, fmt.Errorf("unknown part %q (want %s)", p, strings.Join(allParts, ", "))
		}
		o.parts = append(o.parts, p)
	}
	switch {
	case o.loadDB != "postgres" && o.loadDB != "sqlite":
		return o, fmt.Errorf("-load-db %q: want postgres or sqlite", o.loadDB)
	case o.clients < 10 || o.keys < 1 || o.samples < 100 || o.rounds < 1 || o.conns < 1 || o.count < 1:
		return o, fmt.Errorf("sizes too small: -clients ≥ 10, -keys ≥ 1, -samples ≥ 100, -rounds, -conns, -count ≥ 1")
	case o.duration <= 0 || o.warmup < 0:
		return o, fmt.Errorf("-duration must be positive and -warmup not negative")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// report is everything measured, for the writer.
type report struct {
	opts     options
	started  time.Time
	elapsed  time.Duration
	machine  machine
	micro    *microResult
	profiles []profile
	load     *loadResult
	scale    []scaleResult
	failures []string
}

func run(ctx context.Context, o options) error {
	if _, err := os.Stat("benchmark_test.go"); err != nil {
		return fmt.Errorf("run it from the repository root: %w", err)
	}
	r := &report{opts: o, started: time.Now()}
	pg, err := newPostgres(ctx, o.adminURL)
	if err != nil {
		return err
	}
	defer pg.close()
	r.machine = describeMachine(ctx, pg)
	logf("machine: %s, %d cores, %s, %s", r.machine.CPU, r.machine.Cores, r.machine.OS, r.machine.Go)
	tmp, err := os.MkdirTemp("", "benchreport")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// A part that fails is reported as failed; the others still run, and
	// the report is written with what was measured.
	has := func(p string) bool { return slices.Contains(o.parts, p) }
	failed := func(part string, err error) {
		logf("%s failed: %v", part, err)
		r.failures = append(r.failures, fmt.Sprintf("%s: %v", part, err))
	}
	if has("micro") {
		if r.micro, err = runMicro(ctx, o, tmp); err != nil {
			failed("micro-benchmarks", err)
		}
	}
	if has("profiles") && ctx.Err() == nil {
		if r.profiles, err = runProfiles(ctx, o, tmp); err != nil {
			failed("profiles", err)
		}
	}
	if has("load") && ctx.Err() == nil {
		if r.load, err = runLoad(ctx, o, pg, tmp); err != nil {
			r.load = nil
			failed("load", err)
		}
	}
	if has("scale") {
		for _, dialect := range []string{"postgres", "sqlite"} {
			if ctx.Err() != nil {
				break
			}
			res, err := runScale(ctx, o, pg, tmp, dialect)
			if err != nil {
				failed("scale on "+dialect, err)
				continue
			}
			r.scale = append(r.scale, res)
		}
	}
	r.elapsed = time.Since(r.started)
	r.machine.LoadAfter = loadAverage()
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.out, []byte(r.markdown()), 0o644); err != nil {
		return err
	}
	logf("wrote %s in %s", o.out, r.elapsed.Round(time.Second))
	if len(r.failures) > 0 {
		return fmt.Errorf("%d parts failed: %s", len(r.failures), strings.Join(r.failures, "; "))
	}
	return ctx.Err()
}

// logf prints progress to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "benchreport: "+format+"\n", args...)
}
