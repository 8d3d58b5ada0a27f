package sqlstore

import (
	"fmt"
	"github.com/llmauth/llmauth/keystore"
	"maps"
	"slices"
	"testing"
	"time"
)

var posT0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// chg is a change-log row whose created_at stamp is derived from its id.
func chg(id int64) changeRow {
	return changeRow{Change: keystore.Change{ID: id, Source: "key", KeyID: id}, stamp: stampOf(id)}
}

func stampOf(id int64) string { return fmt.Sprintf("2024-05-01 12:00:00.%06d+00", id) }

func chgPtr(id int64) *changeRow { c := chg(id); return &c }

func chgs(ids ...int64) []changeRow {
	out := make([]changeRow, 0, len(ids))
	for _, id := range ids {
		out = append(out, chg(id))
	}
	return out
}

func idsOf(chs []keystore.Change) []int64 {
	out := []int64{}
	for _, ch := range chs {
		out = append(out, ch.ID)
	}
	return out
}

// positionAt builds a changePosition at high with the given holes.
func positionAt(high int64, holes map[int64]hole) changePosition {
	p := newChangePosition(time.Minute)
	if high > 0 {
		p.high, p.stamp = high, stampOf(high)
	}
	for id, h := range holes {
		p.holes[id] = &h
	}
	return p
}

func holeValues(p changePosition) map[int64]hole {
	out := map[int64]hole{}
	for id, h := range p.holes {
		out[id] = *h
	}
	return out
}

// holesWith returns a copy of base with extra added over it.
func holesWith(base, extra map[int64]hole) map[int64]hole {
	out := maps.Clone(base)
	if out == nil {
		out = map[int64]hole{}
	}
	maps.Copy(out, extra)
	return out
}

// anyUnbound reports whether one of holes has no xmax yet.
func anyUnbound(holes map[int64]hole) bool {
	for _, h := range holes {
		if h.xmax == 0 {
			return true
		}
	}
	return false
}

