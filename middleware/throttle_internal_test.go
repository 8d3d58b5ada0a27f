package middleware

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

func TestThrottleMemoryIsBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	cfg, err := ThrottleConfig{Burst: 1, MaxSources: 3, Source: func(c echo.Context) string { return c.Request().RemoteAddr }}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	th := newThrottle(cfg, func() time.Time { return now })
	e := echo.New()
	from := func(source string) echo.Context {
		req := httptest.NewRequest("POST", "/", nil)
		req.RemoteAddr = source
		return e.NewContext(req, httptest.NewRecorder())
	}
	steps := []struct {
		givenSource     string
		expectThrottled bool
		expectLen       int
	}{
		{"a", false, 1},
		{"a", true, 1}, // burst 1: spent
		{"b", false, 2},
		{"c", false, 3},
		{"a", true, 3},  // a is used again: now the most recent
		{"d", false, 3}, // b, the least recently used, is forgotten
		{"b", false, 3}, // ... so it starts again with a full budget; c forgotten
		{"a", true, 3},  // a was kept
	}
	for i, s := range steps {
		err := th.fail(from(s.givenSource), "client")
		if (err != nil) != s.expectThrottled {
			t.Fatalf("step %d (%s): err %v, want throttled %v", i, s.givenSource, err, s.expectThrottled)
		}
		if got := th.len(); got != s.expectLen {
			t.Fatalf("step %d: %d budgets remembered, want %d", i, got, s.expectLen)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		given  error
		expect int64
		ok     bool
	}{
		{&throttledError{retryAfter: 0}, 1, true},
		{&throttledError{retryAfter: time.Millisecond}, 1, true},
		{&throttledError{retryAfter: time.Second}, 1, true},
		{&throttledError{retryAfter: 1001 * time.Millisecond}, 2, true},
		{&Error{Err: &throttledError{retryAfter: 10 * time.Second}}, 10, true},
		{ErrInvalidToken, 0, false},
	}
	for _, tt := range tests {
		got, ok := RetryAfter(tt.given)
		if got != tt.expect || ok != tt.ok {
			t.Errorf("RetryAfter(%v) = %d, %v; want %d, %v", tt.given, got, ok, tt.expect, tt.ok)
		}
	}
}
