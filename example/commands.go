package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

// options holds the values of every flag of every command. Each command
// registers only the flags it reads.
type options struct {
	databaseURL string

	// serve
	addr               string
	cacheTTL           time.Duration
	staleIfError       time.Duration
	maxStaleness       time.Duration
	pollInterval       time.Duration
	usageFlushInterval time.Duration
	logLevel           string
	logFormat          string
	trustedProxies     cidrList

	// clients and keys
	json        bool
	client      string
	keyName     string
	description string
	expires     optionalDuration
	grace       time.Duration
}

func defaultOptions() options {
	return options{
		addr:               "127.0.0.1:8080",
		cacheTTL:           30 * time.Second,
		maxStaleness:       keystore.StalenessPromise,
		pollInterval:       500 * time.Millisecond,
		usageFlushInterval: 5 * time.Second,
		logLevel:           "info",
		logFormat:          "text",
	}
}

// Flags are registered with the current value as default, so that a value
// given before the command word survives the command's own flag set.

func (o *options) registerDatabase(fs *flag.FlagSet) {
	fs.StringVar(&o.databaseURL, "database-url", o.databaseURL,
		"database `URL`: postgres://…, postgresql://…, sqlite:PATH or file:PATH (default $DATABASE_URL, else sqlite:llmauth.db)")
}

func (o *options) registerServe(fs *flag.FlagSet) {
	fs.StringVar(&o.addr, "addr", o.addr, "listen on `HOST:PORT` (port 0 picks a free port; the log line \"listening on\" shows it)")
	fs.DurationVar(&o.cacheTTL, "cache-ttl", o.cacheTTL, "trust a cached client state or verified key for `DURATION` without asking the database; a change ends it early")
	fs.DurationVar(&o.staleIfError, "stale-if-error", o.staleIfError, "while the database is down or cut off, serve cached decisions up to `DURATION` past --cache-ttl, giving up the one-second bound on changes (0: never)")
	fs.DurationVar(&o.maxStaleness, "max-staleness", o.maxStaleness, "answer from the cache only while the change log was read successfully within `DURATION` (at most 1s); past it, ask the database or answer 503")
	fs.DurationVar(&o.pollInterval, "poll-interval", o.pollInterval, "poll the change log every `DURATION`: the bound on propagation when PostgreSQL notifications are unavailable, and the only path on SQLite")
	fs.DurationVar(&o.usageFlushInterval, "usage-flush-interval", o.usageFlushInterval, "write keys' last_used_at every `DURATION` (and once more at shutdown)")
	fs.StringVar(&o.logLevel, "log-level", o.logLevel, "log `LEVEL`: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", o.logFormat, "log `FORMAT`: text or json (logs go to stderr)")
	fs.Var(&o.trustedProxies, "trusted-proxy", "trust X-Forwarded-For from proxies in this `CIDR` (repeatable); without it the peer address is the client IP")
}

// cidrList is a repeatable flag of CIDR ranges.
type cidrList []*net.IPNet

func (l *cidrList) String() string {
	if l == nil {
		return ""
	}
	s := make([]string, len(*l))
	for i, n := range *l {
		s[i] = n.String()
	}
	return strings.Join(s, ",")
}

func (l *cidrList) Set(v string) error {
	_, n, err := net.ParseCIDR(v)
	if err != nil {
		return fmt.Errorf("not a CIDR range like 10.0.0.0/8")
	}
	*l = append(*l, n)
	return nil
}

// command is one leaf command of the CLI.
type command struct {
	// path is the command as typed, "keys create".
	path string
	// synopsis follows the path in the usage line.
	synopsis string
	// args names the positional arguments, all required.
	args []string
	// summary is one line for the command list.
	summary string
	// details is the rest of the help text.
	details string
	// flags registers the command's own flags.
	flags func(o *options, fs *flag.FlagSet)
	// run runs the command with its positional arguments.
	run func(ctx context.Context, a *app, args []string) error
}

// line is the command as typed with its synopsis: "keys revoke ID".
func (c *command) line() string {
	return strings.TrimSpace(c.path + " " + c.synopsis)
}

// commands lists every leaf command, in help order.
func commands() []*command {
	return append([]*command{serveCommand(), migrateCommand()}, append(cliCommands(), versionCommand())...)
}