func TestChangePositionAdvance(t *testing.T) {
	now := posT0.Add(time.Second)
	old := map[int64]hole{2: {since: posT0, xmax: 40}}
	tests := []struct {
		name       string
		high       int64
		holes      map[int64]hole
		win        changeWindow
		postgres   bool
		wantFresh  []int64
		wantReason FlushReason
		wantHigh   int64
		wantHoles  map[int64]hole
	}{
		{name: "empty log stays empty", win: changeWindow{}, postgres: true,
			wantFresh: []int64{}, wantHoles: map[int64]hole{}},
		{name: "empty log then first rows postgres", win: changeWindow{rows: chgs(1, 2), latest: chgPtr(2)}, postgres: true,
			wantFresh: []int64{1, 2}, wantHigh: 2, wantHoles: map[int64]hole{}},
		{name: "ids before the first rows may still commit on postgres", win: changeWindow{rows: chgs(3, 4), latest: chgPtr(4)}, postgres: true,
			wantFresh: []int64{3, 4}, wantHigh: 4, wantHoles: map[int64]hole{1: {since: now}, 2: {since: now}}},
		{name: "a first row far up after an empty log holds at most startWindow ids as holes", win: changeWindow{rows: chgs(50001), latest: chgPtr(50001)}, postgres: true,
			wantFresh: []int64{50001}, wantHigh: 50001, wantHoles: func() map[int64]hole {
				m := map[int64]hole{}
				for id := int64(50001 - startWindow); id < 50001; id++ {
					m[id] = hole{since: now}
				}
				return m
			}()},
		{name: "empty log then first rows sqlite", win: changeWindow{rows: chgs(1, 2), latest: chgPtr(2)},
			wantFresh: []int64{1, 2}, wantHigh: 2, wantHoles: map[int64]hole{}},
		{name: "sqlite ids after an empty log need not start at 1", win: changeWindow{rows: chgs(5, 6), latest: chgPtr(6)},
			wantFresh: []int64{5, 6}, wantHigh: 6, wantHoles: map[int64]hole{}},
		{name: "quiet log", high: 3, holes: old, win: changeWindow{anchor: chgPtr(3), latest: chgPtr(3)}, postgres: true,
			wantFresh: []int64{}, wantHigh: 3, wantHoles: old},
		{name: "new rows in order", high: 3, holes: old, win: changeWindow{rows: chgs(4, 5), anchor: chgPtr(3), latest: chgPtr(5)}, postgres: true,
			wantFresh: []int64{4, 5}, wantHigh: 5, wantHoles: old},
		{name: "new rows in order sqlite", high: 3, win: changeWindow{rows: chgs(4, 5), anchor: chgPtr(3), latest: chgPtr(5)},
			wantFresh: []int64{4, 5}, wantHigh: 5, wantHoles: map[int64]hole{}},
		{name: "gap on postgres becomes unbound holes, known holes keep their xmax", high: 3, holes: old,
			win:      changeWindow{rows: chgs(4, 7, 8, 10), anchor: chgPtr(3), latest: chgPtr(10)},
			postgres: true, wantFresh: []int64{4, 7, 8, 10}, wantHigh: 10,
			wantHoles: map[int64]hole{2: old[2], 5: {since: now}, 6: {since: now}, 9: {since: now}}},
		{name: "gap on sqlite is rows missing", high: 3, win: changeWindow{rows: chgs(4, 7), anchor: chgPtr(3), latest: chgPtr(7)},
			wantFresh: []int64{4, 7}, wantReason: FlushRowsMissing, wantHigh: 7, wantHoles: map[int64]hole{}},
		{name: "anchor missing, latest below high", high: 9, holes: old, win: changeWindow{rows: chgs(), latest: chgPtr(4)}, postgres: true,
			wantReason: FlushIDsBackwards, wantHigh: 9, wantHoles: old},
		{name: "anchor missing, log empty", high: 9, win: changeWindow{}, postgres: true,
			wantReason: FlushIDsBackwards, wantHigh: 9, wantHoles: map[int64]hole{}},
		{name: "anchor missing, latest above high", high: 9, holes: old, win: changeWindow{rows: chgs(10, 11), latest: chgPtr(11)}, postgres: true,
			wantReason: FlushRowsMissing, wantHigh: 9, wantHoles: old},
		{name: "anchor missing, latest above high sqlite", high: 9, win: changeWindow{rows: chgs(10), latest: chgPtr(10)},
			wantReason: FlushRowsMissing, wantHigh: 9, wantHoles: map[int64]hole{}},
		{name: "anchor replaced by another row", high: 9, holes: old,
			win:      changeWindow{rows: chgs(10), anchor: &changeRow{Change: keystore.Change{ID: 9}, stamp: "another"}, latest: chgPtr(10)},
			postgres: true, wantReason: FlushRowsMissing, wantHigh: 9, wantHoles: old},
		{name: "anchor replaced, latest at high", high: 9,
			win:        changeWindow{anchor: &changeRow{Change: keystore.Change{ID: 9}, stamp: "another"}, latest: &changeRow{Change: keystore.Change{ID: 9}, stamp: "another"}},
			wantReason: FlushRowsMissing, wantHigh: 9, wantHoles: map[int64]hole{}},
		{name: "exactly maxHoles missing ids", high: 1,
			win:      changeWindow{rows: chgs(maxHoles + 2), anchor: chgPtr(1), latest: chgPtr(maxHoles + 2)},
			postgres: true, wantFresh: []int64{maxHoles + 2}, wantHigh: maxHoles + 2},
		{name: "more than maxHoles missing ids", high: 1,
			win:      changeWindow{rows: chgs(maxHoles + 3), anchor: chgPtr(1), latest: chgPtr(maxHoles + 3)},
			postgres: true, wantFresh: []int64{maxHoles + 3}, wantReason: FlushBacklog, wantHigh: maxHoles + 3, wantHoles: map[int64]hole{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := positionAt(tt.high, tt.holes)
			fresh, reason := p.advance(tt.win, tt.postgres, now)
			if tt.wantFresh == nil {
				if fresh != nil {
					t.Errorf("fresh = %v, want nil", idsOf(fresh))
				}
			} else if got := idsOf(fresh); !slices.Equal(got, tt.wantFresh) {
				t.Errorf("fresh = %v, want %v", got, tt.wantFresh)
			}
			if reason != tt.wantReason {
				t.Errorf("reason = %q, want %q", reason, tt.wantReason)
			}
			if p.high != tt.wantHigh {
				t.Errorf("high = %d, want %d", p.high, tt.wantHigh)
			}
			wantStamp := ""
			if tt.wantHigh > 0 {
				wantStamp = stampOf(tt.wantHigh)
			}
			if p.stamp != wantStamp {
				t.Errorf("stamp = %q, want %q", p.stamp, wantStamp)
			}
			if tt.wantHoles == nil {
				// Too many to list: every id strictly between the old and
				// the new high, from this window, unbound.
				if len(p.holes) != maxHoles {
					t.Fatalf("len(holes) = %d, want %d", len(p.holes), maxHoles)
				}
				for id := tt.high + 1; id < tt.wantHigh; id++ {
					if h := p.holes[id]; h == nil || *h != (hole{since: now}) {
						t.Fatalf("holes[%d] = %v, want {since: now, xmax: 0}", id, h)
					}
				}
				if !p.unbound() {
					t.Errorf("unbound() = false, want true")
				}
				return
			}
			if got := holeValues(p); !maps.Equal(got, tt.wantHoles) {
				t.Errorf("holes = %v, want %v", got, tt.wantHoles)
			}
			if got, want := p.unbound(), anyUnbound(tt.wantHoles); got != want {
				t.Errorf("unbound() = %v, want %v", got, want)
			}
		})
	}
}

