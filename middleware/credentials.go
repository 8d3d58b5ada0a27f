package middleware

import (
	"fmt"
	"net/http"
	"strings"
)

// bearerToken extracts the one Bearer credential of a request (RFC 6750
// §2.1). Credentials are read from the Authorization header only: never from
// the query string, a form or a cookie, where they would leak into logs and
// caches. It returns ErrMissingToken when there is no Authorization header
// and ErrMalformedRequest when there is more than one, or one that is not
// "Bearer" 1*SP b64token. Errors never contain the header's value.
func bearerToken(h http.Header) (string, error) {
	values := h.Values(echoHeaderAuthorization)
	switch len(values) {
	case 0:
		return "", ErrMissingToken
	case 1:
	default:
		return "", fmt.Errorf("%w: %d Authorization headers", ErrMalformedRequest, len(values))
	}
	v := values[0]
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: Authorization is not a Bearer credential", ErrMalformedRequest)
	}
	token := strings.TrimLeft(rest, " ")
	if !isB64Token(token) {
		return "", fmt.Errorf("%w: bearer token is empty or has characters outside RFC 6750 b64token", ErrMalformedRequest)
	}
	return token, nil
}

const echoHeaderAuthorization = "Authorization"

// isB64Token reports whether s matches 1*( ALPHA / DIGIT / "-" / "." / "_" /
// "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		if !b64tokenChar[body[i]] {
			return false
		}
	}
	return true
}

// b64tokenChar is a lookup table of the b64token characters before the
// "=" padding (RFC 6750 section 2.1). Computed once, never written after.
var b64tokenChar = func() (t [256]bool) {
	for b := 0; b < 256; b++ {
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
			t[b] = true
		case b == '-', b == '.', b == '_', b == '~', b == '+', b == '/':
			t[b] = true
		}
	}
	return t
}()
