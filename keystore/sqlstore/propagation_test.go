package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmauth/llmauth/internal/pgtest"
	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// instance is what one server process holds: its own pool, cache and
// watcher over the shared database.
type instance struct {
	cache   *cache.Cache
	watcher *sqlstore.Watcher
	flushes *atomic.Int32
	// notified counts changes applied from notifications.
	notified *atomic.Int32
}

// notifyCounter counts a watcher's notified changes.
type notifyCounter struct{ n *atomic.Int32 }

func (c notifyCounter) ChangeEvent(path string) {
	if path == "notify" {
		c.n.Add(1)
	}
}

func (notifyCounter) ListenerUp(bool) {}

func (notifyCounter) Flushed(string) {}

type flushCounter struct {
	cacheEvents
	flushes *atomic.Int32
}

func (f flushCounter) Invalidated(reason string) {
	if reason == "flush" {
		f.flushes.Add(1)
	}
}

// startInstances starts n instances on url. With notify, changes arrive
// only by LISTEN/NOTIFY (polling hourly); without, only by polling every
// 500ms. The cache TTL is an hour, so nothing but the change feed can make
// a change visible.
func startInstances(t *testing.T, url string, n int, notify bool) []instance {
	t.Helper()
	var out []instance
	for range n {
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
		flushes := &atomic.Int32{}
		// Listening instances measure the notification path alone
		// (NoChangeFeed: a lapsed lease sending requests to the store must
		// not make a change visible). Polling instances run as in
		// production, lease on: the one-second promise then holds by
		// construction, also on a machine too busy to poll on time, since
		// past the bound a lookup asks the store.
		c, err := cache.New(s, cache.Options{TTL: time.Hour, NegativeTTL: time.Hour, NoChangeFeed: notify, Observer: flushCounter{flushes: flushes}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		notified := &atomic.Int32{}
		opts := sqlstore.WatcherOptions{Observer: notifyCounter{n: notified}}
		if notify {
			opts.PostgresURL = url
			opts.PollInterval = time.Hour
		}
		w, err := sqlstore.NewWatcher(ctx, s, c, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Close() })
		out = append(out, instance{cache: c, watcher: w, flushes: flushes, notified: notified})
	}
	if notify {
		awaitListening(t, url, out)
	}
	return out
}

// awaitListening returns once every instance's listener is listening:
// Start returns before LISTEN runs, and with hourly polling a change
// notified before that would never arrive. It makes throwaway changes
// until each instance has received one.
func awaitListening(t *testing.T, url string, insts []instance) {
	t.Helper()
	admin := rawHarness(func(testing.TB) string { return url })(t, nil).Admin
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := admin.CreateClient(context.Background(), uniqueName("listening")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		all := true
		for _, in := range insts {
			all = all && in.notified.Load() > 0
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the listeners did not start listening within 15s")
		}
	}
}

// scenario is one kind of change and how an instance shows it.
type scenario struct {
	name string
	// prepare builds the state before the change and returns the change
	// and the check that passes once an instance has seen it.
	prepare func(t *testing.T, admin *sqlstore.Store) (change func() error, seen func(keystore.Store) bool)
}

func rawExec(admin *sqlstore.Store, query string, args ...any) error {
	_, err := admin.DB().ExecContext(context.Background(), admin.DB().Rebind(query), args...)
	return err
}

var nameSeq atomic.Int64

func uniqueName(prefix string) string { return fmt.Sprintf("%s-%d", prefix, nameSeq.Add(1)) }

func scenarios() []scenario {
	ctx := context.Background()
	keyed := func(t *testing.T, admin *sqlstore.Store, keys int) (string, []keystore.NewKey) {
		t.Helper()
		name := uniqueName("bot")
		if _, err := admin.CreateClient(ctx, name); err != nil {
			t.Fatal(err)
		}
		var out []keystore.NewKey
		for range keys {
			k, err := admin.CreateKey(ctx, name, keystore.KeySpec{})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, k)
		}
		return name, out
	}
	refused := func(client string, k keystore.NewKey) func(keystore.Store) bool {
		return func(s keystore.Store) bool {
			_, err := s.Verify(ctx, client, k.Token)
			return errors.Is(err, keystore.ErrInvalidToken)
		}
	}
	opened := func(client string, want bool) func(keystore.Store) bool {
		return func(s keystore.Store) bool {
			st, err := s.ClientState(ctx, client)
			return err == nil && st.RequiresKey == !want
		}
	}
	return []scenario{
		{"revoke one of two keys", func(t *testing.T, admin *sqlstore.Store) (func() error, func(keystore.Store) bool) {
			c, ks := keyed(t, admin, 2)
			return func() error { _, err := admin.DeactivateKey(ctx, ks[0].ID); return err }, refused(c, ks[0])
		}},
		{"deactivate the last key opens the client", func(t *testing.T, admin *sqlstore.Store) (func() error, func(keystore.Store) bool) {
			c, ks := keyed(t, admin, 1)
			return func() error { _, err := admin.DeactivateKey(ctx, ks[0].ID); return err }, opened(c, true)
		}},
		{"expire by raw SQL update", func(t *testing.T, admin *sqlstore.Store) (func() error, func(keystore.Store) bool) {
			c, ks := keyed(t, admin, 1)
			return func() error {
				return rawExec(admin, `UPDATE api_keys SET expires_at = ? WHERE id = ?`, time.Now().UTC().Add(-time.Minute), ks[0].ID)
			}, refused(c, ks[0])
		}},
		{"revoke by raw SQL", func(t *testing.T, admin *sqlstore.Store) (func() error, func(keystore.Store) bool) {
			c, ks := keyed(t, admin, 2)
			return func() error { return rawExec(admin, `UPDATE api_keys SET is_active = ? WHERE id = ?`, false, ks[1].ID) }, refused(c, ks[1])
		}},
		{"delete a key by raw SQL", func(t *testing.T, admin *sqlstore.Store) (func() error, func(keystore.Store) bool) {
			c, ks := keyed(t, admin, 1)
			return func() error { return rawExec(admin, `DELETE FROM api_keys WHERE id = ?`, ks[0].ID) }, opened(c, true)
		}},
		{"attach a first key to an open client", func(t *testing.T, admin *sqlstore.Store) (func() error, func(keystore.Store) bool) {
			c, _ := keyed(t, admin, 0)
			return func() error { _, err := admin.CreateKey(ctx, c, keystore.KeySpec{}); return err }, opened(c, false)
		}},
		{"delete a client", func(t *testing.T, admin *sqlstore.Store) (func() error, func(keystore.Store) bool) {
			c, _ := keyed(t, admin, 1)
			return func() error { return admin.DeleteClient(ctx, c) }, func(s keystore.Store) bool {
				_, err := s.ClientState(ctx, c)
				return errors.Is(err, keystore.ErrUnknownClient)
			}
		}},
		{"create a client remembered as unknown", func(t *testing.T, admin *sqlstore.Store) (func() error, func(keystore.Store) bool) {
			c := uniqueName("late")
			return func() error { _, err := admin.CreateClient(ctx, c); return err }, opened(c, true)
		}},
		{"lock an open client", func(t *testing.T, admin *sqlstore.Store) (func() error, func(keystore.Store) bool) {
			c, _ := keyed(t, admin, 0)
			return func() error { _, err := admin.LockClient(ctx, c); return err }, opened(c, false)
		}},
		{"unlock a locked client without keys", func(t *testing.T, admin *sqlstore.Store) (func() error, func(keystore.Store) bool) {
			c, _ := keyed(t, admin, 0)
			if _, err := admin.LockClient(ctx, c); err != nil {
				t.Fatal(err)
			}
			return func() error { _, err := admin.UnlockClient(ctx, c); return err }, opened(c, true)
		}},
		{"lock an open client by raw SQL", func(t *testing.T, admin *sqlstore.Store) (func() error, func(keystore.Store) bool) {
			c, _ := keyed(t, admin, 0)
			return func() error { return rawExec(admin, `UPDATE llm_clients SET locked = ? WHERE name = ?`, true, c) }, opened(c, false)
		}},
	}
}

