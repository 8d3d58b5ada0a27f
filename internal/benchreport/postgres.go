//go:build unix

package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	_ "github.com/lib/pq" // registers "postgres"
)

// postgres is the administrative connection to the PostgreSQL server:
// it creates the report's databases, with random names as the tests'
// do (internal/pgtest), and drops each when done.
type postgres struct {
	adminURL string
	admin    *sql.DB

	mu      sync.Mutex
	created []string
}

func newPostgres(ctx context.Context, adminURL string) (*postgres, error) {
	admin, err := sql.Open("postgres", adminURL)
	if err != nil {
		return nil, err
	}
	admin.SetMaxOpenConns(2)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := admin.PingContext(pctx); err != nil {
		_ = admin.Close()
		return nil, fmt.Errorf("no PostgreSQL at %s (set LLMAUTH_TEST_DATABASE_URL or -database-url): %w", redact(adminURL), err)
	}
	return &postgres{adminURL: adminURL, admin: admin}, nil
}

// createDatabase creates an empty database and returns its URL.
func (p *postgres) createDatabase(ctx context.Context, purpose string) (string, error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "llmauth_bench_" + purpose + "_" + hex.EncodeToString(b[:])
	if _, err := p.admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	p.mu.Lock()
	p.created = append(p.created, name)
	p.mu.Unlock()
	u, err := url.Parse(p.adminURL)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// dropDatabase drops a database createDatabase made.
func (p *postgres) dropDatabase(databaseURL string) {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return
	}
	name := strings.TrimPrefix(u.Path, "/")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		logf("drop database %s: %v", name, err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, n := range p.created {
		if n == name {
			p.created = append(p.created[:i], p.created[i+1:]...)
			break
		}
	}
}

// xacts returns the transactions committed and rolled back in a database
// so far, as the statistics system has them: every statement run outside
// an explicit transaction is one.
func (p *postgres) xacts(ctx context.Context, databaseURL string) (int64, error) {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return 0, err
	}
	var n int64
	err = p.admin.QueryRowContext(ctx, `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1`,
		strings.TrimPrefix(u.Path, "/")).Scan(&n)
	return n, err
}

// statementCalls returns the calls pg_stat_statements counted in a
// database so far, read in that database (the view lives there): the
// reading statement itself counts once.
func statementCalls(ctx context.Context, databaseURL string) (int64, error) {
	db, err := sql.Open("postgres", databaseURL)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int64
	err = db.QueryRowContext(ctx, `SELECT COALESCE(SUM(calls), 0)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n)
	return n, err
}

// version returns the server's version string.
func (p *postgres) version(ctx context.Context) string {
	var v string
	if err := p.admin.QueryRowContext(ctx, `SHOW server_version`).Scan(&v); err != nil {
		return "unknown"
	}
	var buffers string
	_ = p.admin.QueryRowContext(ctx, `SHOW shared_buffers`).Scan(&buffers)
	return "PostgreSQL " + v + " (shared_buffers " + buffers + ")"
}

// close drops whatever is left and closes the connection.
func (p *postgres) close() {
	p.mu.Lock()
	left := append([]string(nil), p.created...)
	p.mu.Unlock()
	for _, name := range left {
		u, _ := url.Parse(p.adminURL)
		u.Path = "/" + name
		p.dropDatabase(u.String())
	}
	_ = p.admin.Close()
}

// withParam returns databaseURL with one more query parameter.
func withParam(databaseURL, key, value string) string {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return databaseURL
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparsable URL)"
}
