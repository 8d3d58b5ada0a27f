package main

import (
	"context"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

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

// openStore connects to the database, applies pending migrations and
// returns the store. The caller closes the pool.
func (a *app) openStore(ctx context.Context) (*sqlstore.Store, *sqlx.DB, error) {
	url, _ := a.databaseURL()
	db, err := sqlstore.Open(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	if err := sqlstore.Migrate(ctx, db); err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	store, err := sqlstore.New(ctx, db, sqlstore.Options{})
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return store, db, nil
}

// withStore opens the store, runs fn and closes the pool.
func (a *app) withStore(ctx context.Context, fn func(*sqlstore.Store) error) error {
	store, db, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(store)
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
