//go:build unix

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The benchmarks of benchmark_test.go. The request cases run in -count
// separate processes of the test binary, each running every case once in
// turn, so that a burst of load from elsewhere on the machine falls on
// all cases of a run rather than on every run of one case; a case's
// overhead is taken within each run (case minus baseline, both from that
// process) and the median over runs reported. The two cases at scale run
// in a process of their own: their million-entry heaps would change how
// often the collector runs for the cases measured after them.
const (
	requestBenchmarks = `^Benchmark(Bare|BareParallel|EchoKeyAuthSHA256|NaiveKeyAuthPostgres|Middleware.*)$`
	scaleBenchmarks   = `^Benchmark(PollBacklog|CacheApply)$`
)

// benchResult is one benchmark's figures, the median over runs.
type benchResult struct {
	Name    string
	Runs    int
	Metrics map[string]float64 // by unit: ns/op, B/op, allocs/op, ...
	Spread  [2]float64         // lowest and highest ns/op
}

// microResult holds the runs' figures and how they were run.
type microResult struct {
	// Runs holds each request run's figures: benchmark, unit, value.
	Runs     []map[string]map[string]float64
	Requests map[string]benchResult // medians over Runs
	Scale    map[string]benchResult
	Commands []string
}

func runMicro(ctx context.Context, o options, tmp string) (*microResult, error) {
	res := &microResult{}
	env := []string{"LLMAUTH_TEST_DATABASE_URL=" + o.adminURL, "LLMAUTH_TEST_REQUIRE_POSTGRES=1"}
	bin := filepath.Join(tmp, "llmauth.test")
	logf("building the test binary")
	if out, err := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, ".").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go test -c: %w\n%s", err, out)
	}
	args := []string{"-test.run", "^$", "-test.bench", requestBenchmarks, "-test.benchmem", "-test.benchtime", o.benchtime}
	res.Commands = append(res.Commands, "go test -c -o llmauth.test . && for run in $(seq "+strconv.Itoa(o.count)+"); do "+
		shellCommand(env, "./llmauth.test", args...)+"; done")
	for i := range o.count {
		logf("request benchmarks, run %d of %d", i+1, o.count)
		out, err := runBench(ctx, env, bin, args...)
		if err != nil {
			return nil, err
		}
		run := map[string]map[string]float64{}
		for name, r := range parseBench(out) {
			run[name] = r.Metrics
		}
		res.Runs = append(res.Runs, run)
	}
	res.Requests = mergeRuns(res.Runs)
	env = append(env, fmt.Sprintf("LLMAUTH_BENCH_CACHE_ENTRIES=%d", o.cacheSize), fmt.Sprintf("LLMAUTH_BENCH_BACKLOG=%d", o.backlog))
	args = []string{"-test.run", "^$", "-test.bench", scaleBenchmarks, "-test.benchmem", "-test.benchtime", "2x", "-test.timeout", "30m"}
	res.Commands = append(res.Commands, shellCommand(env, "./llmauth.test", args...))
	logf("benchmarks at scale")
	out, err := runBench(ctx, env, bin, args...)
	if err != nil {
		return nil, err
	}
	res.Scale = parseBench(out)
	return res, nil
}

// runBench runs the test binary, streams its output to stderr and
// returns it.
func runBench(ctx context.Context, env []string, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, os.Stderr)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w", filepath.Base(bin), err)
	}
	return out.String(), nil
}

// mergeRuns takes the median of each figure over the runs.
func mergeRuns(runs []map[string]map[string]float64) map[string]benchResult {
	out := map[string]benchResult{}
	for _, run := range runs {
		for name := range run {
			if _, done := out[name]; done {
				continue
			}
			r := benchResult{Name: name, Metrics: map[string]float64{}}
			for unit := range run[name] {
				var vs []float64
				for _, other := range runs {
					if m, ok := other[name]; ok {
						vs = append(vs, m[unit])
					}
				}
				r.Runs = len(vs)
				r.Metrics[unit] = median(vs)
				if unit == "ns/op" {
					r.Spread = [2]float64{slices.Min(vs), slices.Max(vs)}
				}
			}
			out[name] = r
		}
	}
	return out
}

// within is the median over runs of f applied to each run's figures,
// over the runs where every named benchmark ran; ok is false when none.
func (m *microResult) within(f func(ns, allocs func(name string) float64) float64, names ...string) (float64, bool) {
	var vs []float64
	for _, run := range m.Runs {
		complete := true
		for _, n := range names {
			if _, ok := run[n]; !ok {
				complete = false
			}
		}
		if !complete {
			continue
		}
		vs = append(vs, f(func(n string) float64 { return run[n]["ns/op"] }, func(n string) float64 { return run[n]["allocs/op"] }))
	}
	if len(vs) == 0 {
		return 0, false
	}
	return median(vs), true
}

