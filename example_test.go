package llmauth_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llmauth/llmauth"
	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/middleware"
)

// Put per-client API keys in front of an Echo route, from a database URL,
// and shut down in order.
func ExampleNew() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "llmauth-example")
	defer os.RemoveAll(dir)
	databaseURL := "sqlite:" + filepath.Join(dir, "llmauth.db") // or postgres://…

	reg := prometheus.NewRegistry()
	stack, err := llmauth.New(ctx, databaseURL, llmauth.Options{Registerer: reg})
	if err != nil {
		log.Fatal(err)
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.POST("/v1/clients/:client/chat", func(c echo.Context) error {
		p, _ := middleware.PrincipalFrom(c) // who called
		return c.JSON(http.StatusOK, p)
	}, stack.Middleware) // per route, not per group
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	e.Listener = ln
	go func() {
		if err := e.Start(""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()

	// Keys are managed through the same stack (or the example CLI).
	if _, err := stack.Store.CreateClient(ctx, "support-bot"); err != nil {
		log.Fatal(err)
	}
	key, err := stack.Store.CreateKey(ctx, "support-bot", keystore.KeySpec{Name: "ci"})
	if err != nil {
		log.Fatal(err)
	}
	_ = stack.Sync(ctx) // the watcher sees it within a second anyway

	url := "http://" + ln.Addr().String() + "/v1/clients/support-bot/chat"
	for _, token := range []string{"", key.Token.Reveal()} {
		req, _ := http.NewRequest(http.MethodPost, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		res.Body.Close()
		fmt.Println(res.StatusCode)
	}

	// Graceful shutdown: the server first, then the stack (it writes the
	// last-used times that are still pending).
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.Shutdown(sctx); err != nil {
		log.Print(err)
	}
	if err := stack.Close(sctx); err != nil {
		log.Print(err)
	}
	// Output:
	// 401
	// 200
}
