package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/llmauth/llmauth/keystore"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // registers "postgres"
	"modernc.org/sqlite"  // registers "sqlite", pure Go
	sqlite3 "modernc.org/sqlite/lib"
)

// DefaultSQLitePath is the embedded default database file.
const DefaultSQLitePath = "llmauth.db"

// SQLiteBusyTimeout is how long a SQLite write waits for another
// connection's (or process's) write lock before it fails with SQLITE_BUSY:
// Open sets it as every connection's busy_timeout. A [Store] reads the
// busy timeout back and lets a write run that much longer than
// Options.QueryTimeout, so that it never cancels a write SQLite would still
// have let through.
const SQLiteBusyTimeout = 10 * time.Second

// Open connects to the database a URL names and checks that it answers:
//
//	postgres://… or postgresql://…   PostgreSQL through lib/pq
//	sqlite:PATH or file:PATH          a SQLite file (pure Go driver)
//
// SQLite files are opened in WAL mode with foreign keys on, a busy timeout
// ([SQLiteBusyTimeout]) and immediate write transactions, so several
// processes can share one file. The caller closes the returned pool.
func Open(ctx context.Context, databaseURL string) (*sqlx.DB, error) {
	driver, dsn, err := parseDatabaseURL(databaseURL)
	if err != nil {
		return nil, err
	}
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open: %w", err)
	}
	if driver == "postgres" {
		db.SetMaxOpenConns(20)
		db.SetMaxIdleConns(10)
	} else {
		db.SetMaxOpenConns(8)
		db.SetMaxIdleConns(8)
	}
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := ping(pctx, db); err != nil {
		_ = db.Close()
		return nil, unavailable("open", err)
	}
	return db, nil
}

// ping opens the pool's first connection. A SQLite connection runs its
// pragmas as it opens; while other processes open the same fresh file,
// switching it to WAL can fail with SQLITE_BUSY even with the busy timeout
// set (SQLite does not wait where waiting could deadlock). That is retried
// until ctx ends.
func ping(ctx context.Context, db *sqlx.DB) error {
	for {
		err := db.PingContext(ctx)
		var se *sqlite.Error
		if err == nil || !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// RedactURL returns databaseURL with any password replaced, for logs: the
// user-info password and the password and sslpassword parameters. A URL
// that does not parse is replaced whole.
//
// A password with an unescaped '#', '/' or '?' ends the URL's authority
// early, so the parser does not see it as a password: whatever stands
// between "://" and the last '@' is hidden whole then.
func RedactURL(databaseURL string) string {
	if hidden, ok := hideAuthority(databaseURL); ok {
		databaseURL = hidden // and the query's passwords below
	}
	u, err := url.Parse(databaseURL)
	if err != nil {
		return "(unparsable database url)"
	}
	q := u.Query()
	changed := false
	for _, k := range []string{"password", "sslpassword"} {
		if q.Has(k) {
			q.Set(k, "xxxxx")
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// hideAuthority replaces the user info of a URL whose last '@' the parser
// would not take as the end of the user info (an unescaped '#', '/' or '?'
// in the password), and reports whether it did.
func hideAuthority(raw string) (string, bool) {
	scheme, rest, ok := strings.Cut(raw, "://")
	at := strings.LastIndexByte(rest, '@')
	if !ok || at < 0 {
		return raw, false
	}
	cut := strings.IndexAny(rest[:at], "#/?")
	if cut < 0 || !strings.Contains(rest[:cut], ":") || strings.ContainsAny(rest[:at], "=&") {
		return raw, false // user info the parser sees, none, or an '@' in the query
	}
	return scheme + "://xxxxx@" + rest[at+1:], true
}

func parseDatabaseURL(raw string) (driver, dsn string, err error) {
	switch {
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		u, err := url.Parse(raw)
		if err != nil {
			// url.Error quotes the URL, and its cause may quote part of a
			// password (an unescaped '#' makes the rest look like a port):
			// say nothing of the text.
			return "", "", fmt.Errorf("%w: database url is not a valid URL (percent-encode '#', '/', '?' and '@' in the user name and password)", keystore.ErrInvalidInput)
		}
		if _, hidden := hideAuthority(raw); hidden {
			return "", "", fmt.Errorf("%w: database url: the password has an unescaped '#', '/' or '?' (percent-encode them)", keystore.ErrInvalidInput)
		}
		return "postgres", withBinaryParameters(raw, u), nil
	case strings.HasPrefix(raw, "sqlite:"), strings.HasPrefix(raw, "file:"):
		path := raw[strings.IndexByte(raw, ':')+1:]
		path = strings.TrimPrefix(path, "//")
		if path == "" {
			return "", "", fmt.Errorf("%w: database url %q names no file", keystore.ErrInvalidInput, raw)
		}
		// Open the file a symlink names now, so that every connection of
		// the pool opens the same file even if the link is later swapped.
		if resolved, err := filepath.EvalSymlinks(path); err == nil {
			path = resolved
		}
		if strings.ContainsAny(path, "?#") {
			return "", "", fmt.Errorf("%w: database url: a SQLite path may not contain '?' or '#'", keystore.ErrInvalidInput)
		}
		return "sqlite", sqliteDSN(path), nil
	}
	return "", "", fmt.Errorf("%w: database url must start with postgres://, postgresql://, sqlite: or file:", keystore.ErrInvalidInput)
}

// withBinaryParameters turns on lib/pq's binary_parameters unless the URL
// sets it: a query with parameters then takes one round trip (parse, bind
// and execute sent together) instead of two (a prepare, then the rest).
// The store sends no []byte parameter that a text column would receive,
// which is what the option changes besides.
func withBinaryParameters(raw string, u *url.URL) string {
	if u.Query().Has("binary_parameters") || u.Fragment != "" || strings.HasSuffix(raw, "#") {
		return raw
	}
	if u.RawQuery == "" && !strings.HasSuffix(raw, "?") {
		return raw + "?binary_parameters=yes"
	}
	return strings.TrimSuffix(raw, "&") + "&binary_parameters=yes"
}

// sqliteDSN builds the driver's DSN for a file path.
func sqliteDSN(path string) string {
	v := url.Values{}
	v.Add("_pragma", "foreign_keys(1)")
	v.Add("_pragma", "busy_timeout("+strconv.FormatInt(SQLiteBusyTimeout.Milliseconds(), 10)+")")
	v.Add("_pragma", "journal_mode(WAL)")
	v.Set("_txlock", "immediate")
	v.Set("_time_format", "sqlite")
	return "file:" + strings.ReplaceAll(path, "%", "%25") + "?" + v.Encode()
}
