package keystore

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"strings"
)

// Token layout: "llmk_" + lookup id (12 base62) + secret (43 base62) +
// CRC32 checksum (6 base62). 43 base62 characters carry 256.03 bits, so the
// secret is at least 256 bits from crypto/rand. The checksum lets a scanner
// or the middleware reject a mistyped or truncated token without a database
// round trip, as GitHub's token format does.
const (
	// TokenPrefix starts every token, so that secret scanners can find leaked
	// tokens and people can tell what a string is.
	TokenPrefix = "llmk_"

	lookupIDLen = 12
	secretLen   = 43
	checksumLen = 6

	// TokenLength is the exact length of every token.
	TokenLength = len(TokenPrefix) + lookupIDLen + secretLen + checksumLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Digest is the SHA-256 digest of a whole token; it is all the store keeps of
// the secret.
type Digest [sha256.Size]byte

// String returns the digest in lower-case hex, the form stored in the
// database.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Equal compares two digests in constant time.
func (d Digest) Equal(o Digest) bool { return subtle.ConstantTimeCompare(d[:], o[:]) == 1 }

// Token is a syntactically valid API token: right prefix, length, alphabet
// and checksum. Whether it belongs to a key is for the store to say.
//
// Its String method never reveals the secret, so a Token that reaches a log
// line or an error message by accident leaks nothing.
type Token struct {
	raw string
}

// ParseToken checks a presented token without touching any database. Every
// failure wraps [ErrMalformedToken] (which also matches [ErrInvalidToken]);
// the message never repeats the input.
func ParseToken(s string) (Token, error) {
	switch {
	case len(s) != TokenLength:
		return Token{}, fmt.Errorf("%w: want %d characters, got %d", ErrMalformedToken, TokenLength, len(s))
	case !strings.HasPrefix(s, TokenPrefix):
		return Token{}, fmt.Errorf("%w: missing %q prefix", ErrMalformedToken, TokenPrefix)
	}
	body := s[len(TokenPrefix):]
	for i := 0; i < len(body); i++ {
		if !isBase62[body[i]] {
			return Token{}, fmt.Errorf("%w: character outside the base62 alphabet", ErrMalformedToken)
		}
	}
	payload, sum := s[:len(s)-checksumLen], s[len(s)-checksumLen:]
	want := checksumOf(payload)
	var got [checksumLen]byte
	copy(got[:], sum)
	if subtle.ConstantTimeCompare(want[:], got[:]) != 1 {
		return Token{}, fmt.Errorf("%w: checksum mismatch", ErrMalformedToken)
	}
	return Token{raw: s}, nil
}

// LookupID is the public part of the token that names its key row. It is
// not secret: it is shown in key listings.
func (t Token) LookupID() string {
	if t.raw == "" {
		return ""
	}
	return t.raw[len(TokenPrefix) : len(TokenPrefix)+lookupIDLen]
}

// Digest is the SHA-256 digest of the whole token.
func (t Token) Digest() Digest {
	// Through a buffer on the stack: a []byte conversion of the token
	// would cost an allocation per request.
	var buf [TokenLength]byte
	if len(t.raw) == TokenLength {
		return sha256.Sum256(append(buf[:0], t.raw...))
	}
	return sha256.Sum256([]byte(t.raw))
}

// IsZero reports whether t is the zero Token, which no key matches.
func (t Token) IsZero() bool { return t.raw == "" }

// Reveal returns the plaintext. Call it only to hand a freshly created token
// to its owner.
func (t Token) Reveal() string { return t.raw }

// String returns a redacted form that shows only the public lookup id.
func (t Token) String() string {
	if t.raw == "" {
		return "<no token>"
	}
	return TokenPrefix + t.LookupID() + "…"
}

// GoString keeps %#v from printing the secret.
func (t Token) GoString() string { return "keystore.Token(" + t.String() + ")" }

// NewToken draws a fresh token from crypto/rand: 256 bits of secret, a
// public lookup id and a checksum. Stores call it when they create a key.
func NewToken() (Token, error) {
	body, err := randomBase62(lookupIDLen + secretLen)
	if err != nil {
		return Token{}, fmt.Errorf("keystore: generate token: %w", err)
	}
	payload := TokenPrefix + body
	return Token{raw: payload + checksum(payload)}, nil
}

// randomBase62 returns n characters drawn uniformly (by rejection sampling)
// from the base62 alphabet.
func randomBase62(n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/2)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			// 248 = 4*62: bytes at or above it would bias the draw.
			if b < 248 && len(out) < n {
				out = append(out, base62[b%62])
			}
		}
	}
	return string(out), nil
}

// checksum encodes the CRC32 (IEEE) of payload as 6 base62 characters.
func checksum(payload string) string {
	b := checksumOf(payload)
	return string(b[:])
}

// checksumOf is checksum without an allocation: the CRC32 (IEEE) is
// computed from the string four bytes at a time ("slicing by 4"), with
// tables derived from hash/crc32's IEEE table.
func checksumOf(payload string) [checksumLen]byte {
	t := &crcTables
	v := ^uint32(0)
	i := 0
	for ; i+4 <= len(payload); i += 4 {
		v ^= uint32(payload[i]) | uint32(payload[i+1])<<8 | uint32(payload[i+2])<<16 | uint32(payload[i+3])<<24
		v = t[3][byte(v)] ^ t[2][byte(v>>8)] ^ t[1][byte(v>>16)] ^ t[0][v>>24]
	}
	for ; i < len(payload); i++ {
		v = t[0][byte(v)^payload[i]] ^ (v >> 8)
	}
	v = ^v
	var b [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		b[i] = base62[v%62]
		v /= 62
	}
	return b
}

// crcTables are the tables of checksumOf: crcTables[0] is the IEEE table,
// crcTables[k] advances a CRC by k more zero bytes. Computed once, never
// written after.
var crcTables = func() (t [4][256]uint32) {
	t[0] = *crc32.IEEETable
	for k := 1; k < 4; k++ {
		for i := range 256 {
			prev := t[k-1][i]
			t[k][i] = prev>>8 ^ t[0][byte(prev)]
		}
	}
	return t
}()

// isBase62 is a lookup table of the token alphabet.
var isBase62 = func() (t [256]bool) {
	for i := 0; i < len(base62); i++ {
		t[base62[i]] = true
	}
	return t
}()
