package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// noDatabase is the note of a read-only command on a missing file.
func noDatabase(path string) string {
	return `no database at ` + path + ` yet, so nothing to show (nothing was created; a write command such as "clients create" creates it, or set --database-url)` + "\n"
}

// TestReadOnlyMissingDatabase: a command that only reads, on a SQLite file
// that does not exist, answers exactly as on an empty database, names the
// file as resolved on stderr, and creates nothing.
func TestReadOnlyMissingDatabase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	other := t.TempDir()
	// What each command says on an empty database that exists.
	empty := newCLI(t, "sqlite:"+filepath.Join(t.TempDir(), "empty.db"))
	empty.ok("migrate")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		path string // as the note names it
	}{
		{"default", baseEnv(), nil, filepath.Join(dir, "llmauth.db")},
		{"relative flag", baseEnv(), []string{"--database-url", "sqlite:sub/../x.db"}, filepath.Join(dir, "x.db")},
		{"file url", baseEnv(), []string{"--database-url", "file://" + filepath.Join(other, "y.db")}, filepath.Join(other, "y.db")},
		{"environment", baseEnv(envDatabaseURL + "=sqlite:" + filepath.Join(other, "z.db")), nil, filepath.Join(other, "z.db")},
		{"missing directory", baseEnv(), []string{"--database-url", "sqlite:" + filepath.Join(other, "no", "dir", "w.db")}, filepath.Join(other, "no", "dir", "w.db")},
	} {
		for _, cmd := range [][]string{{"clients", "list"}, {"clients", "list", "--json"}, {"keys", "list", "--client", "bot"}} {
			t.Run(tc.name+"/"+strings.Join(cmd, "_"), func(t *testing.T) {
				want := empty.run(cmd...)
				r := runBinary(t, dir, tc.env, append(cmd, tc.args...)...)
				if r.code != want.code || r.stdout != want.stdout || r.stderr != noDatabase(tc.path)+want.stderr {
					t.Fatalf("got %v\nwant %v, after the note %q", r, want, noDatabase(tc.path))
				}
				if entries, _ := os.ReadDir(dir); len(entries) != 0 {
					t.Errorf("the working directory is not empty: %v", entries)
				}
				if _, err := os.Stat(tc.path); err == nil {
					t.Errorf("%s was created", tc.path)
				}
			})
		}
	}
}

// TestWriteCreatesDatabase: a command that writes creates a missing SQLite
// file and says so on stderr, once: not when the file exists.
func TestWriteCreatesDatabase(t *testing.T) {
	t.Parallel()
	for _, first := range [][]string{{"migrate"}, {"clients", "create", "bot"}, {"keys", "revoke", "1"}} {
		t.Run(strings.Join(first, "_"), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			db := filepath.Join(dir, "llmauth.db")
			r := runBinary(t, dir, baseEnv(), first...)
			want := "created SQLite database " + db
			switch {
			case strings.Count(r.stderr, "created SQLite database") != 1 || !strings.Contains(r.stderr, want):
				t.Errorf("first write: want %q on stderr, once; got %v", want, r)
			case r.code == 0 && !strings.HasSuffix(r.stderr, want+"\n"):
				t.Errorf("first write succeeded: want %q last; got %v", want, r)
			case r.code != 0 && (strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "("+want+")\n")):
				t.Errorf("first write failed: want one line ending with (%s); got %v", want, r)
			}
			if _, err := os.Stat(db); err != nil {
				t.Fatalf("the database was not created: %v", err)
			}
			r = runBinary(t, dir, baseEnv(), "clients", "create", "other")
			if r.code != 0 || strings.Contains(r.stderr, "created SQLite database") {
				t.Errorf("on an existing file: %v", r)
			}
			if r := runBinary(t, dir, baseEnv(), "clients", "list"); r.code != 0 || !strings.Contains(r.stdout, "other") {
				t.Errorf("clients list after the file was created: %v", r)
			}
		})
	}

	// serve logs it, through its logger.
	dir := t.TempDir()
	db := filepath.Join(dir, "served.db")
	s := startServer(t, dir, baseEnv(), "--database-url", "sqlite:"+db, "--log-format", "json")
	if out := s.stderr.String(); strings.Count(out, `"msg":"created SQLite database `+db+`"`) != 1 {
		t.Errorf("serve on a new file does not log its creation once:\n%s", out)
	}
}

