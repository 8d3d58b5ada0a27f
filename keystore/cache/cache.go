package cache

import (
	"context"
	"errors"
	"fmt"
	"github.com/llmauth/llmauth/keystore"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gocache "github.com/patrickmn/go-cache"
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
	// FetchTimeout bounds one shared store call; each caller still waits
	// only as long as its own context allows. Default: 5s.
	FetchTimeout time.Duration
	// CleanupInterval is how often expired entries are swept from memory;
	// it also bounds how long a full negative cache keeps refusing new
	// entries because of expired ones. Default: NegativeTTL.
	CleanupInterval time.Duration
	// Now is the clock for freshness and key expiry. Default: time.Now.
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
// told of a change. Close stops its background sweep.
type Cache struct {
	inner keystore.Store
	opts  Options

	states   *gocache.Cache // client name -> stateEntry
	unknown  *gocache.Cache // client name -> time fetched
	verified *gocache.Cache // tokenKey -> keyEntry
	invalid  *gocache.Cache // tokenKey -> negEntry

	group singleflight.Group
	lease lease

	// mu orders fills against invalidation: a fill stores its result only
	// if no invalidation happened since it started (gen unchanged).
	mu  sync.RWMutex
	gen atomic.Uint64

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

type stateEntry struct {
	state   keystore.ClientState
	fetched time.Time
}

type keyEntry struct {
	principal keystore.VerifiedKey
	fetched   time.Time
}

type negEntry struct {
	clientID int64
}

var _ keystore.Store = (*Cache)(nil)

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
	c := &Cache{
		inner: inner,
		opts:  opts,
		// A cleanup interval of 0 starts no janitor: go-cache's own cannot
		// be stopped, so the sweep below, which can, does its work.
		states:   gocache.New(keep, 0),
		unknown:  gocache.New(opts.NegativeTTL, 0),
		verified: gocache.New(keep, 0),
		invalid:  gocache.New(opts.NegativeTTL, 0),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	c.lease.bound = opts.MaxStaleness
	c.lease.base = opts.Now()
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
			for _, g := range []*gocache.Cache{c.states, c.unknown, c.verified, c.invalid} {
				g.DeleteExpired()
			}
		}
	}
}

// Confirm tells the cache that every change committed before seen (by the
// cache's clock) has been applied to it, through Apply or Flush; a
// [Watcher] calls it after each successful read of the change log. Cached
// answers are used until seen plus MaxStaleness.
func (c *Cache) Confirm(seen time.Time) {
	c.lease.confirm(seen)
	c.fresh(c.opts.Now())
}

// Fresh returns nil while cached answers may be used, and an error
// wrapping ErrStale once the staleness bound has passed since the last
// confirmation (or before the first). Readiness probes use it.
func (c *Cache) Fresh() error {
	if c.fresh(c.opts.Now()) {
		return nil
	}
	return ErrStale
}

// MaxStaleness returns the staleness bound in force.
func (c *Cache) MaxStaleness() time.Duration { return c.lease.bound }

// fresh reports whether cached answers may be used at now, and reports a
// lapse or a restoration once each.
func (c *Cache) fresh(now time.Time) bool {
	ok := c.lease.valid(now)
	if ok && !c.lease.lapsed.Load() {
		return true // the hot path: one clock read by the caller, two atomic loads
	}
	lapsed, restored := c.lease.transition(now)
	switch {
	case lapsed:
		c.opts.Logger.Error("change feed not confirmed within the staleness bound: cached decisions unusable, requests go to the store (503 if it does not answer)",
			"max_staleness", c.lease.bound)
		if c.opts.Observer != nil {
			c.opts.Observer.LeaseChanged(false)
		}
	case restored:
		c.opts.Logger.Info("change feed confirmed again: cached decisions usable")
		if c.opts.Observer != nil {
			c.opts.Observer.LeaseChanged(true)
		}
	}
	return ok
}

func (c *Cache) observeLookup(cache string, hit bool) {
	if c.opts.Observer != nil {
		c.opts.Observer.CacheLookup(cache, hit)
	}
}

func (c *Cache) observeStale(cache string) {
	if c.opts.Observer != nil {
		c.opts.Observer.StaleServed(cache)
	}
}

