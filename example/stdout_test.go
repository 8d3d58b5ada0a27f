package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// runWithStdout runs the binary like runBinary, with stdout set up by
// stdout: "full" (/dev/full), "broken" (a pipe whose reader is closed),
// "closed" (no file descriptor 1 at all) or "null" (/dev/null).
func runWithStdout(t *testing.T, c *cli, stdout string, args ...string) result {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("needs /dev/full and a shell")
	}
	args = append(args, "--database-url", c.db)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exampleBinary, args...)
	if stdout == "closed" {
		cmd = exec.CommandContext(ctx, "sh", append([]string{"-c", `exec "$0" "$@" >&-`, exampleBinary}, args...)...)
	}
	cmd.Dir, cmd.Env = c.dir, c.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	switch stdout {
	case "full", "null":
		name := map[string]string{"full": "/dev/full", "null": os.DevNull}[stdout]
		f, err := os.OpenFile(name, os.O_WRONLY, 0)
		if err != nil {
			t.Skipf("%s: %v", name, err)
		}
		defer f.Close()
		cmd.Stdout = f
	case "broken":
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		defer w.Close()
		cmd.Stdout = w
	}
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{stderr: stderr.String(), code: code}
}

// TestNewKeyStdoutFails: when the token of a new key cannot be printed,
// the key is deleted again and the client is as it was; the command fails
// with exit 1 and says so. A stdout that is the null device (or was
// closed, which the Go runtime turns into the null device) gets the key
// made, with a warning that its token is discarded: a script may only want
// the client to require a key.
func TestNewKeyStdoutFails(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "sqlite:"+t.TempDir()+"/k.db")
	c.ok("clients", "create", "open-bot")
	c.ok("clients", "create", "keyed-bot")
	kept := c.createKey("keyed-bot", "--expires", "30d")
	lost := regexp.MustCompile(`^example: keys (create|rotate): could not print the token \(writing to stdout: write /dev/stdout: (no space left on device|broken pipe)\): deleted key [0-9]+ again, client (open-bot|keyed-bot) is as it was\n$`)
	before := c.ok("clients", "list", "--json").stdout
	keysBefore := c.ok("keys", "list", "--client", "keyed-bot", "--json").stdout
	for _, stdout := range []string{"full", "broken"} {
		for _, args := range [][]string{
			{"keys", "create", "--client", "open-bot"},
			{"keys", "create", "--client", "open-bot", "--json"},
			{"keys", "create", "--client", "keyed-bot", "--expires", "1h"},
			{"keys", "rotate", itoa(kept.ID)},
			{"keys", "rotate", itoa(kept.ID), "--json", "--expires", "never"},
		} {
			r := runWithStdout(t, c, stdout, args...)
			switch {
			case r.code != 1:
				t.Errorf("stdout %s, %v: want exit 1; got %v", stdout, args, r)
			case !lost.MatchString(r.stderr) || !strings.Contains(r.stderr, "keys "+args[1]+":"):
				t.Errorf("stdout %s, %v: stderr %q", stdout, args, r.stderr)
			}
		}
	}
	if after := c.ok("clients", "list", "--json").stdout; after != before {
		t.Errorf("the clients changed:\nbefore %s\nafter %s", before, after)
	}
	if after := c.ok("keys", "list", "--client", "keyed-bot", "--json").stdout; after != keysBefore {
		t.Errorf("keyed-bot's keys changed:\nbefore %s\nafter %s", keysBefore, after)
	}
	if keys := c.listKeys("open-bot"); len(keys) != 0 {
		t.Errorf("open-bot has keys: %+v", keys)
	}

	for i, stdout := range []string{"null", "closed"} {
		r := runWithStdout(t, c, stdout, "keys", "create", "--client", "open-bot")
		want := "keys create: warning: stdout is " + os.DevNull + ", so the new token, shown only once, is discarded\n"
		if r.code != 0 || !strings.HasPrefix(r.stderr, want) {
			t.Errorf("stdout %s: got %v, want exit 0 and %q", stdout, r, want)
		}
		if keys := c.listKeys("open-bot"); len(keys) != i+1 {
			t.Errorf("stdout %s: open-bot has %d keys, want %d", stdout, len(keys), i+1)
		}
	}
}

// TestResultsStdoutFails: every command that prints results fails with
// exit 1 when stdout cannot be written, help and --version included.
func TestResultsStdoutFails(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "sqlite:"+t.TempDir()+"/k.db")
	c.ok("clients", "create", "bot")
	const want = "example: writing to stdout: write /dev/stdout: no space left on device\n"
	for _, args := range [][]string{
		{"clients", "list"},
		{"clients", "list", "--json"},
		{"keys", "list", "--client", "bot"},
		{"keys", "list", "--client", "bot", "--json"},
		{"version"},
		{"--version"},
		{"--help"},
		{"help", "keys"},
		{"keys", "create", "--help"},
		{"completion", "bash"},
	} {
		if r := runWithStdout(t, c, "full", args...); r.code != 1 || r.stderr != want {
			t.Errorf("%v to /dev/full: got %v, want exit 1 and %q", args, r, want)
		}
	}
}
