package cache

import (
	"context"
	"errors"
	"fmt"
	"github.com/llmauth/llmauth/keystore"
	"sync"
	"testing"
	"time"
)

var leaseT0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func TestLeaseConfirm(t *testing.T) {
	l := lease{bound: time.Second, base: leaseT0}
	steps := []struct {
		seen      time.Duration // after leaseT0
		wantUntil time.Duration
	}{
		{seen: 5 * time.Second, wantUntil: 6 * time.Second},
		{seen: 2 * time.Second, wantUntil: 6 * time.Second}, // older: ignored
		{seen: 5 * time.Second, wantUntil: 6 * time.Second}, // same: no change
		{seen: 7 * time.Second, wantUntil: 8 * time.Second},
		{seen: 0, wantUntil: 8 * time.Second},
	}
	for _, s := range steps {
		l.confirm(leaseT0.Add(s.seen))
		if got := time.Duration(l.until.Load()); got != s.wantUntil {
			t.Errorf("after confirm(t0+%v): until = t0+%v, want t0+%v", s.seen, got, s.wantUntil)
		}
	}
}

func TestLeaseValid(t *testing.T) {
	tests := []struct {
		name      string
		confirmed bool
		at        time.Duration // after seen, which is leaseT0
		want      bool
	}{
		{name: "never confirmed", at: 0, want: false},
		{name: "never confirmed, long before", at: -time.Hour, want: false},
		{name: "at seen", confirmed: true, at: 0, want: true},
		{name: "before seen", confirmed: true, at: -time.Minute, want: true},
		{name: "just before the bound", confirmed: true, at: time.Second - 1, want: true},
		{name: "at the bound", confirmed: true, at: time.Second, want: false},
		{name: "just after the bound", confirmed: true, at: time.Second + 1, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := lease{bound: time.Second, base: leaseT0}
			if tt.confirmed {
				l.confirm(leaseT0)
			}
			if got := l.valid(leaseT0.Add(tt.at)); got != tt.want {
				t.Errorf("valid(seen%+v) = %v, want %v", tt.at, got, tt.want)
			}
		})
	}
}

func TestLeaseTransition(t *testing.T) {
	type step struct {
		confirm      *time.Duration // confirm at leaseT0 plus this, before looking
		at           time.Duration
		wantLapsed   bool
		wantRestored bool
	}
	d := func(x time.Duration) *time.Duration { return &x }
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "never confirmed reports nothing", steps: []step{
			{at: 0}, {at: time.Hour}, {at: 24 * time.Hour},
		}},
		{name: "lapse and restore once each", steps: []step{
			{confirm: d(0), at: 500 * time.Millisecond},
			{at: time.Second, wantLapsed: true},
			{at: time.Second + 1},
			{at: time.Hour},
			{confirm: d(time.Hour), at: time.Hour, wantRestored: true},
			{at: time.Hour + 1},
			{confirm: d(time.Hour + time.Millisecond), at: time.Hour + 2*time.Millisecond},
			{at: time.Hour + 5*time.Second, wantLapsed: true},
			{at: time.Hour + 6*time.Second},
		}},
		{name: "an old confirmation does not restore", steps: []step{
			{confirm: d(0), at: 2 * time.Second, wantLapsed: true},
			{confirm: d(500 * time.Millisecond), at: 2 * time.Second},
			{confirm: d(1500 * time.Millisecond), at: 2 * time.Second, wantRestored: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := lease{bound: time.Second, base: leaseT0}
			for i, s := range tt.steps {
				if s.confirm != nil {
					l.confirm(leaseT0.Add(*s.confirm))
				}
				lapsed, restored := l.transition(leaseT0.Add(s.at))
				if lapsed != s.wantLapsed || restored != s.wantRestored {
					t.Errorf("step %d: transition(t0+%v) = (%v, %v), want (%v, %v)", i, s.at, lapsed, restored, s.wantLapsed, s.wantRestored)
				}
			}
		})
	}
}

// fakeClock is a cache clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

// countingStore answers every client "bot" and every token, counting calls,
// and fails with err when one is set.
type countingStore struct {
	mu     sync.Mutex
	err    error
	states int
	checks int
}

var (
	leaseState     = keystore.ClientState{ID: 7, Name: "bot", RequiresKey: true}
	leasePrincipal = keystore.VerifiedKey{KeyID: 3, KeyName: "k", ClientID: 7, Client: "bot"}
)

func (s *countingStore) ClientState(context.Context, string) (keystore.ClientState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states++
	if s.err != nil {
		return keystore.ClientState{}, s.err
	}
	return leaseState, nil
}

