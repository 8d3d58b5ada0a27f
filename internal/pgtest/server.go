//go:build unix

package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ErrNoBinaries is returned (wrapped) by Launch when no PostgreSQL server
// binaries (initdb and postgres) can be found on this machine.
var ErrNoBinaries = errors.New("pgtest: no PostgreSQL server binaries (initdb, postgres) found")

// errPortInUse marks a start that failed because another process took the
// chosen port between picking and binding it.
var errPortInUse = errors.New("pgtest: port already in use")

const (
	// readyTimeout bounds how long a start waits for the server to accept
	// connections.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds how long a stop waits for the server to exit after
	// an immediate shutdown request before killing its process group.
	stopTimeout = 15 * time.Second
	// maxSocketPath is the longest unix socket path every supported
	// platform accepts (macOS allows 104 bytes including the NUL).
	maxSocketPath = 103
)

// watchdogScript runs postgres ("$0" "$@") as its child and shuts it down
// immediately (SIGQUIT, what `pg_ctl stop -m immediate` sends) as soon as
// its standard input ends. Stop writes a line and closes that input. If the
// process that launched the server dies without stopping it (a go test
// timeout, SIGKILL), the kernel closes the input without the line: the
// script then also removes the server's temporary directory
// ($PGTEST_ROOT), so an orphaned server leaves nothing behind. When
// postgres exits on its own, the script exits with its status.
const watchdogScript = `exec 3<&0
"$0" "$@" </dev/null 3<&- &
pg=$!
(
	read -r line || : >"$PGTEST_ROOT/orphaned"
	kill -QUIT "$pg" 2>/dev/null
) <&3 &
watcher=$!
exec 3<&-
wait "$pg"
status=$?
kill "$watcher" 2>/dev/null
if [ -e "$PGTEST_ROOT/orphaned" ]; then rm -rf "$PGTEST_ROOT"; fi
exit "$status"
`

// Server is a throwaway PostgreSQL server owned by one test or one test
// run: its data directory lives in a fresh temporary directory, it listens
// on 127.0.0.1 only, trusts every local connection, and trades durability
// against operating system crashes for speed (fsync off); what was
// committed survives Stop and Start. Its superuser is postgres.
//
// Server is safe for concurrent use.
type Server struct {
	binDir  string // holds initdb and postgres
	root    string // temporary directory: socket, log file, data directory
	dataDir string
	logPath string
	port    int
	cred    *syscall.Credential // run the binaries as this user (nil: as ourselves)
	logf    func(format string, args ...any)

	mu      sync.Mutex
	running *process // nil while stopped
	closed  bool     // data directory removed; cannot start again
}

// process is one running watchdog shell with its postgres child.
type process struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser // a line, then closing it, shuts postgres down
	done  chan struct{}  // closed once the watchdog has exited
	err   error          // the watchdog's exit status; read only after done
}

// StartServer starts a throwaway PostgreSQL server for t and stops it and
// removes its files when t ends. When no PostgreSQL binaries are installed
// the test is skipped, or fails when LLMAUTH_TEST_REQUIRE_POSTGRES=1.
func StartServer(t testing.TB) *Server {
	t.Helper()
	srv, stop, err := Launch(context.Background(), t.Logf)
	if errors.Is(err, ErrNoBinaries) {
		msg := fmt.Sprintf("%v\n    Install PostgreSQL (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@16)."+
			"\n    LLMAUTH_TEST_REQUIRE_POSTGRES=1 turns this skip into a failure.", err)
		if Required() {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING POSTGRESQL TEST: " + msg)
	}
	if err != nil {
		t.Fatalf("pgtest: start server: %v", err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return srv
}

// Launch starts a throwaway PostgreSQL server outside of any test, for
// tools such as the test runner. ctx bounds only the start (initdb and the
// wait, at most 30 seconds, until the server accepts connections), not the
// server's life. logf, which may be nil, receives progress messages.
//
// The returned stop function shuts the server down and removes its files;
// it may be called more than once. If the calling process dies without
// calling it, the server shuts itself down and removes its files. The
// error wraps ErrNoBinaries when PostgreSQL is not installed.
func Launch(ctx context.Context, logf func(format string, args ...any)) (srv *Server, stop func() error, err error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	binDir, err := findBinDir()
	if err != nil {
		return nil, nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, nil, err
	}
	root, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, nil, fmt.Errorf("pgtest: create temporary directory: %w", err)
	}
	s := &Server{
		binDir:  binDir,
		root:    root,
		dataDir: filepath.Join(root, "data"),
		logPath: filepath.Join(root, "postgres.log"),
		cred:    cred,
		logf:    logf,
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(root)
		}
	}()
	if cred != nil {
		if err := os.Chown(root, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, nil, fmt.Errorf("pgtest: hand %s to uid %d: %w", root, cred.Uid, err)
		}
	}
	logf("pgtest: initializing a throwaway PostgreSQL in %s with %s", root, binDir)
	if err := s.initdb(ctx); err != nil {
		return nil, nil, err
	}
	const attempts = 3
	for i := 1; ; i++ {
		if s.port, err = freePort(); err != nil {
			return nil, nil, err
		}
		err = s.start(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, errPortInUse) || i == attempts {
			return nil, nil, err
		}
		logf("pgtest: port %d was taken, trying another", s.port)
	}
	logf("pgtest: PostgreSQL is up at %s", s.URL())
	var once sync.Once
	var stopErr error
	stop = func() error {
		once.Do(func() { stopErr = s.close() })
		return stopErr
	}
	return s, stop, nil
}

// URL returns the server's administrative URL:
// postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable.
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Port returns the TCP port the server listens on, on 127.0.0.1. It stays
// the same across Stop and Start.
func (s *Server) Port() int { return s.port }

// Stop shuts the server down at once, as `pg_ctl stop -m immediate` does,
// to simulate a database outage; Start brings it back. Open connections
// break and new ones are refused. Stopping a stopped server does nothing.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Fatalf("pgtest: stop server: %v", err)
	}
}

