package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/jmoiron/sqlx"

	"github.com/llmauth/llmauth/keystore"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // anything that is not the caller's mistake
	exitUsage   = 2 // bad usage or bad input
)

// envDatabaseURL names the database when --database-url is not given.
const envDatabaseURL = "DATABASE_URL"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills the process the
		// default way instead of waiting for a graceful shutdown.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// app is one invocation: its streams, its environment and the values of
// its flags. Nothing of it outlives run.
type app struct {
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	opts   options
}

// run executes the command line args and returns the exit code. ctx ends
// on SIGINT or SIGTERM.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr, getenv: getenv, opts: defaultOptions()}
	err := a.dispatch(ctx, args)
	code := exitCode(err)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, "example: "+oneLine(a.redact(err.Error())))
	}
	return code
}

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCode maps an error to the process's exit code: the caller's mistakes
// (usage, and every keystore error about the input) are 2, the rest 1.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue),
		errors.Is(err, keystore.ErrInvalidName),
		errors.Is(err, keystore.ErrInvalidInput),
		errors.Is(err, keystore.ErrClientExists),
		errors.Is(err, keystore.ErrUnknownClient),
		errors.Is(err, keystore.ErrKeyNotFound):
		return exitUsage
	}
	return exitFailure
}

// oneLine keeps an error message on one line, as the contract promises.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// redact removes the database URL, which may carry a password, from a
// message: a URL the parser rejects is echoed in its error, verbatim or
// quoted.
func (a *app) redact(msg string) string {
	u, _ := a.databaseURL()
	if !strings.Contains(u, "@") {
		return msg
	}
	redacted := keystore.RedactURL(u)
	if redacted == u {
		redacted = "<database url>" // unparsable: cannot tell the password apart
	}
	msg = strings.ReplaceAll(msg, strconv.Quote(u), strconv.Quote(redacted))
	msg = strings.ReplaceAll(msg, u, redacted)
	// The password alone, wherever else it may appear. A very short one
	// would match ordinary words: the replacements above must do.
	if _, rest, ok := strings.Cut(u, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at > 0 {
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok && len(pw) >= 4 {
				msg = strings.ReplaceAll(msg, pw, "xxxxx")
			}
		}
	}
	return msg
}

// databaseURL returns the URL of the database to use and whether it is
// the embedded default: --database-url, else $DATABASE_URL, else the
// SQLite file llmauth.db in the working directory.
func (a *app) databaseURL() (url string, embedded bool) {
	if a.opts.databaseURL != "" {
		return a.opts.databaseURL, false
	}
	if u := a.getenv(envDatabaseURL); u != "" {
		return u, false
	}
	return "sqlite:" + keystore.DefaultSQLitePath, true
}

// openStore connects to the database, applies pending migrations and
// returns the store. The caller closes the pool.
func (a *app) openStore(ctx context.Context) (*keystore.SQLStore, *sqlx.DB, error) {
	url, _ := a.databaseURL()
	db, err := keystore.Open(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	if err := keystore.Migrate(ctx, db); err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	store, err := keystore.NewSQLStore(db, keystore.Options{})
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return store, db, nil
}

// withStore opens the store, runs fn and closes the pool.
func (a *app) withStore(ctx context.Context, fn func(*keystore.SQLStore) error) error {
	store, db, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(store)
}

// dispatch finds the command args name and runs it. Flags that every
// command knows (--database-url) and, when no command is given, the flags
// of serve may precede the command word.
func (a *app) dispatch(ctx context.Context, args []string) error {
	top := newFlagSet("example")
	a.opts.registerDatabase(top)
	a.opts.registerServe(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.printTopHelp()
			return err
		}
		return usagef("%v (see example --help)", err)
	}
	rest := top.Args()
	if len(rest) == 0 {
		return a.runCommand(ctx, findCommand("serve"), nil)
	}
	word, rest := rest[0], rest[1:]
	if word != "serve" {
		var serveOnly []string
		top.Visit(func(f *flag.Flag) {
			if f.Name != "database-url" {
				serveOnly = append(serveOnly, "--"+f.Name)
			}
		})
		if len(serveOnly) > 0 {
			return usagef("%s applies to serve only (see example --help)", strings.Join(serveOnly, ", "))
		}
	}
	switch word {
	case "help":
		return a.help(rest)
	case "clients", "keys":
		return a.dispatchGroup(ctx, word, rest)
	}
	cmd := findCommand(word)
	if cmd == nil {
		return usagef("unknown command %q (see example --help)", word)
	}
	return a.runCommand(ctx, cmd, rest)
}

// dispatchGroup runs a subcommand of "clients" or "keys".
func (a *app) dispatchGroup(ctx context.Context, group string, args []string) error {
	fs := newFlagSet("example " + group)
	a.opts.registerDatabase(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.printGroupHelp(group)
			return err
		}
		return usagef("%s: %v (see example %s --help)", group, err, group)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usagef("%s: missing subcommand: %s (see example %s --help)", group, strings.Join(subcommands(group), ", "), group)
	}
	cmd := findCommand(group + " " + rest[0])
	if cmd == nil {
		return usagef("%s: unknown subcommand %q: want %s (see example %s --help)", group, rest[0], strings.Join(subcommands(group), ", "), group)
	}
	return a.runCommand(ctx, cmd, rest[1:])
}

// runCommand parses a command's flags and arguments, in any order, and
// runs it.
func (a *app) runCommand(ctx context.Context, cmd *command, args []string) error {
	fs := a.commandFlags(cmd)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.printCommandHelp(cmd)
			return err
		}
		return usagef("%s: %v (see example %s --help)", cmd.path, err, cmd.path)
	}
	switch {
	case len(pos) < len(cmd.args):
		return usagef("%s: missing %s (usage: example %s)", cmd.path, cmd.args[len(pos)], cmd.line())
	case len(pos) > len(cmd.args):
		return usagef("%s: unexpected argument %q (usage: example %s)", cmd.path, pos[len(cmd.args)], cmd.line())
	}
	return cmd.run(ctx, a, pos)
}

// newFlagSet returns a silent flag set: errors and help are reported by
// the caller, in one line and in full respectively.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseInterleaved parses flags that may come before, between or after
// positional arguments, and returns the positional ones. After "--"
// everything is positional. A negative number ("-1") that is not a flag's
// value is positional too, so that it is refused as the bad argument it
// is, not as an unknown flag.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		k := standaloneNegative(fs, args)
		part := args
		if k >= 0 {
			part = args[:k]
		}
		p, err := parseSegment(fs, part)
		if err != nil {
			return nil, err
		}
		pos = append(pos, p...)
		if k < 0 {
			return pos, nil
		}
		pos = append(pos, args[k])
		args = args[k+1:]
	}
}

// parseSegment parses flags and positional arguments in any order, up to
// the end of args, and returns the positional ones.
func parseSegment(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// standaloneNegative returns the index of the first negative number in
// args that is neither a flag's value nor after "--", or -1.
func standaloneNegative(fs *flag.FlagSet, args []string) int {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return -1
		case isNegativeNumber(a):
			return i
		case len(a) > 1 && a[0] == '-':
			name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fs.Lookup(name); f != nil && !isBoolFlag(f) {
				i++ // the next argument is this flag's value
			}
		}
	}
	return -1
}

// isBoolFlag reports whether f takes no value, as the flag package decides.
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// isNegativeNumber reports whether s is a minus sign followed by digits.
func isNegativeNumber(s string) bool {
	if len(s) < 2 || s[0] != '-' {
		return false
	}
	for _, r := range s[1:] {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
