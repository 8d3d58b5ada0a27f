//go:build unix

// Command testrun is the one way to run this module's tests:
//
//	go run ./internal/testrun [extra go test arguments]
//
// It makes sure a PostgreSQL server is there for the tests: the one named
// by LLMAUTH_TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable) if it
// answers, otherwise a throwaway server it starts from the locally
// installed PostgreSQL binaries and stops at the end. It then runs
//
//	go vet ./...
//	go test -json -race -count=1 -timeout 20m [extra arguments] ./...
//
// streaming their output, and exits with the status of the first step
// that fails. The tests' output reads as go test's without -json: the
// package lines, and the output of failed tests (of every test with -v).
// The run ends with a summary on stdout: each package's counts, every
// skipped test with its reason, every failed test, and last the line
// "N passed, N failed, N skipped" (tests and subtests; a package that
// failed outside any test counts as one failure). Extra arguments go before ./... (so -run, -v and the like
// work); if the first one does not start with '-', they are all taken as
// package patterns and replace ./... . A -timeout among them replaces the
// default.
//
// Without PostgreSQL binaries it says what to install and runs on with
// the PostgreSQL tests skipped; LLMAUTH_TEST_REQUIRE_POSTGRES=1 makes that
// a failure. Without cgo or a C compiler the race detector is unavailable:
// it warns and runs without -race; LLMAUTH_TEST_REQUIRE_RACE=1 makes that a
// failure.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/llmauth/llmauth/internal/pgtest"
)

const (
	envDatabaseURL     = "LLMAUTH_TEST_DATABASE_URL"
	envRequirePostgres = "LLMAUTH_TEST_REQUIRE_POSTGRES"
	envRequireRace     = "LLMAUTH_TEST_REQUIRE_RACE"

	defaultTimeout = "20m"
	// childGrace is how long a child gets to exit after it was asked to
	// stop before it is killed.
	childGrace = 10 * time.Second
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run does everything and returns the exit status.
func run(extra []string) int {
	// On SIGINT or SIGTERM the running step is interrupted (and killed
	// after childGrace), then the throwaway server is stopped. Further
	// signals are ignored so that this cleanup gets to finish.
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	env := os.Environ()
	url, stopPostgres, err := ensurePostgres(ctx)
	if stopPostgres != nil {
		defer func() {
			if err := stopPostgres(); err != nil {
				logf("stopping the throwaway PostgreSQL: %v", err)
			}
		}()
	}
	if ctx.Err() != nil {
		logf("interrupted")
		return 1
	}
	pgSkipped := err != nil
	switch {
	case err != nil && required(envRequirePostgres):
		logf("%v", err)
		logf("FAILED: PostgreSQL is required (%s=1)", envRequirePostgres)
		return 1
	case err != nil:
		loud(fmt.Sprintf("%v", err),
			"",
			"THE POSTGRESQL TESTS WILL BE SKIPPED.",
			fmt.Sprintf("Set %s=1 to make this a failure.", envRequirePostgres))
	default:
		env = append(env, envDatabaseURL+"="+url)
	}

	race, err := raceAvailable(ctx, env)
	switch {
	case err != nil && required(envRequireRace):
		logf("%v", err)
		logf("FAILED: the race detector is required (%s=1)", envRequireRace)
		return 1
	case err != nil:
		loud(fmt.Sprintf("%v", err),
			"",
			"THE TESTS WILL RUN WITHOUT THE RACE DETECTOR.",
			fmt.Sprintf("Set %s=1 to make this a failure.", envRequireRace))
		// Without a C compiler even a build without -race fails
		// while cgo is on.
		env = append(env, "CGO_ENABLED=0")
	}

	flags, pkgs := splitArgs(extra)
	if code := runGo(ctx, env, append([]string{"vet"}, vetPackages(pkgs)...)...); code != 0 {
		logf("FAILED: go vet exited with status %d", code)
		return code
	}
	testArgs := []string{"test", "-json"}
	if race {
		testArgs = append(testArgs, "-race")
	}
	testArgs = append(testArgs, "-count=1")
	if !hasTimeout(extra) {
		testArgs = append(testArgs, "-timeout="+defaultTimeout)
	}
	testArgs = append(testArgs, flags...)
	testArgs = append(testArgs, pkgs...)
	rep := newReport(os.Stdout, hasFlag(flags, "v"), hasFlag(flags, "json"))
	code := runGoTo(ctx, env, rep, testArgs...)
	if code == 0 && rep.total.failed > 0 {
		code = 1 // cannot happen; but a failure must never pass
	}
	if code != 0 {
		logf("FAILED: go test exited with status %d", code)
	}
	if !race {
		loud("Reminder: the tests ran WITHOUT the race detector.")
	}
	if pgSkipped {
		loud("Reminder: the PostgreSQL tests were SKIPPED: no PostgreSQL server.")
	}
	if code == 0 {
		logf("ok")
	}
	// Last, so that the run ends with its one-line summary. Beside JSON
	// the caller asked for, it goes to stderr.
	summary := io.Writer(os.Stdout)
	if rep.raw {
		summary = os.Stderr
	}
	rep.summary(summary)
	return code
}

// ensurePostgres returns the URL of a PostgreSQL server that answers: the
// configured one, or a throwaway one, which stop shuts down (stop is nil
// for the configured server). The error explains what is missing.
func ensurePostgres(ctx context.Context) (url string, stop func() error, err error) {
	url = pgtest.ServerURL()
	perr := ping(ctx, url)
	if perr == nil {
		logf("using PostgreSQL at %s", redact(url))
		return url, nil, nil
	}
	logf("no usable PostgreSQL at %s (%v); starting a throwaway server", redact(url), perr)
	srv, stop, err := pgtest.Launch(ctx, logf)
	if errors.Is(err, pgtest.ErrNoBinaries) {
		return "", nil, fmt.Errorf("%w\n"+
			"To run the PostgreSQL tests, install PostgreSQL (testrun starts its own server from the installed binaries):\n"+
			"    Debian/Ubuntu:  apt-get install postgresql\n"+
			"    macOS:          brew install postgresql@16\n"+
			"or point %s at a server.", err, envDatabaseURL)
	}
	if err != nil {
		return "", nil, fmt.Errorf("could not start a throwaway PostgreSQL: %w", err)
	}
	logf("the tests use the throwaway PostgreSQL at %s", srv.URL())
	return srv.URL(), stop, nil
}

// ping reports whether the server at url accepts a connection.
func ping(ctx context.Context, url string) error {
	db, err := sql.Open("postgres", url)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// raceAvailable reports whether go test -race can work here: it needs cgo
// and a C compiler. The error says why not.
func raceAvailable(ctx context.Context, env []string) (bool, error) {
	cgo, err := goEnv(ctx, env, "CGO_ENABLED")
	if err != nil {
		return false, err
	}
	if cgo != "1" {
		return false, fmt.Errorf("the race detector needs cgo, but go env CGO_ENABLED is %q "+
			"(the go command turns cgo off when it finds no C compiler; install gcc or clang)", cgo)
	}
	cc, err := goEnv(ctx, env, "CC")
	if err != nil {
		return false, err
	}
	fields := strings.Fields(cc)
	if len(fields) == 0 {
		return false, errors.New("the race detector needs a C compiler, but go env CC is empty")
	}
	if _, err := exec.LookPath(fields[0]); err != nil {
		return false, fmt.Errorf("the race detector needs a C compiler, but go env CC is %q: %w (install gcc or clang)", cc, err)
	}
	return true, nil
}

// goEnv returns the value of one go env variable.
func goEnv(ctx context.Context, env []string, name string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "env", name)
	cmd.Env = env
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", name, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// splitArgs splits the extra arguments into go test flags and package
// patterns: flags come first; if the first argument is not a flag, all
// are patterns (go test accepts flags after the patterns too).
func splitArgs(extra []string) (flags, pkgs []string) {
	if len(extra) > 0 && !strings.HasPrefix(extra[0], "-") {
		return nil, extra
	}
	return extra, []string{"./..."}
}

// vetPackages returns the leading package patterns, leaving out any test
// flags that follow them.
func vetPackages(pkgs []string) []string {
	for i, p := range pkgs {
		if strings.HasPrefix(p, "-") {
			return pkgs[:i]
		}
	}
	return pkgs
}

// hasTimeout reports whether the arguments set go test's timeout.
func hasTimeout(args []string) bool {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "timeout" || name == "test.timeout") {
			return true
		}
	}
	return false
}

