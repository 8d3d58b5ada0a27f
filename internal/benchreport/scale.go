//go:build unix

package main

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// The store at scale: clients and keys written in bulk, in the store's
// schema (after sqlstore.Migrate), with real tokens' digests so that
// Verify works. The layout, the same on both databases:
//
//   - clients 1..C, named client-0000001...; every tenth (id divisible
//     by 10) has no key and is open, the others share the keys;
//   - key k belongs to the ((k-1) mod keyed)-th keyed client, so each
//     keyed client has about K/(0.9 C) keys;
//   - every 20th key is revoked, every 10th expires in a year.
type scalePlan struct {
	clients, keys int
	keyed         int // clients with keys
	now           time.Time
}

func newScalePlan(clients, keys int) scalePlan {
	return scalePlan{clients: clients, keys: keys, keyed: clients - clients/10, now: time.Now().UTC().Truncate(time.Microsecond)}
}

func clientName(id int64) string { return fmt.Sprintf("client-%07d", id) }

// keyClient is the id of key k's client.
func (p scalePlan) keyClient(k int) int64 {
	idx := (k - 1) % p.keyed
	return int64(idx + idx/9 + 1) // the idx-th id not divisible by 10
}

func keyActive(k int) bool { return k%20 != 0 }

// sampleKey is a token kept for Verify, with its client.
type sampleKey struct {
	client string
	token  keystore.Token
}

// keyRows yields the api_keys rows and keeps the tokens of every
// stride-th key (1, 1+stride, ...) that is active.
func (p scalePlan) keyRows(stride int, kept *[]sampleKey) func(i int) ([]any, error) {
	expires := p.now.AddDate(1, 0, 0)
	return func(i int) ([]any, error) {
		k := i + 1
		tok, err := keystore.NewToken()
		if err != nil {
			return nil, err
		}
		var exp any
		if k%10 == 0 {
			exp = expires
		}
		// Every stride-th key from the first: with a stride that is a
		// multiple of 20, k%stride == 0 would keep only revoked keys.
		if keyActive(k) && (k-1)%stride == 0 {
			*kept = append(*kept, sampleKey{client: clientName(p.keyClient(k)), token: tok})
		}
		return []any{int64(k), tok.LookupID(), tok.Digest().String(), fmt.Sprintf("key-%d", k), "", keyActive(k), exp, p.now, p.now}, nil
	}
}

var (
	clientCols = []string{"id", "name", "locked", "created_at", "updated_at"}
	keyCols    = []string{"id", "lookup_id", "secret_digest", "name", "description", "is_active", "expires_at", "created_at", "updated_at"}
	linkCols   = []string{"id", "llm_client_id", "api_key_id", "created_at", "updated_at"}
)

// scaleResult is the store at scale on one database.
type scaleResult struct {
	Dialect          string
	Clients, Keys    int
	Open, Revoked    int
	Insert, Finish   time.Duration
	Method           string
	SizeBytes        int64
	Latencies        []latency
	RoundTrips       []roundTrips
	Explain          []explained
	LatencyNote      string
	ClientStateQuery string
}

func runScale(ctx context.Context, o options, pg *postgres, tmp, dialect string) (scaleResult, error) {
	res := scaleResult{Dialect: dialect, Clients: o.clients, Keys: o.keys}
	var url string
	if dialect == "postgres" {
		u, err := pg.createDatabase(ctx, "scale")
		if err != nil {
			return res, err
		}
		defer pg.dropDatabase(u)
		url = u
	} else {
		path := filepath.Join(tmp, "scale.db")
		defer os.Remove(path)
		url = "sqlite:" + path
	}
	db, err := sqlstore.Open(ctx, url)
	if err != nil {
		return res, err
	}
	defer db.Close()
	if err := sqlstore.Migrate(ctx, db); err != nil {
		return res, err
	}
	plan := newScalePlan(o.clients, o.keys)
	stride := max(1, o.keys/(2*o.samples))
	var kept []sampleKey
	logf("%s: writing %d clients and %d keys", dialect, o.clients, o.keys)
	began := time.Now()
	if dialect == "postgres" {
		res.Method = "COPY in one transaction, triggers off (SET LOCAL session_replication_role = replica)"
		err = copyPostgres(ctx, db, plan, stride, &kept)
	} else {
		res.Method = "multi-row INSERT in one transaction (the change-log triggers fire)"
		err = insertSQLite(ctx, db, plan, stride, &kept)
	}
	if err != nil {
		return res, err
	}
	res.Insert = time.Since(began)
	began = time.Now()
	if err := finishScale(ctx, db, dialect); err != nil {
		return res, err
	}
	res.Finish = time.Since(began)
	res.SizeBytes = databaseSize(ctx, db, dialect, url)
	res.Open = o.clients / 10
	res.Revoked = o.keys / 20
	logf("%s: written in %v, vacuumed and analysed in %v", dialect, res.Insert.Round(time.Millisecond), res.Finish.Round(time.Millisecond))

	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(kept), func(i, j int) { kept[i], kept[j] = kept[j], kept[i] })
	clients := make([]int64, o.samples)
	for i := range clients {
		clients[i] = 1 + rng.Int64N(int64(o.clients))
	}
	return res, measureScale(ctx, &res, url, db, clients, kept)
}

