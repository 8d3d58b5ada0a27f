package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// envDatabaseURL names the database when --database-url is not given.
const envDatabaseURL = "DATABASE_URL"

// app is what every command of one invocation shares: its streams, its
// environment and the --database-url flag. Each command's options embed
// it; nothing of it outlives run.
type app struct {
	stdout io.Writer // only the documented results, and help asked for
	stderr io.Writer // everything else
	getenv func(string) string
	// databaseFlag is --database-url, a flag of every command.
	databaseFlag string
	// created is the SQLite file this command created, if it did: said on
	// stderr once the command is done, within its error line if it failed.
	created string
}

// databaseURL returns the URL of the database to use and whether it is
// the embedded default: --database-url, else $DATABASE_URL, else the
// SQLite file llmauth.db in the working directory.
func (a *app) databaseURL() (url string, embedded bool) {
	if a.databaseFlag != "" {
		return a.databaseFlag, false
	}
	if u := a.getenv(envDatabaseURL); u != "" {
		return u, false
	}
	return "sqlite:" + sqlstore.DefaultSQLitePath, true
}

// access is what a command does with the database.
type access int

const (
	// reads: the command only reads. A SQLite file that does not exist is
	// an error, not created.
	reads access = iota
	// writes: the command writes, and creates a SQLite file that does not
	// exist yet (and says so on stderr).
	writes
)

// openStore connects to the database, applies pending migrations and
// returns the store. The caller closes the pool. Every error names the
// database.
func (a *app) openStore(ctx context.Context, mode access) (*sqlstore.Store, *sqlx.DB, error) {
	created, err := a.prepareDatabase(mode)
	if err != nil {
		return nil, nil, err
	}
	if created != "" {
		a.created = created
	}
	url, _ := a.databaseURL()
	db, err := sqlstore.Open(ctx, url)
	if err != nil {
		return nil, nil, a.databaseError(err)
	}
	if err := sqlstore.Migrate(ctx, db); err != nil {
		_ = db.Close()
		return nil, nil, a.databaseError(err)
	}
	store, err := sqlstore.New(ctx, db, sqlstore.Options{})
	if err != nil {
		_ = db.Close()
		return nil, nil, a.databaseError(err)
	}
	return store, db, nil
}

// errNoDatabase: a read-only command was pointed at a SQLite file that does
// not exist.
var errNoDatabase = errors.New("no database")

// withStore opens the store, runs fn and closes the pool. An error of fn
// that the database caused names the database.
//
// A command that only reads, pointed at a SQLite file that does not
// exist, answers as an empty database would ("no clients yet", an unknown
// client) and says on stderr which file it looked for; it creates
// nothing there: a fresh database needs no separate step, and a command
// run from the wrong directory does not leave a stray file behind.
func (a *app) withStore(ctx context.Context, mode access, fn func(*sqlstore.Store) error) error {
	store, db, err := a.openStore(ctx, mode)
	if errors.Is(err, errNoDatabase) {
		return a.withEmptyStore(ctx, fn)
	}
	if err != nil {
		return err
	}
	defer db.Close()
	return a.nameDatabase(fn(store))
}

