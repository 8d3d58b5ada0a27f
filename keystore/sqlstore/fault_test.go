package sqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/llmauth/llmauth/internal/faultproxy"
	"github.com/llmauth/llmauth/internal/pgtest"
	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// feedCounter counts a watcher's flushes by reason and a cache's lease
// lapses.
type feedCounter struct {
	cacheEvents
	mu      sync.Mutex
	flushes map[string]int
	lapses  atomic.Int32
}

func newFeedCounter() *feedCounter { return &feedCounter{flushes: map[string]int{}} }

func (f *feedCounter) ChangeEvent(string) {}
func (f *feedCounter) ListenerUp(bool)    {}
func (f *feedCounter) Flushed(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushes[reason]++
}
func (f *feedCounter) LeaseChanged(fresh bool) {
	if !fresh {
		f.lapses.Add(1)
	}
}
func (f *feedCounter) count(reason string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flushes[reason]
}

// leased is one server's cache and watcher with the freshness lease on (the
// production setting): TTL an hour, so only the feed or the lease can make
// a change visible.
type leased struct {
	cache   *cache.Cache
	watcher *sqlstore.Watcher
	feed    *feedCounter
}

func startLeased(t *testing.T, url string, wopts sqlstore.WatcherOptions) leased {
	t.Helper()
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s, err := sqlstore.New(ctx, db, sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	feed := newFeedCounter()
	c, err := cache.New(s, cache.Options{TTL: time.Hour, NegativeTTL: time.Hour, Observer: feed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	wopts.Observer = feed
	w, err := sqlstore.NewWatcher(ctx, s, c, wopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return leased{cache: c, watcher: w, feed: feed}
}

// keyedClient creates a client with n keys.
func keyedClient(t *testing.T, admin *sqlstore.Store, n int) (string, []keystore.NewKey) {
	t.Helper()
	ctx := context.Background()
	name := uniqueName("bot")
	if _, err := admin.CreateClient(ctx, name); err != nil {
		t.Fatal(err)
	}
	var keys []keystore.NewKey
	for range n {
		k, err := admin.CreateKey(ctx, name, keystore.KeySpec{})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	return name, keys
}

// TestPartition freezes all traffic between one server and PostgreSQL,
// connections held open, while an admin revokes a key over a direct
// connection. No request may accept the revoked token later than the
// staleness bound plus one poll interval after the commit; when the
// partition heals, service returns without a restart.
func TestPartition(t *testing.T) {
	t.Parallel()
	direct := pgtest.NewDatabase(t)
	admin := rawHarness(func(testing.TB) string { return direct })(t, nil).Admin
	client, keys := keyedClient(t, admin, 2)

	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	proxy := faultproxy.Start(t, u.Host)
	u.Host = proxy.Addr()
	proxied := u.String()
	const poll = 500 * time.Millisecond
	srv := startLeased(t, proxied, sqlstore.WatcherOptions{PostgresURL: proxied, PollInterval: poll})

	ctx := context.Background()
	for _, k := range keys {
		if _, err := srv.cache.Verify(ctx, client, k.Token); err != nil {
			t.Fatalf("before the partition: %v", err)
		}
	}

	proxy.Freeze()
	if _, err := admin.DeactivateKey(ctx, keys[0].ID); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	limit := committed.Add(keystore.StalenessPromise + poll)
	// Probe as requests would, each with its own short deadline, until well
	// past the limit.
	var lastOK time.Time
	var unavailable int
	for time.Since(committed) < 3*time.Second {
		rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_, err := srv.cache.Verify(rctx, client, keys[0].Token)
		cancel()
		switch {
		case err == nil:
			lastOK = time.Now()
		case errors.Is(err, keystore.ErrUnavailable):
			unavailable++
		case errors.Is(err, keystore.ErrInvalidToken):
			t.Fatal("the partitioned server cannot know of the revoke, yet refused the token as invalid")
		default:
			t.Fatalf("unexpected error: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if lastOK.After(limit) {
		t.Fatalf("revoked token accepted %v after its commit, past the %v bound plus a %v poll",
			lastOK.Sub(committed).Round(time.Millisecond), keystore.StalenessPromise, poll)
	}
	if unavailable == 0 {
		t.Fatal("no request was refused as unavailable during the partition")
	}
	if srv.cache.Fresh() == nil {
		t.Fatal("Fresh() = nil during the partition")
	}
	if srv.feed.lapses.Load() == 0 {
		t.Fatal("the lease lapse was not reported")
	}
	t.Logf("PARTITION: revoked token last accepted %v after the commit (bound %v + poll %v); %d probes refused as unavailable",
		lastOK.Sub(committed).Round(time.Millisecond), keystore.StalenessPromise, poll, unavailable)

	proxy.Thaw()
	thawed := time.Now()
	waitFor(t, "service after the partition heals", 15*time.Second, func() bool {
		_, err1 := srv.cache.Verify(ctx, client, keys[0].Token)
		_, err2 := srv.cache.Verify(ctx, client, keys[1].Token)
		return errors.Is(err1, keystore.ErrInvalidToken) && err2 == nil && srv.cache.Fresh() == nil
	})
	t.Logf("PARTITION: service back %v after the thaw", time.Since(thawed).Round(time.Millisecond))
}

// TestChangeIDsBackwards empties the change log under running watchers
// (TRUNCATE … RESTART IDENTITY on PostgreSQL, DELETE on SQLite, with and
// without resetting SQLite's sequence), then changes keys: each change is
// seen within a second of its commit, and the flush is counted.
func TestChangeIDsBackwards(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		url     func(testing.TB) string
		clear   string
		reasons []string
	}{
		{"postgres truncate restart identity", pgtest.NewDatabase, `TRUNCATE llmauth_changes RESTART IDENTITY`, []string{"ids_backwards"}},
		{"postgres delete", pgtest.NewDatabase, `DELETE FROM llmauth_changes`, []string{"rows_missing", "ids_backwards"}},
		{"sqlite delete", sqliteURL, `DELETE FROM llmauth_changes`, []string{"rows_missing", "ids_backwards"}},
		{"sqlite delete and reset the sequence", sqliteURL, `DELETE FROM llmauth_changes; DELETE FROM sqlite_sequence WHERE name = 'llmauth_changes'`, []string{"ids_backwards"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := tc.url(t)
			admin := rawHarness(func(testing.TB) string { return url })(t, nil).Admin
			ctx := context.Background()
			twoKeys, keys := keyedClient(t, admin, 2)
			open, _ := keyedClient(t, admin, 0)
			for range 5 { // ids well above what follows the reset
				keyedClient(t, admin, 0)
			}
			srv := startLeased(t, url, sqlstore.WatcherOptions{})
			if _, err := srv.cache.Verify(ctx, twoKeys, keys[0].Token); err != nil {
				t.Fatal(err)
			}
			if st, err := srv.cache.ClientState(ctx, open); err != nil || st.RequiresKey {
				t.Fatalf("ClientState(open) = %+v, %v", st, err)
			}
			if err := rawExec(admin, tc.clear); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.DeactivateKey(ctx, keys[0].ID); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.CreateKey(ctx, open, keystore.KeySpec{}); err != nil {
				t.Fatal(err)
			}
			committed := time.Now()
			waitFor(t, "revoke and first key seen after the log was emptied", time.Second, func() bool {
				_, err := srv.cache.Verify(ctx, twoKeys, keys[0].Token)
				st, err2 := srv.cache.ClientState(ctx, open)
				return errors.Is(err, keystore.ErrInvalidToken) && err2 == nil && st.RequiresKey
			})
			t.Logf("BACKWARDS %s: seen %v after the commit", tc.name, time.Since(committed).Round(time.Millisecond))
			var n int
			for _, r := range tc.reasons {
				n += srv.feed.count(r)
			}
			if n == 0 {
				t.Fatalf("no flush counted under %v: %v", tc.reasons, srv.feed.flushes)
			}
		})
	}
}

// TestHoleOutlivesRetention holds a revoke's transaction open, its change
// id below ids already read, for longer than Retention: the watcher
// flushes when the hole expires and still sees the commit within a second.
// A rolled-back hole is forgotten without a flush.
func TestHoleOutlivesRetention(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	admin := rawHarness(func(testing.TB) string { return url })(t, nil).Admin
	ctx := context.Background()
	client, keys := keyedClient(t, admin, 2)
	const retention = 2 * time.Second
	srv := startLeased(t, url, sqlstore.WatcherOptions{Retention: retention})
	if _, err := srv.cache.Verify(ctx, client, keys[0].Token); err != nil {
		t.Fatal(err)
	}

	// A rolled-back transaction leaves a hole that must not cost a flush.
	tx, err := admin.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Since version 5 a change id is taken at commit under a lock, so
	// only a writer that bypasses the triggers can leave a hole: one is
	// played here.
	revokeOutOfOrder(t, tx, keys[1].ID)
	keyedClient(t, admin, 0)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * retention)
	if n := srv.feed.count("hole_expired"); n != 0 {
		t.Fatalf("a rolled-back hole caused %d hole_expired flushes", n)
	}

	tx, err = admin.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	revokeOutOfOrder(t, tx, keys[0].ID)
	keyedClient(t, admin, 0) // a later id commits first
	waitFor(t, "the hole expires", 3*retention, func() bool { return srv.feed.count("hole_expired") > 0 })
	if _, err := srv.cache.Verify(ctx, client, keys[0].Token); err != nil {
		t.Fatalf("before the commit: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	waitFor(t, "the late commit seen after its hole expired", time.Second, func() bool {
		_, err := srv.cache.Verify(ctx, client, keys[0].Token)
		return errors.Is(err, keystore.ErrInvalidToken)
	})
	t.Logf("HOLE: late commit seen %v after it, %d hole_expired flush(es)", time.Since(committed).Round(time.Millisecond), srv.feed.count("hole_expired"))
}

// TestLeaseUnderLoad keeps 16 callers busy against a healthy database with
// the lease on: not one request may fail.
func TestLeaseUnderLoad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		url  func(testing.TB) string
	}{{"sqlite", sqliteURL}, {"postgres", pgtest.NewDatabase}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := tc.url(t)
			admin := rawHarness(func(testing.TB) string { return url })(t, nil).Admin
			client, keys := keyedClient(t, admin, 1)
			open, _ := keyedClient(t, admin, 0)
			srv := startLeased(t, url, sqlstore.WatcherOptions{})
			ctx := context.Background()
			var calls, failures atomic.Int64
			var firstErr atomic.Value
			stop := time.Now().Add(4 * time.Second)
			var wg sync.WaitGroup
			for g := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(stop) {
						rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
						var err error
						if g%2 == 0 {
							_, err = srv.cache.Verify(rctx, client, keys[0].Token)
						} else {
							_, err = srv.cache.ClientState(rctx, open)
						}
						cancel()
						calls.Add(1)
						if err != nil {
							failures.Add(1)
							firstErr.CompareAndSwap(nil, err)
						}
					}
				}()
			}
			wg.Wait()
			t.Logf("LOAD %s: %d calls, %d failures, %d lease lapses", tc.name, calls.Load(), failures.Load(), srv.feed.lapses.Load())
			if failures.Load() != 0 {
				t.Fatalf("%d of %d calls failed under load with a healthy database; first: %v", failures.Load(), calls.Load(), firstErr.Load())
			}
		})
	}
}

