//go:build race

package cache

// raceEnabled: the race detector's instrumentation allocates.
const raceEnabled = true
