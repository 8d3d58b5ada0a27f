package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// openaiDir holds the Node project that calls the server through the
// official OpenAI SDK.
const openaiDir = "testdata/openai"

// requireOpenAI makes a missing Node SDK a failure instead of a skip.
func requireOpenAI() bool { return os.Getenv("LLMAUTH_TEST_REQUIRE_OPENAI") == "1" }

// skipOrFail skips loudly, or fails when LLMAUTH_TEST_REQUIRE_OPENAI=1.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if requireOpenAI() {
		t.Fatalf(format, args...)
	}
	t.Skipf("SKIPPING OPENAI SDK TEST: "+format+" (LLMAUTH_TEST_REQUIRE_OPENAI=1 makes this a failure)", args...)
}

// nodeWithSDK returns the path of node once testdata/openai/node_modules
// holds the locked SDK, running "npm ci" there when it does not.
func nodeWithSDK(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		skipOrFail(t, "node is not on PATH")
	}
	if _, err := os.Stat(filepath.Join(openaiDir, "node_modules", "openai", "package.json")); err == nil {
		return node
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		skipOrFail(t, "%s/node_modules is missing and npm is not on PATH", openaiDir)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = openaiDir
	if out, err := cmd.CombinedOutput(); err != nil {
		skipOrFail(t, "npm ci in %s failed: %v\n%s", openaiDir, err, out)
	}
	return node
}

// TestOpenAISDK points the official OpenAI Node SDK at the server: a
// client's base URL with its token as API key must just work.
func TestOpenAISDK(t *testing.T) {
	t.Parallel()
	node := nodeWithSDK(t)
	script, err := filepath.Abs(filepath.Join(openaiDir, "chat.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	c := newCLI(t, "sqlite:"+filepath.Join(t.TempDir(), "llmauth.db"))
	c.ok("clients", "create", "secure-bot")
	c.ok("clients", "create", "open-bot")
	key := c.createKey("secure-bot")
	other := c.createKey("open-bot")
	c.ok("keys", "revoke", itoa(other.ID)) // open-bot is open again
	s := startServer(t, c.dir, c.env, "--database-url", c.db)

	sdk := func(client, apiKey string, extra ...string) (stdout, stderr string, code int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, append([]string{script, s.base + "/v1/clients/" + client, apiKey}, extra...)...)
		cmd.Dir = openaiDir
		cmd.Env = append(baseEnv(), "OPENAI_BASE_URL=", "OPENAI_API_KEY=")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("running node: %v", err)
		}
		return out.String(), errb.String(), code
	}

	for _, tc := range []struct {
		name   string
		client string
		apiKey string
		args   []string
		reply  string // "" when the call must fail
		errs   []string
	}{
		{"protected client, valid token", "secure-bot", key.Token, nil, "hello llmauth", nil},
		{"protected client, valid token, streaming", "secure-bot", key.Token, []string{"--stream"}, "hello llmauth", nil},
		{"protected client, wrong token", "secure-bot", other.Token, nil, "", []string{"status=401", "AuthenticationError"}},
		{"protected client, junk key", "secure-bot", "sk-not-a-key", nil, "", []string{"status=401", "AuthenticationError"}},
		{"open client, dummy key", "open-bot", "dummy", nil, "hello llmauth", nil},
		{"open client, dummy key, streaming", "open-bot", "dummy", []string{"--stream"}, "hello llmauth", nil},
		{"unknown client", "nobody", key.Token, nil, "", []string{"status=404", "NotFoundError"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := sdk(tc.client, tc.apiKey, tc.args...)
			if tc.reply != "" {
				if code != 0 || strings.TrimSpace(stdout) != tc.reply {
					t.Fatalf("want reply %q; exit %d, stdout %q, stderr %q", tc.reply, code, stdout, stderr)
				}
				return
			}
			if code == 0 {
				t.Fatalf("the SDK call succeeded: %q", stdout)
			}
			for _, want := range tc.errs {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr %q lacks %q", stderr, want)
				}
			}
			if strings.Contains(stderr, tc.apiKey) && strings.HasPrefix(tc.apiKey, "llmk_") {
				t.Errorf("the error repeats the token: %q", stderr)
			}
		})
	}
}
