package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/llmauth/llmauth/internal/pgtest"
)

// These tests drive the binary as a user would: TestMain builds it once,
// every test runs it with os/exec against a fresh SQLite file or a fresh
// PostgreSQL database.

// exampleBinary is the binary TestMain built. Set once, before any test.
var exampleBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "llmauth-example-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	exampleBinary = filepath.Join(dir, "example")
	build := exec.Command("go", "build", "-o", exampleBinary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the example binary:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	// The in-process server tests must leave no goroutine behind.
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// storeCase names a database to run a test against.
type storeCase struct {
	name string
	// newURL returns the URL of a fresh, empty database that lives as long
	// as t.
	newURL func(t *testing.T) string
}

// stores lists the databases every store-dependent test runs on.
func stores() []storeCase {
	return []storeCase{
		{"sqlite", func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "llmauth.db") }},
		{"postgres", func(t *testing.T) string { return pgtest.NewDatabase(t) }},
	}
}

// baseEnv is the environment of every child: the test's own, without
// DATABASE_URL.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envDatabaseURL+"=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// result is what one CLI run produced.
type result struct {
	stdout string
	stderr string
	code   int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %q\nstderr: %q", r.code, r.stdout, r.stderr)
}

// cli describes how to run the binary: in which directory, with which
// environment, and which database flag.
type cli struct {
	t   testing.TB
	dir string
	env []string
	db  string // when set, --database-url db is appended
}

func newCLI(t testing.TB, databaseURL string) *cli {
	return &cli{t: t, dir: t.TempDir(), env: baseEnv(), db: databaseURL}
}

// run runs the binary with args (and --database-url, when set) and
// returns what it did.
func (c *cli) run(args ...string) result {
	c.t.Helper()
	if c.db != "" {
		args = append(args, "--database-url", c.db)
	}
	return runBinary(c.t, c.dir, c.env, args...)
}

// ok runs args and fails the test unless they exit 0.
func (c *cli) ok(args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("example %s: %v", strings.Join(args, " "), r)
	}
	return r
}

func runBinary(t testing.TB, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exampleBinary, args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("running example %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// createdKey is the JSON "keys create --json" prints, as a script reads it:
// spelled out here rather than reusing newKeyView, so that a renamed field
// in the binary breaks the tests instead of passing along with them.
type createdKey struct {
	ID        int64      `json:"id"`
	Token     string     `json:"token"`
	Client    string     `json:"client"`
	Name      string     `json:"name"`
	Prefix    string     `json:"prefix"`
	ExpiresAt *time.Time `json:"expires_at"`
	CreatedAt time.Time  `json:"created_at"`
}

// createKey provisions a key through the CLI.
func (c *cli) createKey(client string, extra ...string) createdKey {
	c.t.Helper()
	r := c.ok(append([]string{"keys", "create", "--client", client, "--json"}, extra...)...)
	var k createdKey
	if err := json.Unmarshal([]byte(r.stdout), &k); err != nil {
		c.t.Fatalf("keys create --json: %v in %q", err, r.stdout)
	}
	return k
}

// listedKey is one element of "keys list --json".
type listedKey struct {
	ID         int64      `json:"id"`
	Name       string     `json:"name"`
	State      string     `json:"state"`
	Active     bool       `json:"active"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

func (c *cli) listKeys(client string) []listedKey {
	c.t.Helper()
	r := c.ok("keys", "list", "--client", client, "--json")
	var keys []listedKey
	if err := json.Unmarshal([]byte(r.stdout), &keys); err != nil {
		c.t.Fatalf("keys list --json: %v in %q", err, r.stdout)
	}
	return keys
}

// syncBuffer collects a child's stderr while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is a running "example serve".
type server struct {
	t      testing.TB
	cmd    *exec.Cmd
	base   string // http://127.0.0.1:PORT
	stderr *syncBuffer
	done   chan struct{} // closed when the process has exited
	code   int           // exit code, once done
}

var listeningRE = regexp.MustCompile(`listening on (http://[0-9.:\[\]a-f]+)`)

// startServer runs "example serve --addr 127.0.0.1:0 args..." in dir and
// waits until it listens. It is killed when the test ends.
func startServer(t testing.TB, dir string, env []string, args ...string) *server {
	t.Helper()
	args = append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)
	cmd := exec.Command(exampleBinary, args...)
	cmd.Dir, cmd.Env = dir, env
	s := &server{t: t, cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			_, _ = s.stderr.Write([]byte(line + "\n"))
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				select {
				case listening <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pipe)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			s.code = ee.ExitCode()
		} else if err != nil {
			s.code = -1
		}
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("server %s stderr:\n%s", s.base, s.stderr.String())
		}
	})
	select {
	case s.base = <-listening:
	case <-s.done:
		t.Fatalf("example serve exited with %d before listening; stderr:\n%s", s.code, s.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("example serve did not listen within 30s; stderr:\n%s", s.stderr.String())
	}
	return s
}

// signal sends sig and waits for the exit code.
func (s *server) signal(sig syscall.Signal) int {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %v: %v", sig, err)
	}
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Fatalf("example serve did not exit within 30s of %v; stderr:\n%s", sig, s.stderr.String())
	}
	return s.code
}

// response is an HTTP answer, read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

// httpClient has no proxy and a bound on every call.
var httpClient = &http.Client{
	Timeout:   15 * time.Second,
	Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16},
}

// do sends one request. header values of "" are skipped; a key given
// twice sends the header twice.
func do(t testing.TB, method, url string, body string, header ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	res, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// chat posts to a client's chat route, with "Authorization: Bearer token"
// when token is not empty.
func (s *server) chat(client, token string) response {
	s.t.Helper()
	var h []string
	if token != "" {
		h = []string{"Authorization", "Bearer " + token}
	}
	return do(s.t, http.MethodPost, s.base+"/v1/clients/"+client+"/chat", `{"message":"ping"}`, h...)
}

// chatReply is the body of a successful chat.
type chatReply struct {
	Client    string  `json:"client"`
	Anonymous bool    `json:"anonymous"`
	KeyID     *int64  `json:"key_id"`
	KeyName   *string `json:"key_name"`
	Reply     string  `json:"reply"`
}

func decodeChat(t testing.TB, r response) chatReply {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("chat: status %d, body %s", r.status, r.body)
	}
	var c chatReply
	if err := json.Unmarshal(r.body, &c); err != nil {
		t.Fatalf("chat body %s: %v", r.body, err)
	}
	return c
}

// tokenRE matches a whole token anywhere.
var tokenRE = regexp.MustCompile(`llmk_[0-9A-Za-z]{61}`)

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
