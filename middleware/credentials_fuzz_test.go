package middleware

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// FuzzBearerToken checks the Authorization header parser against a
// reference written from the grammar, not from the parser:
//
//	credentials = "Bearer" 1*SP b64token                      (RFC 6750 §2.1)
//	b64token    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
//
// with the scheme matched case-insensitively (RFC 7235 §2.1) and nothing
// before or after. copies is how many Authorization headers carry value
// (0, 1 or 2): only exactly one may be accepted. A refusal never repeats
// the header.
func FuzzBearerToken(f *testing.F) {
	const tok = "llmk_lPBUhKK15mAfICEr4WqoJuPEjevtCEnDufM1sLMINvW2BUytlvAE7Y322D9Sb"
	for _, s := range []string{
		"Bearer " + tok, "bearer " + tok, "BEARER " + tok, "bEaReR " + tok,
		"Bearer   " + tok, "Bearer\t" + tok, "Bearer " + tok + " ", " Bearer " + tok,
		"Bearer " + tok + "==", "Bearer " + tok + "=x", "Bearer ===", "Bearer =",
		"Bearer", "Bearer ", "Bearer  ", "Bearer: " + tok, "Bearer," + tok,
		"Basic dXNlcjpwYXNz", "Token " + tok, tok, "", " ",
		"Bearer a b", "Bearer a,b", "Bearer a\x00", "Bearer \u00e9", "Bearer a.b-c_d~e+f/g",
		"Bearer " + tok + "\r\nX-Injected: 1", "Beare\u0280 " + tok, "Bearer\u00a0" + tok,
	} {
		f.Add(s, uint8(1))
	}
	f.Add("Bearer "+tok, uint8(0))
	f.Add("Bearer "+tok, uint8(2))
	f.Fuzz(func(t *testing.T, value string, copies uint8) {
		n := int(copies % 3)
		h := http.Header{}
		for range n {
			h.Add("Authorization", value)
		}
		got, err := bearerToken(h)
		wantTok, wantOK := refBearer(value)
		switch {
		case n == 0:
			if !errors.Is(err, ErrMissingToken) {
				t.Fatalf("no header: %q, %v; want ErrMissingToken", got, err)
			}
		case n > 1 || !wantOK:
			if err == nil {
				t.Fatalf("%d header(s) %q accepted as token %q; the grammar refuses", n, value, got)
			}
			if !errors.Is(err, ErrMalformedRequest) {
				t.Fatalf("%d header(s) %q: %v; want ErrMalformedRequest", n, value, err)
			}
			if strings.Contains(err.Error(), value) && !inFixedErrors(value) {
				t.Fatalf("the error repeats the header: %v", err)
			}
		default:
			if err != nil {
				t.Fatalf("header %q refused (%v); the grammar accepts token %q", value, err, wantTok)
			}
			if got != wantTok {
				t.Fatalf("header %q: token %q, want %q", value, got, wantTok)
			}
		}
		if err != nil && got != "" {
			t.Fatalf("header %q refused (%v) but returned token %q", value, err, got)
		}
	})
}

// inFixedErrors reports whether s occurs in the errors of headers unlike
// it (one not Bearer, one with a bad token, two headers): text there is
// not taken from the header.
func inFixedErrors(s string) bool {
	for _, vs := range [][]string{{"!"}, {"Bearer !"}, {"!", "!"}} {
		if _, err := bearerToken(http.Header{"Authorization": vs}); err != nil && strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// refBearer parses value by the grammar above; ok is false when it does
// not match.
func refBearer(value string) (token string, ok bool) {
	if len(value) < len("Bearer") {
		return "", false
	}
	for i, want := range []byte("bearer") {
		b := value[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != want {
			return "", false
		}
	}
	rest := value[len("Bearer"):]
	i := 0
	for i < len(rest) && rest[i] == ' ' {
		i++
	}
	if i == 0 {
		return "", false
	}
	token = rest[i:]
	j := 0
	for j < len(token) && strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/", token[j]) >= 0 {
		j++
	}
	if j == 0 {
		return "", false
	}
	for k := j; k < len(token); k++ {
		if token[k] != '=' {
			return "", false
		}
	}
	return token, true
}