// measurePropagation runs every scenario rounds times against instances and
// returns how long each instance took to see each change, from its commit.
func measurePropagation(t *testing.T, admin *sqlstore.Store, insts []instance, rounds int) []time.Duration {
	t.Helper()
	var lat []time.Duration
	for round := range rounds {
		for _, sc := range scenarios() {
			change, seen := sc.prepare(t, admin)
			// Warm every cache with the state before the change.
			for i, in := range insts {
				_ = seen(in.cache)
				if seen(in.cache) {
					t.Fatalf("round %d, %s: instance %d sees the change before it happened", round, sc.name, i)
				}
			}
			// A change lands at a random moment of the poll cycle, as in
			// life; without this every change would follow a poll.
			time.Sleep(rand.N(500 * time.Millisecond))
			if err := change(); err != nil {
				t.Fatalf("%s: %v", sc.name, err)
			}
			// From the commit: the write's own time on a busy disk or
			// server is not propagation. (A notification may even arrive
			// before change returns.)
			start := time.Now()
			var wg sync.WaitGroup
			var mu sync.Mutex
			for i, in := range insts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					deadline := start.Add(3 * time.Second)
					for !seen(in.cache) {
						if time.Now().After(deadline) {
							break
						}
						time.Sleep(2 * time.Millisecond)
					}
					d := time.Since(start)
					if d > time.Second {
						t.Errorf("%s: instance %d saw the change after %v, over the 1s bound", sc.name, i, d)
					}
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}()
			}
			wg.Wait()
		}
	}
	return lat
}

func summarize(t *testing.T, label string, lat []time.Duration) {
	t.Helper()
	slices.Sort(lat)
	t.Logf("PROPAGATION %s: n=%d median=%v p90=%v worst=%v", label, len(lat),
		lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*9/10].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
}

