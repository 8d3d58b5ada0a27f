package middleware

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/labstack/echo/v4"
)

// ClientResolver finds the name of the client a request is for. An error,
// or a name that is not a valid client name, is answered as an unknown
// client (404).
type ClientResolver func(c echo.Context) (string, error)

// errNoClient is returned by resolvers that find nothing.
var errNoClient = errors.New("middleware: request names no client")

// FromParam resolves the client from a route parameter (c.Param, never the
// raw path), "client" in the default configuration.
func FromParam(name string) ClientResolver {
	return func(c echo.Context) (string, error) {
		v := c.Param(name)
		if v == "" {
			return "", fmt.Errorf("%w: route parameter %q is empty", errNoClient, name)
		}
		return v, nil
	}
}

// FromHost resolves the client from the first label of the Host header
// under domain: with domain "api.example.com", "support-bot.api.example.com"
// names the client "support-bot". A host outside domain, or with more than
// one label before it, names no client.
func FromHost(domain string) ClientResolver {
	suffix := "." + strings.ToLower(strings.Trim(domain, "."))
	return func(c echo.Context) (string, error) {
		host := c.Request().Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		label, ok := strings.CutSuffix(host, suffix)
		if !ok || label == "" || strings.Contains(label, ".") {
			return "", fmt.Errorf("%w: host is not a label under %s", errNoClient, suffix[1:])
		}
		return label, nil
	}
}

// FromHeader resolves the client from a request header, which must appear
// exactly once.
func FromHeader(name string) ClientResolver {
	canonical := strings.TrimSpace(name)
	return func(c echo.Context) (string, error) {
		vs := c.Request().Header.Values(canonical)
		if len(vs) != 1 || vs[0] == "" {
			return "", fmt.Errorf("%w: header %s must appear once", errNoClient, canonical)
		}
		return strings.TrimSpace(vs[0]), nil
	}
}
