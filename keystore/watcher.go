package keystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"
)

// ChangeChannel is the PostgreSQL channel the triggers notify.
const ChangeChannel = "llmauth_changes"

// Invalidator is what a [Watcher] feeds: [Cache] implements it.
type Invalidator interface {
	// Apply drops what a batch of changes affects.
	Apply(changes []Change)
	// Flush drops everything: changes may have been missed.
	Flush()
}

// WatcherObserver receives the watcher's events; metrics.Metrics implements
// it.
type WatcherObserver interface {
	ChangeEvent(path string)
	ListenerUp(up bool)
}

// WatcherOptions configures a [Watcher]. The zero value polls only.
type WatcherOptions struct {
	// PostgresURL, when set, makes the watcher LISTEN on [ChangeChannel]
	// through a dedicated connection, so changes arrive within
	// milliseconds. Leave it empty on SQLite.
	PostgresURL string
	// PollInterval is how often the change log is polled: the bound on
	// staleness when notifications are lost or unavailable. Default: 500ms.
	PollInterval time.Duration
	// GapWait is how long a hole in the change-log ids is waited for: on
	// PostgreSQL a transaction may commit a lower id after a higher one is
	// visible. After it the hole is taken for a rolled-back id. Default: 5s.
	GapWait time.Duration
	// Retention is how long change-log rows are kept. Default: 10m.
	Retention time.Duration
	// Logger receives connection events. Default: discard.
	Logger *slog.Logger
	// Observer, when set, counts events by path and the listener's state.
	Observer WatcherObserver
}

// Watcher turns database changes into cache invalidations. On PostgreSQL it
// listens for the triggers' notifications and flushes everything when the
// listener reconnects (notifications sent meanwhile are lost); on every
// database it also polls the change log, which covers SQLite, lost
// notifications and reconnects.
type Watcher struct {
	store *SQLStore
	sink  Invalidator
	opts  WatcherOptions
	log   *slog.Logger

	mu        sync.Mutex
	contig    int64          // every change id <= contig is applied
	seen      map[int64]bool // applied ids above contig
	gapSince  time.Time      // when the hole above contig was first seen
	failing   bool           // the last poll failed
	lastPrune time.Time

	listener *pq.Listener
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// NewWatcher builds a watcher over store's change log that feeds sink.
func NewWatcher(store *SQLStore, sink Invalidator, opts WatcherOptions) (*Watcher, error) {
	if store == nil || sink == nil {
		return nil, fmt.Errorf("%w: watcher needs a store and a sink", ErrInvalidInput)
	}
	if opts.PollInterval < 0 || opts.GapWait < 0 || opts.Retention < 0 {
		return nil, fmt.Errorf("%w: negative watcher interval", ErrInvalidInput)
	}
	if opts.PostgresURL != "" && !store.IsPostgres() {
		return nil, fmt.Errorf("%w: PostgresURL set for a SQLite store", ErrInvalidInput)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 500 * time.Millisecond
	}
	if opts.GapWait == 0 {
		opts.GapWait = 5 * time.Second
	}
	if opts.Retention == 0 {
		opts.Retention = 10 * time.Minute
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{store: store, sink: sink, opts: opts, log: log, seen: map[int64]bool{}}, nil
}

// Start reads the change log's position and starts the poller and, on
// PostgreSQL, the listener. It fails if the database does not answer.
// Close stops both.
func (w *Watcher) Start(ctx context.Context) error {
	latest, err := w.store.LatestChange(ctx)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.contig = latest
	w.lastPrune = time.Now()
	w.mu.Unlock()

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.cancel = cancel
	if w.opts.PostgresURL != "" {
		w.listener = pq.NewListener(w.opts.PostgresURL, 100*time.Millisecond, 2*time.Second, w.listenerEvent)
		if err := w.listener.Listen(ChangeChannel); err != nil && !errors.Is(err, pq.ErrChannelAlreadyOpen) {
			// Not fatal: the listener keeps reconnecting and polling covers
			// the meantime.
			w.log.Warn("change listener not connected yet; polling meanwhile", "err", err)
		}
		w.wg.Add(1)
		go w.listen(runCtx)
	}
	w.wg.Add(1)
	go w.pollLoop(runCtx)
	return nil
}

// Close stops the watcher and waits for its goroutines.
func (w *Watcher) Close() error {
	if w.cancel != nil {
		w.cancel()
	}
	var err error
	if w.listener != nil {
		err = w.listener.Close()
	}
	w.wg.Wait()
	if w.opts.Observer != nil && w.listener != nil {
		w.opts.Observer.ListenerUp(false)
	}
	return err
}

func (w *Watcher) listenerEvent(ev pq.ListenerEventType, err error) {
	switch ev {
	case pq.ListenerEventConnected, pq.ListenerEventReconnected:
		w.log.Info("change listener connected")
		if w.opts.Observer != nil {
			w.opts.Observer.ListenerUp(true)
		}
	case pq.ListenerEventDisconnected:
		w.log.Warn("change listener disconnected; polling covers the gap", "err", err)
		if w.opts.Observer != nil {
			w.opts.Observer.ListenerUp(false)
		}
	case pq.ListenerEventConnectionAttemptFailed:
		w.log.Debug("change listener reconnect failed", "err", err)
	}
}

func (w *Watcher) listen(ctx context.Context) {
	defer w.wg.Done()
	ping := time.NewTicker(30 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case n, ok := <-w.listener.Notify:
			if !ok {
				return
			}
			if n == nil {
				// lib/pq's signal that the connection was re-established:
				// whatever was notified meanwhile is gone.
				w.log.Info("change listener reconnected; flushing the cache")
				w.sink.Flush()
				continue
			}
			ch, err := parseNotification(n.Extra)
			if err != nil {
				w.log.Warn("unreadable change notification; flushing the cache", "err", err)
				w.sink.Flush()
				continue
			}
			if w.observe(ch) {
				w.sink.Apply([]Change{ch})
				if w.opts.Observer != nil {
					w.opts.Observer.ChangeEvent("notify")
				}
			}
		case <-ping.C:
			// Finds a dead connection that TCP has not yet reported; lib/pq
			// then reconnects, and the nil notification flushes.
			_ = w.listener.Ping()
		}
	}
}

// observe records a change id as applied and reports whether it was new.
func (w *Watcher) observe(ch Change) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch.ID <= w.contig || w.seen[ch.ID] {
		return false
	}
	w.seen[ch.ID] = true
	return true
}