func TestPropagation(t *testing.T) {
	cases := []struct {
		name      string
		url       func(testing.TB) string
		notify    bool
		instances int
	}{
		{"postgres/notify", pgtest.NewDatabase, true, 3},
		{"postgres/poll", pgtest.NewDatabase, false, 2},
		{"sqlite/poll", sqliteURL, false, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := tc.url(t)
			admin := rawHarness(func(testing.TB) string { return url })(t, nil).Admin
			insts := startInstances(t, url, tc.instances, tc.notify)
			summarize(t, tc.name, measurePropagation(t, admin, insts, 2))
		})
	}
}

// TestListenerReconnectFlushes kills the listener's backend: lib/pq
// reconnects and the watcher flushes, since notifications sent meanwhile
// are lost; notifications flow again afterwards.
func TestListenerReconnectFlushes(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	admin := rawHarness(func(testing.TB) string { return url })(t, nil).Admin
	db := admin.DB()
	in := startInstances(t, url, 1, true)[0]

	var terminated int
	deadline := time.Now().Add(5 * time.Second)
	for terminated == 0 && time.Now().Before(deadline) {
		err := db.GetContext(ctx, &terminated, `
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND query ILIKE 'listen%' AND pid <> pg_backend_pid()`)
		if err != nil {
			t.Fatal(err)
		}
		if terminated == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if terminated != 1 {
		t.Fatalf("terminated %d listener backends, want 1", terminated)
	}
	waitFor(t, "flush after reconnect", 5*time.Second, func() bool { return in.flushes.Load() >= 1 })

	// Notifications work again on the new connection.
	sc := scenarios()[0]
	change, seen := sc.prepare(t, admin)
	_ = seen(in.cache)
	if err := change(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "notification after reconnect", time.Second, func() bool { return seen(in.cache) })
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLateCommit holds a revoke's transaction open while later changes
// commit, so that its change id lands below ids the watchers already read.
// Both the polling watcher (through its remembered hole) and the listening
// one must still see it within a second of the commit.
func TestLateCommit(t *testing.T) {
	for _, startFirst := range []bool{true, false} {
		name := "watchers started before the transaction"
		if !startFirst {
			name = "watchers started while it is open"
		}
		t.Run(name, func(t *testing.T) { testLateCommit(t, startFirst) })
	}
}

func testLateCommit(t *testing.T, startFirst bool) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	admin := rawHarness(func(testing.TB) string { return url })(t, nil).Admin
	db := admin.DB()
	if _, err := admin.CreateClient(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	keys := make([]keystore.NewKey, 2)
	for i := range keys {
		var err error
		if keys[i], err = admin.CreateKey(ctx, "bot", keystore.KeySpec{}); err != nil {
			t.Fatal(err)
		}
	}
	var both []instance
	start := func() {
		polling := startInstances(t, url, 1, false)[0]
		listening := startInstances(t, url, 1, true)[0]
		both = []instance{listening, polling}
		for _, in := range both {
			if _, err := in.cache.Verify(ctx, "bot", keys[0].Token); err != nil {
				t.Fatal(err)
			}
		}
	}
	if startFirst {
		start()
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	// A writer without the commit-order lock of migration 5: later ids
	// can commit around this one.
	revokeOutOfOrder(t, tx, keys[0].ID)
	// Later ids commit first, and the watchers read past the open one (or
	// start past it).
	if _, err := admin.CreateClient(ctx, "later"); err != nil {
		t.Fatal(err)
	}
	if !startFirst {
		start()
	}
	time.Sleep(1500 * time.Millisecond)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	for i, in := range both {
		waitFor(t, fmt.Sprintf("instance %d sees the late commit", i), time.Second, func() bool {
			_, err := in.cache.Verify(ctx, "bot", keys[0].Token)
			return errors.Is(err, keystore.ErrInvalidToken)
		})
		t.Logf("instance %d saw the late revoke %v after its commit", i, time.Since(committed).Round(time.Millisecond))
	}
}

// TestWatcherStartDoesNotBlock gives the listener a server that never
// answers: NewWatcher returns at once, polling still works, Close returns.
func TestWatcherStartDoesNotBlock(t *testing.T) {
	h := rawHarness(pgtest.NewDatabase)(t, nil)
	c, _ := cache.New(h.Admin, cache.Options{})
	defer c.Close()
	type started struct {
		w   *sqlstore.Watcher
		err error
	}
	done := make(chan started, 1)
	go func() {
		w, err := sqlstore.NewWatcher(context.Background(), h.Admin, c, sqlstore.WatcherOptions{
			PostgresURL:  "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=1",
			PollInterval: 20 * time.Millisecond,
		})
		done <- started{w, err}
	}()
	var w *sqlstore.Watcher
	select {
	case s := <-done:
		if s.err != nil {
			t.Fatal(s.err)
		}
		w = s.w
	case <-time.After(5 * time.Second):
		t.Fatal("NewWatcher blocked on a listener that cannot connect")
	}
	ctx := context.Background()
	if _, err := h.Admin.CreateClient(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ClientState(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Admin.CreateKey(ctx, "bot", keystore.KeySpec{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "polling without a listener", time.Second, func() bool {
		st, err := c.ClientState(ctx, "bot")
		return err == nil && st.RequiresKey
	})
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked")
	}
}
