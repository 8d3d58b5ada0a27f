package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

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
	st, how, err := c.peekState(client, c.opts.Now())
	if how == peekHit {
		return st, err
	}
	c.observeLookup(Clients, false)

	v, err := c.fill(ctx, "state\x00"+client, "client_state", func(ctx context.Context) (any, error) {
		return c.inner.ClientState(ctx, client)
	}, func(v any, err error, fetched time.Duration) {
		switch {
		case err == nil:
			c.storeState(client, v.(keystore.ClientState), fetched)
		case errors.Is(err, keystore.ErrUnknownClient):
			c.storeUnknown(client)
		}
	})
	if err != nil {
		if how == peekStale && errors.Is(err, keystore.ErrUnavailable) && c.opts.StaleIfError > 0 {
			// Read the entry again: a change event may have dropped it
			// while the store call was failing.
			if v, ok := c.states.Get(client); ok {
				if e := v.(stateEntry); c.age(c.opts.Now(), e.fetched) < c.opts.TTL+c.opts.StaleIfError {
					c.observeStale(Clients)
					return e.state, nil
				}
			}
		}
		return keystore.ClientState{}, err
	}
	return v.(keystore.ClientState), nil
}

// Verify answers from the cache when it can, from the store when it must.
// A cached key stops working at its expires_at, whatever the TTL says. An
// answer whose VerifiedKey.Client is not the client asked about (which no
// store that keeps the contract gives) is returned but not cached.
func (c *Cache) Verify(ctx context.Context, client string, token keystore.Token) (keystore.VerifiedKey, error) {
	now := c.opts.Now()
	p, k, how, err := c.peekVerify(client, token, now)
	switch how {
	case peekHit:
		return p, err
	case peekExpired:
		// What a peek leaves: the next lookup asks the store.
		c.dropExpired(k, now)
		return p, err
	}
	c.observeLookup(Keys, false)

	key := string(k[:])
	v, err := c.fill(ctx, "verify\x00"+key, "verify", func(ctx context.Context) (any, error) {
		return c.inner.Verify(ctx, client, token)
	}, func(v any, err error, fetched time.Duration) {
		switch {
		case err == nil:
			c.storeKey(key, client, v.(keystore.VerifiedKey), fetched)
		case errors.Is(err, keystore.ErrInvalidToken):
			c.storeInvalid(key, client)
		}
	})
	if err != nil {
		if how == peekStale && errors.Is(err, keystore.ErrUnavailable) && c.opts.StaleIfError > 0 {
			// Read the entry again: a change event may have dropped it
			// while the store call was failing, and time has passed.
			if v, ok := c.verified.Get(key); ok {
				e := v.(keyEntry)
				now := c.opts.Now()
				if e.principal.Client == client && c.age(now, e.fetched) < c.opts.TTL+c.opts.StaleIfError && !e.expired(now) {
					c.observeStale(Keys)
					return e.principal, nil
				}
			}
		}
		return keystore.VerifiedKey{}, err
	}
	return v.(keystore.VerifiedKey), nil
}

// dropExpired deletes the entry under k if its key has expired at now
// (another may have replaced it since it was read).
func (c *Cache) dropExpired(k tokenKey, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.verified.Get(string(k[:])); ok && v.(keyEntry).expired(now) {
		c.del(c.verified, string(k[:]))
	}
}

// fill makes one store call for all concurrent callers of the same key and
// stores its result unless an invalidation happened meanwhile. Each caller
// waits only as long as its own context allows; the shared call runs under
// FetchTimeout, detached from any one caller's cancellation.
func (c *Cache) fill(ctx context.Context, key, op string, fetch func(context.Context) (any, error), store func(any, error, time.Duration)) (any, error) {
	gen := c.gen.Load()
	// The generation is part of the key, so that a caller arriving after an
	// invalidation never joins a call that started before it.
	sfKey := strconv.FormatUint(gen, 10) + "\x00" + key
	ch := c.group.DoChan(sfKey, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.FetchTimeout)
		defer cancel()
		// The slot is held for the store call itself: not for a caller who
		// may leave while it runs, nor while its result waits for mu.
		if err := c.fetches.Acquire(fctx, 1); err != nil {
			return nil, fmt.Errorf("cache: %w: waiting for a store call slot: %w", keystore.ErrUnavailable, err)
		}
		// Freshness counts from before the call: the answer may be that old.
		fetched := c.opts.Now().Sub(c.base)
		start := time.Now()
		v, err := fetch(fctx)
		c.fetches.Release(1)
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
		c.mu.Lock()
		if c.gen.Load() == gen {
			store(v, err, fetched)
		}
		c.mu.Unlock()
		return v, err
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("cache: %w: %w", keystore.ErrUnavailable, ctx.Err())
	}
}

// truncated keeps an error message about a bad name short.
func truncated(s string) string {
	const limit = 70
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}
