package sqlstore_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmauth/llmauth/internal/pgtest"
	"github.com/llmauth/llmauth/keystore"
)

// touchSpy counts the batches that reach the real store and can hold or
// fail them.
type touchSpy struct {
	inner   keystore.UsageWriter
	mu      sync.Mutex
	batches []map[int64]time.Time
	gate    chan struct{}
	fail    atomic.Bool
}

func (s *touchSpy) TouchKeys(ctx context.Context, uses map[int64]time.Time) error {
	if s.gate != nil {
		<-s.gate
	}
	if s.fail.Load() {
		return errors.New("spy: database slow")
	}
	s.mu.Lock()
	s.batches = append(s.batches, uses)
	s.mu.Unlock()
	return s.inner.TouchKeys(ctx, uses)
}

func (s *touchSpy) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.batches)
}

type usageCounter struct {
	written, dropped, flushes atomic.Int32
}

func (u *usageCounter) UsageFlushed(keys int, err error) {
	u.flushes.Add(1)
	u.written.Add(int32(keys))
}
func (u *usageCounter) UsageDropped(n int) { u.dropped.Add(int32(n)) }

func TestUsageAudit(t *testing.T) {
	for name, url := range map[string]func(testing.TB) string{"sqlite": sqliteURL, "postgres": pgtest.NewDatabase} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := rawHarness(url)(t, nil)
			ctx := context.Background()
			if _, err := h.Admin.CreateClient(ctx, "bot"); err != nil {
				t.Fatal(err)
			}
			var keys []keystore.NewKey
			for range 3 {
				k, err := h.Admin.CreateKey(ctx, "bot", keystore.KeySpec{})
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, k)
			}
			spy := &touchSpy{inner: h.Admin}
			obs := &usageCounter{}
			audit, err := keystore.NewUsageAudit(spy, keystore.UsageOptions{FlushInterval: time.Hour, Observer: obs})
			if err != nil {
				t.Fatal(err)
			}
			base := time.Now().UTC().Truncate(time.Second)
			// 3000 requests over three keys, from 8 goroutines.
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 375 {
						k := keys[(g+i)%3]
						audit.RecordUse(k.ID, base.Add(time.Duration(i)*time.Millisecond))
					}
				}()
			}
			wg.Wait()
			if audit.Pending() != 3 {
				t.Fatalf("pending %d, want one entry per key", audit.Pending())
			}
			if err := audit.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := audit.Flush(ctx); err != nil { // nothing pending: no write
				t.Fatal(err)
			}
			if spy.count() != 1 || len(spy.batches[0]) != 3 {
				t.Fatalf("%d writes (%v), want one batch of 3 keys", spy.count(), spy.batches)
			}
			for _, k := range keys {
				got, err := h.Admin.GetKey(ctx, k.ID)
				if err != nil {
					t.Fatal(err)
				}
				if want := base.Add(374 * time.Millisecond); got.LastUsedAt == nil || !got.LastUsedAt.Equal(want) {
					t.Fatalf("key %d last_used_at %v, want %v", k.ID, got.LastUsedAt, want)
				}
			}

			// Close flushes what is pending.
			later := base.Add(time.Hour)
			audit.RecordUse(keys[0].ID, later)
			if err := audit.Close(ctx); err != nil {
				t.Fatal(err)
			}
			got, _ := h.Admin.GetKey(ctx, keys[0].ID)
			if got.LastUsedAt == nil || !got.LastUsedAt.Equal(later) {
				t.Fatalf("after Close: last_used_at %v, want %v", got.LastUsedAt, later)
			}
			if obs.written.Load() != 4 || obs.dropped.Load() != 0 {
				t.Fatalf("observer: written %d dropped %d", obs.written.Load(), obs.dropped.Load())
			}
		})
	}
}

func TestUsageAuditInterval(t *testing.T) {
	h := rawHarness(sqliteURL)(t, nil)
	ctx := context.Background()
	_, _ = h.Admin.CreateClient(ctx, "bot")
	k, _ := h.Admin.CreateKey(ctx, "bot", keystore.KeySpec{})
	spy := &touchSpy{inner: h.Admin}
	const interval = 50 * time.Millisecond
	audit, err := keystore.NewUsageAudit(spy, keystore.UsageOptions{FlushInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for time.Since(start) < 6*interval {
		audit.RecordUse(k.ID, time.Now())
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	if err := audit.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// At most one write per interval, plus the closing flush.
	if max := int(elapsed/interval) + 1; spy.count() > max || spy.count() < 2 {
		t.Fatalf("%d writes in %v, want between 2 and %d", spy.count(), elapsed, max)
	}
}

func TestUsageAuditSlowDatabase(t *testing.T) {
	h := rawHarness(sqliteURL)(t, nil)
	ctx := context.Background()
	_, _ = h.Admin.CreateClient(ctx, "bot")
	spy := &touchSpy{inner: h.Admin, gate: make(chan struct{})}
	obs := &usageCounter{}
	audit, err := keystore.NewUsageAudit(spy, keystore.UsageOptions{FlushInterval: time.Hour, MaxPending: 2, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	audit.RecordUse(1, time.Now())
	flushed := make(chan error)
	go func() { flushed <- audit.Flush(ctx) }() // blocks in the "database"
	for audit.Pending() != 0 {
		time.Sleep(time.Millisecond)
	}
	// While the write hangs, requests still record without waiting, up to
	// the cap; the rest are dropped and counted.
	for id := int64(10); id < 15; id++ {
		audit.RecordUse(id, time.Now())
	}
	if audit.Pending() != 2 || obs.dropped.Load() != 3 {
		t.Fatalf("pending %d dropped %d, want 2 and 3", audit.Pending(), obs.dropped.Load())
	}
	spy.fail.Store(true)
	close(spy.gate)
	if err := <-flushed; err == nil {
		t.Fatal("failed flush reported no error")
	}
	// The failed batch went back as far as the cap allowed.
	if audit.Pending() != 2 || obs.dropped.Load() != 4 {
		t.Fatalf("after failure: pending %d dropped %d, want 2 and 4", audit.Pending(), obs.dropped.Load())
	}
	spy.fail.Store(false)
	if err := audit.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
