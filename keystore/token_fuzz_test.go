package keystore_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/llmauth/llmauth/keystore"
)

// fuzzToken is a fixed, well-formed token (it belongs to no key), so that
// the seeds are the same on every run.
const fuzzToken = "llmk_lPBUhKK15mAfICEr4WqoJuPEjevtCEnDufM1sLMINvW2BUytlvAE7Y322D9Sb"

// FuzzParseToken checks ParseToken against a reference written from the
// token layout, not from the parser: it accepts exactly the TokenLength-long
// strings with the prefix, a base62 body and the right CRC32 checksum; an
// accepted token reveals exactly its input and never prints its secret; a
// refused one is the zero Token and an ErrMalformedToken.
//
// Random bytes almost never carry a right checksum, so every input is also
// tried with the checksum of its first TokenLength-6 bytes appended: that
// reaches the accepting path for any 61-byte input that has the shape.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{
		fuzzToken,
		fuzzToken[:len(fuzzToken)-6], // the checksum is appended below
		"",
		"llmk_",
		"LLMK_" + fuzzToken[5:],
		"ghp_" + fuzzToken[4:],
		fuzzToken[:len(fuzzToken)-1],
		fuzzToken + "a",
		fuzzToken[:30] + "-" + fuzzToken[31:],
		fuzzToken[:30] + "é" + fuzzToken[32:],
		fuzzToken[:len(fuzzToken)-1] + "c",
		strings.Repeat("0", keystore.TokenLength),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkParseToken(t, s)
		if len(s) >= keystore.TokenLength-6 {
			payload := s[:keystore.TokenLength-6]
			checkParseToken(t, payload+refChecksum(payload))
		}
	})
}

func checkParseToken(t *testing.T, s string) {
	t.Helper()
	tok, err := keystore.ParseToken(s)
	want := refWellFormed(s)
	if err != nil {
		if want {
			t.Fatalf("ParseToken(%q) refused a well-formed token: %v", s, err)
		}
		if !errors.Is(err, keystore.ErrMalformedToken) || !errors.Is(err, keystore.ErrInvalidToken) {
			t.Fatalf("ParseToken(%q): %v, want ErrMalformedToken wrapping ErrInvalidToken", s, err)
		}
		if !tok.IsZero() || tok.Reveal() != "" {
			t.Fatalf("ParseToken(%q) refused the input but returned a non-zero token", s)
		}
		if strings.Contains(err.Error(), s) && !inFixedErrors(s) {
			t.Fatalf("ParseToken(%q): the error repeats the input: %v", s, err)
		}
		return
	}
	if !want {
		t.Fatalf("ParseToken(%q) accepted a string that is not a well-formed token", s)
	}
	if tok.Reveal() != s {
		t.Fatalf("ParseToken(%q).Reveal() = %q", s, tok.Reveal())
	}
	if tok.IsZero() {
		t.Fatalf("ParseToken(%q) accepted the input but returned the zero token", s)
	}
	if got := tok.LookupID(); got != s[5:17] {
		t.Fatalf("ParseToken(%q).LookupID() = %q, want %q", s, got, s[5:17])
	}
	if tok.Digest() != keystore.Digest(sha256.Sum256([]byte(s))) {
		t.Fatalf("ParseToken(%q).Digest() is not the SHA-256 of the token", s)
	}
	secret := s[17:60]
	for _, printed := range []string{
		tok.String(), tok.GoString(),
		fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s %q", tok, tok, tok, tok, tok),
		fmt.Sprintf("%v %+v", struct{ T keystore.Token }{tok}, &tok),
	} {
		if strings.Contains(printed, secret) {
			t.Fatalf("a printed token shows its secret: %q", printed)
		}
	}
}

// inFixedErrors reports whether s occurs in the errors of inputs unlike
// it (of its length, with a bad prefix, alphabet or checksum): text there
// is not taken from the input.
func inFixedErrors(s string) bool {
	for _, other := range []string{
		strings.Repeat("!", len(s)),
		"x" + fuzzToken[1:],
		fuzzToken[:30] + "!" + fuzzToken[31:],
		fuzzToken[:len(fuzzToken)-1] + "c",
	} {
		if _, err := keystore.ParseToken(other); err != nil && strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// refWellFormed is the token grammar: "llmk_", 61 base62 characters, the
// last 6 the base62 CRC32 (IEEE) of everything before them.
func refWellFormed(s string) bool {
	if len(s) != keystore.TokenLength || !strings.HasPrefix(s, keystore.TokenPrefix) {
		return false
	}
	for _, r := range s[len(keystore.TokenPrefix):] {
		if !('0' <= r && r <= '9' || 'A' <= r && r <= 'Z' || 'a' <= r && r <= 'z') {
			return false
		}
	}
	return s[len(s)-6:] == refChecksum(s[:len(s)-6])
}

// refChecksum writes the CRC32 of payload as 6 base62 digits, most
// significant first (62^6 > 2^32, so 6 digits hold any CRC32).
func refChecksum(payload string) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	v := uint64(crc32.ChecksumIEEE([]byte(payload)))
	out := make([]byte, 6)
	place := uint64(62 * 62 * 62 * 62 * 62)
	for i := range out {
		out[i] = digits[v/place%62]
		place /= 62
	}
	return string(out)
}
