package keystore

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func TestParseToken(t *testing.T) {
	good, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	raw := good.Reveal()
	flip := func(i int) string {
		b := []byte(raw)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{"valid", raw, false},
		{"empty", "", true},
		{"too short", raw[:len(raw)-1], true},
		{"too long", raw + "a", true},
		{"wrong prefix", "ghp_" + raw[4:], true},
		{"upper-case prefix", "LLMK_" + raw[5:], true},
		{"non-base62 character", raw[:20] + "-" + raw[21:], true},
		{"non-ascii", raw[:20] + "é" + raw[22:], true},
		{"secret typo", flip(30), true},
		{"lookup id typo", flip(8), true},
		{"checksum typo", flip(len(raw) - 1), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ParseToken(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformedToken) || !errors.Is(err, ErrInvalidToken) {
					t.Fatalf("ParseToken: %v, want ErrMalformedToken wrapping ErrInvalidToken", err)
				}
				if tt.in != "" && strings.Contains(err.Error(), tt.in) {
					t.Fatal("error message repeats the input")
				}
				if !tok.IsZero() {
					t.Fatal("refused token is not zero")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseToken: %v", err)
			}
			if tok.Reveal() != tt.in || tok.LookupID() != tt.in[5:17] {
				t.Fatalf("token = %q lookup %q", tok.Reveal(), tok.LookupID())
			}
		})
	}
}

func TestTokenShape(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		raw := tok.Reveal()
		if len(raw) != TokenLength || TokenLength != 66 || !strings.HasPrefix(raw, "llmk_") {
			t.Fatalf("token %q has the wrong shape", raw)
		}
		if _, err := ParseToken(raw); err != nil {
			t.Fatalf("fresh token does not parse: %v", err)
		}
		if seen[raw] || seen[tok.LookupID()] {
			t.Fatal("repeated token or lookup id")
		}
		seen[raw], seen[tok.LookupID()] = true, true
		for _, s := range []string{tok.String(), fmt.Sprintf("%v|%+v|%#v|%s", tok, tok, tok, tok)} {
			if strings.Contains(s, raw[17:]) {
				t.Fatalf("formatting reveals the secret: %s", s)
			}
		}
	}
}

func TestDigest(t *testing.T) {
	a, _ := NewToken()
	b, _ := NewToken()
	da, db := a.Digest(), b.Digest()
	if !da.Equal(a.Digest()) || da.Equal(db) {
		t.Fatal("Digest.Equal is wrong")
	}
	if s := da.String(); len(s) != 64 || strings.Trim(s, "0123456789abcdef") != "" {
		t.Fatalf("Digest.String() = %q, want 64 lower-case hex digits", s)
	}
}

func BenchmarkParseToken(b *testing.B) {
	tok, _ := NewToken()
	raw := tok.Reveal()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseToken(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// TestValidClientNameMatchesPattern checks the byte loop against the
// documented regular expression on every short string over a small
// alphabet and some long ones.
func TestValidClientNameMatchesPattern(t *testing.T) {
	re := regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	alphabet := []string{"a", "z", "0", "9", "-", "A", "_", " ", "é", "\x00"}
	var walk func(prefix string, depth int)
	walk = func(prefix string, depth int) {
		if ValidClientName(prefix) != re.MatchString(prefix) {
			t.Fatalf("ValidClientName(%q) = %v, pattern says %v", prefix, ValidClientName(prefix), re.MatchString(prefix))
		}
		if depth == 0 {
			return
		}
		for _, c := range alphabet {
			walk(prefix+c, depth-1)
		}
	}
	walk("", 3)
	for _, n := range []int{62, 63, 64, 200} {
		for _, s := range []string{strings.Repeat("a", n), "a" + strings.Repeat("-", n-1), strings.Repeat("a", n-1) + "A"} {
			if ValidClientName(s) != re.MatchString(s) {
				t.Fatalf("ValidClientName(len %d) disagrees with the pattern", len(s))
			}
		}
	}
}
