package keystore

import "time"

// StalenessPromise is the longest a change to a key or a client, by any
// writer, may take to reach every running cache: the README's promise. A
// cache's staleness bound may be shorter, never longer.
const StalenessPromise = time.Second
