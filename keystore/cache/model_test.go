package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

// modelStore is a reference model of the SQL store: clients, keys and
// links, with the change rows the PostgreSQL triggers emit for each
// mutation queued for a feed to apply later.
type modelStore struct {
	mu      sync.Mutex
	nextID  int64
	clients map[int64]*mClient
	keys    map[int64]*mKey
	links   map[[2]int64]bool // {client, key}
	pending []keystore.Change
	now     func() time.Time
	delay   func()
}

type mClient struct {
	id     int64
	name   string
	locked bool
}

type mKey struct {
	id      int64
	tok     keystore.Token
	active  bool
	expires *time.Time
}

func newModelStore(now func() time.Time) *modelStore {
	return &modelStore{nextID: 1, clients: map[int64]*mClient{}, keys: map[int64]*mKey{}, links: map[[2]int64]bool{}, now: now}
}

func (s *modelStore) byName(name string) *mClient {
	for _, c := range s.clients {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (s *modelStore) stateLocked(name string) (keystore.ClientState, error) {
	c := s.byName(name)
	if c == nil {
		return keystore.ClientState{}, fmt.Errorf("%w: %q", keystore.ErrUnknownClient, name)
	}
	active := false
	for l := range s.links {
		if l[0] == c.id && s.keys[l[1]].active {
			active = true
		}
	}
	return keystore.ClientState{ID: c.id, Name: c.name, Locked: c.locked, RequiresKey: active || c.locked}, nil
}

func (s *modelStore) verifyLocked(name string, tok keystore.Token) (keystore.VerifiedKey, error) {
	c := s.byName(name)
	if c == nil {
		return keystore.VerifiedKey{}, keystore.ErrInvalidToken
	}
	for l := range s.links {
		if l[0] != c.id {
			continue
		}
		k := s.keys[l[1]]
		if k.tok != tok || !k.active {
			continue
		}
		if k.expires != nil && !s.now().Before(*k.expires) {
			return keystore.VerifiedKey{}, keystore.ErrInvalidToken
		}
		var exp *time.Time
		if k.expires != nil {
			e := *k.expires
			exp = &e
		}
		return keystore.VerifiedKey{KeyID: k.id, ClientID: c.id, Client: name, ExpiresAt: exp}, nil
	}
	return keystore.VerifiedKey{}, keystore.ErrInvalidToken
}

func (s *modelStore) ClientState(_ context.Context, name string) (keystore.ClientState, error) {
	if s.delay != nil {
		s.delay()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stateLocked(name)
}

func (s *modelStore) Verify(_ context.Context, name string, tok keystore.Token) (keystore.VerifiedKey, error) {
	if s.delay != nil {
		s.delay()
	}
	s.mu.Lock()
	st, err := s.verifyLocked(name, tok)
	s.mu.Unlock()
	if s.delay != nil {
		s.delay()
	}
	return st, err
}

func (s *modelStore) emit(src keystore.ChangeSource, client, key int64) {
	s.pending = append(s.pending, keystore.Change{Source: src, ClientID: client, KeyID: key})
}

// keyChanged emits what llmauth_key_changed does: one row per linked
// client, and one with the key alone.
func (s *modelStore) keyChanged(k int64) {
	for l := range s.links {
		if l[1] == k {
			s.emit(keystore.SourceKey, l[0], k)
		}
	}
	s.emit(keystore.SourceKey, 0, k)
}

// mutate applies one random mutation to the model.
func (s *modelStore) mutate(r *rand.Rand, names []string, tokens []keystore.Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cids, kids []int64
	for id := range s.clients {
		cids = append(cids, id)
	}
	for id := range s.keys {
		kids = append(kids, id)
	}
	pickC := func() *mClient {
		if len(cids) == 0 {
			return nil
		}
		return s.clients[cids[r.IntN(len(cids))]]
	}
	pickK := func() *mKey {
		if len(kids) == 0 {
			return nil
		}
		return s.keys[kids[r.IntN(len(kids))]]
	}
	weights := []int{6, 2, 1, 4, 6, 4, 2, 4, 2, 1, 2}
	total := 0
	for _, w := range weights {
		total += w
	}
	op, x := 0, r.IntN(total)
	for x >= weights[op] {
		x -= weights[op]
		op++
	}
	switch op {
	case 0: // create a client under a free name
		name := names[r.IntN(len(names))]
		if s.byName(name) != nil {
			return
		}
		id := s.nextID
		s.nextID++
		s.clients[id] = &mClient{id: id, name: name}
		s.emit(keystore.SourceClient, id, 0)
	case 1: // rename
		c := pickC()
		name := names[r.IntN(len(names))]
		if c == nil || s.byName(name) != nil {
			return
		}
		c.name = name
		s.emit(keystore.SourceClient, c.id, 0)
	case 2: // delete a client (links cascade)
		c := pickC()
		if c == nil {
			return
		}
		for l := range s.links {
			if l[0] == c.id {
				delete(s.links, l)
				s.emit(keystore.SourceLink, l[0], l[1])
			}
		}
		delete(s.clients, c.id)
		s.emit(keystore.SourceClient, c.id, 0)
	case 3: // lock / unlock
		c := pickC()
		if c == nil {
			return
		}
		c.locked = !c.locked
		s.emit(keystore.SourceClient, c.id, 0)
	case 4: // create a key with a token from the pool, linked to a client
		c := pickC()
		if c == nil {
			return
		}
		tok := tokens[r.IntN(len(tokens))]
		for _, k := range s.keys {
			if k.tok == tok {
				return // lookup ids are unique
			}
		}
		id := s.nextID
		s.nextID++
		s.keys[id] = &mKey{id: id, tok: tok, active: true}
		s.links[[2]int64{c.id, id}] = true
		s.keyChanged(id)
		s.emit(keystore.SourceLink, c.id, id)
	case 5: // link
		c, k := pickC(), pickK()
		if c == nil || k == nil || s.links[[2]int64{c.id, k.id}] {
			return
		}
		s.links[[2]int64{c.id, k.id}] = true
		s.emit(keystore.SourceLink, c.id, k.id)
	case 6: // unlink
		c, k := pickC(), pickK()
		if c == nil || k == nil || !s.links[[2]int64{c.id, k.id}] {
			return
		}
		delete(s.links, [2]int64{c.id, k.id})
		s.emit(keystore.SourceLink, c.id, k.id)
	case 7: // revoke / reactivate
		k := pickK()
		if k == nil {
			return
		}
		k.active = !k.active
		s.keyChanged(k.id)
	case 8: // expiry moved
		k := pickK()
		if k == nil {
			return
		}
		if r.IntN(2) == 0 {
			k.expires = nil
		} else {
			e := s.now().Add(time.Duration(r.IntN(3)-1) * time.Minute)
			k.expires = &e
		}
		s.keyChanged(k.id)
	case 9: // delete a key
		k := pickK()
		if k == nil {
			return
		}
		for l := range s.links {
			if l[1] == k.id {
				delete(s.links, l)
				s.emit(keystore.SourceLink, l[0], l[1])
			}
		}
		delete(s.keys, k.id)
		s.emit(keystore.SourceKey, 0, k.id)
	case 10: // move a key from one client to another in one transaction
		c, k := pickC(), pickK()
		if c == nil || k == nil {
			return
		}
		for l := range s.links {
			if l[1] == k.id && l[0] != c.id {
				delete(s.links, l)
				s.emit(keystore.SourceLink, l[0], l[1])
			}
		}
		if !s.links[[2]int64{c.id, k.id}] {
			s.links[[2]int64{c.id, k.id}] = true
			s.emit(keystore.SourceLink, c.id, k.id)
		}
	}
}

func (s *modelStore) takePending() []keystore.Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending
	s.pending = nil
	return p
}

// checkAgainstModel fails t for every answer c gives from memory that the
// model does not give now. Call it with every change applied and no fill
// running.
func checkAgainstModel(t *testing.T, c *Cache, s *modelStore, names []string, tokens []keystore.Token) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	bad := 0
	for _, n := range names {
		got, err := c.PeekClientState(n)
		if !errors.Is(err, keystore.ErrNotCached) {
			want, werr := s.stateLocked(n)
			if (err == nil) != (werr == nil) || got != want {
				bad++
				if bad < 10 {
					t.Errorf("PeekClientState(%s) = %+v, %v; model %+v, %v", n, got, err, want, werr)
				}
			}
		}
		for i, tok := range tokens {
			got, err := c.PeekVerify(n, tok)
			if errors.Is(err, keystore.ErrNotCached) {
				continue
			}
			want, werr := s.verifyLocked(n, tok)
			same := (err == nil) == (werr == nil)
			if same && err == nil {
				same = got.KeyID == want.KeyID && got.ClientID == want.ClientID && got.Client == want.Client &&
					(got.ExpiresAt == nil) == (want.ExpiresAt == nil) && (got.ExpiresAt == nil || got.ExpiresAt.Equal(*want.ExpiresAt))
			}
			if !same {
				bad++
				if bad < 10 {
					t.Errorf("PeekVerify(%s, tok%d) = %+v, %v; model %+v, %v", n, i, got, err, want, werr)
				}
			}
		}
	}
	return bad
}

// TestModelConcurrent runs lookups against a model store while it
// changes and its changes are applied in random batches (with flushes and
// sweeps), and checks at quiet points that whatever the cache answers from
// memory is what the model answers, and that every entry is indexed.
func TestModelConcurrent(t *testing.T) {
	rounds := 60
	if testing.Short() {
		rounds = 10
	}
	clock := &fakeClock{now: leaseT0}
	s := newModelStore(clock.Now)
	var slow atomic.Bool
	s.delay = func() {
		if slow.Load() {
			time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
		}
	}
	names := []string{"a", "b", "c", "d", "e", "f"}
	tokens := make([]keystore.Token, 8)
	for i := range tokens {
		tokens[i] = mustToken(t)
	}
	c, err := New(s, Options{NoChangeFeed: true, Now: clock.Now, TTL: time.Minute, NegativeTTL: time.Hour, CleanupInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	var failed atomic.Bool
	for round := range rounds {
		slow.Store(true)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				for {
					select {
					case <-stop:
						return
					default:
					}
					n := names[r.IntN(len(names))]
					switch r.IntN(4) {
					case 0:
						_, _ = c.ClientState(ctx, n)
					case 1:
						_, _ = c.PeekClientState(n)
					default:
						_, _ = c.Verify(ctx, n, tokens[r.IntN(len(tokens))])
					}
				}
			})
		}
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(round), uint64(time.Now().UnixNano())))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s.mutate(r, names, tokens)
				time.Sleep(time.Duration(r.IntN(300)) * time.Microsecond)
				if r.IntN(3) == 0 {
					c.Apply(s.takePending())
					// Every change is applied and none is being made: any
					// answer from memory must be the model's.
					if bad := checkAgainstModel(t, c, s, names, tokens); bad > 0 {
						failed.Store(true)
						return
					}
				}
				if r.IntN(200) == 0 {
					c.Flush()
				}
				switch r.IntN(40) {
				case 0:
					clock.Add(61 * time.Second) // past the TTL: refills replace entries
				}
				if r.IntN(50) == 0 {
					c.deleteExpired()
				}
			}
		})
		time.Sleep(40 * time.Millisecond)
		close(stop)
		wg.Wait()
		slow.Store(false)
		if failed.Load() {
			t.Fatalf("round %d: stale answers", round)
		}
		c.Apply(s.takePending())
		if round%10 == 0 {
			a, b, d, e := cachedCount(c)
			s.mu.Lock()
			t.Logf("round %d: cached %d states %d unknown %d verified %d invalid; model %d clients %d keys %d links", round, a, b, d, e, len(s.clients), len(s.keys), len(s.links))
			s.mu.Unlock()
		}
		checkIndexes(t, c) // exact: nothing expires by go-cache's clock in this test
		if bad := checkAgainstModel(t, c, s, names, tokens); bad > 0 {
			t.Fatalf("round %d: %d stale answers", round, bad)
		}
	}
}