func parseNotification(payload string) (Change, error) {
	f := strings.Fields(payload)
	if len(f) != 4 {
		return Change{}, fmt.Errorf("keystore: notification %q: want 4 fields", payload)
	}
	id, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return Change{}, fmt.Errorf("keystore: notification id: %w", err)
	}
	num := func(s string) (int64, error) {
		if s == "-" {
			return 0, nil
		}
		return strconv.ParseInt(s, 10, 64)
	}
	cid, err := num(f[2])
	if err != nil {
		return Change{}, fmt.Errorf("keystore: notification client id: %w", err)
	}
	kid, err := num(f[3])
	if err != nil {
		return Change{}, fmt.Errorf("keystore: notification key id: %w", err)
	}
	return Change{ID: id, Source: f[1], ClientID: cid, KeyID: kid}, nil
}

func (w *Watcher) pollLoop(ctx context.Context) {
	defer w.wg.Done()
	t := time.NewTicker(w.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := w.Poll(ctx); err != nil && ctx.Err() == nil {
				w.log.Debug("change poll failed", "err", err)
			}
		}
	}
}

// Poll reads the change log once and applies what is new. The poller calls
// it every PollInterval; tests and tools may call it to catch up at once.
func (w *Watcher) Poll(ctx context.Context) error {
	w.mu.Lock()
	after := w.contig
	w.mu.Unlock()
	const batch = 1000
	changes, err := w.store.ChangesSince(ctx, after, batch)
	if err != nil {
		w.mu.Lock()
		w.failing = true
		w.mu.Unlock()
		return err
	}
	now := time.Now()
	w.mu.Lock()
	recovered := w.failing
	w.failing = false
	var fresh []Change
	for _, ch := range changes {
		if ch.ID > w.contig && !w.seen[ch.ID] {
			w.seen[ch.ID] = true
			fresh = append(fresh, ch)
		}
	}
	w.advance(now)
	prune := now.Sub(w.lastPrune) > time.Minute
	if prune {
		w.lastPrune = now
	}
	w.mu.Unlock()

	if recovered {
		// Whatever was decided while the database was away is suspect.
		w.sink.Flush()
	} else if len(fresh) > 0 {
		w.sink.Apply(fresh)
	}
	if w.opts.Observer != nil {
		for range fresh {
			w.opts.Observer.ChangeEvent("poll")
		}
	}
	if prune {
		if _, err := w.store.PruneChanges(ctx, w.opts.Retention); err != nil {
			w.log.Debug("change log prune failed", "err", err)
		}
	}
	return nil
}

// advance moves contig over every applied id that follows it, and over a
// hole that has stayed open longer than GapWait. Call with mu held.
func (w *Watcher) advance(now time.Time) {
	for {
		for w.seen[w.contig+1] {
			delete(w.seen, w.contig+1)
			w.contig++
		}
		if len(w.seen) == 0 {
			w.gapSince = time.Time{}
			return
		}
		if w.gapSince.IsZero() {
			w.gapSince = now
			return
		}
		if now.Sub(w.gapSince) < w.opts.GapWait {
			return
		}
		// The hole outlived GapWait: a rolled-back id. Step over it.
		lowest := int64(-1)
		for id := range w.seen {
			if lowest < 0 || id < lowest {
				lowest = id
			}
		}
		w.contig = lowest - 1
		w.gapSince = time.Time{}
	}
}
