package main

import (
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// propagationBound is the contract's rule: a change by any writer takes
// effect on every running server within 1 second.
const propagationBound = time.Second

// propagationRounds is how often each change is measured per store.
const propagationRounds = 10

// probeChat posts to a client's chat route and returns the status; unlike
// do it may run outside the test goroutine.
func probeChat(base, client, token string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/v1/clients/"+client+"/chat", strings.NewReader(`{}`))
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	return res.StatusCode, nil
}

// measure makes a change through the CLI (a third process) and polls every
// server until it answers the new way. It returns, per server, the time
// from the CLI's exit, by which the change has committed, to the first new
// answer.
//
// A random pause of up to jitter comes first: without it every change
// would land at the same phase of the servers' poll tickers (the previous
// round ended just after a tick), and the figures would show one point of
// the distribution instead of all of it.
func measure(t *testing.T, servers []*server, jitter time.Duration, change func(), client, token string, want int) []time.Duration {
	t.Helper()
	time.Sleep(rand.N(jitter))
	change()
	start := time.Now()
	out := make([]time.Duration, len(servers))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := start.Add(10 * time.Second)
			for {
				status, err := probeChat(s.base, client, token)
				if err == nil && status == want {
					out[i] = time.Since(start)
					return
				}
				if time.Now().After(deadline) {
					mu.Lock()
					failures = append(failures, s.base)
					mu.Unlock()
					out[i] = time.Since(start)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("client %s: servers %v never answered %d", client, failures, want)
	}
	return out
}

// TestPropagation runs two servers on one database and changes keys from
// a third process: each server must answer the new way within 1 second.
// It logs the median and worst latency per store and path.
func TestPropagation(t *testing.T) {
	// Not parallel: the figures are for the README, measured without the
	// rest of the suite competing for the CPU.
	for _, sc := range stores() {
		t.Run(sc.name, func(t *testing.T) {
			c := newCLI(t, sc.newURL(t))
			c.ok("clients", "create", "flip")   // toggles between open and locked
			c.ok("clients", "create", "keeper") // always keeps one key
			keep := c.createKey("keeper")
			// SQLite changes travel by polling only, so their latency
			// depends on the poll phase: sample all of it. PostgreSQL's
			// notifications do not, so a short pause will do.
			jitter := defaultServeOptions().pollInterval
			if sc.name == "postgres" {
				jitter = 20 * time.Millisecond
			}
			servers := []*server{
				startServer(t, c.dir, c.env, "--database-url", c.db),
				startServer(t, c.dir, c.env, "--database-url", c.db),
			}

			paths := map[string][]time.Duration{}
			record := func(path string, ds []time.Duration) {
				for i, d := range ds {
					if d > propagationBound {
						t.Errorf("%s: server %d took %v", path, i, d)
					}
				}
				paths[path] = append(paths[path], ds...)
			}
			db, err := sqlstore.Open(t.Context(), c.db)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = db.Close() })
			for round := range propagationRounds {
				// Both servers have cached "flip is open".
				for _, s := range servers {
					if got := decodeChat(t, s.chat("flip", "")); !got.Anonymous {
						t.Fatalf("flip is not open: %+v", got)
					}
				}
				var k createdKey
				record("first key locks an open client (401 without token)",
					measure(t, servers, jitter, func() { k = c.createKey("flip") }, "flip", "", http.StatusUnauthorized))

				// Both servers have cached the key as valid.
				for _, s := range servers {
					decodeChat(t, s.chat("flip", k.Token))
				}
				// Every other round the writer is plain SQL, not the CLI.
				if round%2 == 0 {
					record("revoking the last key opens the client (anonymous 200)",
						measure(t, servers, jitter, func() { c.ok("keys", "revoke", itoa(k.ID)) }, "flip", "", http.StatusOK))
				} else {
					record("plain SQL UPDATE revoking the last key (anonymous 200)",
						measure(t, servers, jitter, func() {
							if _, err := db.Exec(db.Rebind(`UPDATE api_keys SET is_active = FALSE WHERE id = ?`), k.ID); err != nil {
								t.Fatal(err)
							}
						}, "flip", "", http.StatusOK))
				}

				extra := c.createKey("keeper")
				for _, s := range servers {
					decodeChat(t, s.chat("keeper", extra.Token))
				}
				record("revoking one of two keys (that token 401)",
					measure(t, servers, jitter, func() { c.ok("keys", "revoke", itoa(extra.ID)) }, "keeper", extra.Token, http.StatusUnauthorized))
				for _, s := range servers {
					decodeChat(t, s.chat("keeper", keep.Token))
				}
			}
			for _, path := range slices.Sorted(maps.Keys(paths)) {
				ds := slices.Clone(paths[path])
				slices.Sort(ds)
				t.Logf("propagation on %s, %s: median %v, worst %v over %d observations (2 servers)",
					sc.name, path, ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond), len(ds))
			}
		})
	}
}
