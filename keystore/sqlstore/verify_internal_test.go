package sqlstore

import (
	"context"
	"errors"
	"github.com/llmauth/llmauth/keystore"
	"hash/crc32"
	"path/filepath"
	"testing"
)

// TestVerifyWrongSecret presents a token whose lookup id and checksum are
// right but whose secret is not: only the digest comparison can refuse it.
func TestVerifyWrongSecret(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateClient(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	k, err := s.CreateKey(ctx, "bot", keystore.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	// The documented format: prefix, 12-character lookup id, 43-character
	// secret, then the CRC32 (IEEE) of all that in 6 base62 characters.
	other, _ := keystore.NewToken()
	const lookupLen, checksumLen = 12, 6
	payload := keystore.TokenPrefix + k.Token.LookupID() + other.Reveal()[len(keystore.TokenPrefix)+lookupLen:len(other.Reveal())-checksumLen]
	forged, err := keystore.ParseToken(payload + crcBase62(payload))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, "bot", forged); !errors.Is(err, keystore.ErrInvalidToken) {
		t.Fatalf("Verify(forged secret) = %v, want ErrInvalidToken", err)
	}
	if _, err := s.Verify(ctx, "bot", k.Token); err != nil {
		t.Fatalf("Verify(real) = %v", err)
	}
}

func crcBase62(payload string) string {
	const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	v := crc32.ChecksumIEEE([]byte(payload))
	var b [6]byte
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = base62[v%62]
		v /= 62
	}
	return string(b[:])
}
