package sqlstore

import (
	"github.com/llmauth/llmauth/keystore"
	"time"
)

// maxHoles bounds the ids remembered as missing; past it the cache is
// flushed and the holes forgotten.
const maxHoles = 100000

// hole is a change id below the watcher's position that it has not seen.
type hole struct {
	since time.Time
	// xmax is, on PostgreSQL, a transaction id taken after the hole was
	// first missed (0 until then): the transaction holding the id has a
	// smaller one, so once every transaction up to xmax has ended
	// (snapshot xmin > xmax) a hole still missing was rolled back.
	xmax uint64
	// expired is set once the hole has outlived Retention (and the cache
	// was flushed for it); it is still looked for.
	expired bool
}

// changePosition is a watcher's bookkeeping over the change log: the
// highest id seen, the row it saw there, and the ids below it not seen yet.
// It is pure logic, driven by the watcher under its lock and by tests
// without a database.
type changePosition struct {
	retention time.Duration
	high      int64  // every id <= high was applied or is in holes
	stamp     string // the created_at of the row at high ("" when high is 0)
	holes     map[int64]*hole
}

func newChangePosition(retention time.Duration) changePosition {
	return changePosition{retention: retention, holes: map[int64]*hole{}}
}

// reset places the position at latest (nil: an empty log), with the ids
// missing among rows (the newest changes, oldest first, up to latest) as
// holes: on PostgreSQL, transactions that took an id and have not
// committed, or rolled back.
// Holes already known are kept: looking for an id too many costs nothing,
// forgetting one that still commits loses a change.
func (p *changePosition) reset(latest *changeRow, rows []changeRow, now time.Time) {
	p.high, p.stamp = 0, ""
	if latest == nil {
		return
	}
	p.high, p.stamp = latest.ID, latest.stamp
	if len(rows) == 0 {
		return
	}
	next := rows[0].ID + 1
	for _, r := range rows[1:] {
		if r.ID > latest.ID {
			break // committed since: the next poll reads it
		}
		// No cap here: the window is at most startWindow ids.
		for ; next < r.ID; next++ {
			if _, known := p.holes[next]; !known {
				p.holes[next] = &hole{since: now}
			}
		}
		next = r.ID + 1
	}
}

// addHoles remembers ids found missing below the position (by a scan of
// the whole log at start), up to maxHoles in all.
func (p *changePosition) addHoles(ids []int64, now time.Time) {
	for _, id := range ids {
		if len(p.holes) >= maxHoles {
			return
		}
		if _, known := p.holes[id]; !known && id < p.high {
			p.holes[id] = &hole{since: now}
		}
	}
}

// advance takes in one poll's window and returns the rows to apply. A
// non-empty reason means what the window shows cannot be reconciled with
// what was seen (the caller repositions and flushes) or that holes
// overflowed (the caller flushes).
func (p *changePosition) advance(win changeWindow, postgres bool, now time.Time) ([]keystore.Change, FlushReason) {
	if p.high > 0 && (win.anchor == nil || win.anchor.stamp != p.stamp) {
		if win.latest == nil || win.latest.ID < p.high {
			return nil, FlushIDsBackwards
		}
		return nil, FlushRowsMissing
	}
	var reason FlushReason
	fresh := make([]keystore.Change, 0, len(win.rows))
	for _, ch := range win.rows {
		if p.high+1 < ch.ID && !postgres && p.high > 0 {
			// SQLite hands out ids at commit, one writer at a time: a
			// gap is rows deleted before they were seen.
			reason = FlushRowsMissing
		}
		from := p.high + 1
		if p.high == 0 {
			// The first row after an empty log: ids far below it were
			// pruned or cleared, not pending; the nearest may be open
			// transactions (resolved at the next look if not).
			from = max(1, ch.ID-startWindow)
		}
		for id := from; id < ch.ID && postgres; id++ {
			if len(p.holes) >= maxHoles {
				reason = FlushBacklog
				clear(p.holes)
				break
			}
			if _, known := p.holes[id]; !known {
				p.holes[id] = &hole{since: now}
			}
		}
		p.high, p.stamp = ch.ID, ch.stamp
		fresh = append(fresh, ch.Change)
	}
	return fresh, reason
}

// pending returns the holes to look for, and whether one of them has just
// outlived Retention: a change committed that late would be seen only by
// looking, and the cache may have missed its notification, so the caller
// flushes. Holes are never forgotten for their age.
func (p *changePosition) pending(now time.Time) (look []int64, expired bool) {
	for id, h := range p.holes {
		if !h.expired && now.Sub(h.since) > p.retention {
			h.expired = true
			expired = true
		}
		look = append(look, id)
	}
	return look, expired
}

// unbound reports whether a hole still waits for its transaction-id bound.
func (p *changePosition) unbound() bool {
	for _, h := range p.holes {
		if h.xmax == 0 {
			return true
		}
	}
	return false
}

// bind gives every hole still without one the bound xid, taken after the
// holes were seen.
func (p *changePosition) bind(xid uint64) {
	for _, h := range p.holes {
		if h.xmax == 0 {
			h.xmax = xid
		}
	}
}

// filled takes the rows found for holes and the looking statement's
// snapshot xmin, and returns the rows to apply. A hole whose transaction
// has certainly ended without its row is forgotten; lost reports that one
// of them had outlived Retention: its row may have committed and been
// pruned as old before it was seen, so the caller flushes.
func (p *changePosition) filled(rows []changeRow, xmin uint64) (fresh []keystore.Change, lost bool) {
	for _, ch := range rows {
		if _, ok := p.holes[ch.ID]; ok {
			delete(p.holes, ch.ID)
			fresh = append(fresh, ch.Change)
		}
	}
	for id, h := range p.holes {
		if h.xmax != 0 && xmin > h.xmax {
			delete(p.holes, id) // rolled back, or committed and pruned
			lost = lost || h.expired
		}
	}
	return fresh, lost
}
