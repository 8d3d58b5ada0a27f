//go:build unix

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sample is a module whose tests pass, fail and skip, with subtests, and
// two packages that fail outside any test.
var sample = map[string]string{
	"go.mod": "module sample\n\ngo 1.22\n",
	"a/a_test.go": `package a

import "testing"

func TestPass(t *testing.T) { t.Log("quiet when passing") }

func TestFail(t *testing.T) { t.Error("boom") }

func TestSkip(t *testing.T) { t.Skip("needs node") }

func TestSub(t *testing.T) {
	t.Run("ok", func(t *testing.T) {})
	t.Run("skipped", func(t *testing.T) { t.Parallel(); t.Skipf("no %s here", "promtool") })
}
`,
	"b/b_test.go": `package b

import "testing"

func TestPass(t *testing.T) {}
`,
	"c/c_test.go": `package c

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) { m.Run(); os.Exit(3) }

func TestPass(t *testing.T) {}
`,
	"d/d_test.go": "package d\n\nimport \"testing\"\n\nfunc TestX(t *testing.T) { var x int = \"s\"; _ = x }\n",
	"e/e.go":      "package e\n",
}

func TestReport(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, src := range sample {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "test", "-json", "-count=1", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Run(); err == nil {
		t.Fatal("go test passed a failing module")
	}

	var out, sum bytes.Buffer
	rep := newReport(&out, false, false)
	// In odd pieces, as a pipe hands them over.
	for b := stdout.Bytes(); len(b) > 0; {
		n := min(len(b), 77)
		if _, err := rep.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	rep.summary(&sum)

	// As go test prints without -json: failed tests' output, package
	// lines, nothing of passing or skipped tests.
	got := out.String()
	for _, want := range []string{"--- FAIL: TestFail", "a_test.go:7: boom", "FAIL\tsample/a", "ok  \tsample/b", "FAIL\tsample/c", "FAIL\tsample/d [build failed]", "d_test.go:5:40: cannot use", "?   \tsample/e\t[no test files]"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, unwanted := range []string{"quiet when passing", "needs node", "=== RUN", "{\""} {
		if strings.Contains(got, unwanted) {
			t.Errorf("output has %q:\n%s", unwanted, got)
		}
	}

	lines := strings.Split(strings.TrimSuffix(sum.String(), "\n"), "\n")
	if last := lines[len(lines)-1]; last != "5 passed, 3 failed, 2 skipped" {
		// passed: a's TestPass, TestSub and TestSub/ok, b's and c's
		// TestPass; failed: TestFail, package c (exit 3), package d
		// (build); skipped: TestSkip, TestSub/skipped.
		t.Errorf("last line %q; summary:\n%s", last, sum.String())
	}
	for _, want := range []string{
		"sample/a  3 passed, 1 failed, 2 skipped\nsample/b  1 passed, 0 failed, 0 skipped\nsample/c  1 passed, 1 failed, 0 skipped\nsample/d  0 passed, 1 failed, 0 skipped\n",
		"skipped (2):",
		"  sample/a TestSkip: a_test.go:9: needs node",
		"  sample/a TestSub/skipped: a_test.go:13: no promtool here",
		"failed (3):",
		"  sample/a TestFail\n  sample/c: failed outside any test",
		"  sample/d: failed outside any test",
	} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
}

func TestHasFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"-run", "X", "-v"}, true},
		{[]string{"--v"}, true},
		{[]string{"-test.v=true"}, true},
		{[]string{"-v=false"}, false},
		{[]string{"-vet=off"}, false},
		{[]string{"v"}, false},
		{nil, false},
	} {
		if got := hasFlag(tc.args, "v"); got != tc.want {
			t.Errorf("hasFlag(%q, v) = %v", tc.args, got)
		}
	}
}