// Start starts the server again after Stop, on the same port with the
// same data, and waits until it accepts connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if err := s.start(context.Background()); err != nil {
		t.Fatalf("pgtest: restart server: %v", err)
	}
}

// initdb creates the data directory.
func (s *Server) initdb(ctx context.Context) error {
	cmd := s.command(ctx, filepath.Join(s.binDir, "initdb"),
		"-D", s.dataDir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// start runs postgres and waits until it accepts connections.
func (s *Server) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pgtest: server already shut down for good")
	}
	if s.running != nil {
		return errors.New("pgtest: server already running")
	}
	logFile, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pgtest: open server log: %w", err)
	}
	defer logFile.Close() // the child keeps its own copy
	logStart, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("pgtest: open server log: %w", err)
	}
	socketDir := s.root
	if len(filepath.Join(socketDir, ".s.PGSQL.65535")) > maxSocketPath {
		socketDir = "" // too long for a unix socket: TCP only
	}
	args := []string{"-c", watchdogScript, filepath.Join(s.binDir, "postgres"),
		"-D", s.dataDir,
		"-c", "port=" + strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + socketDir,
		// fsync and full_page_writes guard against operating system
		// crashes only. synchronous_commit must stay on: Stop kills
		// postgres, and commits still in its WAL buffers would be lost.
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "shared_buffers=16MB",
		"-c", "max_connections=200",
		"-c", "logging_collector=off",
	}
	cmd := s.command(context.Background(), "/bin/sh", args...)
	cmd.Env = append(cmd.Env, "PGTEST_ROOT="+s.root)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group keeps a terminal's ^C away from the server:
	// the owner decides when it stops.
	cmd.SysProcAttr.Setpgid = true
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	p := &process{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := s.waitReady(ctx, p); err != nil {
		_ = s.halt(p)
		err = fmt.Errorf("%w\n--- postgres log ---\n%s", err, s.logSince(logStart))
		if portTaken(s.logSince(logStart)) {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return err
	}
	s.running = p
	return nil
}

// waitReady polls the server until it answers a ping, p exits, ctx ends
// or readyTimeout passes.
func (s *Server) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	db, err := sql.Open("postgres", s.URL()+"&connect_timeout=2")
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer db.Close()
	exited := func() error {
		return fmt.Errorf("pgtest: postgres exited during startup: %v", p.err)
	}
	timedOut := func(last error) error {
		return fmt.Errorf("pgtest: postgres not accepting connections on port %d: %w (last error: %v)",
			s.port, context.Cause(ctx), last)
	}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		// The driver does not give up a half-open connection when its
		// context ends, so a ping that hangs (the port answered by some
		// other program) must not keep us from noticing that postgres
		// died: ping in the background, at most connect_timeout long.
		pinged := make(chan error, 1)
		go func() {
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			defer pcancel()
			pinged <- db.PingContext(pctx)
		}()
		select {
		case err = <-pinged:
			if err == nil {
				return nil
			}
		case <-p.done:
			return exited()
		case <-ctx.Done():
			return timedOut(err)
		}
		select {
		case <-p.done:
			return exited()
		case <-ctx.Done():
			return timedOut(err)
		case <-tick.C:
		}
	}
}

// stop shuts the running server down, if any.
func (s *Server) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.running
	if p == nil {
		return nil
	}
	s.running = nil
	return s.halt(p)
}

// close stops the server for good and removes its files.
func (s *Server) close() error {
	err := s.stop()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if rerr := os.RemoveAll(s.root); rerr != nil {
		err = errors.Join(err, fmt.Errorf("pgtest: remove %s: %w", s.root, rerr))
	}
	return err
}

