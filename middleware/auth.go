package middleware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	echomw "github.com/labstack/echo/v4/middleware"
	"golang.org/x/sync/semaphore"

	"github.com/llmauth/llmauth/keystore"
)

// Recorder counts decisions; metrics.Metrics implements it. client is a
// real client's name or UnknownClientLabel, never a name a caller made up.
type Recorder interface {
	Decision(client, outcome string)
}

// UsageRecorder is told of every authenticated request, so that a key's
// last use can be recorded; keystore.UsageAudit implements it. It must not
// block.
type UsageRecorder interface {
	RecordUse(keyID int64, at time.Time)
}

// Config configures the middleware. Only Store is required.
type Config struct {
	// Skipper, when it returns true, lets a request through without any
	// decision (no principal, nothing counted).
	// Default: never skip.
	Skipper echomw.Skipper

	// Store answers "what is this client's state?" and "is this token a
	// valid key of this client?". In production a keystore/cache Cache
	// over a keystore/sqlstore Store. Required.
	Store keystore.Store

	// ClientResolver finds the target client of a request.
	// Default: FromParam("client").
	ClientResolver ClientResolver

	// Realm is the realm of WWW-Authenticate challenges. It may not contain
	// quotes, backslashes or control characters.
	// Default: "llmauth".
	Realm string

	// DecisionTimeout bounds the store calls of one decision. When it
	// passes, the request is answered 503, never let through.
	// Default: 3s.
	DecisionTimeout time.Duration

	// RetryAfter is the Retry-After of a 503, rounded up to whole seconds.
	// Default: 5s.
	RetryAfter time.Duration

	// Metrics, when set, counts every decision per client and outcome.
	// Default: nothing counted.
	Metrics Recorder

	// Usage, when set, is told of every authenticated request.
	// Default: none.
	Usage UsageRecorder

	// Logger receives one line per refusal (client, outcome, status,
	// method, route pattern, remote IP), at info, or warn with the cause
	// for a store failure (503). A flood does not flood the log: of the
	// refusals of one kind (client, outcome) from one source, at most one
	// line a second is at that level, with the count of those sent to
	// debug since ("suppressed"); of the 429s of a throttled source, only
	// the first since it was last admitted; a caller that went away before
	// the answer (outcome canceled) is at debug. It never sees a token or
	// the Authorization header.
	// Default: discard.
	Logger *slog.Logger

	// ErrorHandler answers a refusal; err is an *Error. What it returns is
	// returned from the middleware; the next handler is never called.
	// Default: the RFC 6750 response described in the README (JSON body,
	// WWW-Authenticate, Cache-Control: no-store, Retry-After on 503).
	ErrorHandler func(c echo.Context, err error) error

	// SuccessHandler, when set, runs after a request passed and before the
	// next handler; the principal is already in the request.
	// Default: none.
	SuccessHandler func(c echo.Context)

	// Throttle configures the throttling of failed attempts per source
	// and client (429, outcome "throttled"). Default: on, 20 failed
	// attempts in a row, then 1 per second; see [ThrottleConfig].
	Throttle ThrottleConfig

	// MaxConcurrentLookups bounds how many requests make store calls
	// (lookups that Store, as a [keystore.Peeker], could not answer from
	// memory) at once. Others wait their turn, first come first served,
	// within DecisionTimeout, then get 503: a flood of unknown tokens or
	// client names cannot take every database connection, and legitimate
	// cold lookups queue behind at most this many. A caller that leaves
	// frees its turn at once while the store call it started may still
	// run: the keystore/cache Cache bounds the calls themselves
	// (cache.Options.MaxConcurrentFetches, which llmauth.New sets to this
	// value). Default: 16.
	MaxConcurrentLookups int

	// Now is the clock for usage records and throttling budgets.
	// Default: time.Now.
	Now func() time.Time
}

// WithConfig returns the middleware or panics on an invalid Config.
func WithConfig(config Config) echo.MiddlewareFunc {
	mw, err := config.ToMiddleware()
	if err != nil {
		panic(err)
	}
	return mw
}