func (s *countingStore) Verify(context.Context, string, keystore.Token) (keystore.VerifiedKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks++
	if s.err != nil {
		return keystore.VerifiedKey{}, s.err
	}
	return leasePrincipal, nil
}

func (s *countingStore) fail(err error) { s.mu.Lock(); defer s.mu.Unlock(); s.err = err }

func (s *countingStore) calls() (states, checks int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.states, s.checks
}

// leaseObserver counts lease changes and stale serves.
type leaseObserver struct {
	mu               sync.Mutex
	lapsed, restored int
	stale            map[string]int
}

func (o *leaseObserver) StaleServed(cache string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stale[cache]++
}

func (o *leaseObserver) LeaseChanged(fresh bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if fresh {
		o.restored++
	} else {
		o.lapsed++
	}
}

func (*leaseObserver) CacheLookup(string, bool)               {}
func (*leaseObserver) Invalidated(string)                     {}
func (*leaseObserver) StoreCall(string, time.Duration, error) {}

func (o *leaseObserver) changes() (lapsed, restored int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lapsed, o.restored
}

func (o *leaseObserver) staleServed(cache string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.stale[cache]
}

type leaseFixture struct {
	clock *fakeClock
	store *countingStore
	obs   *leaseObserver
	cache *Cache
	token keystore.Token
}