// halt shuts p down immediately and waits for it to exit, killing its
// whole process group if it takes longer than stopTimeout.
func (s *Server) halt(p *process) error {
	_, _ = io.WriteString(p.stdin, "stop\n") // fails harmlessly if postgres is gone
	_ = p.stdin.Close()
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	s.logf("pgtest: postgres did not stop within %s; killing it", stopTimeout)
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("pgtest: kill postgres: %w", err)
	}
	<-p.done
	return nil
}

// command prepares a server binary to run as the server's user, in its
// temporary directory, with untranslated messages.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = s.root
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

// logSince returns the server log written from offset on, at most its
// last 4 KiB.
func (s *Server) logSince(offset int64) string {
	const max = 4 << 10
	f, err := os.Open(s.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", s.logPath, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size()-offset > max {
		offset = fi.Size() - max
	}
	b, err := io.ReadAll(io.NewSectionReader(f, offset, max))
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", s.logPath, err)
	}
	return strings.TrimSpace(string(b))
}

// portTaken reports whether a server log says the port was in use.
func portTaken(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "could not create any TCP/IP sockets")
}

// freePort picks a free TCP port on 127.0.0.1 below the ephemeral ranges
// kernels hand out for "any port" (32768 and up on Linux, 49152 and up
// elsewhere): Start brings the server back on the same port, and a port
// from that range could meanwhile go to any socket that asked for one,
// such as another test's HTTP server.
func freePort() (int, error) {
	const low, high = 20000, 32000
	var err error
	for range 100 {
		port := low + rand.IntN(high-low)
		var l net.Listener
		if l, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			_ = l.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("pgtest: pick a free port in %d-%d: %w", low, high, err)
}

// serverCredential returns the user to run initdb and postgres as: nil
// (ourselves) unless we are root, which both refuse to run as.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			errs = append(errs, fmt.Errorf("user %s: %w", name, err))
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("pgtest: running as root, which initdb and postgres refuse, and no postgres or nobody user to run them as: %w",
		errors.Join(errs...))
}

// findBinDir returns a directory holding initdb and postgres. It looks at
// LLMAUTH_TEST_PG_BINDIR, then PATH, then /usr/lib/postgresql/*/bin
// (newest first), then `pg_config --bindir`, then other usual install
// locations (Homebrew, PGDG RPMs, Postgres.app).
func findBinDir() (string, error) {
	if dir := os.Getenv("LLMAUTH_TEST_PG_BINDIR"); dir != "" {
		if hasServerBinaries(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("%w: LLMAUTH_TEST_PG_BINDIR=%s has no initdb and postgres", ErrNoBinaries, dir)
	}
	var candidates []string
	if p, err := exec.LookPath("initdb"); err == nil {
		candidates = append(candidates, filepath.Dir(p))
		if real, err := filepath.EvalSymlinks(p); err == nil {
			candidates = append(candidates, filepath.Dir(real))
		}
	}
	candidates = append(candidates, globNewestFirst("/usr/lib/postgresql/*/bin")...)
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	for _, pattern := range []string{
		"/opt/homebrew/opt/postgresql@*/bin",
		"/usr/local/opt/postgresql@*/bin",
		"/opt/homebrew/opt/postgresql/bin",
		"/usr/local/opt/postgresql/bin",
		"/usr/pgsql-*/bin",
		"/Applications/Postgres.app/Contents/Versions/*/bin",
	} {
		candidates = append(candidates, globNewestFirst(pattern)...)
	}
	for _, dir := range candidates {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("%w (looked on PATH, in /usr/lib/postgresql/*/bin, `pg_config --bindir`, Homebrew, /usr/pgsql-*/bin and Postgres.app; LLMAUTH_TEST_PG_BINDIR names another place)",
		ErrNoBinaries)
}

// hasServerBinaries reports whether dir holds executable initdb and
// postgres files.
func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// globNewestFirst returns the matches of pattern, newest version first.
func globNewestFirst(pattern string) []string {
	matches, _ := filepath.Glob(pattern)
	sortNewestFirst(matches)
	return matches
}

// sortNewestFirst sorts paths by the version number in them, highest
// first.
func sortNewestFirst(paths []string) {
	sort.SliceStable(paths, func(i, j int) bool {
		return compareVersions(versionOf(paths[i]), versionOf(paths[j])) > 0
	})
}

// versionOf extracts the dotted number from a path such as
// /usr/lib/postgresql/9.6/bin or /opt/homebrew/opt/postgresql@16/bin.
func versionOf(path string) []int {
	var v []int
	n, inNum := 0, false
	for _, r := range path {
		switch {
		case r >= '0' && r <= '9':
			n, inNum = n*10+int(r-'0'), true
		case inNum && r == '.':
			v, n, inNum = append(v, n), 0, false
		case inNum:
			return append(v, n)
		default:
			v = v[:0]
		}
	}
	if inNum {
		v = append(v, n)
	}
	return v
}

// compareVersions compares two version numbers part by part.
func compareVersions(a, b []int) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] - b[i]
		}
	}
	return len(a) - len(b)
}
