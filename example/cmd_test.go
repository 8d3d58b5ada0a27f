package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// These tests run commands in the test process: the flags a command line
// fills into a command's options, and the run functions themselves.

// commandPaths lists every command as typed: "serve", "keys create", ...
func commandPaths() []string {
	var out []string
	for _, c := range leafCommands(newRootCmd(&app{stdout: io.Discard, stderr: io.Discard, getenv: emptyEnv})) {
		out = append(out, path(c))
	}
	return out
}

func emptyEnv(string) string { return "" }

func TestCommandOptions(t *testing.T) {
	t.Parallel()
	var got *keysCreateOptions
	create := newCmdKeysCreate(&app{}, func(_ context.Context, o *keysCreateOptions) error { got = o; return nil })
	create.SetArgs([]string{"--json", "--client", "bot", "--name", "-x", "--expires=1h"})
	if err := create.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.client != "bot" || got.name != "-x" || !got.json || !got.expiresSet || got.expires != time.Hour {
		t.Errorf("keys create: %+v", got)
	}
	create = newCmdKeysCreate(&app{}, func(_ context.Context, o *keysCreateOptions) error { got = o; return nil })
	create.SetArgs([]string{"--client", "bot"})
	if err := create.Execute(); err != nil || got.expiresSet {
		t.Errorf("keys create without --expires: %+v, %v", got, err)
	}

	var served *serveOptions
	serve := newCmdServe(&app{}, func(_ context.Context, o *serveOptions) error { served = o; return nil })
	serve.SetArgs([]string{"--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:9090", "--trusted-proxy", "10.0.0.0/8", "--trusted-proxy=192.168.0.0/16", "--max-staleness", "800ms"})
	if err := serve.Execute(); err != nil {
		t.Fatal(err)
	}
	if served.addr != "127.0.0.1:0" || served.metricsAddr != "127.0.0.1:9090" || served.trustedProxies.String() != "10.0.0.0/8,192.168.0.0/16" ||
		served.maxStaleness != 800*time.Millisecond || served.cacheTTL != defaultServeOptions().cacheTTL {
		t.Errorf("serve: %+v", served)
	}

	var revoked *keysStateOptions
	revoke := newCmdKeysRevoke(&app{}, func(_ context.Context, o *keysStateOptions) error { revoked = o; return nil })
	revoke.SetArgs([]string{"7"})
	if err := revoke.Execute(); err != nil || revoked.id != "7" || revoked.active {
		t.Errorf("keys revoke: %+v, %v", revoked, err)
	}
}

// TestPflagArgs: the habits of the Go flag package survive pflag.
func TestPflagArgs(t *testing.T) {
	t.Parallel()
	root := newRootCmd(&app{stdout: io.Discard, stderr: io.Discard, getenv: emptyEnv})
	for _, tc := range []struct{ in, want string }{
		{"keys revoke 1", "keys revoke 1"},
		{"keys revoke -1", "keys revoke -- -1"},
		{"keys rotate -1 --grace 1h", "keys rotate --grace 1h -- -1"},
		{"keys rotate --grace -1 3", "keys rotate --grace -1 3"},
		{"keys rotate --json -1 --database-url x", "keys rotate --json --database-url x -- -1"},
		{"--database-url x keys revoke -1", "keys revoke --database-url x -- -1"},
		{"keys revoke -1 -- -2", "keys revoke -- -1 -2"},
		{"keys revoke -- -1 -json", "keys revoke -- -1 -json"},
		{"-json keys list -client bot", "--json keys list --client bot"},
		{"keys create -client=bot -name -json", "keys create --client=bot --name -json"},
		{"-database-url x clients create -1", "clients create --database-url x -- -1"},
		{"-help", "--help"},
		{"-h", "-h"},
		{"keys revoke -1x", "keys revoke -1x"},
		{"__complete keys revoke -1", "__complete keys revoke -1"},
	} {
		if got := strings.Join(pflagArgs(root, strings.Fields(tc.in)), " "); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestRunFunctions calls run functions directly, as a test or another
// program can, without parsing a command line.
func TestRunFunctions(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	a := &app{stdout: &stdout, stderr: &stderr, getenv: emptyEnv, databaseFlag: "sqlite:" + filepath.Join(t.TempDir(), "x.db")}
	ctx := t.Context()
	if err := clientsCreateRun(ctx, &clientsCreateOptions{app: a, name: "bot"}); err != nil {
		t.Fatal(err)
	}
	if err := keysCreateRun(ctx, &keysCreateOptions{app: a, client: "bot", name: "ci", json: true}); err != nil {
		t.Fatal(err)
	}
	var k createdKey
	if err := json.Unmarshal(stdout.Bytes(), &k); err != nil || k.Client != "bot" || k.Name != "ci" || !tokenRE.MatchString(k.Token) {
		t.Fatalf("keys create: %+v, %v in %q", k, err, stdout.String())
	}
	stderr.Reset()
	if err := keysSetStateRun(ctx, &keysStateOptions{app: a, id: itoa(k.ID)}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "now accepts anonymous requests") {
		t.Errorf("revoking the only key: %q", stderr.String())
	}
	err := keysCreateRun(ctx, &keysCreateOptions{app: a, client: "bot", expires: -time.Second, expiresSet: true})
	if exitCode(err) != exitUsage {
		t.Errorf("a negative --expires: %v, exit %d", err, exitCode(err))
	}
	if err := keysDeleteRun(ctx, &keysDeleteOptions{app: a, id: "999"}); exitCode(err) != exitUsage {
		t.Errorf("deleting an unknown key: %v, exit %d", err, exitCode(err))
	}
	stdout.Reset()
	if err := clientsListRun(ctx, &clientsListOptions{app: a, json: true}); err != nil {
		t.Fatal(err)
	}
	var clients []clientView
	if err := json.Unmarshal(stdout.Bytes(), &clients); err != nil || !slices.ContainsFunc(clients, func(c clientView) bool { return c.Name == "bot" && !c.RequiresKey }) {
		t.Errorf("clients list: %s, %v", stdout.String(), err)
	}
}

// TestVersionAndHelpHelp: --version and "help --help" succeed, in process.
func TestVersionAndHelpHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--version"}, {"version"}, {"help", "--help"}, {"help", "-h"}} {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), args, &stdout, &stderr, emptyEnv)
		if code != exitOK || stderr.Len() != 0 || stdout.Len() == 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 0, output on stdout only", args, code, stdout.String(), stderr.String())
		}
	}
}