// hasFlag reports whether the go test arguments turn on the boolean flag
// name (-name, --name, -name=true, or the same with test.).
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		n, v, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if (n == name || n == "test."+name) && (!hasValue || v == "true" || v == "1") {
			return true
		}
	}
	return false
}

// runGo runs the go command with args, streaming its output, and returns
// its exit status (1 when it has none). The go command and everything it
// starts (compilers, test binaries) run in a process group of their own:
// when ctx ends, the whole group is interrupted, as ^C in a terminal
// would, and killed if it has not exited after childGrace.
func runGo(ctx context.Context, env []string, args ...string) int {
	return runGoTo(ctx, env, os.Stdout, args...)
}

// runGoTo is runGo with the go command's stdout sent to stdout.
func runGoTo(ctx context.Context, env []string, stdout io.Writer, args ...string) int {
	if ctx.Err() != nil {
		logf("interrupted; not running go %s", args[0])
		return 1
	}
	logf("running: go %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		logf("interrupted; stopping go %s", args[0])
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	}
	cmd.WaitDelay = childGrace
	err := cmd.Run()
	if ctx.Err() != nil && cmd.Process != nil {
		// Test binaries the go command left behind.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err == nil {
		return 0
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() > 0 {
		return exit.ExitCode()
	}
	logf("go %s: %v", args[0], err)
	return 1
}

// required reports whether the environment variable name is set to 1.
func required(name string) bool { return os.Getenv(name) == "1" }

// logf prints one line of the runner's own chatter to stderr.
func logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	for line := range strings.SplitSeq(msg, "\n") {
		fmt.Fprintf(os.Stderr, "testrun: %s\n", line)
	}
}

// loud prints lines in a banner that is hard to miss.
func loud(lines ...string) {
	bar := strings.Repeat("!", 72)
	logf("%s", bar)
	for _, l := range lines {
		for line := range strings.SplitSeq(l, "\n") {
			logf("!!! %s", line)
		}
	}
	logf("%s", bar)
}

// redact hides the password in a database URL.
func redact(raw string) string {
	if u, err := neturl.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparsable URL)"
}