// ToMiddleware validates the config, fills defaults and returns the
// middleware.
func (config Config) ToMiddleware() (echo.MiddlewareFunc, error) {
	if config.Store == nil {
		return nil, errors.New("middleware: Config.Store is required")
	}
	if config.Skipper == nil {
		config.Skipper = echomw.DefaultSkipper
	}
	if config.ClientResolver == nil {
		config.ClientResolver = FromParam("client")
	}
	if config.Realm == "" {
		config.Realm = "llmauth"
	}
	if strings.ContainsFunc(config.Realm, func(r rune) bool { return r == '"' || r == '\\' || r < 0x20 || r == 0x7f }) {
		return nil, fmt.Errorf("middleware: Config.Realm %q may not contain quotes, backslashes or control characters", config.Realm)
	}
	if config.DecisionTimeout < 0 || config.RetryAfter < 0 {
		return nil, errors.New("middleware: negative Config.DecisionTimeout or Config.RetryAfter")
	}
	if config.DecisionTimeout == 0 {
		config.DecisionTimeout = 3 * time.Second
	}
	if config.RetryAfter == 0 {
		config.RetryAfter = 5 * time.Second
	}
	if config.Logger == nil {
		config.Logger = slog.New(slog.DiscardHandler)
	}
	if config.Now == nil {
		config.Now = time.Now
	}
	if config.MaxConcurrentLookups < 0 {
		return nil, errors.New("middleware: negative Config.MaxConcurrentLookups")
	}
	if config.MaxConcurrentLookups == 0 {
		config.MaxConcurrentLookups = 16
	}
	throttleConfig, err := config.Throttle.withDefaults()
	if err != nil {
		return nil, err
	}
	config.Throttle = throttleConfig
	a := &authenticator{
		Config:     config,
		challenge:  `Bearer realm="` + config.Realm + `"`,
		retryAfter: strconv.FormatInt(int64((config.RetryAfter+time.Second-1)/time.Second), 10),
		lookups:    semaphore.NewWeighted(int64(config.MaxConcurrentLookups)),
	}
	a.peeker, _ = config.Store.(keystore.Peeker)
	a.logs = &logLimiter{now: config.Now, lru: newLRU[string, *logState](config.Throttle.MaxSources)}
	if !config.Throttle.Disabled {
		a.throttle = newThrottle(config.Throttle, config.Now)
	}
	if a.ErrorHandler == nil {
		a.ErrorHandler = a.respond
	}
	return a.middleware, nil
}

type authenticator struct {
	Config
	challenge  string
	retryAfter string
	peeker     keystore.Peeker     // Store, when it can answer from memory
	lookups    *semaphore.Weighted // store call slots
	throttle   *throttle           // nil when disabled
	logs       *logLimiter
}

func (a *authenticator) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if a.Skipper(c) {
			return next(c)
		}
		p, refusal := a.decide(c)
		if refusal != nil && refusal.Outcome == OutcomeUnavailable && c.Request().Context().Err() != nil {
			refusal = &Error{Status: StatusClientClosedRequest, Outcome: OutcomeCanceled, Client: refusal.Client,
				Err: because{ErrCanceled, refusal.Err}}
		}
		if refusal != nil {
			a.record(refusal.Client, refusal.Outcome)
			a.logRefusal(c, refusal)
			c.Set(refusalKey, refusal)
			return a.refuse(c, refusal)
		}
		outcome := OutcomeAuthenticated
		if p.Anonymous {
			outcome = OutcomeAnonymous
		} else if a.Usage != nil {
			a.Usage.RecordUse(p.KeyID, a.Now())
		}
		a.record(p.Client, outcome)
		req := c.Request()
		c.SetRequest(req.WithContext(NewContext(req.Context(), p)))
		if a.SuccessHandler != nil {
			a.SuccessHandler(c)
		}
		return next(c)
	}
}

