// Package target holds the servers a load run of the example server is
// compared against: its chat route with no authentication at all (Bare),
// and behind the naive design this module replaces (Naive: Echo's KeyAuth
// and one SQL query on every request). Both serve the example's handler
// shape for POST /v1/clients/:client/chat: read the JSON body, echo its
// "message", say which client answered and who called.
//
//	e := target.Bare()
//	e.Start("127.0.0.1:8081")
package target

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"
	echomw "github.com/labstack/echo/v4/middleware"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/middleware"
)

// ChatRoute is the route every target serves, as the example does.
const ChatRoute = "/v1/clients/:client/chat"

// chatResponse is the example's reply to POST /v1/clients/:client/chat.
type chatResponse struct {
	Client    string  `json:"client"`
	Anonymous bool    `json:"anonymous"`
	KeyID     *int64  `json:"key_id"`
	KeyName   *string `json:"key_name"`
	Reply     *string `json:"reply,omitempty"`
}

// Chat is the example's chat handler: it reads the body (a JSON object,
// optional), echoes its "message", and names the client and the caller. A
// request no middleware decided on is answered as anonymous, for the
// client its path names.
func Chat(c echo.Context) error {
	p, ok := middleware.PrincipalFrom(c)
	if !ok {
		p = middleware.Principal{Client: c.Param("client"), Anonymous: true}
	}
	var req struct {
		Message *string `json:"message"`
	}
	raw, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &req); err != nil {
			req.Message = nil
		}
	}
	resp := chatResponse{Client: p.Client, Anonymous: p.Anonymous, Reply: req.Message}
	if !p.Anonymous {
		id, name := p.KeyID, p.KeyName
		resp.KeyID, resp.KeyName = &id, &name
	}
	return c.JSON(http.StatusOK, resp)
}

// newEcho is a quiet Echo app.
func newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	return e
}

// Bare is the chat route with no middleware: the ceiling any
// authentication is measured against.
func Bare() *echo.Echo {
	e := newEcho()
	e.POST(ChatRoute, Chat)
	return e
}

// NaiveApp is the chat route behind [Naive].
func NaiveApp(db *sqlx.DB) (*echo.Echo, error) {
	mw, err := Naive(db)
	if err != nil {
		return nil, err
	}
	e := newEcho()
	e.POST(ChatRoute, Chat, mw)
	return e, nil
}

// The naive design's two queries; each request runs exactly one of them.
const (
	// naiveKeyQuery finds an active, unexpired key of the client by the
	// token's public lookup id.
	naiveKeyQuery = `
SELECT k.id, k.name, k.secret_digest, c.id AS client_id
FROM api_keys k
JOIN llm_client_api_keys ck ON ck.api_key_id = k.id
JOIN llm_clients c ON c.id = ck.llm_client_id
WHERE k.lookup_id = $1 AND c.name = $2 AND k.is_active AND (k.expires_at IS NULL OR k.expires_at > now())`
	// naiveClientQuery is the seed model's has_active_api_key, with the
	// lock, for a request without a key.
	naiveClientQuery = `
SELECT c.id, c.locked OR EXISTS (SELECT 1 FROM llm_client_api_keys ck JOIN api_keys k ON k.id = ck.api_key_id
                                 WHERE ck.llm_client_id = c.id AND k.is_active) AS requires_key
FROM llm_clients c WHERE c.name = $1`
)

// Naive is the design this module replaces, over the module's schema on
// PostgreSQL: Echo's KeyAuth (Authorization: Bearer) whose validator
// runs one sqlx query per request for the token's key (by its lookup id,
// then a SHA-256 comparison), and, for a request without a key, one
// query for whether the client requires one (open clients pass). No
// cache: every request is exactly one query, sent as sqlx sends it (not
// prepared), like the store's own. It sets the same principal
// as the real middleware, so handlers read it with
// middleware.PrincipalFrom.
func Naive(db *sqlx.DB) (echo.MiddlewareFunc, error) {
	if db == nil || db.DriverName() != "postgres" {
		return nil, errors.New("target: the naive design runs on PostgreSQL")
	}
	return echomw.KeyAuthWithConfig(echomw.KeyAuthConfig{
		Validator: func(raw string, c echo.Context) (bool, error) {
			token, err := keystore.ParseToken(raw)
			if err != nil {
				return false, nil
			}
			var row struct {
				ID       int64  `db:"id"`
				Name     string `db:"name"`
				Digest   string `db:"secret_digest"`
				ClientID int64  `db:"client_id"`
			}
			client := c.Param("client")
			err = db.GetContext(c.Request().Context(), &row, naiveKeyQuery, token.LookupID(), client)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				return false, nil
			case err != nil:
				return false, echo.NewHTTPError(http.StatusServiceUnavailable).SetInternal(err)
			}
			var stored keystore.Digest
			if n, err := hex.Decode(stored[:], []byte(row.Digest)); err != nil || n != sha256.Size || !token.Digest().Equal(stored) {
				return false, nil
			}
			setPrincipal(c, middleware.Principal{Client: client, ClientID: row.ClientID, KeyID: row.ID, KeyName: row.Name})
			return true, nil
		},
		ErrorHandler: func(err error, c echo.Context) error {
			var he *echo.HTTPError
			if errors.As(err, &he) {
				return he
			}
			var missing *echomw.ErrKeyAuthMissing
			if !errors.As(err, &missing) {
				return echo.NewHTTPError(http.StatusUnauthorized, "invalid API key")
			}
			client := c.Param("client")
			var state struct {
				ID          int64 `db:"id"`
				RequiresKey bool  `db:"requires_key"`
			}
			err = db.GetContext(c.Request().Context(), &state, naiveClientQuery, client)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				return echo.NewHTTPError(http.StatusNotFound, "unknown client")
			case err != nil:
				return echo.NewHTTPError(http.StatusServiceUnavailable).SetInternal(err)
			case state.RequiresKey:
				return echo.NewHTTPError(http.StatusUnauthorized, "this client requires an API key")
			}
			setPrincipal(c, middleware.Principal{Client: client, ClientID: state.ID, Anonymous: true})
			return nil // pass, anonymously
		},
		ContinueOnIgnoredError: true,
	}), nil
}

func setPrincipal(c echo.Context, p middleware.Principal) {
	req := c.Request()
	c.SetRequest(req.WithContext(middleware.NewContext(req.Context(), p)))
}
