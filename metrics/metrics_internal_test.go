package metrics

import "testing"

// The fast paths index fixed arrays: their indexes must follow the lists.
func TestIndexesFollowTheLists(t *testing.T) {
	for i, o := range outcomes {
		if got := outcomeIndex(o); got != i {
			t.Errorf("outcomeIndex(%q) = %d, want %d", o, got, i)
		}
	}
	if got := outcomeIndex("no-such-outcome"); got != len(outcomes) {
		t.Errorf("outcomeIndex(unknown) = %d, want %d", got, len(outcomes))
	}
	if len(clientCounters{}) != len(outcomes)+1 {
		t.Errorf("clientCounters holds %d counters for %d outcomes and other", len(clientCounters{}), len(outcomes))
	}
	for i, c := range CacheNames {
		if got := cacheIndex(c); got != i {
			t.Errorf("cacheIndex(%q) = %d, want %d", c, got, i)
		}
	}
	if got := cacheIndex("no-such-cache"); got != -1 {
		t.Errorf("cacheIndex(unknown) = %d, want -1", got)
	}
}
