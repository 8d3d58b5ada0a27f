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
		{name: "empty log stays empty", win: changeWindow{xmax: 9}, postgres: true,
			wantFresh: []int64{}, wantHoles: map[int64]hole{}},
		{name: "empty log then first rows postgres", win: changeWindow{rows: chgs(1, 2), latest: chgPtr(2), xmax: 9}, postgres: true,
			wantFresh: []int64{1, 2}, wantHigh: 2, wantHoles: map[int64]hole{}},
		{name: "ids before the first rows may still commit on postgres", win: changeWindow{rows: chgs(3, 4), latest: chgPtr(4), xmax: 9}, postgres: true,
			wantFresh: []int64{3, 4}, wantHigh: 4, wantHoles: map[int64]hole{1: {since: now, xmax: 9}, 2: {since: now, xmax: 9}}},
		{name: "a first row far up after an empty log holds at most startWindow ids as holes", win: changeWindow{rows: chgs(50001), latest: chgPtr(50001), xmax: 9}, postgres: true,
			wantFresh: []int64{50001}, wantHigh: 50001, wantHoles: func() map[int64]hole {
				m := map[int64]hole{}
				for id := int64(50001 - startWindow); id < 50001; id++ {
					m[id] = hole{since: now, xmax: 9}
				}
				return m
			}()},
		{name: "empty log then first rows sqlite", win: changeWindow{rows: chgs(1, 2), latest: chgPtr(2)},
			wantFresh: []int64{1, 2}, wantHigh: 2, wantHoles: map[int64]hole{}},
		{name: "sqlite ids after an empty log need not start at 1", win: changeWindow{rows: chgs(5, 6), latest: chgPtr(6)},
			wantFresh: []int64{5, 6}, wantHigh: 6, wantHoles: map[int64]hole{}},
		{name: "quiet log", high: 3, holes: old, win: changeWindow{anchor: chgPtr(3), latest: chgPtr(3), xmax: 50}, postgres: true,
			wantFresh: []int64{}, wantHigh: 3, wantHoles: old},
		{name: "new rows in order", high: 3, holes: old, win: changeWindow{rows: chgs(4, 5), anchor: chgPtr(3), latest: chgPtr(5), xmax: 50}, postgres: true,
			wantFresh: []int64{4, 5}, wantHigh: 5, wantHoles: old},
		{name: "new rows in order sqlite", high: 3, win: changeWindow{rows: chgs(4, 5), anchor: chgPtr(3), latest: chgPtr(5)},
			wantFresh: []int64{4, 5}, wantHigh: 5, wantHoles: map[int64]hole{}},
		{name: "gap on postgres becomes holes with the window's xmax", high: 3, holes: old,
			win:      changeWindow{rows: chgs(4, 7, 8, 10), anchor: chgPtr(3), latest: chgPtr(10), xmax: 77},
			postgres: true, wantFresh: []int64{4, 7, 8, 10}, wantHigh: 10,
			wantHoles: map[int64]hole{2: old[2], 5: {since: now, xmax: 77}, 6: {since: now, xmax: 77}, 9: {since: now, xmax: 77}}},
		{name: "gap on sqlite is rows missing", high: 3, win: changeWindow{rows: chgs(4, 7), anchor: chgPtr(3), latest: chgPtr(7)},
			wantFresh: []int64{4, 7}, wantReason: FlushRowsMissing, wantHigh: 7, wantHoles: map[int64]hole{}},
		{name: "anchor missing, latest below high", high: 9, holes: old, win: changeWindow{rows: chgs(), latest: chgPtr(4), xmax: 50}, postgres: true,
			wantReason: FlushIDsBackwards, wantHigh: 9, wantHoles: old},
		{name: "anchor missing, log empty", high: 9, win: changeWindow{xmax: 50}, postgres: true,
			wantReason: FlushIDsBackwards, wantHigh: 9, wantHoles: map[int64]hole{}},
		{name: "anchor missing, latest above high", high: 9, holes: old, win: changeWindow{rows: chgs(10, 11), latest: chgPtr(11), xmax: 50}, postgres: true,
			wantReason: FlushRowsMissing, wantHigh: 9, wantHoles: old},
		{name: "anchor missing, latest above high sqlite", high: 9, win: changeWindow{rows: chgs(10), latest: chgPtr(10)},
			wantReason: FlushRowsMissing, wantHigh: 9, wantHoles: map[int64]hole{}},
		{name: "anchor replaced by another row", high: 9, holes: old,
			win:      changeWindow{rows: chgs(10), anchor: &changeRow{Change: keystore.Change{ID: 9}, stamp: "another"}, latest: chgPtr(10), xmax: 50},
			postgres: true, wantReason: FlushRowsMissing, wantHigh: 9, wantHoles: old},
		{name: "anchor replaced, latest at high", high: 9,
			win:        changeWindow{anchor: &changeRow{Change: keystore.Change{ID: 9}, stamp: "another"}, latest: &changeRow{Change: keystore.Change{ID: 9}, stamp: "another"}},
			wantReason: FlushRowsMissing, wantHigh: 9, wantHoles: map[int64]hole{}},
		{name: "exactly maxHoles missing ids", high: 1,
			win:      changeWindow{rows: chgs(maxHoles + 2), anchor: chgPtr(1), latest: chgPtr(maxHoles + 2), xmax: 50},
			postgres: true, wantFresh: []int64{maxHoles + 2}, wantHigh: maxHoles + 2},
		{name: "more than maxHoles missing ids", high: 1,
			win:      changeWindow{rows: chgs(maxHoles + 3), anchor: chgPtr(1), latest: chgPtr(maxHoles + 3), xmax: 50},
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
				// the new high, from this window.
				if len(p.holes) != maxHoles {
					t.Fatalf("len(holes) = %d, want %d", len(p.holes), maxHoles)
				}
				for id := tt.high + 1; id < tt.wantHigh; id++ {
					if h := p.holes[id]; h == nil || *h != (hole{since: now, xmax: 50}) {
						t.Fatalf("holes[%d] = %v, want {since: now, xmax: 50}", id, h)
					}
				}
				return
			}
			if got := holeValues(p); !maps.Equal(got, tt.wantHoles) {
				t.Errorf("holes = %v, want %v", got, tt.wantHoles)
			}
		})
	}
}