// decide makes the decision for one request. The order matters: an unknown
// or open client is answered before the Authorization header is looked at.
func (a *authenticator) decide(c echo.Context) (Principal, *Error) {
	var d deadline
	defer d.cancel()

	name, err := a.ClientResolver(c)
	if err != nil || !keystore.ValidClientName(name) {
		if err == nil {
			err = errors.New("not a client name")
		}
		return Principal{}, &Error{Status: http.StatusNotFound, Outcome: OutcomeUnknownClient, Client: UnknownClientLabel,
			Err: because{ErrUnknownClient, err}}
	}
	state, err := a.clientState(c, &d, name)
	switch {
	case errors.Is(err, keystore.ErrUnknownClient):
		return Principal{}, &Error{Status: http.StatusNotFound, Outcome: OutcomeUnknownClient, Client: UnknownClientLabel,
			Err: because{ErrUnknownClient, err}}
	case err != nil:
		// Whatever went wrong, the state is unknown: refuse, never pass.
		return Principal{}, a.unavailable(UnknownClientLabel, err)
	}
	if !state.RequiresKey {
		return Principal{Client: state.Name, ClientID: state.ID, Anonymous: true}, nil
	}

	raw, err := bearerToken(c.Request().Header)
	switch {
	case errors.Is(err, ErrMissingToken):
		return Principal{}, &Error{Status: http.StatusUnauthorized, Outcome: OutcomeMissingToken, Client: state.Name, Err: err}
	case err != nil:
		return Principal{}, a.failed(c, &Error{Status: http.StatusBadRequest, Outcome: OutcomeMalformed, Client: state.Name, Err: err})
	}
	token, err := keystore.ParseToken(raw)
	if err != nil {
		return Principal{}, a.failed(c, a.invalid(state.Name, err))
	}
	key, refusal := a.verify(c, &d, state.Name, token)
	if refusal != nil {
		return Principal{}, refusal
	}
	return Principal{Client: state.Name, ClientID: state.ID, KeyID: key.KeyID, KeyName: key.KeyName}, nil
}

// deadline is the DecisionTimeout of one decision, started by the first
// store call it needs: a decision answered from memory never pays for a
// timer.
type deadline struct {
	ctx  context.Context
	stop context.CancelFunc
}

func (d *deadline) context(a *authenticator, c echo.Context) context.Context {
	if d.ctx == nil {
		d.ctx, d.stop = context.WithTimeout(c.Request().Context(), a.DecisionTimeout)
	}
	return d.ctx
}

func (d *deadline) cancel() {
	if d.stop != nil {
		d.stop()
	}
}

// clientState answers from memory when the Store can, else from a store
// call in one of the bounded slots.
func (a *authenticator) clientState(c echo.Context, d *deadline, name string) (keystore.ClientState, error) {
	if a.peeker != nil {
		state, err := a.peeker.PeekClientState(name)
		if !errors.Is(err, keystore.ErrNotCached) {
			return state, err
		}
	}
	ctx := d.context(a, c)
	if err := a.lookups.Acquire(ctx, 1); err != nil {
		return keystore.ClientState{}, fmt.Errorf("%w: waiting for a store call slot: %w", keystore.ErrUnavailable, err)
	}
	defer a.lookups.Release(1)
	return a.Store.ClientState(ctx, name)
}

// verify checks a well-formed token: from memory when the Store can,
// else, within the source's throttling budget, from a store call in one
// of the bounded slots. Only a failure spends the budget.
func (a *authenticator) verify(c echo.Context, d *deadline, client string, token keystore.Token) (keystore.VerifiedKey, *Error) {
	if a.peeker != nil {
		key, err := a.peeker.PeekVerify(client, token)
		switch {
		case err == nil:
			return key, nil
		case errors.Is(err, keystore.ErrInvalidToken):
			return keystore.VerifiedKey{}, a.failed(c, a.invalid(client, err))
		}
	}
	done, err := a.throttle.attempt(c, client, token.Digest())
	if err != nil {
		return keystore.VerifiedKey{}, a.throttled(client, err)
	}
	ctx := d.context(a, c)
	if err := a.lookups.Acquire(ctx, 1); err != nil {
		gone := c.Request().Context().Err() != nil
		done(false, gone) // a caller that hangs up spends its attempt
		return keystore.VerifiedKey{}, a.unavailable(client, fmt.Errorf("%w: waiting for a store call slot: %w", keystore.ErrUnavailable, err))
	}
	key, err := a.Store.Verify(ctx, client, token)
	a.lookups.Release(1)
	invalid := errors.Is(err, keystore.ErrInvalidToken)
	done(err == nil, invalid || err != nil && c.Request().Context().Err() != nil)
	switch {
	case invalid:
		return keystore.VerifiedKey{}, a.invalid(client, err)
	case err != nil:
		return keystore.VerifiedKey{}, a.unavailable(client, err)
	}
	return key, nil
}

