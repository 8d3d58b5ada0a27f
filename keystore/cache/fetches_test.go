package cache_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
)

// slowStore holds every Verify until release is closed, and records how
// many ran at once.
type slowStore struct {
	keystore.Store
	release               chan struct{}
	inFlight, maxInFlight atomic.Int64
	calls                 atomic.Int64
}

func (s *slowStore) Verify(ctx context.Context, client string, tok keystore.Token) (keystore.VerifiedKey, error) {
	s.calls.Add(1)
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		m := s.maxInFlight.Load()
		if n <= m || s.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return keystore.VerifiedKey{}, keystore.ErrInvalidToken
}

// TestMaxConcurrentFetches: however many callers give up while their store
// calls run, no more than MaxConcurrentFetches calls run at once; the rest
// wait their turn.
func TestMaxConcurrentFetches(t *testing.T) {
	s := &slowStore{release: make(chan struct{})}
	c, err := cache.New(s, cache.Options{NoChangeFeed: true, MaxConcurrentFetches: 2, FetchTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	var wg sync.WaitGroup
	for range 20 {
		tok, err := keystore.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			// Every caller gives up at once: its call stays in line.
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			defer cancel()
			if _, err := c.Verify(ctx, "bot", tok); !errors.Is(err, keystore.ErrUnavailable) {
				t.Errorf("a caller that gave up: %v, want ErrUnavailable", err)
			}
		})
	}
	wg.Wait()
	// The calls run two at a time until all are done.
	close(s.release)
	deadline := time.Now().Add(time.Minute)
	for s.calls.Load() < 20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := s.calls.Load(); got != 20 {
		t.Fatalf("%d store calls made, want 20", got)
	}
	if got := s.maxInFlight.Load(); got > 2 {
		t.Fatalf("%d store calls at once, want at most 2", got)
	}
}
