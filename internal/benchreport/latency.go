//go:build unix

package main

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// The store operations the middleware calls on a cache miss.
const (
	opClientState = "ClientState"
	opVerify      = "Verify"

	// variantDefault is a URL without binary_parameters, as
	// sqlstore.Open takes it; the others set it either way.
	variantDefault = "default URL"
	variantText    = "binary_parameters=no"
	variantBinary  = "binary_parameters=yes"
)

// latency summarises one operation's cold calls.
type latency struct {
	Op, Variant        string
	N                  int
	P50, P90, P99, Max time.Duration
	Mean               time.Duration
}

// roundTrips is what one call sends: its round trips and statements.
type roundTrips struct {
	Op, Variant string
	Trips       int
	Statements  []string
}

// explained is a query plan.
type explained struct {
	Op, Query, Args, Plan string
}

type storeVariant struct {
	name  string
	store *sqlstore.Store
}

// measureScale times the store's calls straight, with no cache: each call
// for another client or key, drawn at random over the whole set. On
// PostgreSQL two more pools, with binary_parameters=no and =yes, run the
// same calls, the three alternating call by call, and a proxy counts each
// call's round trips.
func measureScale(ctx context.Context, res *scaleResult, databaseURL string, db *sqlx.DB, clients []int64, kept []sampleKey) error {
	if len(kept) == 0 {
		return fmt.Errorf("no active key kept for Verify")
	}
	s, err := sqlstore.New(ctx, db, sqlstore.Options{})
	if err != nil {
		return err
	}
	variants := []storeVariant{{variantDefault, s}}
	if res.Dialect == "postgres" {
		for _, v := range []struct{ name, value string }{{variantText, "no"}, {variantBinary, "yes"}} {
			vdb, err := sqlstore.Open(ctx, withParam(databaseURL, "binary_parameters", v.value))
			if err != nil {
				return err
			}
			defer vdb.Close()
			vs, err := sqlstore.New(ctx, vdb, sqlstore.Options{})
			if err != nil {
				return err
			}
			variants = append(variants, storeVariant{v.name, vs})
		}
	}
	times := map[[2]string][]time.Duration{}
	call := func(v storeVariant, op string, i int) error {
		start := time.Now()
		var err error
		if op == opClientState {
			_, err = v.store.ClientState(ctx, clientName(clients[i]))
		} else {
			k := kept[i%len(kept)]
			_, err = v.store.Verify(ctx, k.client, k.token)
		}
		d := time.Since(start)
		if err != nil {
			return fmt.Errorf("%s %s: %w", v.name, op, err)
		}
		times[[2]string{op, v.name}] = append(times[[2]string{op, v.name}], d)
		return nil
	}
	for _, v := range variants { // open the pools' connections, untimed
		if _, err := v.store.ClientState(ctx, clientName(1)); err != nil {
			return err
		}
	}
	logf("%s: %d cold calls per operation and pool", res.Dialect, len(clients))
	for i := range clients {
		for _, op := range []string{opClientState, opVerify} {
			for j := range variants {
				if err := call(variants[(i+j)%len(variants)], op, i); err != nil {
					return err
				}
			}
		}
	}
	for _, op := range []string{opClientState, opVerify} {
		for _, v := range variants {
			res.Latencies = append(res.Latencies, summarise(op, v.name, times[[2]string{op, v.name}]))
		}
	}
	res.LatencyNote = fmt.Sprintf("%d calls per row, one client (or key) each, drawn at random from all %d clients (from %d sampled active keys)",
		len(clients), res.Clients, len(kept))
	if res.Dialect != "postgres" {
		return nil
	}
	if err := countRoundTrips(ctx, res, databaseURL, clientName(clients[0]), kept[0]); err != nil {
		return err
	}
	return explain(ctx, res, db, clientName(clients[len(clients)/2]), kept[len(kept)/2])
}

func summarise(op, variant string, d []time.Duration) latency {
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return latency{Op: op, Variant: variant, N: len(d), P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: d[len(d)-1], Mean: sum / time.Duration(len(d))}
}

// countRoundTrips sends one call of each operation through the wire
// proxy, with and without binary_parameters.
func countRoundTrips(ctx context.Context, res *scaleResult, databaseURL, client string, key sampleKey) error {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return err
	}
	target := u.Host
	if u.Port() == "" {
		target += ":5432"
	}
	p, err := startWireProxy(target)
	if err != nil {
		return err
	}
	defer p.close()
	u.Host = p.addr()
	for _, variant := range []string{variantDefault, variantText, variantBinary} {
		proxied := u.String()
		switch variant {
		case variantText:
			proxied = withParam(proxied, "binary_parameters", "no")
		case variantBinary:
			proxied = withParam(proxied, "binary_parameters", "yes")
		}
		db, err := sqlstore.Open(ctx, proxied)
		if err != nil {
			return err
		}
		db.SetMaxOpenConns(1)
		s, err := sqlstore.New(ctx, db, sqlstore.Options{})
		if err != nil {
			_ = db.Close()
			return err
		}
		if _, err := s.ClientState(ctx, client); err != nil { // the connection is open now
			_ = db.Close()
			return err
		}
		for _, op := range []string{opClientState, opVerify} {
			p.reset()
			if op == opClientState {
				_, err = s.ClientState(ctx, client)
			} else {
				_, err = s.Verify(ctx, key.client, key.token)
			}
			if err != nil {
				_ = db.Close()
				return err
			}
			trips, queries := p.counts()
			res.RoundTrips = append(res.RoundTrips, roundTrips{Op: op, Variant: variant, Trips: trips, Statements: queries})
		}
		_ = db.Close()
	}
	return nil
}

// explain captures EXPLAIN (ANALYZE, BUFFERS) of both operations' queries
// as the proxy saw the store send them, on a client and key of the set.
func explain(ctx context.Context, res *scaleResult, db *sqlx.DB, client string, key sampleKey) error {
	queries := map[string]string{}
	for _, rt := range res.RoundTrips {
		if rt.Variant == variantDefault && len(rt.Statements) > 0 {
			queries[rt.Op] = rt.Statements[0]
		}
	}
	conn, err := db.Connx(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, op := range []string{opClientState, opVerify} {
		q, ok := queries[op]
		if !ok {
			continue
		}
		args := "'" + client + "'"
		if op == opVerify {
			args = "'" + key.token.LookupID() + "', '" + key.client + "'"
		}
		name := "benchreport_" + strings.ToLower(op)
		if _, err := conn.ExecContext(ctx, "PREPARE "+name+" AS "+q); err != nil {
			return fmt.Errorf("prepare %s: %w", op, err)
		}
		var lines []string
		err := conn.SelectContext(ctx, &lines, "EXPLAIN (ANALYZE, BUFFERS) EXECUTE "+name+"("+args+")")
		_, _ = conn.ExecContext(ctx, "DEALLOCATE "+name)
		if err != nil {
			return fmt.Errorf("explain %s: %w", op, err)
		}
		res.Explain = append(res.Explain, explained{Op: op, Query: strings.TrimSpace(q), Args: args, Plan: strings.Join(lines, "\n")})
	}
	return nil
}