// failed spends an attempt of the source's budget on credentials found bad
// without a store call: it returns refusal (401 or 400), or a 429 once the
// budget against refusal.Client is spent.
func (a *authenticator) failed(c echo.Context, refusal *Error) *Error {
	if terr := a.throttle.fail(c, refusal.Client); terr != nil {
		return a.throttled(refusal.Client, terr)
	}
	return refusal
}

func (a *authenticator) throttled(client string, err error) *Error {
	return &Error{Status: http.StatusTooManyRequests, Outcome: OutcomeThrottled, Client: client, Err: err}
}

func (a *authenticator) invalid(client string, err error) *Error {
	return &Error{Status: http.StatusUnauthorized, Outcome: OutcomeInvalidToken, Client: client, Err: because{ErrInvalidToken, err}}
}

func (a *authenticator) unavailable(client string, err error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Outcome: OutcomeUnavailable, Client: client, Err: because{ErrUnavailable, err}}
}

func (a *authenticator) record(client string, o Outcome) {
	if a.Metrics != nil {
		a.Metrics.Decision(client, string(o))
	}
}

func (a *authenticator) logRefusal(c echo.Context, e *Error) {
	ctx := c.Request().Context()
	level := slog.LevelInfo
	var te *throttledError
	switch {
	case e.Outcome == OutcomeUnavailable:
		level = slog.LevelWarn
	case e.Outcome == OutcomeCanceled, e.Outcome == OutcomeThrottled && errors.As(e.Err, &te) && !te.first:
		// A flood of guesses is one line, when the source is first
		// throttled; the rest are counted, and logged at debug. A caller
		// that hung up got no answer to log.
		level = slog.LevelDebug
	}
	if !a.Logger.Enabled(ctx, level) {
		return // the line would be dropped: build nothing
	}
	var suppressed int
	if level > slog.LevelDebug {
		var ok bool
		if suppressed, ok = a.logs.allow(e.Client + "\x00" + string(e.Outcome) + "\x00" + a.Throttle.Source(c)); !ok {
			level = slog.LevelDebug
			if !a.Logger.Enabled(ctx, level) {
				return
			}
		}
	}
	attrs := []slog.Attr{
		slog.String("client", e.Client),
		slog.String("outcome", string(e.Outcome)),
		slog.Int("status", e.Status),
		slog.String("method", LoggedMethod(c.Request().Method)),
		// The route pattern, not the raw path: a caller can put anything
		// (a token, say) in a path segment.
		slog.String("route", c.Path()),
		slog.String("remote_ip", c.RealIP()),
	}
	if e.Outcome == OutcomeUnavailable {
		// Store errors carry no token: the keystore never puts one in an
		// error, and Token's String method redacts the secret.
		attrs = append(attrs, slog.String("err", e.Err.Error()))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	a.Logger.LogAttrs(ctx, level, "llmauth: request refused", attrs...)
}

// logLimiter keeps a flood of refusals of one kind from one source out of
// the log: at most one line per second per (client, outcome, source) at
// its level, the rest at debug, counted in the next line's "suppressed".
type logLimiter struct {
	now func() time.Time
	mu  sync.Mutex
	lru *lru[string, *logState]
}

type logState struct {
	last       time.Time
	suppressed int
}

// allow reports whether a line of kind key may be logged at its level now,
// and how many were sent to debug since the last one.
func (l *logLimiter) allow(key string) (suppressed int, ok bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.lru.getOrAdd(key, func() *logState { return &logState{} })
	if !st.last.IsZero() && now.Sub(st.last) < time.Second {
		st.suppressed++
		return 0, false
	}
	suppressed, st.suppressed, st.last = st.suppressed, 0, now
	return suppressed, true
}

// LoggedMethod is what a log may show of a request method: the method if
// it is a standard one (RFC 9110 section 9, and PATCH), else "_other",
// since any other method is a value the caller chose (a token, say).
func LoggedMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_other"
}

