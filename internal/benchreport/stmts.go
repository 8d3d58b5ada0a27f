//go:build unix

package main

import (
	"bufio"
	"context"
	"database/sql"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// stmtCount is what one server asked of its database during the load
// comparison.
type stmtCount struct {
	Target string
	// Requests is what the server answered (load runs and checks).
	Requests int64
	// Decisions and StoreCalls come from the example's /metrics: every
	// decision (llmauth_requests_total) and every store call the cache
	// could not avoid (llmauth_store_call_duration_seconds_count).
	Decisions, StoreCalls float64
	HasMetrics            bool
	// Statements is every statement the server's database ran over the
	// whole comparison, background work (change-log polls, last-used
	// writes) included; -1 when it is not on PostgreSQL.
	Statements int64
	// Method says where Statements comes from.
	Method  string
	Seconds float64
}

// statSnapshot holds the counters at the start of the comparison.
type statSnapshot struct {
	pgss    bool // pg_stat_statements answers
	stmts   map[string]int64
	method  map[string]string
	metrics map[string][2]float64 // decisions, store calls
}

// countStatements reads every server's counters.
func countStatements(ctx context.Context, pg *postgres, targets map[string]*loadTarget) (statSnapshot, error) {
	s := statSnapshot{stmts: map[string]int64{}, method: map[string]string{}, metrics: map[string][2]float64{}}
	for _, t := range targets {
		if strings.HasPrefix(t.databaseURL, "postgres") {
			s.pgss = pgStatStatements(ctx, t.databaseURL)
			break
		}
	}
	for name, t := range targets {
		if strings.HasPrefix(t.databaseURL, "postgres") {
			n, method, err := statements(ctx, pg, t.databaseURL, s.pgss)
			if err != nil {
				return s, err
			}
			s.stmts[name], s.method[name] = n, method
		}
		if m, ok := scrape(t.base); ok {
			s.metrics[name] = m
		}
	}
	return s, nil
}

// statementsPerRequest reads the counters again and subtracts.
func statementsPerRequest(ctx context.Context, pg *postgres, targets map[string]*loadTarget, before statSnapshot, took time.Duration) ([]stmtCount, error) {
	// A PostgreSQL backend reports its statistics within a second while
	// busy, and within ten once idle: wait for the last ones.
	const settle = 11 * time.Second
	logf("waiting %v for PostgreSQL's statistics to settle", settle)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(settle):
	}
	var out []stmtCount
	for name, t := range targets {
		c := stmtCount{Target: name, Requests: t.served, Statements: -1, Seconds: (took + settle).Seconds()}
		if n0, ok := before.stmts[name]; ok {
			n, method, err := statements(ctx, pg, t.databaseURL, before.pgss)
			if err != nil {
				return nil, err
			}
			c.Statements, c.Method = n-n0, method
		}
		if m0, ok := before.metrics[name]; ok {
			if m, ok := scrape(t.base); ok {
				c.HasMetrics = true
				c.Decisions, c.StoreCalls = m[0]-m0[0], m[1]-m0[1]
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// pgStatStatements reports whether the server has pg_stat_statements
// loaded (it needs shared_preload_libraries, which the report does not
// change); it creates the extension in the report's own database.
func pgStatStatements(ctx context.Context, databaseURL string) bool {
	db, err := sql.Open("postgres", databaseURL)
	if err != nil {
		return false
	}
	defer db.Close()
	_, _ = db.ExecContext(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
	var n int64
	return db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_statements`).Scan(&n) == nil
}

// statements counts the statements run in a database so far: calls in
// pg_stat_statements when the server has it, otherwise transactions in
// pg_stat_database (every statement outside an explicit transaction is
// one; a transaction of several statements counts once), which is read
// from the administrative connection, in another database, so that
// reading it adds nothing.
func statements(ctx context.Context, pg *postgres, databaseURL string, pgss bool) (int64, string, error) {
	if pgss {
		n, err := statementCalls(ctx, databaseURL)
		return n, "statements (pg_stat_statements calls)", err
	}
	n, err := pg.xacts(ctx, databaseURL)
	return n, "transactions (pg_stat_database xact_commit + xact_rollback)", err
}

// scrape reads the decisions and store calls from a server's /metrics;
// ok is false when it has none.
func scrape(base string) (m [2]float64, ok bool) {
	res, err := http.Get(base + "/metrics")
	if err != nil {
		return m, false
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return m, false
	}
	s := bufio.NewScanner(res.Body)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(line, "llmauth_requests_total{"):
			m[0] += v
			ok = true
		case strings.HasPrefix(line, "llmauth_store_call_duration_seconds_count{"):
			m[1] += v
		}
	}
	return m, ok
}
