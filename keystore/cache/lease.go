package cache

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

// ErrStale: the cache cannot prove that it has seen every change up to a
// moment within its staleness bound (the change log has not been read
// successfully for that long), so it will not answer from what it holds.
// It wraps ErrUnavailable.
var ErrStale = fmt.Errorf("%w: change feed not confirmed within the staleness bound", keystore.ErrUnavailable)

// lease is a cache's proof of freshness: the moment up to which every
// change is known to have been applied, plus the staleness bound. While
// that moment is within the bound, cached answers may be used; after it,
// only the store's own answers. Times are kept as offsets from base, so
// that with a clock that has a monotonic reading (time.Now) a step of the
// wall clock (NTP, a resumed VM) cannot stretch the lease. It is
// lock-free: the request path reads two atomics.
type lease struct {
	bound time.Duration
	base  time.Time
	// confirmed is set by the first confirmation; until then the lease
	// is not valid and has nothing to lapse.
	confirmed atomic.Bool
	// until is the offset from base after which cached answers are
	// unusable.
	until atomic.Int64
	// lapsed is set when a lapse was noticed and not yet reported as over,
	// so that each lapse is reported once.
	lapsed atomic.Bool
}

// forever makes the lease valid for good (a cache without a change feed).
func (l *lease) forever() {
	l.until.Store(math.MaxInt64)
	l.confirmed.Store(true)
}

// confirm records that every change committed before seen has been applied.
// A confirmation older than one already held changes nothing, so that a
// slow poll cannot shorten a newer proof.
func (l *lease) confirm(seen time.Time) {
	u := int64(seen.Sub(l.base) + l.bound)
	if !l.confirmed.Load() {
		l.until.Store(u)
		l.confirmed.Store(true)
		return
	}
	for {
		old := l.until.Load()
		if u <= old || l.until.CompareAndSwap(old, u) {
			return
		}
	}
}

// valid reports whether cached answers may be used at now.
func (l *lease) valid(now time.Time) bool {
	return l.confirmed.Load() && int64(now.Sub(l.base)) < l.until.Load()
}

// transition reports a change of state at now, once per change: lapsed is
// true when a confirmed lease has run out, restored is true when a lapsed
// one is valid again. A lease never confirmed has not lapsed (there is
// nothing cached to distrust yet).
func (l *lease) transition(now time.Time) (lapsed, restored bool) {
	if !l.confirmed.Load() {
		return false, false
	}
	if l.valid(now) {
		return false, l.lapsed.CompareAndSwap(true, false)
	}
	return l.lapsed.CompareAndSwap(false, true), false
}
