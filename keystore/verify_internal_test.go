package keystore

import (
	"context"
	"errors"
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
	s, err := NewSQLStore(db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateClient(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	k, err := s.CreateKey(ctx, "bot", KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newToken()
	payload := TokenPrefix + k.Token.LookupID() + other.Reveal()[len(TokenPrefix)+lookupIDLen:len(other.Reveal())-checksumLen]
	forged, err := ParseToken(payload + checksum(payload))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, "bot", forged); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Verify(forged secret) = %v, want ErrInvalidToken", err)
	}
	if _, err := s.Verify(ctx, "bot", k.Token); err != nil {
		t.Fatalf("Verify(real) = %v", err)
	}
}