// TestDatabaseErrorsNamePath: a SQLite file that cannot be opened is named
// by its absolute path, whatever the reason.
func TestDatabaseErrorsNamePath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	missingDir := filepath.Join(dir, "no", "such", "dir")
	for _, tc := range []struct {
		name   string
		url    string
		args   []string
		stderr string // the whole line, or its beginning when it ends in "…"
	}{
		{"directory, read", "sqlite:" + dir, []string{"clients", "list"},
			"example: database " + dir + " is a directory, not a SQLite file"},
		{"directory, write", "sqlite:" + dir, []string{"clients", "create", "bot"},
			"example: database " + dir + " is a directory, not a SQLite file"},
		{"directory, serve", "sqlite:" + dir, []string{"serve", "--addr", "127.0.0.1:0"},
			"example: database " + dir + " is a directory, not a SQLite file"},
		{"missing directory, write", "sqlite:" + filepath.Join(missingDir, "x.db"), []string{"migrate"},
			"example: cannot create database " + filepath.Join(missingDir, "x.db") + ": directory " + missingDir + " does not exist"},
		{"missing directory, serve", "sqlite:" + filepath.Join(missingDir, "x.db"), []string{"serve", "--addr", "127.0.0.1:0"},
			"example: cannot create database " + filepath.Join(missingDir, "x.db") + ": directory " + missingDir + " does not exist"},
		{"not a database", "sqlite:" + garbage, []string{"clients", "list"},
			"example: database " + garbage + ": …"},
		{"not a database, serve", "sqlite:" + garbage, []string{"serve", "--addr", "127.0.0.1:0"},
			"example: database " + garbage + ": …"},
		{"postgres", "postgres://user:hunter2@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", []string{"clients", "list"},
			"example: database postgres://user:xxxxx@127.0.0.1:1/x?sslmode=disable&connect_timeout=2: …"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runBinary(t, t.TempDir(), baseEnv(), append(tc.args, "--database-url", tc.url)...)
			if r.code != 1 || r.stdout != "" {
				t.Fatalf("want exit 1, nothing on stdout; got %v", r)
			}
			oneLineOfStderr(t, r)
			got := strings.TrimSuffix(r.stderr, "\n")
			if prefix, ok := strings.CutSuffix(tc.stderr, "…"); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("stderr %q does not begin with %q", got, prefix)
				}
			} else if got != tc.stderr {
				t.Errorf("stderr %q, want %q", got, tc.stderr)
			}
			if strings.Contains(r.stderr, "hunter2") {
				t.Errorf("stderr leaks the password: %q", r.stderr)
			}
		})
	}
}

// TestDatabaseName: the name errors give a database, password hidden even
// where the URL does not parse.
func TestDatabaseName(t *testing.T) {
	t.Parallel()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ url, want string }{
		{"", filepath.Join(wd, "llmauth.db")},
		{"sqlite:x.db", filepath.Join(wd, "x.db")},
		{"file:///var/lib/a.db", "/var/lib/a.db"},
		{"sqlite:x.db?mode=ro", "sqlite:x.db?mode=ro"},
		{"postgres://u:hunter2@db:5432/app", "postgres://u:xxxxx@db:5432/app"},
		{"postgres://db/app?password=hunter2", "postgres://db/app?password=xxxxx"},
		{"postgres://u:hun#ter2@db/app", "postgres://xxxxx@db/app"},
		{"postgres://u:hunter2@127.0.0.1:notaport/x?password=hunter2", "postgres://xxxxx@127.0.0.1:notaport/x"},
		{"postgresql://u:hunter2@[::1/x", "postgresql://xxxxx@[::1/x"},
	} {
		a := &app{getenv: emptyEnv, databaseFlag: tc.url}
		if got := a.databaseName(); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.url, got, tc.want)
		}
	}
}

// TestErrorsNamePostgresURLWithoutPassword: a PostgreSQL URL with no
// password is named as it is, so that the user can tell which database
// failed.
func TestErrorsNamePostgresURLWithoutPassword(t *testing.T) {
	t.Parallel()
	url := "postgres://postgres@127.0.0.1:1/does_not_exist?sslmode=disable&connect_timeout=2"
	r := runBinary(t, t.TempDir(), baseEnv(), "clients", "list", "--database-url", url)
	if r.code != 1 || !strings.Contains(r.stderr, "database "+url+":") {
		t.Fatalf("got %v, want exit 1 naming %s", r, url)
	}
}
