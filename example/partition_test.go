package main

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llmauth/llmauth/internal/faultproxy"
	"github.com/llmauth/llmauth/internal/pgtest"
)

// TestServePartition puts a proxy between a running server and PostgreSQL
// and freezes it, connections held open, while the CLI revokes a key over
// a direct connection. No request may get 200 with the revoked token later
// than the staleness bound plus one poll interval after the revoke; the
// server refuses with 503 and turns unready, logs the lapse once, and
// serves again without a restart when the proxy thaws.
func TestServePartition(t *testing.T) {
	t.Parallel()
	direct := pgtest.NewDatabase(t)
	c := newCLI(t, direct)
	c.ok("clients", "create", "bot")
	revoked := c.createKey("bot")
	kept := c.createKey("bot")

	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	proxy := faultproxy.Start(t, u.Host)
	u.Host = proxy.Addr()
	const poll = 500 * time.Millisecond
	s := startServer(t, c.dir, c.env, "--database-url", u.String(), "--poll-interval", poll.String())
	for _, k := range []createdKey{revoked, kept} {
		decodeChat(t, s.chat("bot", k.Token))
	}

	proxy.Freeze()
	c.ok("keys", "revoke", strconv.FormatInt(revoked.ID, 10))
	committed := time.Now() // the CLI exits after the commit
	limit := committed.Add(time.Second + poll)

	// Probes start every 20ms for 3s, each on its own connection.
	var mu sync.Mutex
	var late []time.Duration
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for time.Since(committed) < 3*time.Second {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, err := probeChat(s.base, "bot", revoked.Token)
			answered := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				statuses[-1]++
				return
			}
			statuses[status]++
			if status == http.StatusOK && answered.After(limit) {
				late = append(late, answered.Sub(committed))
			}
		}()
		time.Sleep(20 * time.Millisecond)
	}
	if r := do(t, http.MethodGet, s.base+"/readyz", ""); r.status != http.StatusServiceUnavailable {
		t.Errorf("readyz during the partition: %d, want 503", r.status)
	}
	wg.Wait()
	t.Logf("PARTITION over HTTP: statuses %v", statuses)
	if len(late) > 0 {
		t.Fatalf("revoked token got 200 %v after the revoke, past the 1s bound plus a %v poll", late, poll)
	}
	if statuses[http.StatusServiceUnavailable] == 0 {
		t.Fatalf("no 503 during the partition: %v", statuses)
	}
	if statuses[http.StatusUnauthorized] != 0 {
		t.Errorf("a partitioned server answered 401 although it cannot know of the revoke: %v", statuses)
	}

	proxy.Thaw()
	eventually(t, 20*time.Second, "service after the thaw", func() bool {
		return s.chat("bot", revoked.Token).status == http.StatusUnauthorized &&
			s.chat("bot", kept.Token).status == http.StatusOK &&
			do(t, http.MethodGet, s.base+"/readyz", "").status == http.StatusOK
	})
	if n := strings.Count(s.stderr.String(), "cached decisions unusable"); n != 1 {
		t.Errorf("the lapse was logged %d times, want once:\n%s", n, s.stderr.String())
	}
	if !strings.Contains(s.stderr.String(), "change feed confirmed again") {
		t.Errorf("the restoration was not logged:\n%s", s.stderr.String())
	}
	if code := s.signal(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM: %d", code)
	}
}
