package keystore_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/llmauth/llmauth/keystore"
)

// clientNameRule is the rule as the README, the errors and the migrations'
// CHECK constraints state it; ValidClientName is a byte loop for speed.
var clientNameRule = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// FuzzValidClientName checks that ValidClientName agrees with the regular
// expression on every input.
func FuzzValidClientName(f *testing.F) {
	for _, s := range []string{
		"", "a", "0", "-", "-a", "a-", "a--b", "support-bot", "demo-secure",
		"A", "aB", "a_b", "a.b", "a b", "a/b", "é", "a\x00", "a\n", "\na",
		"_unknown", "ａ", "K", "\u212a", // fullwidth a, Kelvin sign
		strings.Repeat("a", 63), strings.Repeat("a", 64), "-" + strings.Repeat("a", 62),
		strings.Repeat("9", 63) + "\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := keystore.ValidClientName(s), clientNameRule.MatchString(s); got != want {
			t.Fatalf("ValidClientName(%q) = %v, the rule says %v", s, got, want)
		}
	})
}
