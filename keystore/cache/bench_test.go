package cache_test

import (
	"context"
	"hash/crc32"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/cache"
)

// synthStore is a store of n synthetic clients, each with one key: client
// i is named synthName(i) with id i+1, and synthToken(i) is its key, id
// i+1. It keeps nothing per client, so that memory measured around a fill
// is the cache's.
type synthStore struct{}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func synthName(i int) string { return "client-" + strconv.Itoa(i) }

// synthToken builds a well-formed token whose lookup id encodes i.
func synthToken(i int) keystore.Token {
	var b strings.Builder
	b.WriteString(keystore.TokenPrefix)
	v := uint64(i)
	for range 12 {
		b.WriteByte(base62[v%62])
		v /= 62
	}
	x := uint64(i)*0x9E3779B97F4A7C15 + 1
	for range 43 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b.WriteByte(base62[x%62])
	}
	sum := crc32.ChecksumIEEE([]byte(b.String()))
	var c [6]byte
	for j := 5; j >= 0; j-- {
		c[j] = base62[sum%62]
		sum /= 62
	}
	b.Write(c[:])
	tok, err := keystore.ParseToken(b.String())
	if err != nil {
		panic(err)
	}
	return tok
}

// synthIndex is the inverse of synthToken and synthName.
func synthIndex(tok keystore.Token) int {
	id := tok.LookupID()
	n := 0
	for j := len(id) - 1; j >= 0; j-- {
		n = n*62 + strings.IndexByte(base62, id[j])
	}
	return n
}

func (synthStore) ClientState(_ context.Context, client string) (keystore.ClientState, error) {
	i, err := strconv.Atoi(strings.TrimPrefix(client, "client-"))
	if err != nil || !strings.HasPrefix(client, "client-") {
		return keystore.ClientState{}, keystore.ErrUnknownClient
	}
	// A copy, as a database driver would return.
	return keystore.ClientState{ID: int64(i) + 1, Name: strings.Clone(client), RequiresKey: true}, nil
}

func (synthStore) Verify(_ context.Context, client string, tok keystore.Token) (keystore.VerifiedKey, error) {
	i := synthIndex(tok)
	if client != synthName(i) {
		return keystore.VerifiedKey{}, keystore.ErrInvalidToken
	}
	return keystore.VerifiedKey{KeyID: int64(i) + 1, ClientID: int64(i) + 1, Client: strings.Clone(client)}, nil
}

// synthOptions keep entries for an hour, so that none expires during a
// slow fill or a long benchmark.
var synthOptions = cache.Options{NoChangeFeed: true, TTL: time.Hour}