func TestChangePositionReset(t *testing.T) {
	now := posT0.Add(time.Hour)
	// held is what the position knew before the reset in most cases: an
	// expired hole, bound, far below every window.
	held := map[int64]hole{3: {since: posT0, xmax: 7, expired: true}}
	tests := []struct {
		name      string
		holes     map[int64]hole // known before the reset
		latest    *changeRow
		rows      []changeRow
		wantHigh  int64
		wantHoles map[int64]hole
	}{
		{name: "empty log", holes: held, wantHoles: held},
		{name: "no window (sqlite)", holes: held, latest: chgPtr(16), wantHigh: 16, wantHoles: held},
		{name: "window without gaps", holes: held, latest: chgPtr(13), rows: chgs(11, 12, 13), wantHigh: 13, wantHoles: held},
		{name: "gaps below latest", holes: held, latest: chgPtr(16), rows: chgs(10, 12, 13, 16), wantHigh: 16,
			wantHoles: holesWith(held, map[int64]hole{11: {since: now}, 14: {since: now}, 15: {since: now}})},
		{name: "rows above latest ignored", holes: held, latest: chgPtr(13), rows: chgs(10, 12, 13, 16, 20), wantHigh: 13,
			wantHoles: holesWith(held, map[int64]hole{11: {since: now}})},
		{name: "ids below the oldest row are not holes", holes: held, latest: chgPtr(1005), rows: chgs(1000, 1005), wantHigh: 1005,
			wantHoles: holesWith(held, map[int64]hole{1001: {since: now}, 1002: {since: now}, 1003: {since: now}, 1004: {since: now}})},
		{name: "no holes known", latest: chgPtr(16), rows: chgs(10, 12, 13, 16), wantHigh: 16,
			wantHoles: map[int64]hole{11: {since: now}, 14: {since: now}, 15: {since: now}}},
		{name: "known holes among the gaps keep their since and xmax, new ones are added unbound",
			holes: holesWith(held, map[int64]hole{
				11: {since: posT0, xmax: 7},
				14: {since: posT0.Add(time.Minute), expired: true}, // known, not bound yet
			}),
			latest: chgPtr(16), rows: chgs(10, 12, 13, 16), wantHigh: 16,
			wantHoles: holesWith(held, map[int64]hole{
				11: {since: posT0, xmax: 7},
				14: {since: posT0.Add(time.Minute), expired: true},
				15: {since: now},
			})},
		{name: "known holes above a latest that went backwards are kept",
			holes:  map[int64]hole{20: {since: posT0, xmax: 7}, 21: {since: posT0, xmax: 8}},
			latest: chgPtr(13), rows: chgs(10, 12, 13), wantHigh: 13,
			wantHoles: map[int64]hole{20: {since: posT0, xmax: 7}, 21: {since: posT0, xmax: 8}, 11: {since: now}}},
		{name: "known holes are kept on an empty log", holes: map[int64]hole{5: {since: posT0}, 6: {since: posT0, xmax: 9}},
			wantHoles: map[int64]hole{5: {since: posT0}, 6: {since: posT0, xmax: 9}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := positionAt(50, tt.holes)
			p.reset(tt.latest, tt.rows, now)
			wantStamp := ""
			if tt.wantHigh > 0 {
				wantStamp = stampOf(tt.wantHigh)
			}
			if p.high != tt.wantHigh || p.stamp != wantStamp {
				t.Errorf("position = (%d, %q), want (%d, %q)", p.high, p.stamp, tt.wantHigh, wantStamp)
			}
			if got := holeValues(p); !maps.Equal(got, tt.wantHoles) {
				t.Errorf("holes = %v, want %v", got, tt.wantHoles)
			}
			if got, want := p.unbound(), anyUnbound(tt.wantHoles); got != want {
				t.Errorf("unbound() = %v, want %v", got, want)
			}
		})
	}
}

