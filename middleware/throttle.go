package middleware

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/llmauth/llmauth/keystore"
)

// ThrottleConfig configures the throttling of failed attempts: each
// source (by default the remote IP that Echo's IPExtractor reports) has,
// against each client, a budget of Burst failed attempts that refills at
// Rate per second. A failed attempt is a request whose credentials were
// invalid (401 invalid_token) or malformed (400). Once a source's budget
// against a client is spent, its requests to that client that would need a
// store call, or that fail, are answered 429 with Retry-After and counted
// as outcome "throttled", without a store call. A token already verified
// and cached keeps working from any source, throttled or not.
//
// With the defaults a source makes 20 failed attempts in a row against a
// client, then one more per second: a script that tries a handful of bad
// keys is never throttled, a guesser is slowed from thousands of guesses
// per second to one. Why per source and client: a budget
// per client alone would let one guesser lock every legitimate caller out;
// a budget per source alone would let one bad credential in one script
// lock its host out of every client.
type ThrottleConfig struct {
	// Disabled turns throttling off: every failed attempt is answered
	// 401 or 400 and may cost a store call. Default: false (on).
	Disabled bool

	// Rate is how many failed attempts per second a source regains
	// against one client. Default: 1.
	Rate rate.Limit

	// Burst is how many failed attempts a source may make in a row
	// against one client before it is throttled. Default: 20.
	Burst int

	// MaxSources caps how many (client, source) budgets are remembered,
	// so that memory stays bounded whatever the number of sources; the
	// least recently failed is forgotten first, and a forgotten source
	// starts again with a full budget. About 200 bytes each.
	// Default: 10000.
	MaxSources int

	// Source names the source of a request. Default: c.RealIP(), that
	// is Echo's IPExtractor. Echo's default extractor takes the peer
	// address and ignores X-Forwarded-For and X-Real-IP, which a caller
	// can set to anything: behind a load balancer, configure
	// echo.ExtractIPFromXFFHeader with the balancer's addresses as trusted
	// proxies, or every caller shares the balancer's budget.
	Source func(c echo.Context) string
}

// ErrThrottled is the cause of a 429: the source spent its budget of
// failed attempts against the client (see [ThrottleConfig]).
var ErrThrottled = errors.New("middleware: too many failed attempts")

// throttledError carries how long until the source may try again, and
// whether it is the first refusal since the source was last admitted (the
// one the middleware logs at info level; the rest of a flood goes to debug).
type throttledError struct {
	retryAfter time.Duration
	first      bool
}

func (e *throttledError) Error() string {
	return fmt.Sprintf("%v; retry after %v", ErrThrottled, e.retryAfter)
}

func (e *throttledError) Unwrap() error { return ErrThrottled }

// RetryAfter returns how long a throttled source must wait before its next
// attempt, rounded up to whole seconds (at least 1), for the Retry-After
// header of a 429; ok is false when err is not a throttling refusal.
func RetryAfter(err error) (seconds int64, ok bool) {
	var t *throttledError
	if !errors.As(err, &t) {
		return 0, false
	}
	return max(1, int64(math.Ceil(t.retryAfter.Seconds()))), true
}

// minThrottleRate is the slowest refill accepted: one attempt in about 17
// minutes. Slower ones would make Retry-After overflow and lock a source
// out for good.
const minThrottleRate = 0.001

func (t ThrottleConfig) withDefaults() (ThrottleConfig, error) {
	if t.Rate < 0 || t.Burst < 0 || t.MaxSources < 0 {
		return t, errors.New("middleware: negative Throttle.Rate, Throttle.Burst or Throttle.MaxSources")
	}
	if t.Rate == 0 {
		t.Rate = 1
	}
	if t.Rate < minThrottleRate {
		return t, fmt.Errorf("middleware: Throttle.Rate %v is below %v attempts per second", float64(t.Rate), minThrottleRate)
	}
	if t.Burst == 0 {
		t.Burst = 20
	}
	if t.MaxSources == 0 {
		t.MaxSources = 10000
	}
	if t.Source == nil {
		t.Source = func(c echo.Context) string { return SourceOf(c.RealIP()) }
	}
	return t, nil
}

// SourceOf is the throttling source of an IP address: the address in its
// canonical form (an IPv4 address written as IPv6 counts as the IPv4 one),
// and for IPv6 its /64 network, which one host usually has whole: otherwise
// a host could take a fresh budget for every guess. A string that is not
// an IP address is its own source.
func SourceOf(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		return netip.PrefixFrom(addr, 64).Masked().String()
	}
	return addr.String()
}

