package sqlstore

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/llmauth/llmauth/keystore"
)

// FuzzParseNotification feeds parseNotification any payload: anyone who
// can connect to the database can NOTIFY on the channel, not only the
// triggers. It must never panic, must refuse with an error and a zero
// Change, and whatever it accepts must round-trip: the payload the
// trigger would write for that change (llmauth_emit: "<id> <source>
// <client id or -> <key id or ->") parses back to the same change and is
// itself written the same way again.
func FuzzParseNotification(f *testing.F) {
	for _, s := range []string{
		"1 client 7 -", "2 key - 9", "3 link 7 9", "4 flush - -",
		"9223372036854775807 key 9223372036854775807 9223372036854775807",
		"9223372036854775808 key - -", "-1 key - -", "+1 key - -", "01 key 007 -",
		"1 key 0 0", "1 key -0 -", "1 key -- -", "1 key - - -", "1 key -", "",
		" 1  key\t-\n- ", "1\u00a0key - -", "1\u0085key - -", "1 KEY - -",
		"1 nonsense - -", "1 key 1e3 -", "1 key 0x10 -", "1 key 1_000 -",
		"1 k\u00e9y - -", "\xff key - -",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		ch, err := parseNotification(payload)
		if err != nil {
			if ch != (keystore.Change{}) {
				t.Fatalf("parseNotification(%q) failed (%v) but returned %+v", payload, err, ch)
			}
			return
		}
		if n := len(strings.Fields(payload)); n != 4 {
			t.Fatalf("parseNotification(%q) accepted %d fields", payload, n)
		}
		canonical := triggerPayload(ch)
		again, err := parseNotification(canonical)
		if err != nil {
			t.Fatalf("parseNotification(%q) = %+v, but its canonical form %q fails: %v", payload, ch, canonical, err)
		}
		if again != ch {
			t.Fatalf("parseNotification(%q) = %+v, but its canonical form %q reads as %+v", payload, ch, canonical, again)
		}
		if c2 := triggerPayload(again); c2 != canonical {
			t.Fatalf("canonical form %q is written back as %q", canonical, c2)
		}
	})
}

// triggerPayload writes a change as llmauth_emit does: a NULL id (0 here)
// as "-".
func triggerPayload(ch keystore.Change) string {
	id := func(v int64) string {
		if v == 0 {
			return "-"
		}
		return strconv.FormatInt(v, 10)
	}
	return fmt.Sprintf("%d %s %s %s", ch.ID, ch.Source, id(ch.ClientID), id(ch.KeyID))
}