// withEmptyStore runs fn against an empty database in a temporary
// folder, removed afterwards.
func (a *app) withEmptyStore(ctx context.Context, fn func(*sqlstore.Store) error) error {
	url, _ := a.databaseURL()
	path, _ := sqlitePath(url)
	abs, _ := filepath.Abs(path)
	fmt.Fprintf(a.stderr, "no database at %s yet, so nothing to show (nothing was created; a write command such as \"clients create\" creates it, or set --database-url)\n", abs)
	dir, err := os.MkdirTemp("", "llmauth-empty-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	empty := *a
	empty.databaseFlag = "sqlite:" + filepath.Join(dir, "empty.db")
	empty.stderr = io.Discard // not "created SQLite database" for this one
	store, db, err := empty.openStore(ctx, writes)
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(store)
}

// nameDatabase prefixes err with the database when the database caused
// it (keystore.ErrUnavailable), and returns any other error as it is.
func (a *app) nameDatabase(err error) error {
	if errors.Is(err, keystore.ErrUnavailable) {
		return a.databaseError(err)
	}
	return err
}

// databaseError prefixes err with the database it is about.
func (a *app) databaseError(err error) error {
	return fmt.Errorf("database %s: %w", a.databaseName(), err)
}

// databaseName names the database for messages: a SQLite file by its
// absolute path, any other database by its URL with the password hidden.
func (a *app) databaseName() string {
	url, _ := a.databaseURL()
	if path, ok := sqlitePath(url); ok {
		if abs, err := filepath.Abs(path); err == nil {
			return abs
		}
		return path
	}
	if r := sqlstore.RedactURL(url); r != "(unparsable database url)" {
		return r
	}
	// Unparsable: hide everything up to the last '@' (a password may hold
	// any character) and the query (it may carry password=).
	if scheme, rest, ok := strings.Cut(url, "://"); ok {
		if at := strings.LastIndexByte(rest, '@'); at >= 0 {
			rest = "xxxxx" + rest[at:]
		}
		rest, _, _ = strings.Cut(rest, "?")
		return scheme + "://" + rest
	}
	return "(unparsable database url)"
}

// sqlitePath returns the file a sqlite: or file: URL names, as sqlstore.Open
// reads it, and whether the URL is one with a path Open accepts.
func sqlitePath(url string) (string, bool) {
	for _, scheme := range []string{"sqlite:", "file:"} {
		if p, ok := strings.CutPrefix(url, scheme); ok {
			p = strings.TrimPrefix(p, "//")
			return p, p != "" && !strings.ContainsAny(p, "?#")
		}
	}
	return "", false
}

// prepareDatabase checks a SQLite file before it is opened, so that the
// driver neither creates a file a read-only command was pointed at by
// mistake nor fails with a message that does not name the file. A
// command that writes creates the file when it does not exist, and
// created is its absolute path then. Other databases pass unchecked.
func (a *app) prepareDatabase(mode access) (created string, err error) {
	url, _ := a.databaseURL()
	path, ok := sqlitePath(url)
	if !ok {
		return "", nil // not SQLite, or a URL Open refuses with its own reason
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("database %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case err == nil && fi.IsDir():
		return "", fmt.Errorf("database %s is a directory, not a SQLite file", abs)
	case err == nil:
		return "", nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("database %s: %w", abs, pathErrorCause(err))
	case mode == reads:
		return abs, errNoDatabase
	}
	dir := filepath.Dir(abs)
	switch d, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("cannot create database %s: directory %s does not exist", abs, dir)
	case err != nil:
		return "", fmt.Errorf("cannot create database %s: %w", abs, err)
	case !d.IsDir():
		return "", fmt.Errorf("cannot create database %s: %s is not a directory", abs, dir)
	}
	// O_EXCL: of several commands started together on a new file,
	// exactly one created it. SQLite reads an empty file as an empty
	// database.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cannot create database %s: %w", abs, pathErrorCause(err))
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("cannot create database %s: %w", abs, pathErrorCause(err))
	}
	return abs, nil
}

// pathErrorCause strips the operation and path from an *fs.PathError,
// whose path the caller's message already names.
func pathErrorCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// redact removes the database URL, which may carry a password, from a
// message: a URL the parser rejects is echoed in its error, verbatim or
// quoted.
func (a *app) redact(msg string) string {
	u, _ := a.databaseURL()
	if !strings.Contains(u, "@") {
		return msg
	}
	redacted := sqlstore.RedactURL(u)
	if redacted == "(unparsable database url)" {
		redacted = "<database url>" // cannot tell the password apart
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

// printJSON writes v as indented JSON on stdout.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// formatTime prints a time in UTC, or none when it is nil.
func formatTime(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(time.RFC3339)
}

// resultWriter is stdout as the commands of one invocation see it: its
// errors say that stdout failed, and it keeps the first one, so that a
// command whose results were lost (help and --version included, whose
// writes cobra does not check) fails.
type resultWriter struct {
	w   io.Writer
	err error
}

func (r *resultWriter) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	if err != nil {
		err = fmt.Errorf("writing to stdout: %w", err)
		if r.err == nil {
			r.err = err
		}
	}
	return n, err
}

// stdoutErr is the first error writing to stdout, if any.
func (a *app) stdoutErr() error {
	if r, ok := a.stdout.(*resultWriter); ok {
		return r.err
	}
	return nil
}

// stdoutDiscards reports whether stdout is the null device, where a token
// printed once would be lost. A stdout that was closed when the program
// started is the null device too: the Go runtime opens it there.
func (a *app) stdoutDiscards() bool {
	w := a.stdout
	if r, ok := w.(*resultWriter); ok {
		w = r.w
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err == nil && os.SameFile(fi, null)
}
