package cache

import (
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llmauth/llmauth/keystore"

	gocache "github.com/patrickmn/go-cache"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"
)

// Cache names, as reported to a [Observer].
const (
	Clients        = "clients"         // client states
	UnknownClients = "unknown_clients" // names that are no client
	Keys           = "keys"            // verified keys
	InvalidTokens  = "invalid_tokens"  // tokens that failed
)

// InvalidationReason says why entries were dropped, as reported to
// Observer.Invalidated.
type InvalidationReason string

// The invalidation reasons.
const (
	InvalidatedClient InvalidationReason = "client" // a client's rows changed
	InvalidatedKey    InvalidationReason = "key"    // a key or its link changed
	InvalidatedFlush  InvalidationReason = "flush"  // everything was dropped
)

// Observer receives the cache's events; metrics.Metrics implements it.
// Methods must be cheap and safe for concurrent use.
type Observer interface {
	CacheLookup(cache string, hit bool)
	StaleServed(cache string)
	Invalidated(reason string)
	StoreCall(op string, d time.Duration, err error)
	// LeaseChanged reports that the cache's proof of freshness lapsed
	// (fresh false) or was restored (fresh true); see
	// Options.MaxStaleness.
	LeaseChanged(fresh bool)
}

// Options configures a [Cache]. The zero value is ready to use.
type Options struct {
	// TTL is how long a client state or a verified key is trusted without
	// asking the store. Change events (see [Watcher]) end it early.
	// Default: 30s.
	TTL time.Duration
	// NegativeTTL is how long an unknown client or an invalid token is
	// remembered. Default: 5s.
	NegativeTTL time.Duration
	// MaxNegative caps the number of unknown-client and invalid-token
	// entries (each), so that a flood of random names or tokens cannot grow
	// memory without bound. When full, new negatives are simply not cached.
	// Default: 10000.
	MaxNegative int
	// MaxStaleness is the staleness bound: cached answers are used only
	// while the cache can prove it has seen every change up to a moment at
	// most this old, the start of the last successful read of the change
	// log (see [Cache.Confirm], which a [Watcher] calls). Past it, every
	// request asks the store; if the store cannot answer, the request
	// fails with ErrUnavailable. It must not exceed [StalenessPromise].
	// Default: StalenessPromise (1s).
	MaxStaleness time.Duration
	// NoChangeFeed trusts entries for their whole TTL with no change feed
	// confirming them, for a Store that has no [Watcher]. It gives up the
	// one-second promise: a change is seen only when the entries it
	// affects reach their TTL. Default: false.
	NoChangeFeed bool
	// StaleIfError, when positive, lets a client state or verified key up
	// to TTL+StaleIfError old be served while the store is unavailable,
	// even when the staleness bound has passed: during a partition, a
	// revoked key may then be accepted for up to TTL+StaleIfError.
	// Entries dropped by a change event are never served. Default: 0 (off:
	// when the store fails, an entry past its TTL or the staleness bound
	// is not used).
	StaleIfError time.Duration
	// MaxConcurrentFetches bounds how many store calls (misses) run at
	// once; more wait their turn, first come first served, within
	// FetchTimeout. The slot is held for the call itself, so callers who
	// give up while it runs cannot leave more calls running than this: a
	// flood of unknown tokens or names cannot take every database
	// connection. Default: 16.
	MaxConcurrentFetches int
	// FetchTimeout bounds one shared store call; each caller still waits
	// only as long as its own context allows. Default: 5s.
	FetchTimeout time.Duration
	// CleanupInterval is how often expired entries are swept from memory;
	// it also bounds how long a full negative cache keeps refusing new
	// entries because of expired ones. Default: NegativeTTL.
	CleanupInterval time.Duration
	// Now is the clock for freshness and key expiry. It must not step
	// backwards: the lease and the TTL are measured on it, and a clock
	// stepped back would stretch them. time.Now never does (its monotonic
	// reading); a test clock must only move forward. Default: time.Now.
	Now func() time.Time
	// Observer, when set, receives hits, misses, stale serves,
	// invalidations, store call timings and lease changes.
	Observer Observer
	// Logger receives one line when the staleness bound lapses and one
	// when it is restored. Default: discard.
	Logger *slog.Logger
}

