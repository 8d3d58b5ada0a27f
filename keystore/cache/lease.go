package cache

import (
	"fmt"
	"github.com/llmauth/llmauth/keystore"
	"sync/atomic"
	"time"
)

// ErrStale: the cache cannot prove that it has seen every change up to a
// moment within its staleness bound (the change log has not been read
// successfully for that long), so it will not answer from what it holds.
// It wraps ErrUnavailable.
var ErrStale = fmt.Errorf("%w: change feed not confirmed within the staleness bound", keystore.ErrUnavailable)

// lease is a cache's proof of freshness: the moment up to which every
// change is known to have been applied, plus the staleness bound. While
// that moment is within the bound, cached answers may be used; after it,
// only the store's own answers. It is lock-free: the request path reads one
// atomic.
type lease struct {
	bound time.Duration
	// until is the instant, in Unix nanoseconds, after which cached
	// answers are unusable; 0 until the first confirmation.
	until atomic.Int64
	// lapsed is set when a lapse was noticed and not yet reported as over,
	// so that each lapse is reported once.
	lapsed atomic.Bool
}

// confirm records that every change committed before seen has been applied.
// A confirmation older than one already held changes nothing, so that a
// slow poll cannot shorten a newer proof.
func (l *lease) confirm(seen time.Time) {
	u := seen.Add(l.bound).UnixNano()
	for {
		old := l.until.Load()
		if u <= old || l.until.CompareAndSwap(old, u) {
			return
		}
	}
}

// valid reports whether cached answers may be used at now.
func (l *lease) valid(now time.Time) bool { return now.UnixNano() < l.until.Load() }

// transition reports a change of state at now, once per change: lapsed is
// true when a confirmed lease has run out, restored is true when a lapsed
// one is valid again. A lease never confirmed has not lapsed (there is
// nothing cached to distrust yet).
func (l *lease) transition(now time.Time) (lapsed, restored bool) {
	until := l.until.Load()
	if until == 0 {
		return false, false
	}
	if now.UnixNano() < until {
		return false, l.lapsed.CompareAndSwap(true, false)
	}
	return l.lapsed.CompareAndSwap(false, true), false
}
