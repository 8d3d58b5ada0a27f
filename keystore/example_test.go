package keystore_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/llmauth/llmauth/keystore"
)

// ParseToken refuses a mistyped token without a database round trip, and a
// Token never prints its secret.
func ExampleParseToken() {
	_, err := keystore.ParseToken("llmk_not-a-token")
	fmt.Println(errors.Is(err, keystore.ErrInvalidToken))

	fresh, _ := keystore.NewToken() // what a store does when it creates a key
	tok, _ := keystore.ParseToken(fresh.Reveal())
	fmt.Println(strings.HasSuffix(tok.String(), "…"), len(tok.String()) < keystore.TokenLength)
	// Output:
	// true
	// true true
}