func TestChangePositionBind(t *testing.T) {
	later := posT0.Add(10 * time.Second)
	tests := []struct {
		name        string
		holes       map[int64]hole
		xid         uint64
		wantUnbound bool // before bind
		wantHoles   map[int64]hole
	}{
		{name: "no holes", holes: map[int64]hole{}, xid: 50,
			wantUnbound: false, wantHoles: map[int64]hole{}},
		{name: "unbound holes get the xid", xid: 50,
			holes:       map[int64]hole{5: {since: posT0}, 6: {since: later, expired: true}},
			wantUnbound: true,
			wantHoles:   map[int64]hole{5: {since: posT0, xmax: 50}, 6: {since: later, xmax: 50, expired: true}}},
		{name: "bound holes keep their xmax", xid: 50,
			holes:       map[int64]hole{5: {since: posT0, xmax: 40}, 6: {since: later, xmax: 60, expired: true}},
			wantUnbound: false,
			wantHoles:   map[int64]hole{5: {since: posT0, xmax: 40}, 6: {since: later, xmax: 60, expired: true}}},
		{name: "only unbound holes are bound", xid: 50,
			holes: map[int64]hole{
				5: {since: posT0, xmax: 40},
				6: {since: posT0},
				7: {since: later, xmax: 90, expired: true}, // above the new xid: kept too
				8: {since: later, expired: true},
			},
			wantUnbound: true,
			wantHoles: map[int64]hole{
				5: {since: posT0, xmax: 40},
				6: {since: posT0, xmax: 50},
				7: {since: later, xmax: 90, expired: true},
				8: {since: later, xmax: 50, expired: true},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := positionAt(20, tt.holes)
			if got := p.unbound(); got != tt.wantUnbound {
				t.Errorf("unbound() before bind = %v, want %v", got, tt.wantUnbound)
			}
			p.bind(tt.xid)
			if got := holeValues(p); !maps.Equal(got, tt.wantHoles) {
				t.Errorf("holes after bind(%d) = %v, want %v", tt.xid, got, tt.wantHoles)
			}
			if p.unbound() {
				t.Errorf("unbound() after bind(%d) = true, want false", tt.xid)
			}
			if p.high != 20 || p.stamp != stampOf(20) {
				t.Errorf("position = (%d, %q), want (20, %q)", p.high, p.stamp, stampOf(20))
			}
		})
	}
}

