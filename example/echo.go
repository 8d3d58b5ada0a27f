package main

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	echomw "github.com/labstack/echo/v4/middleware"

	"github.com/llmauth/llmauth/middleware"
)

// newEcho is an Echo app with what every listener of serve shares: logs
// to the process's logger (one line per request with accessLog, else only
// handler failures; refusals are the middleware's to log), recovery from
// panics and errors in the OpenAI-style format.
func newEcho(logger *slog.Logger, ipExtractor echo.IPExtractor, accessLog bool) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	// Echo's own logger writes to stdout by default; stdout is for results.
	e.Logger.SetOutput(slog.NewLogLogger(logger.Handler(), slog.LevelWarn).Writer())
	e.IPExtractor = ipExtractor
	names := &routeNames{}
	e.HTTPErrorHandler = apiErrorHandler(logger, names, !accessLog)

	if accessLog {
		e.Use(requestLogger(logger, names))
	}
	e.Use(echomw.RecoverWithConfig(echomw.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			logger.Error("panic in handler", "route", c.Path(), "err", err, "stack", string(stack))
			return err
		},
	}))
	return e
}

// apiErrorHandler answers every error that reaches Echo (no route, a method
// the route does not serve, a body over the limit, a handler's failure) in
// the OpenAI-style format of the middleware's refusals, so that a caller
// parses one error shape whatever went wrong. The message never repeats
// the request's path or method: a caller can put anything there, a token
// included.
//
// With logFailures, a server error (5xx) is logged: the access log, when
// on, has the line already.
func apiErrorHandler(logger *slog.Logger, names *routeNames, logFailures bool) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		status := answerError(err, c)
		if logFailures && status >= 500 {
			logger.LogAttrs(c.Request().Context(), slog.LevelError, "request failed",
				slog.String("method", middleware.LoggedMethod(c.Request().Method)),
				slog.String("route", names.of(c)),
				slog.Int("status", status),
				slog.String("err", err.Error()),
			)
		}
	}
}

// answerError answers err, unless an answer was sent already, and
// returns its status.
func answerError(err error, c echo.Context) int {
	status := http.StatusInternalServerError
	var he *echo.HTTPError
	if errors.As(err, &he) {
		status = he.Code
		if inner, ok := he.Internal.(*echo.HTTPError); ok {
			status = inner.Code
		}
	}
	if c.Response().Committed {
		return c.Response().Status
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return status
	}
	_ = c.JSON(status, apiError{Error: errorDetail(status, c.Response().Header().Get(echo.HeaderAllow))})
	return status
}

// errorDetail describes an error status; allow is the Allow header of a
// 405, set by Echo's router.
func errorDetail(status int, allow string) apiErrorDetail {
	detail := func(message, typ, code string) apiErrorDetail {
		return apiErrorDetail{Message: message, Type: typ, Code: &code}
	}
	switch {
	case status == http.StatusNotFound:
		return detail("no route matches this path", "not_found_error", "unknown_route")
	case status == http.StatusMethodNotAllowed:
		msg := "this route does not serve this method"
		if allow != "" {
			msg += "; allowed: " + allow
		}
		return detail(msg, "invalid_request_error", "method_not_allowed")
	case status == http.StatusRequestEntityTooLarge:
		return detail("the request body is too large", "invalid_request_error", "request_too_large")
	case status >= 400 && status < 500:
		text := strings.ToLower(http.StatusText(status))
		return detail(text, "invalid_request_error", strings.ReplaceAll(text, " ", "_"))
	}
	return detail("internal error", "server_error", "internal_error")
}
