package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"0", 0},
		{"90s", 90 * time.Second},
		{"720h", 720 * time.Hour},
		{"1h30m", 90 * time.Minute},
		{"30d", 30 * day},
		{"1d12h", 36 * time.Hour},
		{"1.5d", 36 * time.Hour},
		{"2d3h4m5s6ms", 2*day + 3*time.Hour + 4*time.Minute + 5*time.Second + 6*time.Millisecond},
		{"1h1d", 25 * time.Hour},
		{"-1d", -day},
		{"+2d", 2 * day},
		{"-5m", -5 * time.Minute},
		{"100000d", 100000 * day},
	} {
		if got, err := parseDuration(tc.in); err != nil || got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "30x", "30", "d", "1d2", "never", "1 d", "d1", "1dd", "-", "+d", "1.2.3d", "107000d", "106751d24h", "soon"} {
		if got, err := parseDuration(in); err != errBadDuration {
			t.Errorf("parseDuration(%q) = %v, %v; want errBadDuration", in, got, err)
		}
	}
	for d, want := range map[time.Duration]string{0: "0", 30 * day: "30d", 36 * time.Hour: "36h0m0s", 90 * time.Second: "1m30s"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		} else if back, err := parseDuration(got); err != nil || back != d {
			t.Errorf("parseDuration(formatDuration(%v)) = %v, %v", d, back, err)
		}
	}
}

// TestDurationFlagErrors: every duration flag of every command refuses a
// bad value in the same words, with exit 2, and touches no database.
func TestDurationFlagErrors(t *testing.T) {
	t.Parallel()
	var flags []string
	visit(newRootCmd(&app{stdout: io.Discard, stderr: io.Discard, getenv: emptyEnv}), func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Value.Type() == "duration" && !f.Hidden {
				flags = append(flags, path(c)+" --"+f.Name)
			}
		})
	})
	want := []string{"serve --cache-ttl", "serve --stale-if-error", "serve --max-staleness", "serve --poll-interval",
		"serve --usage-flush-interval", "keys create --expires", "keys rotate --grace", "keys rotate --expires"}
	if !slices.Equal(flags, want) {
		t.Errorf("duration flags: %q, want %q", flags, want)
	}
	type flagCase struct{ cmd, flag, value string }
	cases := []flagCase{{"", "--cache-ttl", "1x"}} // serve's flags on the root, before any command word
	for _, f := range flags {
		cmd, flag, _ := strings.Cut(f, " --")
		cases = append(cases, flagCase{cmd, "--" + flag, "30x"})
	}
	// What each command needs besides the flag, so that only the flag is wrong.
	rest := map[string][]string{"keys create": {"--client", "bot"}, "keys rotate": {"1"}}
	for _, tc := range cases {
		t.Run(tc.cmd+tc.flag, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			args := slices.Concat(strings.Fields(tc.cmd), []string{tc.flag, tc.value}, rest[tc.cmd], []string{"--database-url", "sqlite:" + filepath.Join(dir, "k.db")})
			want := "example: " + prefix(tc.cmd) + "invalid " + tc.flag + ` "` + tc.value + `": want a duration such as 90s, 720h or 30d` + "\n"
			r := runBinary(t, dir, baseEnv(), args...)
			if r.code != 2 || r.stdout != "" || r.stderr != want {
				t.Fatalf("got %v\nwant exit 2 and stderr %q", r, want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("a refused command created %v", entries)
			}
		})
	}
}

// TestDurationFlagsTakeDays: days work in every duration flag.
func TestDurationFlagsTakeDays(t *testing.T) {
	t.Parallel()
	var served *serveOptions
	serve := newCmdServe(&app{}, func(_ context.Context, o *serveOptions) error { served = o; return nil })
	serve.SetArgs([]string{"--cache-ttl", "1d", "--stale-if-error", "1d12h", "--usage-flush-interval", "0.5d", "--poll-interval", "0.25s", "--max-staleness", "1s"})
	if err := serve.Execute(); err != nil {
		t.Fatal(err)
	}
	if served.cacheTTL != day || served.staleIfError != 36*time.Hour || served.usageFlushInterval != 12*time.Hour || served.pollInterval != 250*time.Millisecond {
		t.Errorf("serve: %+v", served)
	}

	var created *keysCreateOptions
	create := newCmdKeysCreate(&app{}, func(_ context.Context, o *keysCreateOptions) error { created = o; return nil })
	create.SetArgs([]string{"--client", "bot", "--expires", "30d"})
	if err := create.Execute(); err != nil || created.expires != 30*day || !created.expiresSet || created.expiresNever {
		t.Errorf("keys create --expires 30d: %+v, %v", created, err)
	}
	create = newCmdKeysCreate(&app{}, func(_ context.Context, o *keysCreateOptions) error { created = o; return nil })
	create.SetArgs([]string{"--client", "bot", "--expires", "never"})
	if err := create.Execute(); err != nil || !created.expiresSet || !created.expiresNever {
		t.Errorf("keys create --expires never: %+v, %v", created, err)
	}

	var rotated *keysRotateOptions
	rotate := newCmdKeysRotate(&app{}, func(_ context.Context, o *keysRotateOptions) error { rotated = o; return nil })
	rotate.SetArgs([]string{"7", "--grace", "2d", "--expires", "90d"})
	if err := rotate.Execute(); err != nil || rotated.grace != 2*day || rotated.expires != 90*day || !rotated.expiresSet {
		t.Errorf("keys rotate: %+v, %v", rotated, err)
	}
}