// overhead is the median over runs of name's ns/op minus base's.
func (m *microResult) overhead(name, base string) (float64, bool) {
	return m.within(func(ns, _ func(string) float64) float64 { return ns(name) - ns(base) }, name, base)
}

// allocsOver is the median over runs of name's allocs/op minus base's.
func (m *microResult) allocsOver(name, base string) (float64, bool) {
	return m.within(func(_, allocs func(string) float64) float64 { return allocs(name) - allocs(base) }, name, base)
}

// overheadRatio is the median over runs of name's overhead over base
// divided by ref's.
func (m *microResult) overheadRatio(name, ref, base string) (float64, bool) {
	return m.within(func(ns, _ func(string) float64) float64 {
		return (ns(name) - ns(base)) / max(1, ns(ref)-ns(base))
	}, name, ref, base)
}

// parseBench reads go test's benchmark lines into medians per benchmark.
func parseBench(out string) map[string]benchResult {
	runs := map[string][]map[string]float64{}
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i] // the GOMAXPROCS suffix
			}
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				m[f[i+1]] = v
			}
		}
		runs[name] = append(runs[name], m)
	}
	results := map[string]benchResult{}
	for name, rs := range runs {
		r := benchResult{Name: name, Runs: len(rs), Metrics: map[string]float64{}}
		for unit := range rs[0] {
			var vs []float64
			for _, m := range rs {
				vs = append(vs, m[unit])
			}
			r.Metrics[unit] = median(vs)
			if unit == "ns/op" {
				r.Spread = [2]float64{slices.Min(vs), slices.Max(vs)}
			}
		}
		results[name] = r
	}
	return results
}

// median of vs (the mean of the middle two for an even count).
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// profile is the top of one CPU profile, by flat and by cumulative time.
type profile struct {
	Benchmark string
	Command   string
	Top, Cum  string
}

// runProfiles profiles the valid-token and the invalid-token cases.
func runProfiles(ctx context.Context, o options, tmp string) ([]profile, error) {
	var out []profile
	for _, name := range []string{"BenchmarkMiddlewareValid", "BenchmarkMiddlewareInvalid"} {
		prof := tmp + "/" + name + ".prof"
		bin := tmp + "/llmauth.test"
		args := []string{"test", "-run", "^$", "-bench", "^" + name + "$", "-benchtime", "3s", "-cpuprofile", prof, "-o", bin, "."}
		logf("profiling %s", name)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("go test: %w", err)
		}
		p := profile{
			Benchmark: name,
			Command: fmt.Sprintf("go test -run '^$' -bench '^%s$' -benchtime 3s -cpuprofile cpu.prof -o llmauth.test .\n"+
				"go tool pprof -top -nodecount=25 llmauth.test cpu.prof\ngo tool pprof -top -cum -nodecount=40 llmauth.test cpu.prof", name),
		}
		for i, args := range [][]string{{"-top", "-nodecount=25"}, {"-top", "-cum", "-nodecount=40"}} {
			top, err := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof"}, args...), bin, prof)...).Output()
			if err != nil {
				return nil, fmt.Errorf("pprof: %w", err)
			}
			var keep []string
			for line := range strings.SplitSeq(strings.TrimSpace(string(top)), "\n") {
				if !strings.HasPrefix(line, "File:") && !strings.HasPrefix(line, "Build ID:") && !strings.HasPrefix(line, "Time:") && !strings.HasPrefix(line, "Type:") {
					keep = append(keep, line)
				}
			}
			if i == 0 {
				p.Top = strings.Join(keep, "\n")
			} else {
				p.Cum = strings.Join(keep, "\n")
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// shellCommand prints a command as one would type it.
func shellCommand(env []string, name string, args ...string) string {
	var b strings.Builder
	for _, e := range env {
		if strings.HasPrefix(e, "LLMAUTH_TEST_DATABASE_URL=") {
			continue // the default server; the report names it apart
		}
		b.WriteString(e + " ")
	}
	b.WriteString(name)
	for _, a := range args {
		b.WriteByte(' ')
		if strings.ContainsAny(a, "^$|*() ") {
			a = "'" + a + "'"
		}
		b.WriteString(a)
	}
	return b.String()
}
