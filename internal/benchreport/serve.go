//go:build unix

package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/llmauth/llmauth/internal/loadgen/target"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// serveTarget is the process a load run's bare or naive server runs in:
// benchreport itself, started again with -serve-target, so that every
// server under load is a process of its own, as the example is. It prints
// "listening on http://ADDR" to stderr, as the example does, and serves
// until SIGTERM or SIGINT.
func serveTarget(kind, addr, databaseURL string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "benchreport %s: %v\n", kind, err)
		return 1
	}
	var e *echo.Echo
	switch kind {
	case "bare":
		e = target.Bare()
	case "naive":
		db, err := sqlstore.Open(ctx, databaseURL)
		if err != nil {
			return fail(err)
		}
		defer db.Close()
		// Enough connections for every load connection not to wait for
		// one, within the server's shared max_connections.
		db.SetMaxOpenConns(16)
		db.SetMaxIdleConns(16)
		if e, err = target.NaiveApp(db); err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("unknown target %q (want bare or naive)", kind))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fail(err)
	}
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(os.Stderr, "listening on http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fail(err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fail(err)
	}
	return 0
}

// server is a process under load.
type server struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been waited for
	log    string        // its stderr, a file
	base   string        // http://ADDR
}

var listeningRE = regexp.MustCompile(`listening on (http://[0-9.:\[\]a-f]+)`)

// freeAddr returns a loopback address with a port free a moment ago, for a
// server that may not say where it listens (the example logs its
// "listening on" line only at --log-level info or below).
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// accepting reports whether something accepts connections at addr.
func accepting(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// startServer starts a server process with its stderr in logPath and
// waits until it listens: at addr when given, else where its "listening
// on" line says.
func startServer(ctx context.Context, name, logPath, addr, bin string, args ...string) (*server, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.exited) }()
	deadline := time.After(60 * time.Second)
	for {
		if addr != "" && accepting(addr) {
			s.base = "http://" + addr
			return s, nil
		}
		if base := firstMatch(logPath); addr == "" && base != "" {
			s.base = base
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("%s exited before listening; its log:\n%s", name, tail(logPath))
		case <-deadline:
			s.stop()
			return nil, fmt.Errorf("%s did not listen within a minute; its log:\n%s", name, tail(logPath))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// firstMatch returns the address of the first "listening on" line.
func firstMatch(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if m := listeningRE.FindStringSubmatch(s.Text()); m != nil {
			return m[1]
		}
	}
	return ""
}

// tail is the end of a log file, for error messages.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// stop ends the process gracefully (SIGTERM), or kills it after 15s.
func (s *server) stop() {
	if s == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		logf("%s did not stop within 15s: killing it", s.name)
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}
