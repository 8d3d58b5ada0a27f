package middleware_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/labstack/echo/v4"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
	"github.com/llmauth/llmauth/keystore/sqlstore"
	"github.com/llmauth/llmauth/middleware"
)

// Protect existing routes: anonymous callers pass for clients
// without keys; clients with keys demand their own bearer token.
func ExampleWithConfig() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "llmauth-example")
	defer os.RemoveAll(dir)
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(dir, "keys.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := sqlstore.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	store, _ := sqlstore.New(ctx, db, sqlstore.Options{})
	cache, _ := cache.New(store, cache.Options{})
	defer cache.Close()

	_, _ = store.CreateClient(ctx, "open-bot")
	_, _ = store.CreateClient(ctx, "paid-bot")
	key, _ := store.CreateKey(ctx, "paid-bot", keystore.KeySpec{Name: "ci"})

	e := echo.New()
	auth := middleware.WithConfig(middleware.Config{Store: cache})
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error {
		p, _ := middleware.PrincipalFrom(c)
		return c.String(http.StatusOK, fmt.Sprintf("client=%s anonymous=%v key=%s", p.Client, p.Anonymous, p.KeyName))
	}, auth)

	call := func(client, token string) {
		req := httptest.NewRequest(http.MethodPost, "/v1/clients/"+client+"/chat", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res := httptest.NewRecorder()
		e.ServeHTTP(res, req)
		fmt.Println(res.Code, res.Header().Get("WWW-Authenticate"), res.Body.String())
	}
	call("open-bot", "")
	call("paid-bot", "")
	call("paid-bot", key.Token.Reveal())
	// Output:
	// 200  client=open-bot anonymous=true key=
	// 401 Bearer realm="llmauth" {"error":{"message":"this client requires an API key: send Authorization: Bearer TOKEN","type":"authentication_error","code":"missing_token"}}
	//
	// 200  client=paid-bot anonymous=false key=ci
}

// Resolve the client from the host name instead of a route parameter.
func ExampleFromHost() {
	cfg := middleware.Config{
		Store:          nil, // your cache.Cache
		ClientResolver: middleware.FromHost("api.example.com"),
	}
	_, err := cfg.ToMiddleware()
	fmt.Println(err)
	// Output: middleware: Config.Store is required
}
