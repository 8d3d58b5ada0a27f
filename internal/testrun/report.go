//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// testEvent is one line of "go test -json" (see go doc cmd/test2json),
// and of the build events the go command adds to it.
type testEvent struct {
	Action     string
	Package    string
	ImportPath string // build-output and build-fail events
	Test       string
	Output     string
}

// testID names one test (or subtest) of one package.
type testID struct{ pkg, test string }

// counts are the outcomes of tests and subtests.
type counts struct{ passed, failed, skipped int }

func (c counts) String() string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped", c.passed, c.failed, c.skipped)
}

// outcome is a test that did not pass, with what explains it.
type outcome struct {
	id     testID
	reason string // the skip reason, or for a package what failed
}

// report reads "go test -json" and prints what go test prints without
// -json: package result lines, and the output of failed tests only (of
// every test with verbose). It counts every test and subtest, and
// remembers which were skipped and why, for summary.
type report struct {
	out     io.Writer
	verbose bool // print every test's output as it comes, as go test -v
	raw     bool // print the JSON itself, as the caller asked for -json

	partial []byte              // an unfinished line
	running map[testID][]string // the output of tests not finished yet
	pkgs    map[string]*counts  // by package
	pkgFail map[string]bool     // packages with a failed test
	order   []string            // packages, as they started
	total   counts              // every test and subtest
	skipped []outcome           // in the order they ended
	failed  []outcome           // likewise
}

func newReport(out io.Writer, verbose, raw bool) *report {
	return &report{
		out: out, verbose: verbose, raw: raw,
		running: map[testID][]string{}, pkgs: map[string]*counts{}, pkgFail: map[string]bool{},
	}
}

// Write takes go test's stdout, in pieces of any size.
func (r *report) Write(p []byte) (int, error) {
	r.partial = append(r.partial, p...)
	for {
		i := bytes.IndexByte(r.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		r.line(r.partial[:i+1])
		r.partial = r.partial[i+1:]
	}
}

// Close handles a last line without a newline.
func (r *report) Close() error {
	if len(r.partial) > 0 {
		r.line(append(r.partial, '\n'))
		r.partial = nil
	}
	return nil
}

func (r *report) print(s string) { _, _ = io.WriteString(r.out, s) }

// line handles one line of go test's stdout.
func (r *report) line(b []byte) {
	if r.raw {
		_, _ = r.out.Write(b)
	}
	var e testEvent
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &e) != nil {
		if !r.raw {
			_, _ = r.out.Write(b) // not an event: pass it on
		}
		return
	}
	if e.Package == "" && e.ImportPath == "" {
		return
	}
	switch e.Action {
	case "build-output":
		r.show(e.Output)
	case "start":
		r.pkg(e.Package)
	case "run":
		r.running[testID{e.Package, e.Test}] = nil
	case "output":
		r.output(e)
	case "pass", "fail", "skip":
		if e.Test == "" {
			r.endPackage(e)
		} else {
			r.endTest(testID{e.Package, e.Test}, e.Action)
		}
	}
}

// show prints go test's own output, unless the raw JSON is printed.
func (r *report) show(s string) {
	if !r.raw {
		r.print(s)
	}
}

// pkg returns the counts of a package, registering it on first sight.
func (r *report) pkg(name string) *counts {
	c, ok := r.pkgs[name]
	if !ok {
		c = &counts{}
		r.pkgs[name] = c
		r.order = append(r.order, name)
	}
	return c
}

func (r *report) output(e testEvent) {
	if e.Test == "" {
		// The package's own lines: "ok  pkg 1.2s", "FAIL pkg", and what
		// TestMain prints. go test without -v drops the bare PASS.
		if r.verbose || e.Output != "PASS\n" {
			r.show(e.Output)
		}
		return
	}
	id := testID{e.Package, e.Test}
	if r.verbose || strings.HasPrefix(e.Test, "Benchmark") {
		r.show(e.Output)
	}
	r.running[id] = append(r.running[id], e.Output)
}

func (r *report) endTest(id testID, action string) {
	lines := r.running[id]
	delete(r.running, id)
	c := r.pkg(id.pkg)
	switch action {
	case "pass":
		c.passed++
		r.total.passed++
	case "skip":
		c.skipped++
		r.total.skipped++
		r.skipped = append(r.skipped, outcome{id, skipReason(lines)})
	case "fail":
		c.failed++
		r.total.failed++
		r.pkgFail[id.pkg] = true
		r.failed = append(r.failed, outcome{id: id})
		if !r.verbose {
			r.show(strings.Join(slices.DeleteFunc(lines, isProgressLine), ""))
		}
	}
}

// endPackage ends a package: tests still running failed with it (a
// panic, a timeout), and a package that failed without a failed test
// (a build failure, TestMain, a leak check) counts as one failure.
func (r *report) endPackage(e testEvent) {
	c := r.pkg(e.Package)
	var left []testID
	for id := range r.running {
		if id.pkg == e.Package {
			left = append(left, id)
		}
	}
	slices.SortFunc(left, func(a, b testID) int { return strings.Compare(a.test, b.test) })
	for _, id := range left {
		if e.Action == "fail" {
			r.endTest(id, "fail")
		} else {
			delete(r.running, id)
		}
	}
	if e.Action == "fail" && !r.pkgFail[e.Package] {
		c.failed++
		r.total.failed++
		r.pkgFail[e.Package] = true
		r.failed = append(r.failed, outcome{id: testID{pkg: e.Package}, reason: "failed outside any test (build, TestMain or the test binary itself)"})
	}
}

// isProgressLine reports whether a line of test output is go test -v's
// progress ("=== RUN", "=== PAUSE", ...) rather than the test's own.
func isProgressLine(s string) bool {
	return strings.HasPrefix(s, "=== ")
}

// skipReason is what a skipped test logged, on one line.
func skipReason(lines []string) string {
	var out []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || isProgressLine(l) || strings.HasPrefix(t, "--- SKIP:") {
			continue
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return "(no reason given)"
	}
	return strings.Join(out, " / ")
}

// summary prints, after the run: the count of each package that ran
// tests, every skipped test with its reason, every failed test, and last
// the one line "N passed, N failed, N skipped" (tests and subtests).
func (r *report) summary(w io.Writer) {
	_ = r.Close()
	fmt.Fprintln(w)
	width := 0
	for _, p := range r.order {
		width = max(width, len(p))
	}
	slices.Sort(r.order)
	for _, p := range r.order {
		if c := r.pkgs[p]; *c != (counts{}) {
			fmt.Fprintf(w, "%-*s  %s\n", width, p, c)
		}
	}
	if len(r.skipped) > 0 {
		fmt.Fprintf(w, "\nskipped (%d):\n", len(r.skipped))
		for _, s := range r.skipped {
			fmt.Fprintf(w, "  %s %s: %s\n", s.id.pkg, s.id.test, s.reason)
		}
	}
	if len(r.failed) > 0 {
		slices.SortStableFunc(r.failed, func(a, b outcome) int { return strings.Compare(a.id.pkg, b.id.pkg) })
		fmt.Fprintf(w, "\nfailed (%d):\n", len(r.failed))
		for _, f := range r.failed {
			if f.id.test == "" {
				fmt.Fprintf(w, "  %s: %s\n", f.id.pkg, f.reason)
			} else {
				fmt.Fprintf(w, "  %s %s\n", f.id.pkg, f.id.test)
			}
		}
	}
	fmt.Fprintf(w, "\n%s\n", r.total)
}
