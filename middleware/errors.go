package middleware

import (
	"errors"
	"fmt"

	"github.com/labstack/echo/v4"
)

// Outcome is how the middleware decided a request; it is the "outcome"
// label of llmauth_requests_total.
type Outcome string

// Outcomes.
const (
	// OutcomeAnonymous: the client requires no key; the caller passed.
	OutcomeAnonymous Outcome = "anonymous"
	// OutcomeAuthenticated: a valid key of the client; the caller passed.
	OutcomeAuthenticated Outcome = "authenticated"
	// OutcomeMissingToken: the client requires a key and none was sent (401).
	OutcomeMissingToken Outcome = "missing_token"
	// OutcomeInvalidToken: the token is unknown, revoked, expired,
	// malformed or another client's (401).
	OutcomeInvalidToken Outcome = "invalid_token"
	// OutcomeMalformed: the Authorization header is not one well-formed
	// Bearer credential (400).
	OutcomeMalformed Outcome = "malformed"
	// OutcomeUnknownClient: no such client (404).
	OutcomeUnknownClient Outcome = "unknown_client"
	// OutcomeUnavailable: the store could not decide (503).
	OutcomeUnavailable Outcome = "unavailable"
	// OutcomeThrottled: the source spent its budget of failed attempts
	// against the client (429); see [ThrottleConfig].
	OutcomeThrottled Outcome = "throttled"
	// OutcomeCanceled: the caller went away (its request's context ended)
	// before the store answered. No decision was made; it is answered 499
	// (nginx's "client closed request", which no one receives) and logged
	// at debug, so that callers who hang up cannot pose as an outage.
	OutcomeCanceled Outcome = "canceled"
)

// StatusClientClosedRequest is the status of OutcomeCanceled (nginx's 499):
// the caller closed the connection before the answer.
const StatusClientClosedRequest = 499

// UnknownClientLabel is the client label of decisions about no existing
// client. A client name cannot start with "_", so it never collides.
const UnknownClientLabel = "_unknown"

// Causes of a refusal, wrapped by [Error].
var (
	ErrMissingToken     = errors.New("middleware: missing bearer token")
	ErrMalformedRequest = errors.New("middleware: malformed authorization")
	ErrInvalidToken     = errors.New("middleware: invalid token")
	ErrUnknownClient    = errors.New("middleware: unknown client")
	ErrUnavailable      = errors.New("middleware: key state unavailable")
	ErrCanceled         = errors.New("middleware: the caller went away")
)

// Error is a refusal: what the middleware passes to Config.ErrorHandler.
type Error struct {
	// Status is the HTTP status the default handler answers with.
	Status int
	// Outcome is the decision, as counted in metrics.
	Outcome Outcome
	// Client is the client's name, or UnknownClientLabel.
	Client string
	// Err is the cause: one of the Err* values above, wrapping detail. It
	// never contains a token.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("middleware: %d %s for client %s: %v", e.Status, e.Outcome, e.Client, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// refusalKey is the echo.Context key under which the middleware leaves its
// refusal, for RefusalFrom.
const refusalKey = "llmauth.refusal"

// RefusalFrom returns the refusal the middleware answered a request with,
// for an access log or an outer middleware that wants the outcome and the
// client without parsing the response. ok is false when the middleware
// passed the request, skipped it, or did not run.
func RefusalFrom(c echo.Context) (e *Error, ok bool) {
	e, ok = c.Get(refusalKey).(*Error)
	return e, ok
}

// because is the cause of a refusal: one of the Err* values above, kind,
// wrapping the detail, cause. It formats its message only when asked,
// since most refusals are counted and answered, never printed.
type because struct{ kind, cause error }

func (b because) Error() string   { return b.kind.Error() + ": " + b.cause.Error() }
func (b because) Unwrap() []error { return []error{b.kind, b.cause} }
