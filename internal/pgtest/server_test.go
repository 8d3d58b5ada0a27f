//go:build unix

package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestServerStopStart(t *testing.T) {
	t.Parallel()
	srv := StartServer(t)
	if want := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", srv.Port()); srv.URL() != want {
		t.Fatalf("URL() = %q, want %q", srv.URL(), want)
	}
	port := srv.Port()

	db := openDB(t, srv.URL())
	selectOne(t, db)
	// A database made before the outage must still be dropped afterwards:
	// its cleanup's admin pool has to survive the restart.
	before := NewDatabaseOn(t, srv.URL())
	// What was committed right before the outage is still there after it.
	bdb := openDB(t, before)
	if _, err := bdb.ExecContext(ctxTimeout(t), "CREATE TABLE kept (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := bdb.ExecContext(ctxTimeout(t), "INSERT INTO kept VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
	}

	srv.Stop(t)
	srv.Stop(t) // stopping a stopped server is a no-op
	if err := ping(srv.URL()); err == nil {
		t.Fatal("a new connection succeeded while the server was stopped")
	}
	if _, err := db.ExecContext(ctxTimeout(t), "SELECT 1"); err == nil {
		t.Fatal("a pooled connection still worked while the server was stopped")
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Fatalf("port %d still accepts TCP connections while the server is stopped", port)
	}

	srv.Start(t)
	if srv.Port() != port {
		t.Fatalf("Port() after Start = %d, want %d", srv.Port(), port)
	}
	if err := ping(srv.URL()); err != nil {
		t.Fatalf("ping after Start: %v", err)
	}
	// The pool from before the outage reconnects.
	if _, err := db.ExecContext(ctxTimeout(t), "SELECT 1"); err != nil {
		t.Fatalf("pool from before the outage, after Start: %v", err)
	}
	var kept int
	if err := bdb.QueryRowContext(ctxTimeout(t), "SELECT count(*) FROM kept").Scan(&kept); err != nil || kept != 100 {
		t.Fatalf("rows committed before the outage, after it: %d (%v), want 100", kept, err)
	}

	for _, u := range []string{before, NewDatabaseOn(t, srv.URL())} {
		d := openDB(t, u)
		if _, err := d.ExecContext(ctxTimeout(t), "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)"); err != nil {
			t.Fatalf("use database %s: %v", u, err)
		}
		selectOne(t, d)
	}
}

func TestLaunchStopRemovesEverything(t *testing.T) {
	t.Parallel()
	srv, stop, err := Launch(context.Background(), t.Logf)
	if errors.Is(err, ErrNoBinaries) && !Required() {
		t.Skipf("SKIPPING POSTGRESQL TEST: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(srv.URL()); err != nil {
		_ = stop()
		t.Fatalf("ping: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if err := ping(srv.URL()); err == nil {
		t.Fatal("server still answers after stop")
	}
	if _, err := os.Stat(srv.root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary directory %s still there after stop (stat: %v)", srv.root, err)
	}
	if err := srv.start(context.Background()); err == nil {
		t.Fatal("start after the final stop succeeded")
	}
}

func TestVersionOrder(t *testing.T) {
	paths := []string{
		"/usr/lib/postgresql/9.6/bin",
		"/usr/lib/postgresql/16/bin",
		"/usr/lib/postgresql/10/bin",
		"/usr/lib/postgresql/15/bin",
	}
	for i := 0; i < len(paths); i++ {
		for j := i + 1; j < len(paths); j++ {
			a, b := versionOf(paths[i]), versionOf(paths[j])
			if compareVersions(a, b) == 0 {
				t.Errorf("versions of %s and %s compare equal", paths[i], paths[j])
			}
		}
	}
	sortNewestFirst(paths)
	got := strings.Join(paths, " ")
	want := "/usr/lib/postgresql/16/bin /usr/lib/postgresql/15/bin /usr/lib/postgresql/10/bin /usr/lib/postgresql/9.6/bin"
	if got != want {
		t.Errorf("order = %s, want %s", got, want)
	}
	if v := versionOf("/opt/homebrew/opt/postgresql@16/bin"); compareVersions(v, []int{16}) != 0 {
		t.Errorf("versionOf(postgresql@16) = %v", v)
	}
}

func openDB(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func selectOne(t *testing.T, db *sql.DB) {
	t.Helper()
	var n int
	if err := db.QueryRowContext(ctxTimeout(t), "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("SELECT 1 = %d, %v", n, err)
	}
}

func ping(url string) error {
	db, err := sql.Open("postgres", url)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStartOnTakenPort(t *testing.T) {
	t.Parallel()
	srv := StartServer(t)
	srv.Stop(t)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", srv.Port()))
	if err != nil {
		t.Fatal(err)
	}
	err = srv.start(context.Background())
	l.Close()
	if !errors.Is(err, errPortInUse) {
		t.Fatalf("start on a taken port: %v, want errPortInUse", err)
	}
	t.Logf("start on a taken port: %v", err)
	srv.Start(t)
	if err := ping(srv.URL()); err != nil {
		t.Fatalf("ping after Start: %v", err)
	}
}
