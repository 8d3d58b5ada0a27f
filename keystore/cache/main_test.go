package cache_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// cache, watcher, listener and audit must stop when closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