// errorBody is an OpenAI-style error object, so that OpenAI SDKs show the
// message; "code" repeats the RFC 6750 error code where there is one.
type errorBody struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

// refuse answers a refusal through the ErrorHandler. A request body is
// never read for a refusal: the connection is closed after the answer
// instead, so that a slow or endless body cannot delay the answer (net/http
// would otherwise read up to 256 KiB of it first) or hold the connection.
func (a *authenticator) refuse(c echo.Context, e *Error) error {
	req := c.Request()
	unreadBody := req.ProtoMajor == 1 && req.ContentLength != 0 && req.Body != nil && req.Body != http.NoBody
	if unreadBody {
		c.Response().Header().Set(echo.HeaderConnection, "close")
	}
	err := a.ErrorHandler(c, e)
	if unreadBody {
		// What net/http reads of the body after the handler then fails
		// at once, instead of waiting up to the server's ReadTimeout.
		_ = http.NewResponseController(c.Response()).SetReadDeadline(time.Now())
	}
	return err
}

// respond is the default ErrorHandler.
func (a *authenticator) respond(c echo.Context, err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	h := c.Response().Header()
	switch e.Outcome {
	case OutcomeMissingToken:
		// RFC 6750 §3.1: no error code when no credentials were sent.
		h.Set(echo.HeaderWWWAuthenticate, a.challenge)
	case OutcomeInvalidToken:
		h.Set(echo.HeaderWWWAuthenticate, a.challenge+`, error="invalid_token"`)
	case OutcomeMalformed:
		h.Set(echo.HeaderWWWAuthenticate, a.challenge+`, error="invalid_request"`)
	case OutcomeUnavailable:
		h.Set(echo.HeaderRetryAfter, a.retryAfter)
	case OutcomeThrottled:
		seconds, _ := RetryAfter(e.Err)
		h.Set(echo.HeaderRetryAfter, strconv.FormatInt(max(seconds, 1), 10))
	}
	h.Set(echo.HeaderCacheControl, "no-store")
	return c.Blob(e.Status, echo.MIMEApplicationJSON, errorBodies[e.Outcome])
}

// errorBodies are the response bodies of refusals, by outcome, encoded
// once: OpenAI-style error objects (see errorBody). The invalid-token body
// is one for every cause: unknown, revoked, expired, malformed or another
// client's.
var errorBodies = func() map[Outcome][]byte {
	bodies := map[Outcome][]byte{}
	for o, text := range map[Outcome][3]string{
		OutcomeMissingToken:  {"this client requires an API key: send Authorization: Bearer TOKEN", "authentication_error", "missing_token"},
		OutcomeInvalidToken:  {"invalid API key", "authentication_error", "invalid_token"},
		OutcomeMalformed:     {"the Authorization header must be one Bearer credential", "invalid_request_error", "invalid_request"},
		OutcomeUnknownClient: {"unknown client", "not_found_error", "unknown_client"},
		OutcomeUnavailable:   {"authentication is temporarily unavailable", "service_unavailable", "unavailable"},
		OutcomeThrottled:     {"too many failed attempts: retry later", "rate_limit_error", "throttled"},
		OutcomeCanceled:      {"the request was canceled", "canceled", "canceled"},
	} {
		var body errorBody
		body.Error.Message, body.Error.Type, body.Error.Code = text[0], text[1], text[2]
		b, err := json.Marshal(body)
		if err != nil {
			panic(err)
		}
		bodies[o] = append(b, '\n') // as c.JSON writes it
	}
	return bodies
}()