// copyPostgres writes the rows with COPY, the change-log triggers off:
// with them, 2.1 million rows would each write a change row and queue a
// notification on a server others share.
func copyPostgres(ctx context.Context, db *sqlx.DB, plan scalePlan, stride int, kept *[]sampleKey) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		return fmt.Errorf("switching triggers off (needs a superuser): %w", err)
	}
	copyRows := func(table string, cols []string, n int, row func(i int) ([]any, error)) error {
		stmt, err := tx.PrepareContext(ctx, pq.CopyIn(table, cols...))
		if err != nil {
			return err
		}
		for i := range n {
			args, err := row(i)
			if err != nil {
				return err
			}
			if _, err := stmt.ExecContext(ctx, args...); err != nil {
				return fmt.Errorf("copy %s: %w", table, err)
			}
		}
		if _, err := stmt.ExecContext(ctx); err != nil {
			return fmt.Errorf("copy %s: %w", table, err)
		}
		return stmt.Close()
	}
	if err := copyRows("llm_clients", clientCols, plan.clients, plan.clientRow); err != nil {
		return err
	}
	if err := copyRows("api_keys", keyCols, plan.keys, plan.keyRows(stride, kept)); err != nil {
		return err
	}
	if err := copyRows("llm_client_api_keys", linkCols, plan.keys, plan.linkRow); err != nil {
		return err
	}
	for _, t := range []string{"llm_clients", "api_keys", "llm_client_api_keys"} {
		// Ids were given explicitly: move the identities past them.
		if _, err := tx.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('`+t+`', 'id'), (SELECT MAX(id) FROM `+t+`))`); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (p scalePlan) clientRow(i int) ([]any, error) {
	return []any{int64(i + 1), clientName(int64(i + 1)), false, p.now, p.now}, nil
}

func (p scalePlan) linkRow(i int) ([]any, error) {
	return []any{int64(i + 1), p.keyClient(i + 1), int64(i + 1), p.now, p.now}, nil
}

// insertSQLite writes the rows with multi-row INSERTs in one transaction.
func insertSQLite(ctx context.Context, db *sqlx.DB, plan scalePlan, stride int, kept *[]sampleKey) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	insert := func(table string, cols []string, n int, row func(i int) ([]any, error)) error {
		const batch = 500
		tuple := "(" + strings.TrimSuffix(strings.Repeat("?,", len(cols)), ",") + ")"
		prefix := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES "
		var full *sql.Stmt
		args := make([]any, 0, batch*len(cols))
		for i := 0; i < n; i += batch {
			m := min(batch, n-i)
			args = args[:0]
			for j := range m {
				r, err := row(i + j)
				if err != nil {
					return err
				}
				args = append(args, r...)
			}
			query := prefix + strings.TrimSuffix(strings.Repeat(tuple+",", m), ",")
			var err error
			switch {
			case m == batch && full == nil:
				if full, err = tx.PrepareContext(ctx, query); err != nil {
					return err
				}
				defer full.Close()
				fallthrough
			case m == batch:
				_, err = full.ExecContext(ctx, args...)
			default:
				_, err = tx.ExecContext(ctx, query, args...)
			}
			if err != nil {
				return fmt.Errorf("insert into %s: %w", table, err)
			}
		}
		return nil
	}
	if err := insert("llm_clients", clientCols, plan.clients, plan.clientRow); err != nil {
		return err
	}
	if err := insert("api_keys", keyCols, plan.keys, plan.keyRows(stride, kept)); err != nil {
		return err
	}
	if err := insert("llm_client_api_keys", linkCols, plan.keys, plan.linkRow); err != nil {
		return err
	}
	return tx.Commit()
}

// finishScale leaves the database as a long-running one would be:
// vacuumed and analysed.
func finishScale(ctx context.Context, db *sqlx.DB, dialect string) error {
	if dialect == "postgres" {
		_, err := db.ExecContext(ctx, `VACUUM ANALYZE llm_clients, api_keys, llm_client_api_keys`)
		return err
	}
	if _, err := db.ExecContext(ctx, `ANALYZE`); err != nil {
		return err
	}
	_, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	return err
}

func databaseSize(ctx context.Context, db *sqlx.DB, dialect, url string) int64 {
	if dialect == "postgres" {
		var n int64
		_ = db.GetContext(ctx, &n, `SELECT pg_database_size(current_database())`)
		return n
	}
	var total int64
	path := strings.TrimPrefix(url, "sqlite:")
	for _, p := range []string{path, path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			total += fi.Size()
		}
	}
	return total
}
