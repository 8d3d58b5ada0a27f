package cache_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// cache, watcher, listener and audit must stop when closed. The cache the
// Apply benchmarks share is closed first.
func TestMain(m *testing.M) {
	code := m.Run()
	closeBig()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
