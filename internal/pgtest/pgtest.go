// Package pgtest gives each test a PostgreSQL database of its own.
//
// Tests read LLMAUTH_TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable), create a
// database with a random name on that server and drop it when the test
// ends, so runs never see each other. When no server answers, the test is
// skipped with a loud message, or fails when LLMAUTH_TEST_REQUIRE_POSTGRES=1.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/lib/pq" // registers "postgres"
)

// DefaultURL is the server the tests use when LLMAUTH_TEST_DATABASE_URL is
// unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// ServerURL returns the administrative URL of the test server.
func ServerURL() string {
	if u := os.Getenv("LLMAUTH_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Required reports whether a missing server must fail the run.
func Required() bool { return os.Getenv("LLMAUTH_TEST_REQUIRE_POSTGRES") == "1" }

// NewDatabase creates a fresh, empty database on the test server and
// returns its URL. The database is dropped (its connections terminated)
// when t ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return newDatabaseOn(t, ServerURL())
}

// NewDatabaseOn is NewDatabase on the server adminURL names.
func NewDatabaseOn(t testing.TB, adminURL string) string {
	t.Helper()
	return newDatabaseOn(t, adminURL)
}

func newDatabaseOn(t testing.TB, adminURL string) string {
	t.Helper()
	admin, err := sql.Open("postgres", adminURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		_ = admin.Close()
		msg := fmt.Sprintf("pgtest: no PostgreSQL at %s: %v\n"+
			"    Run the tests with `go run ./internal/testrun`, which starts a throwaway server,\n"+
			"    or set LLMAUTH_TEST_DATABASE_URL. LLMAUTH_TEST_REQUIRE_POSTGRES=1 turns this skip into a failure.",
			redact(adminURL), err)
		if Required() {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING POSTGRESQL TEST: " + msg)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "llmauth_test_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		_ = admin.Close()
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}
