package loadgen_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmauth/llmauth/internal/loadgen"
)

func TestRunKeepAliveCountsByStatus(t *testing.T) {
	var conns, bad atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || string(body) != `{"message":"hi"}` ||
			r.Header.Get("Authorization") != "Bearer x" || r.Header.Get("Content-Type") != "application/json" {
			bad.Add(1)
		}
		if r.URL.Path == "/teapot" {
			w.WriteHeader(http.StatusTeapot)
		}
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	for _, tt := range []struct {
		path   string
		status int
	}{{"/ok", http.StatusOK}, {"/teapot", http.StatusTeapot}} {
		conns.Store(0)
		res, err := loadgen.Run(context.Background(), loadgen.Config{
			URL:         srv.URL + tt.path,
			Header:      http.Header{"Authorization": {"Bearer x"}},
			Body:        []byte(`{"message":"hi"}`),
			Connections: 4,
			Warmup:      50 * time.Millisecond,
			Duration:    200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests == 0 || res.ByStatus[tt.status] != res.Requests || res.Errors != 0 {
			t.Errorf("%s: %+v", tt.path, res)
		}
		if res.Total < res.Requests || res.RequestsPerSecond() <= 0 || res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 {
			t.Errorf("%s: inconsistent result %+v", tt.path, res)
		}
		if n := conns.Load(); n != 4 {
			t.Errorf("%s: %d connections, want 4 kept alive", tt.path, n)
		}
	}
	if n := bad.Load(); n != 0 {
		t.Errorf("%d requests arrived not as configured", n)
	}
}

func TestRunReconnectsAfterClose(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	res, err := loadgen.Run(context.Background(), loadgen.Config{URL: srv.URL, Connections: 2, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.ByStatus[http.StatusUnauthorized] < 2 || res.Errors != 0 {
		t.Errorf("%+v", res)
	}
}

func TestRunCountsErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	res, err := loadgen.Run(context.Background(), loadgen.Config{URL: "http://" + addr + "/", Connections: 1, Duration: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.Requests != 0 {
		t.Errorf("%+v", res)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, cfg := range []loadgen.Config{
		{URL: "http://127.0.0.1:1/"},
		{URL: "https://127.0.0.1:1/", Duration: time.Second},
		{URL: "127.0.0.1:1", Duration: time.Second},
		{URL: "http://127.0.0.1:1/", Duration: time.Second, Connections: -1},
	} {
		if _, err := loadgen.Run(context.Background(), cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}
