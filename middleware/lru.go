package middleware

import "container/list"

// lru is a map capped at max entries that forgets the least recently used
// first. It is not safe for concurrent use: its owner holds a lock.
type lru[K comparable, V any] struct {
	max     int
	entries map[K]*list.Element // of *lruEntry[K, V]
	order   list.List           // front: most recently used
}

type lruEntry[K comparable, V any] struct {
	key   K
	value V
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, entries: make(map[K]*list.Element)}
}

// get returns the value of key and marks it used.
func (l *lru[K, V]) get(key K) (V, bool) {
	if e, ok := l.entries[key]; ok {
		l.order.MoveToFront(e)
		return e.Value.(*lruEntry[K, V]).value, true
	}
	var zero V
	return zero, false
}

// getOrAdd returns the value of key, adding the one make returns when
// there is none, and forgetting the least recently used entries beyond max.
func (l *lru[K, V]) getOrAdd(key K, make func() V) V {
	if v, ok := l.get(key); ok {
		return v
	}
	v := make()
	l.entries[key] = l.order.PushFront(&lruEntry[K, V]{key: key, value: v})
	for len(l.entries) > l.max {
		oldest := l.order.Back()
		l.order.Remove(oldest)
		delete(l.entries, oldest.Value.(*lruEntry[K, V]).key)
	}
	return v
}

// remove forgets key.
func (l *lru[K, V]) remove(key K) {
	if e, ok := l.entries[key]; ok {
		l.order.Remove(e)
		delete(l.entries, key)
	}
}

func (l *lru[K, V]) len() int { return len(l.entries) }