func findCommand(path string) *command {
	for _, c := range commands() {
		if c.path == path {
			return c
		}
	}
	return nil
}

// subcommands returns the names of group's subcommands.
func subcommands(group string) []string {
	var out []string
	for _, c := range commands() {
		if name, ok := strings.CutPrefix(c.path, group+" "); ok {
			out = append(out, name)
		}
	}
	return out
}

// commandFlags returns cmd's flag set, with --database-url.
func (a *app) commandFlags(cmd *command) *flag.FlagSet {
	fs := newFlagSet("example " + cmd.path)
	a.opts.registerDatabase(fs)
	if cmd.flags != nil {
		cmd.flags(&a.opts, fs)
	}
	return fs
}

// help answers "example help [COMMAND...]".
func (a *app) help(args []string) error {
	path := strings.Join(args, " ")
	switch path {
	case "":
		a.printTopHelp()
	case "clients", "keys":
		a.printGroupHelp(path)
	default:
		cmd := findCommand(path)
		if cmd == nil {
			return usagef("help: unknown command %q (see example --help)", path)
		}
		a.printCommandHelp(cmd)
	}
	return nil
}

const databaseHelp = `Database (every command; pending migrations are applied first):
  --database-url URL, else $DATABASE_URL, else the embedded default: the
  SQLite file llmauth.db in the working directory.
    postgres://… or postgresql://…   PostgreSQL
    sqlite:PATH or file:PATH          SQLite file (several processes may share it)
`

const exitHelp = `Flags may come before or after arguments; -flag and --flag are the same.
Only documented results (and help asked for) go to stdout; messages go to stderr.
Exit status: 0 success; 2 bad usage or bad input (one-line reason on stderr);
1 any other failure (for example an unreachable database).
`

func (a *app) printTopHelp() {
	// Help that was asked for is the result: stdout, so that it pages.
	w := a.stdout
	fmt.Fprint(w, `example: the llmauth example server and its admin CLI.

LLM clients are served at /v1/clients/NAME/…. A client with no active API key
is open to anonymous callers; once it has one, every call needs
"Authorization: Bearer TOKEN" with a valid key of that client.

Usage:
  example [--database-url URL] COMMAND [flags] [arguments]
  example [serve flags]          with no command: serve

Commands:
`)
	for _, c := range commands() {
		line := c.path
		if c.synopsis != "" {
			line += " " + c.synopsis
		}
		fmt.Fprintf(w, "  %s\n        %s\n", line, c.summary)
	}
	fmt.Fprintf(w, "  help [COMMAND]\n        show a command's help\n\n%s\n%s\nRun \"example COMMAND --help\" for a command's flags.\n", databaseHelp, exitHelp)
}

func (a *app) printGroupHelp(group string) {
	// Help that was asked for is the result: stdout, so that it pages.
	w := a.stdout
	fmt.Fprintf(w, "Usage: example %s SUBCOMMAND [flags] [arguments]\n\nSubcommands:\n", group)
	for _, c := range commands() {
		if strings.HasPrefix(c.path, group+" ") {
			fmt.Fprintf(w, "  %s\n        %s\n", c.line(), c.summary)
		}
	}
	fmt.Fprintf(w, "\n%s\n%s\nRun \"example %s SUBCOMMAND --help\" for a subcommand's flags.\n", databaseHelp, exitHelp, group)
}

func (a *app) printCommandHelp(cmd *command) {
	// Help that was asked for is the result: stdout, so that it pages.
	w := a.stdout
	fmt.Fprintf(w, "Usage: example %s\n\n%s\n", cmd.line(), upperFirst(cmd.summary)+".")
	if cmd.details != "" {
		fmt.Fprintf(w, "\n%s", cmd.details)
	}
	fmt.Fprint(w, "\nFlags:\n")
	printFlags(w, a.commandFlags(cmd))
	fmt.Fprintf(w, "\n%s\n%s", databaseHelp, exitHelp)
}

// printFlags lists a flag set's flags in the --name form.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		head := "  --" + f.Name
		if name != "" {
			head += " " + name
		}
		switch {
		case f.Name == "database-url", f.DefValue == "", f.DefValue == "0", f.DefValue == "0s", f.DefValue == "false":
			// No default worth showing; a URL given earlier may hold a
			// password.
		default:
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "%s\n        %s\n", head, usage)
	})
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