// ClientState answers from the cache when it can, from the store when it
// must.
func (c *Cache) ClientState(ctx context.Context, client string) (keystore.ClientState, error) {
	if !keystore.ValidClientName(client) {
		// Never reaches the store or the cache: no memory for junk names.
		return keystore.ClientState{}, fmt.Errorf("%w: %q", keystore.ErrUnknownClient, truncated(client))
	}
	now := c.opts.Now()
	fresh := c.fresh(now)
	stale := false
	if v, ok := c.states.Get(client); ok {
		e := v.(stateEntry)
		if fresh && now.Sub(e.fetched) < c.opts.TTL {
			c.observeLookup(Clients, true)
			return e.state, nil
		}
		stale = true
	}
	if _, ok := c.unknown.Get(client); ok && fresh {
		c.observeLookup(UnknownClients, true)
		return keystore.ClientState{}, fmt.Errorf("%w: %q", keystore.ErrUnknownClient, client)
	}
	c.observeLookup(Clients, false)

	v, err := c.fill(ctx, "state\x00"+client, "client_state", func(ctx context.Context) (any, error) {
		return c.inner.ClientState(ctx, client)
	}, func(v any, err error, fetched time.Time) {
		switch {
		case err == nil:
			c.states.SetDefault(client, stateEntry{state: v.(keystore.ClientState), fetched: fetched})
		case errors.Is(err, keystore.ErrUnknownClient):
			c.states.Delete(client)
			if c.unknown.ItemCount() < c.opts.MaxNegative {
				c.unknown.SetDefault(client, fetched)
			}
		}
	})
	if err != nil {
		if stale && errors.Is(err, keystore.ErrUnavailable) && c.opts.StaleIfError > 0 {
			// Read the entry again: a change event may have dropped it
			// while the store call was failing.
			if v, ok := c.states.Get(client); ok {
				if e := v.(stateEntry); c.opts.Now().Sub(e.fetched) < c.opts.TTL+c.opts.StaleIfError {
					c.observeStale(Clients)
					return e.state, nil
				}
			}
		}
		return keystore.ClientState{}, err
	}
	return v.(keystore.ClientState), nil
}

// tokenKey is the cache key of a token presented to a client. The NUL
// separator cannot occur in a valid client name.
func tokenKey(client string, d keystore.Digest) string { return client + "\x00" + d.String() }

// Verify answers from the cache when it can, from the store when it must.
// A cached key stops working at its expires_at, whatever the TTL says.
func (c *Cache) Verify(ctx context.Context, client string, token keystore.Token) (keystore.VerifiedKey, error) {
	if token.IsZero() || !keystore.ValidClientName(client) {
		return keystore.VerifiedKey{}, keystore.ErrInvalidToken
	}
	key := tokenKey(client, token.Digest())
	now := c.opts.Now()
	fresh := c.fresh(now)
	stale := false
	if v, ok := c.verified.Get(key); ok {
		e := v.(keyEntry)
		if exp := e.principal.ExpiresAt; exp != nil && !now.Before(*exp) {
			c.verified.Delete(key)
			c.observeLookup(Keys, true)
			return keystore.VerifiedKey{}, keystore.ErrInvalidToken
		}
		if fresh && now.Sub(e.fetched) < c.opts.TTL {
			c.observeLookup(Keys, true)
			return e.principal, nil
		}
		stale = true
	}
	if _, ok := c.invalid.Get(key); ok && fresh {
		c.observeLookup(InvalidTokens, true)
		return keystore.VerifiedKey{}, keystore.ErrInvalidToken
	}
	c.observeLookup(Keys, false)

	v, err := c.fill(ctx, "verify\x00"+key, "verify", func(ctx context.Context) (any, error) {
		return c.inner.Verify(ctx, client, token)
	}, func(v any, err error, fetched time.Time) {
		switch {
		case err == nil:
			c.verified.SetDefault(key, keyEntry{principal: v.(keystore.VerifiedKey), fetched: fetched})
		case errors.Is(err, keystore.ErrInvalidToken):
			c.verified.Delete(key)
			if c.invalid.ItemCount() < c.opts.MaxNegative {
				var cid int64
				if st, ok := c.states.Get(client); ok {
					cid = st.(stateEntry).state.ID
				}
				c.invalid.SetDefault(key, negEntry{clientID: cid})
			}
		}
	})
	if err != nil {
		if stale && errors.Is(err, keystore.ErrUnavailable) && c.opts.StaleIfError > 0 {
			// Read the entry again: a change event may have dropped it
			// while the store call was failing, and time has passed.
			if v, ok := c.verified.Get(key); ok {
				e := v.(keyEntry)
				now := c.opts.Now()
				exp := e.principal.ExpiresAt
				if now.Sub(e.fetched) < c.opts.TTL+c.opts.StaleIfError && (exp == nil || now.Before(*exp)) {
					c.observeStale(Keys)
					return e.principal, nil
				}
			}
		}
		return keystore.VerifiedKey{}, err
	}
	return v.(keystore.VerifiedKey), nil
}

