package keystore

import (
	"hash/crc32"
	"testing"
)

// checksumOf computes CRC32 by hand, for speed without allocations: it
// must agree with hash/crc32 on every input.
func TestChecksumMatchesCRC32(t *testing.T) {
	payloads := []string{"", "a", TokenPrefix, TokenPrefix + "000000000000" + "0000000000000000000000000000000000000000000"}
	for range 1000 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, tok.Reveal()[:TokenLength-checksumLen])
	}
	for _, p := range payloads {
		v := crc32.ChecksumIEEE([]byte(p))
		var want [checksumLen]byte
		for i := checksumLen - 1; i >= 0; i-- {
			want[i] = base62[v%62]
			v /= 62
		}
		if got := checksumOf(p); got != want {
			t.Fatalf("checksumOf(%q) = %q, want %q", p, got[:], want[:])
		}
	}
}

func TestParseAndDigestDoNotAllocate(t *testing.T) {
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	raw := tok.Reveal()
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseToken(raw) }); n != 0 {
		t.Errorf("ParseToken: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = tok.Digest() }); n != 0 {
		t.Errorf("Digest: %v allocations, want 0", n)
	}
}
