package main

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/llmauth/llmauth/middleware"
)

// TestBadBodies: a body the caller breaks is the caller's error: 400, or
// 408 when it does not arrive in time; never 500.
func TestBadBodies(t *testing.T) {
	tests := []struct {
		name        string
		givenRoute  string
		givenHead   string // request line and headers, without the final CRLF
		givenBody   string
		givenHalt   bool // half-close after the body, as a caller that gave up
		expectCode  int
		expectError string
	}{
		{name: "malformed chunk size", givenRoute: "/chat", givenHead: "Transfer-Encoding: chunked", givenBody: "zz\r\n{}\r\n0\r\n\r\n", expectCode: 400, expectError: `"code":"bad_request"`},
		{name: "chunk without its CRLF", givenRoute: "/chat/completions", givenHead: "Transfer-Encoding: chunked", givenBody: "2\r\n{}XX0\r\n\r\n", expectCode: 400, expectError: `"code":"bad_request"`},
		{name: "body shorter than Content-Length", givenRoute: "/chat", givenHead: "Content-Length: 100", givenBody: `{"message":"hi"}`, givenHalt: true, expectCode: 400, expectError: `"code":"bad_request"`},
		{name: "body that never comes", givenRoute: "/chat/completions", givenHead: "Content-Length: 100", givenBody: `{"model":`, expectCode: 408, expectError: `"code":"request_timeout"`},
		{name: "body over the limit", givenRoute: "/chat", givenHead: "Content-Length: 2000000", givenBody: "", expectCode: 413, expectError: `"code":"request_too_large"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testRouter(t, middleware.Principal{Client: "acme", Anonymous: true}, fakePinger{}, nil)
			srv := httptest.NewUnstartedServer(e)
			// The whole request must arrive within this, as with serve's
			// own readTimeout: short here so that the 408 case is quick.
			srv.Config.ReadTimeout = 500 * time.Millisecond
			srv.Start()
			t.Cleanup(srv.Close)
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			req := "POST /v1/clients/acme" + tt.givenRoute + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + tt.givenHead + "\r\n\r\n" + tt.givenBody
			if _, err := conn.Write([]byte(req)); err != nil {
				t.Fatal(err)
			}
			if tt.givenHalt {
				_ = conn.(*net.TCPConn).CloseWrite()
			}
			_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body := make([]byte, 4096)
			n, _ := res.Body.Read(body)
			if res.StatusCode != tt.expectCode || !strings.Contains(string(body[:n]), tt.expectError) {
				t.Fatalf("status %d body %s; want %d with %s", res.StatusCode, body[:n], tt.expectCode, tt.expectError)
			}
		})
	}
}