func newLeaseFixture(t *testing.T, opts Options) *leaseFixture {
	t.Helper()
	f := &leaseFixture{clock: &fakeClock{now: leaseT0}, store: &countingStore{}, obs: &leaseObserver{stale: map[string]int{}}}
	opts.Now, opts.Observer = f.clock.Now, f.obs
	c, err := New(f.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f.cache = c
	if f.token, err = keystore.NewToken(); err != nil {
		t.Fatal(err)
	}
	return f
}

// lookup asks the cache once, through ClientState or Verify, and returns
// the store's calls of that method so far; an answer other than the
// store's, or an answer given with an error, is an error.
func (f *leaseFixture) lookup(verify bool) (calls int, err error) {
	if verify {
		p, err := f.cache.Verify(context.Background(), "bot", f.token)
		if err == nil && p != leasePrincipal {
			err = fmt.Errorf("Verify = %+v, want %+v", p, leasePrincipal)
		} else if err != nil && p != (keystore.VerifiedKey{}) {
			err = fmt.Errorf("Verify = (%+v, %w), want no principal with an error", p, err)
		}
		_, calls = f.store.calls()
		return calls, err
	}
	st, err := f.cache.ClientState(context.Background(), "bot")
	if err == nil && st != leaseState {
		err = fmt.Errorf("ClientState = %+v, want %+v", st, leaseState)
	} else if err != nil && st != (keystore.ClientState{}) {
		err = fmt.Errorf("ClientState = (%+v, %w), want no state with an error", st, err)
	}
	calls, _ = f.store.calls()
	return calls, err
}

var leaseOps = []struct {
	name   string
	verify bool
	cache  string
}{{"ClientState", false, Clients}, {"Verify", true, Keys}}

func TestCacheLeaseBeforeConfirm(t *testing.T) {
	for _, op := range leaseOps {
		t.Run(op.name, func(t *testing.T) {
			f := newLeaseFixture(t, Options{})
			for want := 1; want <= 3; want++ {
				if calls, err := f.lookup(op.verify); err != nil || calls != want {
					t.Fatalf("lookup %d: store calls %d, err %v; want %d, nil", want, calls, err, want)
				}
			}
			if err := f.cache.Fresh(); !errors.Is(err, ErrStale) || !errors.Is(err, keystore.ErrUnavailable) {
				t.Errorf("Fresh() = %v, want ErrStale wrapping ErrUnavailable", err)
			}
			if lapsed, restored := f.obs.changes(); lapsed != 0 || restored != 0 {
				t.Errorf("LeaseChanged(false) %d times, (true) %d times; want 0, 0", lapsed, restored)
			}
		})
	}
}

func TestCacheLeaseLapse(t *testing.T) {
	down := fmt.Errorf("db down: %w", keystore.ErrUnavailable)
	for _, op := range leaseOps {
		for _, staleIfError := range []time.Duration{0, time.Minute} {
			t.Run(fmt.Sprintf("%s/StaleIfError=%v", op.name, staleIfError), func(t *testing.T) {
				f := newLeaseFixture(t, Options{MaxStaleness: 500 * time.Millisecond, StaleIfError: staleIfError})
				f.cache.Confirm(f.clock.Now())
				if err := f.cache.Fresh(); err != nil {
					t.Fatalf("Fresh() after Confirm = %v, want nil", err)
				}
				expect := func(what string, wantCalls int, wantErr error) {
					t.Helper()
					calls, err := f.lookup(op.verify)
					if calls != wantCalls || !errors.Is(err, wantErr) || (wantErr == nil && err != nil) {
						t.Fatalf("%s: store calls %d, err %v; want %d, %v", what, calls, err, wantCalls, wantErr)
					}
				}
				expect("first lookup", 1, nil)
				f.clock.Add(499 * time.Millisecond)
				expect("hit within the bound", 1, nil)

				f.clock.Add(time.Millisecond) // at seen + bound: lapsed
				expect("past the bound, store up", 2, nil)
				expect("past the bound, store up again", 3, nil)
				if err := f.cache.Fresh(); !errors.Is(err, ErrStale) {
					t.Errorf("Fresh() past the bound = %v, want ErrStale", err)
				}

				f.store.fail(down)
				if staleIfError > 0 {
					expect("past the bound, store down, StaleIfError", 4, nil)
					if n := f.obs.staleServed(op.cache); n != 1 {
						t.Errorf("StaleServed(%q) called %d times, want 1", op.cache, n)
					}
				} else {
					expect("past the bound, store down", 4, keystore.ErrUnavailable)
					if n := f.obs.staleServed(op.cache); n != 0 {
						t.Errorf("StaleServed(%q) called %d times, want 0", op.cache, n)
					}
				}
				if lapsed, restored := f.obs.changes(); lapsed != 1 || restored != 0 {
					t.Errorf("after lapse: LeaseChanged(false) %d times, (true) %d times; want 1, 0", lapsed, restored)
				}

				// The watcher reads the log again: the entry cached by the
				// last successful call answers with no store call.
				f.cache.Confirm(f.clock.Now())
				if err := f.cache.Fresh(); err != nil {
					t.Errorf("Fresh() after restore = %v, want nil", err)
				}
				expect("restored, store down", 4, nil)
				if lapsed, restored := f.obs.changes(); lapsed != 1 || restored != 1 {
					t.Errorf("after restore: LeaseChanged(false) %d times, (true) %d times; want 1, 1", lapsed, restored)
				}
				if staleIfError > 0 {
					// Past TTL+StaleIfError even a stale answer is refused.
					f.clock.Add(30*time.Second + staleIfError)
					expect("entry too old, store down", 5, keystore.ErrUnavailable)
					if lapsed, restored := f.obs.changes(); lapsed != 2 || restored != 1 {
						t.Errorf("second lapse: LeaseChanged(false) %d times, (true) %d times; want 2, 1", lapsed, restored)
					}
				}
			})
		}
	}
}

func TestCacheLeaseNoChangeFeed(t *testing.T) {
	for _, op := range leaseOps {
		t.Run(op.name, func(t *testing.T) {
			f := newLeaseFixture(t, Options{NoChangeFeed: true})
			for _, step := range []time.Duration{0, time.Second, 20 * time.Second} {
				f.clock.Add(step)
				if calls, err := f.lookup(op.verify); err != nil || calls != 1 {
					t.Fatalf("lookup at +%v: store calls %d, err %v; want 1, nil", step, calls, err)
				}
				if err := f.cache.Fresh(); err != nil {
					t.Fatalf("Fresh() at +%v = %v, want nil", step, err)
				}
			}
			if lapsed, restored := f.obs.changes(); lapsed != 0 || restored != 0 {
				t.Errorf("LeaseChanged(false) %d times, (true) %d times; want 0, 0", lapsed, restored)
			}
		})
	}
}

func TestCacheLeaseMaxStaleness(t *testing.T) {
	tests := []struct {
		given   time.Duration
		want    time.Duration
		wantErr error
	}{
		{given: 0, want: keystore.StalenessPromise},
		{given: 250 * time.Millisecond, want: 250 * time.Millisecond},
		{given: keystore.StalenessPromise, want: keystore.StalenessPromise},
		{given: keystore.StalenessPromise + 1, wantErr: keystore.ErrInvalidInput},
		{given: 2 * time.Second, wantErr: keystore.ErrInvalidInput},
		{given: -time.Millisecond, wantErr: keystore.ErrInvalidInput},
	}
	for _, tt := range tests {
		t.Run(tt.given.String(), func(t *testing.T) {
			c, err := New(&countingStore{}, Options{MaxStaleness: tt.given})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || c != nil {
					t.Fatalf("New(MaxStaleness %v) = (%v, %v), want (nil, %v)", tt.given, c, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.MaxStaleness(); got != tt.want {
				t.Errorf("MaxStaleness() = %v, want %v", got, tt.want)
			}
		})
	}
}
