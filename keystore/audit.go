package keystore

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// UsageWriter persists last-use times; [SQLStore] implements it.
type UsageWriter interface {
	TouchKeys(ctx context.Context, uses map[int64]time.Time) error
}

// UsageObserver receives the audit's events; metrics.Metrics implements it.
type UsageObserver interface {
	UsageFlushed(keys int, err error)
	UsageDropped(n int)
}

// UsageOptions configures a [UsageAudit]. The zero value is ready to use.
type UsageOptions struct {
	// FlushInterval is how often pending uses are written: last_used_at is
	// accurate to within it. Default: 5s.
	FlushInterval time.Duration
	// FlushTimeout bounds one write. Default: 12s, the SQL store's own
	// bound on a write to SQLite with the default QueryTimeout (2s plus
	// [SQLiteBusyTimeout]), so that a flush queued for SQLite's write
	// lock is not cut short before SQLite itself would give up.
	FlushTimeout time.Duration
	// MaxPending caps the keys waiting to be written. Uses of further keys
	// are dropped and counted, never waited for. Default: 100000.
	MaxPending int
	// Logger receives failed flushes. Default: discard.
	Logger *slog.Logger
	// Observer, when set, counts flushes, keys written and drops.
	Observer UsageObserver
}

// UsageAudit records when each key was last used without a database write
// per request: uses are gathered in memory, one entry per key, and written
// in one batch every FlushInterval. RecordUse never blocks on the
// database. Close writes what is pending.
type UsageAudit struct {
	w    UsageWriter
	opts UsageOptions
	log  *slog.Logger

	// shards hold the pending uses, by key id, so that requests for
	// different keys do not wait for one lock.
	shards [auditShards]auditShard
	// count is how many keys are pending, across shards.
	count atomic.Int64

	flushMu sync.Mutex // one write at a time
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// auditShards is the number of pending-use maps; a power of two.
const auditShards = 32

type auditShard struct {
	mu      sync.Mutex
	pending map[int64]time.Time
	_       [48]byte // 16 + 48: one shard per 64-byte cache line
}

func (u *UsageAudit) shard(keyID int64) *auditShard {
	return &u.shards[uint64(keyID)%auditShards]
}

// NewUsageAudit starts an audit that writes through w. Call Close to stop
// it.
func NewUsageAudit(w UsageWriter, opts UsageOptions) (*UsageAudit, error) {
	if w == nil {
		return nil, fmt.Errorf("%w: nil usage writer", ErrInvalidInput)
	}
	if opts.FlushInterval < 0 || opts.FlushTimeout < 0 || opts.MaxPending < 0 {
		return nil, fmt.Errorf("%w: negative usage option", ErrInvalidInput)
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = 5 * time.Second
	}
	if opts.FlushTimeout == 0 {
		opts.FlushTimeout = 12 * time.Second
	}
	if opts.MaxPending == 0 {
		opts.MaxPending = 100000
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &UsageAudit{w: w, opts: opts, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	for i := range u.shards {
		u.shards[i].pending = map[int64]time.Time{}
	}
	go u.loop()
	return u, nil
}

// RecordUse notes that key keyID was used at at. It never blocks on I/O.
func (u *UsageAudit) RecordUse(keyID int64, at time.Time) {
	sh := u.shard(keyID)
	sh.mu.Lock()
	if prev, ok := sh.pending[keyID]; ok {
		if at.After(prev) {
			sh.pending[keyID] = at
		}
		sh.mu.Unlock()
		return
	}
	if !u.reserve(1) {
		sh.mu.Unlock()
		if u.opts.Observer != nil {
			u.opts.Observer.UsageDropped(1)
		}
		return
	}
	sh.pending[keyID] = at
	sh.mu.Unlock()
}

// reserve counts n more pending keys if MaxPending allows.
func (u *UsageAudit) reserve(n int64) bool {
	for {
		c := u.count.Load()
		if c+n > int64(u.opts.MaxPending) {
			return false
		}
		if u.count.CompareAndSwap(c, c+n) {
			return true
		}
	}
}

// Pending returns how many keys wait to be written.
func (u *UsageAudit) Pending() int {
	return int(u.count.Load())
}

// Flush writes what is pending now. On failure the uses are kept for the
// next flush, as far as MaxPending allows; the rest are dropped and counted.
func (u *UsageAudit) Flush(ctx context.Context) error {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	batch := map[int64]time.Time{}
	for i := range u.shards {
		sh := &u.shards[i]
		sh.mu.Lock()
		if len(sh.pending) > 0 {
			maps.Copy(batch, sh.pending)
			u.count.Add(-int64(len(sh.pending)))
			sh.pending = make(map[int64]time.Time, len(sh.pending))
		}
		sh.mu.Unlock()
	}
	if len(batch) == 0 {
		return nil
	}

	ctx, cancel := context.WithTimeout(ctx, u.opts.FlushTimeout)
	defer cancel()
	err := u.w.TouchKeys(ctx, batch)
	if u.opts.Observer != nil {
		n := len(batch)
		if err != nil {
			n = 0
		}
		u.opts.Observer.UsageFlushed(n, err)
	}
	if err == nil {
		return nil
	}
	dropped := 0
	for id, at := range batch {
		sh := u.shard(id)
		sh.mu.Lock()
		if prev, ok := sh.pending[id]; ok {
			if at.After(prev) {
				sh.pending[id] = at
			}
		} else if u.reserve(1) {
			sh.pending[id] = at
		} else {
			dropped++
		}
		sh.mu.Unlock()
	}
	if dropped > 0 && u.opts.Observer != nil {
		u.opts.Observer.UsageDropped(dropped)
	}
	return fmt.Errorf("keystore: usage flush of %d keys: %w", len(batch), err)
}

func (u *UsageAudit) loop() {
	defer close(u.done)
	t := time.NewTicker(u.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-u.stop:
			return
		case <-t.C:
			if err := u.Flush(context.Background()); err != nil {
				u.log.Warn("last-used audit: flush failed; will retry", "err", err)
			}
		}
	}
}

// Close stops the background flushes and writes what is pending, within
// ctx.
func (u *UsageAudit) Close(ctx context.Context) error {
	u.once.Do(func() { close(u.stop) })
	<-u.done
	return u.Flush(ctx)
}
