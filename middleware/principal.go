package middleware

import (
	"context"

	"github.com/labstack/echo/v4"
)

// Principal is who called: an anonymous caller of an open client, or the
// holder of one of the client's keys.
type Principal struct {
	// Client is the name of the client the request was for.
	Client string `json:"client"`
	// ClientID is that client's id.
	ClientID int64 `json:"client_id"`
	// Anonymous is true when the client requires no key.
	Anonymous bool `json:"anonymous"`
	// KeyID and KeyName identify the key that authenticated; zero when
	// anonymous.
	KeyID   int64  `json:"key_id,omitempty"`
	KeyName string `json:"key_name,omitempty"`
}

// principalKey is the context key; its type is unexported so no other
// package can collide with it or forge a principal.
type principalKey struct{}

// NewContext returns a copy of ctx that carries p. The middleware calls it;
// tests of handlers may too.
func NewContext(ctx context.Context, p Principal) context.Context {
	// What context.WithValue does, in one allocation instead of two (the
	// principal is not boxed).
	return &principalContext{Context: ctx, p: p}
}

type principalContext struct {
	context.Context
	p Principal
}

func (c *principalContext) Value(key any) any {
	if key == (principalKey{}) {
		return &c.p
	}
	return c.Context.Value(key)
}

// PrincipalFromContext returns the principal the middleware stored in ctx.
func PrincipalFromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	if !ok {
		return Principal{}, false
	}
	return *p, true
}

// PrincipalFrom returns the principal of an Echo request that passed the
// middleware. ok is false when the middleware did not run (or skipped).
func PrincipalFrom(c echo.Context) (Principal, bool) {
	return PrincipalFromContext(c.Request().Context())
}