// Cache is a [Store] in front of another Store. It caches client states and
// verified keys (under the token's digest, never its plaintext) for TTL,
// unknown clients and invalid tokens for NegativeTTL, collapses concurrent
// misses into one store call, and drops exactly the affected entries when
// told of a change, at a cost proportional to what it drops (see
// [Cache.Apply]). It is also a [keystore.Peeker]. Close stops its
// background sweep.
type Cache struct {
	inner keystore.Store
	opts  Options

	// states and verified are split in shards, so that a sweep holds a
	// go-cache's lock for one shard's entries at a time (see shardCount);
	// unknown and invalid (one shard) hold MaxNegative entries at most.
	states   *shards        // client name -> stateEntry
	unknown  *gocache.Cache // client name -> struct{}
	verified *shards        // tokenKey -> keyEntry
	invalid  *shards        // tokenKey -> negEntry

	// base is the origin of entries' fetch times, which are kept as
	// offsets: 8 bytes an entry rather than a time.Time's 24.
	base time.Time
	// seed keys the hash that tokenKey mixes a client's name with.
	seed maphash.Seed

	group   singleflight.Group
	fetches *semaphore.Weighted // store call slots: MaxConcurrentFetches
	lease   lease
	renew   chan struct{} // see RenewRequests

	// mu orders fills against invalidation: a fill stores its result only
	// if no invalidation happened since it started (gen unchanged). It
	// also guards idx: every write to states, verified and invalid
	// happens under it, and every deletion from them but a sweep's, which
	// deletes without it and unindexes afterwards, a chunk per hold (see
	// indexes). Lookups take no part in it.
	mu  sync.Mutex
	gen atomic.Uint64
	idx indexes
	ev  evictions // what the eviction hook recorded, for del or a sweep

	sweeping sync.Mutex // one sweep at a time

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// stateEntry is a cached client state. Its key in states is the state's
// Name when that is the name asked for, sharing its bytes.
type stateEntry struct {
	state   keystore.ClientState
	fetched time.Duration // since Cache.base
}

// keyEntry is a cached verified key. principal.Client is the client the
// token was presented to: see Verify.
type keyEntry struct {
	principal keystore.VerifiedKey
	fetched   time.Duration // since Cache.base
}

// negEntry is a cached invalid token: the client it was presented to and
// that client's id, or 0 when its state was not cached.
type negEntry struct {
	client   string
	clientID int64
}

// New wraps inner. Call Close when done with it.
func New(inner keystore.Store, opts Options) (*Cache, error) {
	if inner == nil {
		return nil, fmt.Errorf("%w: nil store", keystore.ErrInvalidInput)
	}
	for name, d := range map[string]time.Duration{
		"TTL": opts.TTL, "NegativeTTL": opts.NegativeTTL, "StaleIfError": opts.StaleIfError,
		"FetchTimeout": opts.FetchTimeout, "CleanupInterval": opts.CleanupInterval,
		"MaxStaleness": opts.MaxStaleness,
	} {
		if d < 0 {
			return nil, fmt.Errorf("%w: negative %s", keystore.ErrInvalidInput, name)
		}
	}
	if opts.MaxConcurrentFetches < 0 {
		return nil, fmt.Errorf("%w: negative MaxConcurrentFetches", keystore.ErrInvalidInput)
	}
	if opts.MaxConcurrentFetches == 0 {
		opts.MaxConcurrentFetches = 16
	}
	if opts.MaxNegative < 0 {
		return nil, fmt.Errorf("%w: negative MaxNegative", keystore.ErrInvalidInput)
	}
	if opts.MaxStaleness > keystore.StalenessPromise {
		return nil, fmt.Errorf("%w: MaxStaleness %v exceeds the %v promise", keystore.ErrInvalidInput, opts.MaxStaleness, keystore.StalenessPromise)
	}
	if opts.MaxStaleness == 0 {
		opts.MaxStaleness = keystore.StalenessPromise
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.TTL == 0 {
		opts.TTL = 30 * time.Second
	}
	if opts.NegativeTTL == 0 {
		opts.NegativeTTL = 5 * time.Second
	}
	if opts.MaxNegative == 0 {
		opts.MaxNegative = 10000
	}
	if opts.FetchTimeout == 0 {
		opts.FetchTimeout = 5 * time.Second
	}
	if opts.CleanupInterval == 0 {
		opts.CleanupInterval = opts.NegativeTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	keep := opts.TTL + opts.StaleIfError
	now := opts.Now()
	c := &Cache{
		inner: inner,
		opts:  opts,
		// A cleanup interval of 0 starts no janitor: go-cache's own cannot
		// be stopped, so the sweep below, which can, does its work.
		states:   newShards(shardCount, keep),
		unknown:  gocache.New(opts.NegativeTTL, 0),
		verified: newShards(shardCount, keep),
		invalid:  newShards(1, opts.NegativeTTL),
		base:     now,
		seed:     maphash.MakeSeed(),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		renew:    make(chan struct{}, 1),
		fetches:  semaphore.NewWeighted(int64(opts.MaxConcurrentFetches)),
	}
	c.states.OnEvicted(c.evicted)
	c.verified.OnEvicted(c.evicted)
	c.invalid.OnEvicted(c.evicted)
	c.lease.bound = opts.MaxStaleness
	c.lease.base = now
	if opts.NoChangeFeed {
		c.lease.forever()
	}
	go c.sweep()
	return c, nil
}

// Close stops the background sweep. The cache still answers afterwards.
func (c *Cache) Close() error {
	c.stopOnce.Do(func() { close(c.stop) })
	<-c.done
	return nil
}

// sweep drops expired entries, and notices a lapse of the lease even
// when no request comes.
func (c *Cache) sweep() {
	defer close(c.done)
	t := time.NewTicker(c.opts.CleanupInterval)
	defer t.Stop()
	l := time.NewTicker(c.lease.bound / 4)
	defer l.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-l.C:
			c.fresh(c.opts.Now())
		case <-t.C:
			c.deleteExpired()
		}
	}
}

// sweepChunk is how many entries a sweep unindexes per hold of mu: about
// a millisecond's work, all a change, a confirmation or a fill waits for.
const sweepChunk = 1000

// deleteExpired drops the entries past their go-cache expiry.
func (c *Cache) deleteExpired() { c.sweepExpired(sweepChunk) }

// sweepExpired drops the entries past their go-cache expiry, shard by
// shard. Entries that expire together (filled together after a flush, at
// start, at high volume) can be millions, at about a microsecond each to
// delete and as much to unindex: no lock is held for all of them. go-cache
// deletes a shard's expired entries holding that shard's lock only (and
// not mu: the eviction hook queues them), then they are unindexed chunk
// entries per hold of mu, so that Apply and the Confirm after it, and
// every fill's store, wait for a chunk at most, never long enough to
// lapse the lease. An entry a fill stores meanwhile under a swept key
// keeps its index entries (see unindex). One sweep runs at a time.
func (c *Cache) sweepExpired(chunk int) {
	c.sweeping.Lock()
	defer c.sweeping.Unlock()
	for _, t := range []*shards{c.states, c.verified, c.invalid} {
		for _, g := range t.s {
			g.DeleteExpired()
			c.unindexSwept(chunk)
		}
	}
	c.unknown.DeleteExpired()
}

// unindexSwept unindexes the entries a sweep's DeleteExpired deleted,
// chunk entries per hold of mu.
func (c *Cache) unindexSwept(chunk int) {
	c.ev.mu.Lock()
	swept := c.ev.swept
	c.ev.swept = nil
	c.ev.mu.Unlock()
	for len(swept) > 0 {
		n := min(chunk, len(swept))
		c.mu.Lock()
		for _, x := range swept[:n] {
			c.unindex(x)
		}
		c.mu.Unlock()
		swept = swept[n:]
	}
}

var (
	_ keystore.Store  = (*Cache)(nil)
	_ keystore.Peeker = (*Cache)(nil)
)