func cachedCount(c *Cache) (states, unknown, verified, invalid int) {
	return c.states.ItemCount(), c.unknown.ItemCount(), c.verified.ItemCount(), c.invalid.ItemCount()
}

// TestModelChunkedSweeps races lookups and their fills, changes applied
// in random batches, flushes, and sweeps of entries expiring by go-cache's
// own clock: the background sweep every millisecond, and another
// unindexing two entries per hold of Cache.mu, and pausing before it
// does, so that fills, changes and flushes run between go-cache's
// deletions and their unindexing, and between its chunks. Throughout, every live entry must
// be indexed (a sweep must never unindex an entry a fill stored after
// the sweep deleted the one it replaced); at quiet points, whatever the
// cache answers from memory is what the model answers; at the end, once
// everything has expired and been swept, nothing may be left indexed.
func TestModelChunkedSweeps(t *testing.T) {
	clock := &fakeClock{now: leaseT0}
	s := newModelStore(clock.Now)
	s.delay = func() { time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond) }
	names := []string{"a", "b", "c", "d"}
	tokens := make([]keystore.Token, 6)
	for i := range tokens {
		tokens[i] = mustToken(t)
	}
	c, err := New(s, Options{NoChangeFeed: true, Now: clock.Now, TTL: 3 * time.Millisecond, NegativeTTL: 2 * time.Millisecond, CleanupInterval: time.Millisecond, MaxNegative: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 5))
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := names[r.IntN(len(names))]
				if r.IntN(3) == 0 {
					_, _ = c.ClientState(ctx, n)
				} else {
					_, _ = c.Verify(ctx, n, tokens[r.IntN(len(tokens))])
				}
			}
		})
	}
	wg.Go(func() {
		r := rand.New(rand.NewPCG(7, 7))
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.mutate(r, names, tokens)
			time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond)
			if r.IntN(2) == 0 {
				c.Apply(s.takePending())
			}
			if r.IntN(300) == 0 {
				c.Flush()
			}
		}
	})
	var sweeps atomic.Int64
	wg.Go(func() {
		// sweepExpired(2), slowed down between go-cache's deletions and
		// their unindexing, as a sweep of many entries is: fills store
		// under the keys swept meanwhile.
		r := rand.New(rand.NewPCG(9, 9))
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.sweeping.Lock()
			for _, t := range []*shards{c.states, c.verified, c.invalid} {
				for _, g := range t.s {
					g.DeleteExpired()
					c.ev.mu.Lock()
					queued := len(c.ev.swept)
					c.ev.mu.Unlock()
					if queued > 0 {
						time.Sleep(time.Duration(r.IntN(500)) * time.Microsecond)
					}
					c.unindexSwept(2)
				}
			}
			c.sweeping.Unlock()
			sweeps.Add(1)
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			checkIndexed(t, c) // takes Cache.mu: between any two chunks
		}
	})
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	c.Apply(s.takePending())
	checkIndexed(t, c)
	if bad := checkAgainstModel(t, c, s, names, tokens); bad > 0 {
		t.Fatalf("%d stale answers", bad)
	}
	a, b, d, e := cachedCount(c)
	t.Logf("%d chunked sweeps; cached at the end %d states %d unknown %d verified %d invalid", sweeps.Load(), a, b, d, e)
	time.Sleep(20 * time.Millisecond)
	c.deleteExpired()
	checkIndexes(t, c)
	if !c.idx.empty() {
		t.Errorf("indexes after every entry expired and was swept: %+v", c.idx)
	}
}