// cacheEvents ignores a cache's events; the observers here embed it.
type cacheEvents struct{}

func (cacheEvents) CacheLookup(string, bool)               {}
func (cacheEvents) StaleServed(string)                     {}
func (cacheEvents) Invalidated(string)                     {}
func (cacheEvents) StoreCall(string, time.Duration, error) {}
func (cacheEvents) LeaseChanged(bool)                      {}

// TestLateCommitScenarios replays the ways a transaction holding a change
// id was found to slip past the watcher: it commits well after later ids,
// after a bulk job rolled back thousands of ids, after the log was emptied,
// after a watcher (re)start far above it, or after other instances pruned
// the log. Each runs with the triggers as installed (the change id is taken
// at commit) and with a writer that takes it at the write, without the
// commit-order lock (as before version 5). Every revoke is seen within a second of its
// commit, by a watcher that polls only.
func TestLateCommitScenarios(t *testing.T) {
	t.Parallel()
	type env struct {
		t         *testing.T
		immediate bool
		admin     *sqlstore.Store
		db        *sqlx.DB
		url       string
		client    string
		keys      []keystore.NewKey
		srv       leased
	}
	exec := func(e *env, q sqlx.ExecerContext, query string, args ...any) {
		e.t.Helper()
		if _, err := q.ExecContext(context.Background(), query, args...); err != nil {
			e.t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		opts  sqlstore.WatcherOptions
		start bool // start the watcher before the transaction
		// before runs while the revoking transaction is open, after its
		// write; between runs after the hole is seen, before the commit.
		before, between func(e *env)
		afterCommit     func(e *env)
	}{
		{name: "later id with an older transaction id", start: true,
			before: func(e *env) { exec(e, e.db, `INSERT INTO llm_clients (name) VALUES ('later-1')`) }},
		{name: "a bulk job of 10001 rows rolled back", start: true,
			before: func(e *env) {
				tx, err := e.db.Beginx()
				if err != nil {
					e.t.Fatal(err)
				}
				exec(e, tx, `SET CONSTRAINTS ALL IMMEDIATE`)
				exec(e, tx, `INSERT INTO llm_clients (name) SELECT 'bulk-' || g FROM generate_series(1, 10001) g`)
				_ = tx.Rollback()
				exec(e, e.db, `INSERT INTO llm_clients (name) VALUES ('later-2')`)
			}},
		{name: "the log emptied while the hole is open", start: true,
			before: func(e *env) { exec(e, e.db, `INSERT INTO llm_clients (name) VALUES ('later-3')`) },
			between: func(e *env) {
				exec(e, e.db, `DELETE FROM llmauth_changes`)
				exec(e, e.db, `INSERT INTO llm_clients (name) VALUES ('later-4')`)
				time.Sleep(1200 * time.Millisecond)
			}},
		{name: "a watcher started 1001 ids above the hole", start: false,
			before: func(e *env) {
				exec(e, e.db, `INSERT INTO llm_clients (name) SELECT 'many-' || g FROM generate_series(1, 1001) g`)
			}},
		{name: "the late row pruned by another instance", start: true, opts: sqlstore.WatcherOptions{Retention: 2 * time.Second},
			before: func(e *env) { exec(e, e.db, `INSERT INTO llm_clients (name) VALUES ('later-5')`) },
			between: func(e *env) {
				if e.immediate { // deferred, the change has no id yet
					waitFor(e.t, "the hole expires", 10*time.Second, func() bool { return e.srv.feed.count("hole_expired") > 0 })
				}
			},
			afterCommit: func(e *env) {
				exec(e, e.db, `DELETE FROM llmauth_changes WHERE id < (SELECT max(id) FROM llmauth_changes)`)
			}},
	}
	for _, tc := range cases {
		for _, outOfOrder := range []bool{false, true} {
			name := tc.name
			if outOfOrder {
				name += ", writer without the commit-order lock"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				url := pgtest.NewDatabase(t)
				h := rawHarness(func(testing.TB) string { return url })(t, nil)
				e := &env{t: t, immediate: outOfOrder, admin: h.Admin, db: h.Admin.DB(), url: url}
				e.client, e.keys = keyedClient(t, h.Admin, 2)
				start := func() {
					e.srv = startLeased(t, url, tc.opts)
					if _, err := e.srv.cache.Verify(ctx, e.client, e.keys[0].Token); err != nil {
						t.Fatal(err)
					}
				}
				if tc.start {
					start()
				}
				tx, err := e.db.Beginx()
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback()
				if outOfOrder {
					revokeOutOfOrder(t, tx, e.keys[0].ID)
				} else {
					exec(e, tx, `UPDATE api_keys SET is_active = false WHERE id = $1`, e.keys[0].ID)
				}
				tc.before(e)
				if !tc.start {
					start()
				}
				time.Sleep(1200 * time.Millisecond) // polls see the hole
				if tc.between != nil {
					tc.between(e)
				}
				if _, err := e.srv.cache.Verify(ctx, e.client, e.keys[0].Token); err != nil {
					t.Fatalf("before the commit: %v", err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
				committed := time.Now()
				if tc.afterCommit != nil {
					tc.afterCommit(e)
				}
				waitFor(t, "the revoke seen", time.Second, func() bool {
					_, err := e.srv.cache.Verify(ctx, e.client, e.keys[0].Token)
					return errors.Is(err, keystore.ErrInvalidToken)
				})
				t.Logf("LATE %s: seen %v after the commit", name, time.Since(committed).Round(time.Millisecond))
			})
		}
	}
}

// TestSQLiteLogRewrittenWithinASecond empties the log and resets its
// sequence, then writes as many changes as the watcher had seen, in one
// transaction within the same second: the row now at the watcher's
// position has the same id and created_at, but not the same nonce.
func TestSQLiteLogRewrittenWithinASecond(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := sqliteURL(t)
	admin := rawHarness(func(testing.TB) string { return url })(t, nil).Admin
	client, keys := keyedClient(t, admin, 2)
	srv := startLeased(t, url, sqlstore.WatcherOptions{PollInterval: time.Hour})
	if _, err := srv.cache.Verify(ctx, client, keys[0].Token); err != nil {
		t.Fatal(err)
	}
	db := admin.DB()
	var high int64
	if err := db.GetContext(ctx, &high, `SELECT max(id) FROM llmauth_changes`); err != nil {
		t.Fatal(err)
	}
	var seenAt string
	if err := db.GetContext(ctx, &seenAt, `SELECT CAST(created_at AS TEXT) FROM llmauth_changes WHERE id = ?`, high); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for _, q := range []string{
		`DELETE FROM llmauth_changes`,
		`DELETE FROM sqlite_sequence WHERE name = 'llmauth_changes'`,
		`UPDATE api_keys SET is_active = 0 WHERE id = ` + strconv.FormatInt(keys[0].ID, 10),
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// Pad the log to the watcher's position; the stamp of the row there is
	// made equal to what the watcher saw, but for the nonce.
	for i := 0; ; i++ {
		var n int64
		if err := tx.GetContext(ctx, &n, `SELECT COALESCE(max(id), 0) FROM llmauth_changes`); err != nil {
			t.Fatal(err)
		}
		if n >= high {
			break
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO llm_clients (name) VALUES (?)`, "pad-"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE llmauth_changes SET created_at = ? WHERE id = ?`, seenAt, high); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := srv.watcher.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.cache.Verify(ctx, client, keys[0].Token); !errors.Is(err, keystore.ErrInvalidToken) {
		t.Fatalf("revoke not seen after the log was rewritten in place: %v", err)
	}
	if srv.feed.count("rows_missing")+srv.feed.count("ids_backwards") == 0 {
		t.Fatalf("no flush counted: %v", srv.feed.flushes)
	}
}

// revokeOutOfOrder revokes a key in tx the way a writer from before
// migration 5 did: the change-log row, and its id, are written now, not at
// commit and without the commit-order lock, so that later ids can commit
// first and leave a hole below them. (It needs a superuser, as the tests'
// database user is, to switch the triggers off for tx.)
func revokeOutOfOrder(t *testing.T, tx interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, keyID int64) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`SET LOCAL session_replication_role = replica`,
		`UPDATE api_keys SET is_active = false WHERE id = $1`,
		`WITH c AS (
		   INSERT INTO llmauth_changes (source, llm_client_id, api_key_id)
		   SELECT 'key', ck.llm_client_id, $1 FROM llm_client_api_keys ck WHERE ck.api_key_id = $1
		   RETURNING id, llm_client_id, api_key_id)
		 SELECT pg_notify('llmauth_changes', id || ' key ' || llm_client_id || ' ' || api_key_id) FROM c`,
		`SET LOCAL session_replication_role = origin`,
	} {
		var args []any
		if strings.Contains(q, "$1") {
			args = []any{keyID}
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestLeaseRenewedOnDemand: a watcher whose poller would wait an hour is
// asked to read the change log at once when a lookup finds the lease
// lapsed, so cached answers come back without waiting for a tick.
func TestLeaseRenewedOnDemand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := sqliteURL(t)
	admin := rawHarness(func(testing.TB) string { return url })(t, nil).Admin
	client, keys := keyedClient(t, admin, 1)
	srv := startLeased(t, url, sqlstore.WatcherOptions{PollInterval: time.Hour})
	if _, err := srv.cache.Verify(ctx, client, keys[0].Token); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the lease lapses", 5*time.Second, func() bool { return srv.cache.Fresh() != nil })
	if _, err := srv.cache.Verify(ctx, client, keys[0].Token); err != nil { // from the store; asks for renewal
		t.Fatal(err)
	}
	waitFor(t, "the lease is renewed on demand", 5*time.Second, func() bool { return srv.cache.Fresh() == nil })
	if srv.feed.lapses.Load() != 1 {
		t.Fatalf("lapses = %d, want 1", srv.feed.lapses.Load())
	}
}

// TestBacklogFlushes: a poll that finds more new change rows than it
// applies one by one (a long partition, a bulk change) flushes the cache
// instead of holding them all, and still sees every change.
func TestBacklogFlushes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		url  func(testing.TB) string
		bulk string
	}{
		{"sqlite", sqliteURL, `WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 60000)
INSERT INTO llmauth_changes (source, llm_client_id, api_key_id) SELECT 'key', 1 + g % 1000, g FROM s`},
		{"postgres", pgtest.NewDatabase, `INSERT INTO llmauth_changes (source, llm_client_id, api_key_id)
SELECT 'key', 1 + g % 1000, g FROM generate_series(1, 60000) g`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := tc.url(t)
			admin := rawHarness(func(testing.TB) string { return url })(t, nil).Admin
			client, keys := keyedClient(t, admin, 2)
			srv := startLeased(t, url, sqlstore.WatcherOptions{PollInterval: 400 * time.Millisecond})
			if _, err := srv.cache.Verify(ctx, client, keys[0].Token); err != nil {
				t.Fatal(err)
			}
			if err := rawExec(admin, tc.bulk); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.DeactivateKey(ctx, keys[0].ID); err != nil {
				t.Fatal(err)
			}
			if err := srv.watcher.Poll(ctx); err != nil {
				t.Fatal(err)
			}
			if n := srv.feed.count("backlog"); n < 1 {
				t.Fatalf("no backlog flush: %v", srv.feed.flushes)
			}
			if _, err := srv.cache.Verify(ctx, client, keys[0].Token); !errors.Is(err, keystore.ErrInvalidToken) {
				t.Fatalf("the key revoked behind the backlog: %v, want ErrInvalidToken", err)
			}
		})
	}
}

// TestWatcherStartDropsEarlierEntries: what a cache held before its
// watcher started (looked up with no watcher, or while the previous one
// was closed) is dropped at the start, since changes committed meanwhile
// lie behind the new watcher's position.
func TestWatcherStartDropsEarlierEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := sqliteURL(t)
	admin := rawHarness(func(testing.TB) string { return url })(t, nil).Admin
	client, _ := keyedClient(t, admin, 0)
	c, err := cache.New(admin, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// No watcher yet: the lookup asks the store, and caches its answer.
	if st, err := c.ClientState(ctx, client); err != nil || st.RequiresKey {
		t.Fatalf("ClientState = %+v, %v", st, err)
	}
	if _, err := admin.CreateKey(ctx, client, keystore.KeySpec{}); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		w, err := sqlstore.NewWatcher(ctx, admin, c, sqlstore.WatcherOptions{PollInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if st, err := c.ClientState(ctx, client); err != nil || st.RequiresKey != (round == 0) {
			t.Fatalf("round %d: ClientState = %+v, %v; want requires key %v", round, st, err, round == 0)
		}
		_ = w.Close()
		// While no watcher runs, the client loses its keys: the next
		// watcher must not trust the entry that says it requires one.
		keys, _ := admin.ListKeys(ctx, client)
		for _, k := range keys {
			if _, err := admin.DeactivateKey(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
}