func TestChangePositionReset(t *testing.T) {
	now := posT0.Add(time.Hour)
	tests := []struct {
		name      string
		latest    *changeRow
		rows      []changeRow
		xmax      uint64
		wantHigh  int64
		wantHoles map[int64]hole
	}{
		{name: "empty log", xmax: 30, wantHoles: map[int64]hole{}},
		{name: "no window (sqlite)", latest: chgPtr(16), wantHigh: 16, wantHoles: map[int64]hole{}},
		{name: "window without gaps", latest: chgPtr(13), rows: chgs(11, 12, 13), xmax: 30, wantHigh: 13, wantHoles: map[int64]hole{}},
		{name: "gaps below latest", latest: chgPtr(16), rows: chgs(10, 12, 13, 16), xmax: 30, wantHigh: 16,
			wantHoles: map[int64]hole{11: {since: now, xmax: 30}, 14: {since: now, xmax: 30}, 15: {since: now, xmax: 30}}},
		{name: "rows above latest ignored", latest: chgPtr(13), rows: chgs(10, 12, 13, 16, 20), xmax: 30, wantHigh: 13,
			wantHoles: map[int64]hole{11: {since: now, xmax: 30}}},
		{name: "ids below the oldest row are not holes", latest: chgPtr(1005), rows: chgs(1000, 1005), xmax: 30, wantHigh: 1005,
			wantHoles: map[int64]hole{1001: {since: now, xmax: 30}, 1002: {since: now, xmax: 30}, 1003: {since: now, xmax: 30}, 1004: {since: now, xmax: 30}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Whatever was held before is replaced.
			p := positionAt(50, map[int64]hole{3: {since: posT0, xmax: 7, expired: true}})
			p.reset(tt.latest, tt.rows, tt.xmax, now)
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
		})
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
	if got := idsOf(p.filled(chgs(7), 0)); !slices.Equal(got, []int64{7}) {
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
				{xmin: 100, wantHoles: []int64{6}}, // xmax == xmin: forgotten
				{xmin: 101, wantHoles: []int64{}},
			}},
		{name: "filled and forgotten in one look", holes: map[int64]hole{5: {since: posT0, xmax: 100}, 6: {since: posT0, xmax: 100}, 8: {since: posT0, xmax: 300}},
			calls: []call{{rows: chgs(6), xmin: 150, wantFresh: []int64{6}, wantHoles: []int64{8}}}},
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
				fresh := p.filled(c.rows, c.xmin)
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
// poll, the hole's row committed later, then a rolled-back id forgotten.
func TestChangePositionLateCommit(t *testing.T) {
	p := newChangePosition(time.Minute)
	p.reset(chgPtr(3), chgs(1, 2, 3), 10, posT0)
	fresh, reason := p.advance(changeWindow{rows: chgs(4, 6, 8), anchor: chgPtr(3), latest: chgPtr(8), xmax: 20}, true, posT0)
	if got := idsOf(fresh); !slices.Equal(got, []int64{4, 6, 8}) || reason != "" {
		t.Fatalf("advance = (%v, %q), want ([4 6 8], \"\")", got, reason)
	}
	look, expired := p.pending(posT0.Add(time.Second))
	slices.Sort(look)
	if !slices.Equal(look, []int64{5, 7}) || expired {
		t.Fatalf("pending = (%v, %v), want ([5 7], false)", look, expired)
	}
	if got := idsOf(p.filled(chgs(7), 19)); !slices.Equal(got, []int64{7}) {
		t.Fatalf("filled = %v, want [7]", got)
	}
	if got := idsOf(p.filled(nil, 20)); len(got) != 0 || len(p.holes) != 0 {
		t.Fatalf("filled(xmin 20) = %v with holes %v, want nothing and no holes", got, holeValues(p))
	}
	fresh, reason = p.advance(changeWindow{rows: chgs(9), anchor: chgPtr(8), latest: chgPtr(9), xmax: 30}, true, posT0)
	if got := idsOf(fresh); !slices.Equal(got, []int64{9}) || reason != "" || p.high != 9 {
		t.Fatalf("advance = (%v, %q) at %d, want ([9], \"\") at 9", got, reason, p.high)
	}
}
