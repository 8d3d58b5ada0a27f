package cache

import (
	"time"
)

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

// RenewRequests delivers a value when a lookup found the lease lapsed: the
// change feed should read the change log now rather than at its next tick
// (a [Watcher] does), so that cached answers come back without waiting.
func (c *Cache) RenewRequests() <-chan struct{} { return c.renew }

// MaxStaleness returns the staleness bound in force.
func (c *Cache) MaxStaleness() time.Duration { return c.lease.bound }

// fresh reports whether cached answers may be used at now, and reports a
// lapse or a restoration once each.
func (c *Cache) fresh(now time.Time) bool {
	ok := c.lease.valid(now)
	if ok && !c.lease.lapsed.Load() {
		return true // the hot path: one clock read by the caller, two atomic loads
	}
	if !ok {
		select {
		case c.renew <- struct{}{}:
		default: // a request is pending already
		}
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
