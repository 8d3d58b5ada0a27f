package middleware

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"
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

func TestSourceOf(t *testing.T) {
	tests := []struct{ given, expect string }{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"0:0:0:0:0:ffff:c000:0201", "192.0.2.1"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
		{"2001:DB8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
		{"not an address", "not an address"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := SourceOf(tt.given); got != tt.expect {
			t.Errorf("SourceOf(%q) = %q, want %q", tt.given, got, tt.expect)
		}
	}
}

func TestThrottleConfigRefusesTinyRates(t *testing.T) {
	for _, r := range []float64{1e-12, 1e-9, 0.0009} {
		if _, err := (ThrottleConfig{Rate: rate.Limit(r)}).withDefaults(); err == nil {
			t.Errorf("Rate %v accepted", r)
		}
	}
	if _, err := (ThrottleConfig{Rate: minThrottleRate}).withDefaults(); err != nil {
		t.Errorf("Rate %v refused: %v", minThrottleRate, err)
	}
}

func TestLogLimiter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := &logLimiter{now: func() time.Time { return now }, lru: newLRU[string, *logState](10)}
	steps := []struct {
		wait             time.Duration
		key              string
		expectOK         bool
		expectSuppressed int
	}{
		{0, "a", true, 0},
		{0, "a", false, 0},
		{500 * time.Millisecond, "a", false, 0},
		{0, "b", true, 0}, // another kind or source: its own line
		{500 * time.Millisecond, "a", true, 2},
		{time.Second, "a", true, 0},
	}
	for i, s := range steps {
		now = now.Add(s.wait)
		suppressed, ok := l.allow(s.key)
		if ok != s.expectOK || suppressed != s.expectSuppressed {
			t.Fatalf("step %d: allow(%q) = %d, %v; want %d, %v", i, s.key, suppressed, ok, s.expectSuppressed, s.expectOK)
		}
	}
}
