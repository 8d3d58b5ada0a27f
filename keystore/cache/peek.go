package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

// peeked says what a look at memory found.
type peeked uint8

const (
	peekMiss    peeked = iota // nothing usable: ask the store
	peekStale                 // ask the store; the entry held may serve under StaleIfError
	peekHit                   // answered from memory
	peekExpired               // answered from memory: a cached key past its expires_at
)

// PeekClientState answers as ClientState would at this moment from
// memory alone: the cached state, or ErrUnknownClient for a name
// remembered as unknown or not a valid client name; otherwise
// keystore.ErrNotCached, and it leaves no trace. A hit counts as a cache
// hit to the Observer, ErrNotCached as nothing (the ClientState call that
// follows counts the miss).
func (c *Cache) PeekClientState(client string) (keystore.ClientState, error) {
	st, how, err := c.peekState(client, c.opts.Now())
	if how != peekHit {
		return keystore.ClientState{}, keystore.ErrNotCached
	}
	return st, err
}

// PeekVerify answers as Verify would at this moment from memory alone: the
// cached key, or ErrInvalidToken for a token remembered as invalid, a
// cached key past its expires_at, or a zero token or invalid client name;
// otherwise keystore.ErrNotCached, and it leaves no trace. It hashes the
// token as Verify does. Hits and misses count as for PeekClientState.
func (c *Cache) PeekVerify(client string, token keystore.Token) (keystore.VerifiedKey, error) {
	p, _, how, err := c.peekVerify(client, token, c.opts.Now())
	if how != peekHit && how != peekExpired {
		return keystore.VerifiedKey{}, keystore.ErrNotCached
	}
	return p, err
}

// peekState is the memory half of ClientState: every rule that lets a
// cached answer be used lives here, and ClientState's hit path is this.
func (c *Cache) peekState(client string, now time.Time) (keystore.ClientState, peeked, error) {
	if !keystore.ValidClientName(client) {
		// Never reaches the store or the cache: no memory for junk names.
		return keystore.ClientState{}, peekHit, unknownClient(truncated(client))
	}
	fresh := c.fresh(now)
	how := peekMiss
	if v, ok := c.states.Get(client); ok {
		e := v.(stateEntry)
		if fresh && c.age(now, e.fetched) < c.opts.TTL {
			c.observeLookup(Clients, true)
			return e.state, peekHit, nil
		}
		how = peekStale
	}
	if _, ok := c.unknown.Get(client); ok && fresh {
		c.observeLookup(UnknownClients, true)
		return keystore.ClientState{}, peekHit, unknownClient(client)
	}
	return keystore.ClientState{}, how, nil
}

// peekVerify is the memory half of Verify, as peekState is of
// ClientState. It also returns the token's cache key, for the fill.
func (c *Cache) peekVerify(client string, token keystore.Token, now time.Time) (keystore.VerifiedKey, tokenKey, peeked, error) {
	if token.IsZero() || !keystore.ValidClientName(client) {
		return keystore.VerifiedKey{}, tokenKey{}, peekHit, keystore.ErrInvalidToken
	}
	k := c.tokenKey(client, token.Digest())
	fresh := c.fresh(now)
	how := peekMiss
	// string(k[:]) in a call that keeps nothing is built on the stack.
	if v, ok := c.verified.Get(string(k[:])); ok {
		if e := v.(keyEntry); e.principal.Client == client {
			// Expiry first: it holds whatever the lease and the TTL say.
			if e.expired(now) {
				c.observeLookup(Keys, true)
				return keystore.VerifiedKey{}, k, peekExpired, keystore.ErrInvalidToken
			}
			if fresh && c.age(now, e.fetched) < c.opts.TTL {
				c.observeLookup(Keys, true)
				return e.principal, k, peekHit, nil
			}
			how = peekStale
		}
	}
	if v, ok := c.invalid.Get(string(k[:])); ok && fresh && v.(negEntry).client == client {
		c.observeLookup(InvalidTokens, true)
		return keystore.VerifiedKey{}, k, peekHit, keystore.ErrInvalidToken
	}
	return keystore.VerifiedKey{}, k, how, nil
}

// unknownClient is ErrUnknownClient for a name, formatted only when
// printed: a flood of unknown names is answered from memory.
type unknownClient string

func (u unknownClient) Error() string {
	return fmt.Sprintf("%v: %q", keystore.ErrUnknownClient, string(u))
}
func (u unknownClient) Unwrap() error { return keystore.ErrUnknownClient }

func (e keyEntry) expired(now time.Time) bool {
	exp := e.principal.ExpiresAt
	return exp != nil && !now.Before(*exp)
}

// age is how old an entry fetched at the given offset is at now.
func (c *Cache) age(now time.Time, fetched time.Duration) time.Duration {
	return now.Sub(c.base) - fetched
}

// tokenKey is the cache key of a token presented to a client: the token's
// SHA-256 digest (never the token) with its first 8 bytes XORed with a
// seeded hash of the client's name, so that a key linked to several
// clients gets an entry for each. The mix is not what keeps a token to its
// client: every entry records its client and serves no other, and for a
// given client the key is the digest, one to one. At 32 bytes,
// string(k[:]) passed to a call that keeps nothing is built without
// allocating.
type tokenKey [sha256.Size]byte

func (c *Cache) tokenKey(client string, d keystore.Digest) tokenKey {
	h := maphash.String(c.seed, client)
	binary.LittleEndian.PutUint64(d[:8], binary.LittleEndian.Uint64(d[:8])^h)
	return tokenKey(d)
}