// TestChangePositionBindAfterReads drives the watcher's order: holes found
// by a read stay unbound until bind, each read's holes get the xid taken
// after it, and a later reset keeps them with their bound.
func TestChangePositionBindAfterReads(t *testing.T) {
	p := newChangePosition(time.Minute)
	t1, t2, t3 := posT0, posT0.Add(time.Second), posT0.Add(2*time.Second)

	p.reset(chgPtr(5), chgs(1, 3, 5), t1)
	if got, want := holeValues(p), (map[int64]hole{2: {since: t1}, 4: {since: t1}}); !maps.Equal(got, want) {
		t.Fatalf("after reset: holes = %v, want %v", got, want)
	}
	if !p.unbound() {
		t.Fatalf("after reset: unbound() = false, want true")
	}
	p.bind(30)
	if p.unbound() {
		t.Fatalf("after bind(30): unbound() = true, want false")
	}

	fresh, reason := p.advance(changeWindow{rows: chgs(7), anchor: chgPtr(5), latest: chgPtr(7)}, true, t2)
	if got := idsOf(fresh); !slices.Equal(got, []int64{7}) || reason != "" {
		t.Fatalf("advance = (%v, %q), want ([7], \"\")", got, reason)
	}
	want := map[int64]hole{2: {since: t1, xmax: 30}, 4: {since: t1, xmax: 30}, 6: {since: t2}}
	if got := holeValues(p); !maps.Equal(got, want) {
		t.Fatalf("after advance: holes = %v, want %v", got, want)
	}
	if !p.unbound() {
		t.Fatalf("after advance: unbound() = false, want true")
	}
	p.bind(45)
	want = map[int64]hole{2: {since: t1, xmax: 30}, 4: {since: t1, xmax: 30}, 6: {since: t2, xmax: 45}}
	if got := holeValues(p); !maps.Equal(got, want) {
		t.Fatalf("after bind(45): holes = %v, want %v", got, want)
	}

	// Repositioned (the log went on to 10 with 8 missing): the holes known
	// keep their since and bound, 8 is new and unbound.
	p.reset(chgPtr(10), chgs(5, 7, 9, 10), t3)
	want = map[int64]hole{2: {since: t1, xmax: 30}, 4: {since: t1, xmax: 30}, 6: {since: t2, xmax: 45}, 8: {since: t3}}
	if got := holeValues(p); !maps.Equal(got, want) || p.high != 10 {
		t.Fatalf("after reset: high %d, holes = %v, want high 10, holes %v", p.high, got, want)
	}
	if !p.unbound() {
		t.Fatalf("after second reset: unbound() = false, want true")
	}
	p.bind(60)
	want[8] = hole{since: t3, xmax: 60}
	if got := holeValues(p); !maps.Equal(got, want) {
		t.Fatalf("after bind(60): holes = %v, want %v", got, want)
	}

	// Each bound is forgotten only once xmin passes it.
	steps := []struct {
		xmin      uint64
		wantHoles []int64
	}{
		{xmin: 30, wantHoles: []int64{2, 4, 6, 8}},
		{xmin: 31, wantHoles: []int64{6, 8}},
		{xmin: 45, wantHoles: []int64{6, 8}},
		{xmin: 46, wantHoles: []int64{8}},
		{xmin: 60, wantHoles: []int64{8}},
		{xmin: 61, wantHoles: []int64{}},
	}
	for _, s := range steps {
		if got, _ := p.filled(nil, s.xmin); got != nil {
			t.Errorf("filled(nil, %d) = %v, want nil", s.xmin, idsOf(got))
		}
		if got := slices.Sorted(maps.Keys(p.holes)); !slices.Equal(got, s.wantHoles) {
			t.Errorf("after filled(nil, %d): holes = %v, want %v", s.xmin, got, s.wantHoles)
		}
	}
}

func TestChangePositionPending(t *testing.T) {
	p := positionAt(20, map[int64]hole{
		5: {since: posT0, xmax: 9},
		7: {since: posT0.Add(10 * time.Second), xmax: 9},
	})
	steps := []struct {
		at          time.Duration // after posT0
		wantExpired bool
	}{
		{at: 0, wantExpired: false},
		{at: time.Minute, wantExpired: false}, // exactly Retention: not yet
		{at: time.Minute + 1, wantExpired: true},
		{at: time.Minute + 2, wantExpired: false}, // hole 5 reported already
		{at: time.Minute + 10*time.Second, wantExpired: false},
		{at: time.Minute + 10*time.Second + 1, wantExpired: true}, // hole 7
		{at: time.Minute + 10*time.Second + 2, wantExpired: false},
		{at: 24 * time.Hour, wantExpired: false},
	}
	for _, s := range steps {
		look, expired := p.pending(posT0.Add(s.at))
		slices.Sort(look)
		if !slices.Equal(look, []int64{5, 7}) || expired != s.wantExpired {
			t.Errorf("pending(t0+%v) = (%v, %v), want ([5 7], %v)", s.at, look, expired, s.wantExpired)
		}
	}
	if !p.holes[5].expired || !p.holes[7].expired {
		t.Errorf("holes = %v, want both marked expired", holeValues(p))
	}
	// An expired hole is still filled when its row turns up.
	if got := idsOf(first(p.filled(chgs(7), 0))); !slices.Equal(got, []int64{7}) {
		t.Errorf("filled(7) = %v, want [7]", got)
	}
	if look, expired := p.pending(posT0.Add(48 * time.Hour)); !slices.Equal(look, []int64{5}) || expired {
		t.Errorf("pending after fill = (%v, %v), want ([5], false)", look, expired)
	}
	empty := newChangePosition(time.Minute)
	if look, expired := empty.pending(posT0); look != nil || expired {
		t.Errorf("pending with no holes = (%v, %v), want (nil, false)", look, expired)
	}
}