// fill makes one store call for all concurrent callers of the same key and
// stores its result unless an invalidation happened meanwhile. Each caller
// waits only as long as its own context allows; the shared call runs under
// FetchTimeout, detached from any one caller's cancellation.
func (c *Cache) fill(ctx context.Context, key, op string, fetch func(context.Context) (any, error), store func(any, error, time.Time)) (any, error) {
	gen := c.gen.Load()
	// The generation is part of the key, so that a caller arriving after an
	// invalidation never joins a call that started before it.
	sfKey := strconv.FormatUint(gen, 10) + "\x00" + key
	ch := c.group.DoChan(sfKey, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.FetchTimeout)
		defer cancel()
		// Freshness counts from before the call: the answer may be that old.
		fetched := c.opts.Now()
		start := time.Now()
		v, err := fetch(fctx)
		if c.opts.Observer != nil {
			var observed error
			if err != nil && errors.Is(err, keystore.ErrUnavailable) {
				observed = err
			}
			c.opts.Observer.StoreCall(op, time.Since(start), observed)
		}
		if err != nil && !errors.Is(err, keystore.ErrUnknownClient) && !errors.Is(err, keystore.ErrInvalidToken) && !errors.Is(err, keystore.ErrUnavailable) {
			// An inner store that does not follow the contract: its errors
			// are failures to decide, never decisions.
			err = fmt.Errorf("cache: %w: %w", keystore.ErrUnavailable, err)
		}
		c.mu.RLock()
		if c.gen.Load() == gen {
			store(v, err, fetched)
		}
		c.mu.RUnlock()
		return v, err
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("cache: %w: %w", keystore.ErrUnavailable, ctx.Err())
	}
}

// invalidate runs drop with fills held off and the generation moved on, so
// that no fill that started earlier can store a result from before the
// change.
func (c *Cache) invalidate(reason InvalidationReason, drop func()) {
	c.mu.Lock()
	c.gen.Add(1)
	drop()
	c.mu.Unlock()
	if c.opts.Observer != nil {
		c.opts.Observer.Invalidated(string(reason))
	}
}

// Flush drops every entry.
func (c *Cache) Flush() {
	c.invalidate(InvalidatedFlush, func() {
		for _, g := range []*gocache.Cache{c.states, c.unknown, c.verified, c.invalid} {
			g.Flush()
		}
	})
}

// Apply drops exactly the entries a batch of changes affects, in one pass
// over each cache. A "flush" change drops everything.
func (c *Cache) Apply(changes []keystore.Change) {
	if len(changes) == 0 {
		return
	}
	clients := map[int64]bool{}
	keys := map[int64]bool{}
	clientRows := false
	for _, ch := range changes {
		if ch.Source == keystore.SourceFlush {
			c.Flush()
			return
		}
		if ch.ClientID != 0 {
			clients[ch.ClientID] = true
		}
		if ch.KeyID != 0 {
			keys[ch.KeyID] = true
		}
		if ch.Source == keystore.SourceClient {
			clientRows = true
		}
	}
	reason := InvalidatedKey
	if len(keys) == 0 {
		reason = InvalidatedClient
	}
	c.invalidate(reason, func() {
		for name, it := range c.states.Items() {
			if clients[it.Object.(stateEntry).state.ID] {
				c.states.Delete(name)
			}
		}
		if clientRows {
			// A created or renamed client may be remembered as unknown.
			c.unknown.Flush()
		}
		for k, it := range c.verified.Items() {
			p := it.Object.(keyEntry).principal
			if keys[p.KeyID] || clients[p.ClientID] {
				c.verified.Delete(k)
			}
		}
		for k, it := range c.invalid.Items() {
			e := it.Object.(negEntry)
			// An entry with no client id was cached before its client's
			// state: it cannot be matched, so any client change drops it.
			if clients[e.clientID] || (e.clientID == 0 && len(clients) > 0) {
				c.invalid.Delete(k)
			}
		}
	})
}

var _ keystore.Store = (*Cache)(nil)

// truncated keeps an error message about a bad name short.
func truncated(s string) string {
	const limit = 70
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}