// throttle holds the budgets, a capped LRU of rate limiters keyed by
// client and source, and the digests of tokens found valid. It is
// consulted only on the slow path (a lookup the cache could not answer, or
// a failure), never for a cached valid key.
type throttle struct {
	cfg ThrottleConfig
	now func() time.Time

	mu      sync.Mutex
	budgets *lru[string, *budget]
	// good holds the digests of tokens the store found valid, by client: a request
	// with one of them is never refused for its source's budget (a
	// guesser cannot produce one), so a key keeps working from a throttled
	// source after its cache entry has expired; it still goes to the
	// store. Capped like the budgets.
	good *lru[goodKey, struct{}]
}

// goodKey is a token found valid for a client: a failure of the same token
// against another client says nothing about this one.
type goodKey struct {
	client string
	digest keystore.Digest
}

type budget struct {
	limiter *rate.Limiter
	// inFlight counts the distinct credentials admitted whose outcome is
	// not known yet, so that a source cannot get past its budget by
	// sending its guesses all at once, while many requests with one key
	// count once.
	inFlight  map[keystore.Digest]int
	throttled bool // refused since last admitted
}

func newThrottle(cfg ThrottleConfig, now func() time.Time) *throttle {
	return &throttle{cfg: cfg, now: now, budgets: newLRU[string, *budget](cfg.MaxSources), good: newLRU[goodKey, struct{}](cfg.MaxSources)}
}

// budgetLocked returns the budget of source against client, creating it
// full. t.mu must be held.
func (t *throttle) budgetLocked(c echo.Context, client string) *budget {
	return t.budgets.getOrAdd(client+"\x00"+t.cfg.Source(c), func() *budget {
		return &budget{limiter: rate.NewLimiter(t.cfg.Rate, t.cfg.Burst), inFlight: map[keystore.Digest]int{}}
	})
}

// refusedLocked returns an error wrapping ErrThrottled when b cannot
// admit extra more attempts now.
func (t *throttle) refusedLocked(b *budget, extra int) error {
	missing := float64(len(b.inFlight)+extra) - b.limiter.TokensAt(t.now())
	if missing <= 0 {
		b.throttled = false
		return nil
	}
	first := !b.throttled
	b.throttled = true
	return &throttledError{retryAfter: t.wait(missing), first: first}
}

// attempt admits an attempt of the source against client with a token of
// digest d, whose outcome needs a store call. It is admitted while the
// budget holds an attempt not already taken by the source's other
// credentials in flight; a token found valid before is always admitted.
// done must be called with the outcome: valid (the token is remembered as
// good), failed (an attempt of the budget is spent), or neither (nothing
// spent). When the budget is spent, the error wraps ErrThrottled and says
// how long to wait. A nil throttle admits everything.
func (t *throttle) attempt(c echo.Context, client string, d keystore.Digest) (done func(valid, failed bool), err error) {
	if t == nil {
		return func(bool, bool) {}, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.budgetLocked(c, client)
	gk := goodKey{client: client, digest: d}
	if _, good := t.good.get(gk); !good && b.inFlight[d] == 0 {
		if err := t.refusedLocked(b, 1); err != nil {
			return nil, err
		}
	}
	b.inFlight[d]++
	return func(valid, failed bool) {
		t.mu.Lock()
		defer t.mu.Unlock()
		if b.inFlight[d]--; b.inFlight[d] <= 0 {
			delete(b.inFlight, d)
		}
		switch {
		case valid:
			t.good.getOrAdd(gk, func() struct{} { return struct{}{} })
		case failed:
			t.good.remove(gk)
			b.limiter.ReserveN(t.now(), 1) // spent, even into debt
		}
	}, nil
}

// fail spends one attempt of the source's budget against client on a
// failure found without a store call (malformed credentials, a token
// remembered as invalid). When the budget was already spent it spends
// nothing and returns an error wrapping ErrThrottled.
func (t *throttle) fail(c echo.Context, client string) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.budgetLocked(c, client)
	if err := t.refusedLocked(b, 1); err != nil {
		return err
	}
	b.limiter.ReserveN(t.now(), 1)
	return nil
}

// wait is how long until the budget regains missing attempts, at most a
// day (Retry-After is advice; the budget itself is exact).
func (t *throttle) wait(missing float64) time.Duration {
	seconds := missing / float64(t.cfg.Rate)
	if seconds > 86400 {
		return 24 * time.Hour
	}
	return time.Duration(seconds * float64(time.Second))
}

// len reports how many budgets are remembered (for tests).
func (t *throttle) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.budgets.len()
}
