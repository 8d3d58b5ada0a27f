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

// truncated keeps an error message about a bad name short.
func truncated(s string) string {
	const limit = 70
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}