func TestChangePositionFilled(t *testing.T) {
	type call struct {
		wantLost  bool
		rows      []changeRow
		xmin      uint64
		wantFresh []int64 // nil: nothing
		wantHoles []int64
	}
	tests := []struct {
		name  string
		holes map[int64]hole
		calls []call
	}{
		{name: "late commit is returned once", holes: map[int64]hole{5: {since: posT0, xmax: 100}, 6: {since: posT0, xmax: 100}},
			calls: []call{
				{rows: nil, xmin: 50, wantHoles: []int64{5, 6}},
				{rows: chgs(5), xmin: 60, wantFresh: []int64{5}, wantHoles: []int64{6}},
				{rows: chgs(5), xmin: 60, wantHoles: []int64{6}},
			}},
		{name: "rows that are no hole are ignored", holes: map[int64]hole{5: {since: posT0, xmax: 100}},
			calls: []call{{rows: chgs(4, 9), xmin: 50, wantHoles: []int64{5}}}},
		{name: "hole forgotten once its transaction ended", holes: map[int64]hole{5: {since: posT0, xmax: 100}, 6: {since: posT0, xmax: 101}},
			calls: []call{
				{xmin: 99, wantHoles: []int64{5, 6}},
				{xmin: 100, wantHoles: []int64{5, 6}}, // xmin == xmax: kept
				{xmin: 101, wantHoles: []int64{6}},    // xmin == xmax+1: forgotten
				{xmin: 102, wantHoles: []int64{}},
			}},
		{name: "xmin equal to xmax keeps the hole, one above forgets it", holes: map[int64]hole{5: {since: posT0, xmax: 100}, 6: {since: posT0, xmax: 100}},
			calls: []call{
				{rows: chgs(6), xmin: 100, wantFresh: []int64{6}, wantHoles: []int64{5}},
				{xmin: 100, wantHoles: []int64{5}},
				{xmin: 101, wantHoles: []int64{}},
			}},
		{name: "a row found at xmin above xmax is still returned", holes: map[int64]hole{5: {since: posT0, xmax: 100}, 6: {since: posT0, xmax: 100}},
			calls: []call{{rows: chgs(5), xmin: 101, wantFresh: []int64{5}, wantHoles: []int64{}}}},
		{name: "filled and forgotten in one look", holes: map[int64]hole{5: {since: posT0, xmax: 100}, 6: {since: posT0, xmax: 100}, 8: {since: posT0, xmax: 300}},
			calls: []call{{rows: chgs(6), xmin: 150, wantFresh: []int64{6}, wantHoles: []int64{8}}}},
		{name: "an expired hole forgotten without its row is lost", holes: map[int64]hole{5: {since: posT0, xmax: 100, expired: true}, 6: {since: posT0, xmax: 100}},
			calls: []call{
				{xmin: 100, wantHoles: []int64{5, 6}},
				{xmin: 101, wantHoles: []int64{}, wantLost: true},
			}},
		{name: "an expired hole whose row is found is not lost", holes: map[int64]hole{5: {since: posT0, xmax: 100, expired: true}},
			calls: []call{{rows: chgs(5), xmin: 101, wantFresh: []int64{5}, wantHoles: []int64{}}}},
		{name: "holes without xmax are never forgotten", holes: map[int64]hole{5: {since: posT0}, 6: {since: posT0, expired: true}},
			calls: []call{
				{xmin: 1 << 62, wantHoles: []int64{5, 6}},
				{rows: chgs(6), xmin: 1 << 62, wantFresh: []int64{6}, wantHoles: []int64{5}},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := positionAt(20, tt.holes)
			for i, c := range tt.calls {
				fresh, lost := p.filled(c.rows, c.xmin)
				if lost != c.wantLost {
					t.Errorf("call %d: lost = %v, want %v", i, lost, c.wantLost)
				}
				if c.wantFresh == nil {
					if fresh != nil {
						t.Errorf("call %d: fresh = %v, want nil", i, idsOf(fresh))
					}
				} else if got := idsOf(fresh); !slices.Equal(got, c.wantFresh) {
					t.Errorf("call %d: fresh = %v, want %v", i, got, c.wantFresh)
				}
				got := slices.Sorted(maps.Keys(p.holes))
				if !slices.Equal(got, c.wantHoles) {
					t.Errorf("call %d: holes = %v, want %v", i, got, c.wantHoles)
				}
				if p.high != 20 {
					t.Errorf("call %d: high = %d, want 20", i, p.high)
				}
			}
		})
	}
}