func newSynthCache(tb testing.TB) *cache.Cache {
	tb.Helper()
	c, err := cache.New(synthStore{}, synthOptions)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// fillSynth caches the states of clients [from, to) when states is set,
// and their keys when tokens is not nil. A fill is mostly waiting for a
// handoff between goroutines, so a large range is filled by several
// workers.
func fillSynth(tb testing.TB, c *cache.Cache, names []string, tokens []keystore.Token, from, to int, states bool) {
	const workers = 8
	ctx := context.Background()
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	step := max((to-from+workers-1)/workers, 1)
	for lo := from; lo < to; lo += step {
		wg.Go(func() {
			for i := lo; i < min(lo+step, to); i++ {
				if states {
					if _, err := c.ClientState(ctx, names[i]); err != nil {
						failed.Store(&err)
						return
					}
				}
				if tokens != nil {
					if _, err := c.Verify(ctx, names[i], tokens[i]); err != nil {
						failed.Store(&err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		tb.Fatal(*err)
	}
}

func synthData(n int) ([]string, []keystore.Token) {
	names := make([]string, n)
	tokens := make([]keystore.Token, n)
	for i := range n {
		names[i], tokens[i] = synthName(i), synthToken(i)
	}
	return names, tokens
}

// BenchmarkClientStateHit asks for a cached client state.
func BenchmarkClientStateHit(b *testing.B) {
	c := newSynthCache(b)
	ctx := context.Background()
	fillSynth(b, c, []string{"client-0"}, nil, 0, 1, true)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.ClientState(ctx, "client-0"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyHit verifies a cached key: the token is hashed on every
// call.
func BenchmarkVerifyHit(b *testing.B) {
	c := newSynthCache(b)
	ctx := context.Background()
	names, tokens := synthData(1)
	fillSynth(b, c, names, tokens, 0, 1, true)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Verify(ctx, names[0], tokens[0]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyHitParallel verifies warm keys of 4096 clients from
// every P: go-cache has one lock per cache, which all of them share.
func BenchmarkVerifyHitParallel(b *testing.B) {
	const n = 4096
	c := newSynthCache(b)
	ctx := context.Background()
	names, tokens := synthData(n)
	fillSynth(b, c, names, tokens, 0, n, true)
	var seed atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(7919))
		for pb.Next() {
			i = (i + 1) % n
			if _, err := c.Verify(ctx, names[i], tokens[i]); err != nil {
				b.Error(err) // not Fatal: this is not the benchmark's goroutine
				return
			}
		}
	})
}

// bigCache is one cache holding a million client states and a million
// verified keys, shared by the Apply benchmarks: it takes seconds to fill.
var bigCache struct {
	once   sync.Once
	c      *cache.Cache
	names  []string
	tokens []keystore.Token
}

// bigN is LLMAUTH_BENCH_CACHE_ENTRIES (default 1M, at least 10k: the bulk
// benchmark changes 10k keys), so that CI can run every benchmark small.
func bigN(b *testing.B) int {
	n := 1_000_000
	if v := os.Getenv("LLMAUTH_BENCH_CACHE_ENTRIES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 10000 {
			b.Fatalf("LLMAUTH_BENCH_CACHE_ENTRIES=%q: want an integer of at least 10000", v)
		}
	}
	return n
}

func big(b *testing.B) (*cache.Cache, []string, []keystore.Token) {
	bigCache.once.Do(func() {
		bigN := bigN(b)
		c, err := cache.New(synthStore{}, synthOptions)
		if err != nil {
			b.Fatal(err)
		}
		bigCache.names, bigCache.tokens = synthData(bigN)
		fillSynth(b, c, bigCache.names, bigCache.tokens, 0, bigN, true)
		bigCache.c = c
	})
	return bigCache.c, bigCache.names, bigCache.tokens
}

// closeBig closes the shared cache, if a benchmark made it.
func closeBig() {
	if bigCache.c != nil {
		_ = bigCache.c.Close()
	}
}

// keyChanges is what the triggers write when key i changes: one change
// per linked client, one with no client.
func keyChanges(i int) []keystore.Change {
	id := int64(i) + 1
	return []keystore.Change{
		{Source: keystore.SourceKey, ClientID: id, KeyID: id},
		{Source: keystore.SourceKey, KeyID: id},
	}
}

// BenchmarkApplyOneChange applies one key change to a cache of 1M client
// states and 1M verified keys; the two entries it drops are put back with
// the timer stopped.
func BenchmarkApplyOneChange(b *testing.B) {
	c, names, tokens := big(b)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		i = (i + 1) % len(names)
		ch := keyChanges(i)
		fillSynth(b, c, names, tokens, i, i+1, true)
		b.StartTimer()
		c.Apply(ch)
	}
}

// BenchmarkApplyBulk10k applies a batch of 10k key changes (20k rows) to
// a cache of 1M client states and 1M verified keys.
func BenchmarkApplyBulk10k(b *testing.B) {
	const batch = 10_000
	c, names, tokens := big(b)
	next := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		from := next
		next = (next + batch) % len(names)
		if next+batch > len(names) {
			next = 0
		}
		fillSynth(b, c, names, tokens, from, from+batch, true)
		changes := make([]keystore.Change, 0, 2*batch)
		for i := from; i < from+batch; i++ {
			changes = append(changes, keyChanges(i)...)
		}
		b.StartTimer()
		c.Apply(changes)
	}
}

// BenchmarkMemoryPerEntry reports the heap held per cached client state
// and per verified key (indexes included), measured after a GC around a
// fill of LLMAUTH_BENCH_MEMORY_ENTRIES (default 1M) of each. Hash maps
// double as they grow, so the figure moves with the count: it is highest
// just after a doubling (1M is: Go's maps double at about 917k), about
// two thirds of that just before one.
func BenchmarkMemoryPerEntry(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("LLMAUTH_BENCH_MEMORY_ENTRIES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("LLMAUTH_BENCH_MEMORY_ENTRIES=%q: want a positive integer", v)
		}
	}
	names, tokens := synthData(n)
	for _, kind := range []string{"state", "key"} {
		b.Run(kind, func(b *testing.B) {
			var perEntry float64
			for b.Loop() {
				c := newSynthCache(b)
				if kind == "key" {
					// The states first, measured out: a key is verified
					// after its client's state is cached.
					fillSynth(b, c, names, nil, 0, n, true)
				}
				before := heapInUse()
				if kind == "state" {
					fillSynth(b, c, names, nil, 0, n, true)
				} else {
					fillSynth(b, c, names, tokens, 0, n, false)
				}
				after := heapInUse()
				perEntry = float64(after-before) / float64(n)
				runtime.KeepAlive(c)
				_ = c.Close()
			}
			b.ReportMetric(perEntry, "B/entry")
		})
	}
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestSynthToken(t *testing.T) {
	for _, i := range []int{0, 1, 61, 62, 123456, 999_999} {
		if got := synthIndex(synthToken(i)); got != i {
			t.Errorf("synthIndex(synthToken(%d)) = %d", i, got)
		}
	}
}
