// Package promtest runs a real Prometheus for a test and reads its HTTP
// API, and reads a Grafana dashboard's queries the way Grafana sends them.
//
// Start takes the prometheus binary from PATH (.ci/run unpacks it from
// Debian's prometheus package). Without one the test is skipped with a loud
// message, or fails when LLMAUTH_TEST_REQUIRE_PROMETHEUS=1.
//
//	p := promtest.Start(t, promtest.Config{Targets: []string{"127.0.0.1:8080"}})
//	samples, err := p.Query(ctx, `up`)
package promtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// EnvRequire names the variable that turns a missing prometheus binary
// from a skip into a failure.
const EnvRequire = "LLMAUTH_TEST_REQUIRE_PROMETHEUS"

// Config is what the Prometheus that Start runs scrapes and evaluates.
type Config struct {
	// Job is the scrape job's name. Default "llmauth".
	Job string
	// Targets are the HOST:PORT addresses the job scrapes at /metrics.
	Targets []string
	// RuleFiles are the rule files Prometheus loads. Relative paths are
	// made absolute against the working directory.
	RuleFiles []string
	// Interval is both the scrape and the rule evaluation interval.
	// Default 1s.
	Interval time.Duration
}

// Server is a running Prometheus, killed when the test ends.
type Server struct {
	// URL is its base URL, http://127.0.0.1:PORT.
	URL string

	api  *apiClient
	log  *logBuffer
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has exited
}

// startTimeout bounds the wait for /-/ready.
const startTimeout = 30 * time.Second

// Require returns the path of the prometheus binary on PATH. Without one
// it skips the test with a loud message, or fails it when
// LLMAUTH_TEST_REQUIRE_PROMETHEUS=1. Start calls it; a test calls it first
// to skip before it sets anything up.
func Require(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err == nil {
		return bin
	}
	msg := "promtest: no prometheus binary on PATH: " + err.Error() + "\n" +
		"    .ci/run unpacks one from Debian's prometheus package; by hand:\n" +
		"        apt-get download prometheus && dpkg-deb -x prometheus_*.deb /tmp/prom && export PATH=/tmp/prom/usr/bin:$PATH\n" +
		"    or use a release from https://prometheus.io/download/. " + EnvRequire + "=1 turns this skip into a failure."
	if os.Getenv(EnvRequire) == "1" {
		t.Fatal(msg)
	}
	t.Skip("SKIPPING THE REAL-PROMETHEUS TEST: " + msg)
	return ""
}

// Start runs prometheus on a free loopback port with cfg and waits until
// it is ready. Its log goes to the test log if the test fails.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	bin := Require(t)
	dir := t.TempDir()
	config, err := cfg.yaml()
	if err != nil {
		t.Fatalf("promtest: %v", err)
	}
	file := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(file, config, 0o600); err != nil {
		t.Fatalf("promtest: %v", err)
	}
	// The free port may be taken between its discovery and Prometheus's
	// bind: try another then.
	for attempt := 1; ; attempt++ {
		s, err := start(t, bin, file, filepath.Join(dir, "data"))
		if err == nil {
			return s
		}
		if attempt == 3 || !strings.Contains(s.log.String(), "address already in use") {
			t.Fatalf("promtest: %v\nprometheus log:\n%s", err, s.log.String())
		}
	}
}

// start runs one prometheus process and waits for it to be ready. The
// process is killed when the test ends, or at once when it is not ready.
func start(t testing.TB, bin, config, data string) (*Server, error) {
	addr, err := freeAddr()
	if err != nil {
		return &Server{log: &logBuffer{}}, err
	}
	cmd := exec.Command(bin,
		"--config.file="+config,
		"--storage.tsdb.path="+data,
		"--web.listen-address="+addr,
		"--log.level=info",
	)
	s := &Server{URL: "http://" + addr, api: newAPIClient("http://" + addr), log: &logBuffer{}, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return s, err
	}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(t.Context()); err != nil {
		s.stop()
		return s, err
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("prometheus %s log:\n%s", s.URL, s.log.String())
		}
	})
	return s, nil
}

// waitReady polls /-/ready until it answers 200.
func (s *Server) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(startTimeout)
	for {
		if s.api.ready(ctx) {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("prometheus exited before it was ready: %v", s.cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("prometheus not ready within %v", startTimeout)
		}
	}
}

// stop kills the process and waits for it to exit.
func (s *Server) stop() {
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.api.close()
}

// Log returns what Prometheus has logged so far.
func (s *Server) Log() string { return s.log.String() }

// yaml renders cfg as a Prometheus configuration file.
func (cfg Config) yaml() ([]byte, error) {
	if len(cfg.Targets) == 0 {
		return nil, errors.New("no scrape target")
	}
	job := cfg.Job
	if job == "" {
		job = "llmauth"
	}
	interval := cfg.Interval
	if interval <= 0 {
		interval = time.Second
	}
	// A JSON string is a YAML double-quoted scalar.
	quote := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	var b bytes.Buffer
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n", interval, interval, interval)
	if len(cfg.RuleFiles) > 0 {
		b.WriteString("rule_files:\n")
		for _, f := range cfg.RuleFiles {
			abs, err := filepath.Abs(f)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "  - %s\n", quote(abs))
		}
	}
	fmt.Fprintf(&b, "scrape_configs:\n  - job_name: %s\n    static_configs:\n      - targets:\n", quote(job))
	for _, target := range cfg.Targets {
		fmt.Fprintf(&b, "          - %s\n", quote(target))
	}
	return b.Bytes(), nil
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// logBuffer collects the process's output while the test reads it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
