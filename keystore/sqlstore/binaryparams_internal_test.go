package sqlstore

import (
	"net/url"
	"testing"
)

func TestWithBinaryParameters(t *testing.T) {
	tests := []struct{ given, expect string }{
		{"postgres://u@h/db", "postgres://u@h/db?binary_parameters=yes"},
		{"postgres://u@h/db?sslmode=disable", "postgres://u@h/db?sslmode=disable&binary_parameters=yes"},
		{"postgres://u@h/db?", "postgres://u@h/db?&binary_parameters=yes"},
		{"postgres://u@h/db?sslmode=disable&", "postgres://u@h/db?sslmode=disable&binary_parameters=yes"},
		{"postgres://u@h/db?binary_parameters=no", "postgres://u@h/db?binary_parameters=no"},
		{"postgresql://u:p%23w@h:5432/db?binary_parameters=yes&sslmode=require", "postgresql://u:p%23w@h:5432/db?binary_parameters=yes&sslmode=require"},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.given)
		if err != nil {
			t.Fatal(err)
		}
		if got := withBinaryParameters(tt.given, u); got != tt.expect {
			t.Errorf("withBinaryParameters(%q) = %q, want %q", tt.given, got, tt.expect)
		}
		if driver, dsn, err := parseDatabaseURL(tt.given); err != nil || driver != "postgres" || dsn != tt.expect {
			t.Errorf("parseDatabaseURL(%q) = %q, %q, %v", tt.given, driver, dsn, err)
		}
	}
}