// TestChangePositionLateCommit drives one PostgreSQL story: a gap seen by a
// poll, bound with the xid taken after it, the hole's row committed later,
// then a rolled-back id forgotten once xmin passes the bound.
func TestChangePositionLateCommit(t *testing.T) {
	p := newChangePosition(time.Minute)
	p.reset(chgPtr(3), chgs(1, 2, 3), posT0)
	if len(p.holes) != 0 || p.unbound() {
		t.Fatalf("after reset: holes %v, unbound %v, want none", holeValues(p), p.unbound())
	}
	fresh, reason := p.advance(changeWindow{rows: chgs(4, 6, 8), anchor: chgPtr(3), latest: chgPtr(8)}, true, posT0)
	if got := idsOf(fresh); !slices.Equal(got, []int64{4, 6, 8}) || reason != "" {
		t.Fatalf("advance = (%v, %q), want ([4 6 8], \"\")", got, reason)
	}
	if got, want := holeValues(p), (map[int64]hole{5: {since: posT0}, 7: {since: posT0}}); !maps.Equal(got, want) || !p.unbound() {
		t.Fatalf("after advance: holes %v, unbound %v, want %v, true", got, p.unbound(), want)
	}
	p.bind(20)
	if got, want := holeValues(p), (map[int64]hole{5: {since: posT0, xmax: 20}, 7: {since: posT0, xmax: 20}}); !maps.Equal(got, want) || p.unbound() {
		t.Fatalf("after bind(20): holes %v, unbound %v, want %v, false", got, p.unbound(), want)
	}
	look, expired := p.pending(posT0.Add(time.Second))
	slices.Sort(look)
	if !slices.Equal(look, []int64{5, 7}) || expired {
		t.Fatalf("pending = (%v, %v), want ([5 7], false)", look, expired)
	}
	if got := idsOf(first(p.filled(chgs(7), 19))); !slices.Equal(got, []int64{7}) {
		t.Fatalf("filled = %v, want [7]", got)
	}
	if got := idsOf(first(p.filled(nil, 20))); len(got) != 0 || !maps.Equal(holeValues(p), map[int64]hole{5: {since: posT0, xmax: 20}}) {
		t.Fatalf("filled(xmin 20) = %v with holes %v, want nothing and hole 5 kept", got, holeValues(p))
	}
	if got := idsOf(first(p.filled(nil, 21))); len(got) != 0 || len(p.holes) != 0 {
		t.Fatalf("filled(xmin 21) = %v with holes %v, want nothing and no holes", got, holeValues(p))
	}
	fresh, reason = p.advance(changeWindow{rows: chgs(9), anchor: chgPtr(8), latest: chgPtr(9)}, true, posT0)
	if got := idsOf(fresh); !slices.Equal(got, []int64{9}) || reason != "" || p.high != 9 {
		t.Fatalf("advance = (%v, %q) at %d, want ([9], \"\") at 9", got, reason, p.high)
	}
	if p.unbound() {
		t.Fatalf("unbound() = true with holes %v, want false", holeValues(p))
	}
}

func first[T any](v T, _ bool) T { return v }
