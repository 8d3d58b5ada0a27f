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
	// Retention is how long change-log rows are kept, and how long a hole in
	// the change ids (on PostgreSQL, a transaction that took an id and has
	// not committed yet, or one that rolled back) is looked for again on
	// every poll. Default: 10m.
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

	// polling serialises polls, so that a Poll returns only after every
	// change it, or a poll running when it was called, took as seen has
	// been applied.
	polling sync.Mutex

	mu        sync.Mutex
	high      int64               // every id <= high was applied or is in holes
	holes     map[int64]time.Time // ids below high not seen yet, and since when
	notified  map[int64]bool      // ids above high applied from notifications
	failing   bool                // the last poll failed
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
	if opts.PollInterval < 0 || opts.Retention < 0 {
		return nil, fmt.Errorf("%w: negative watcher interval", ErrInvalidInput)
	}
	if opts.PostgresURL != "" && !store.IsPostgres() {
		return nil, fmt.Errorf("%w: PostgresURL set for a SQLite store", ErrInvalidInput)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 500 * time.Millisecond
	}
	if opts.Retention == 0 {
		opts.Retention = 10 * time.Minute
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{store: store, sink: sink, opts: opts, log: log, holes: map[int64]time.Time{}, notified: map[int64]bool{}}, nil
}

// Start reads the change log's position and starts the poller and, on
// PostgreSQL, the listener, which connects in the background (polling
// covers the meantime). It fails only if the database does not answer.
// Close stops both.
func (w *Watcher) Start(ctx context.Context) error {
	latest, err := w.store.LatestChange(ctx)
	if err != nil {
		return err
	}
	holes, err := w.startHoles(ctx, latest)
	if err != nil {
		return err
	}
	// Polling starts after the newest visible id, and looks again for the
	// missing ids below it: on PostgreSQL a transaction may have taken one
	// before this moment and commit after it.
	w.mu.Lock()
	w.high = latest
	w.holes = holes
	w.lastPrune = time.Now()
	w.mu.Unlock()

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.cancel = cancel
	if w.opts.PostgresURL != "" {
		w.listener = pq.NewListener(w.opts.PostgresURL, 100*time.Millisecond, 2*time.Second, w.listenerEvent)
		w.wg.Add(1)
		go w.listen(runCtx)
	}
	w.wg.Add(1)
	go w.pollLoop(runCtx)
	return nil
}

// startWindow is how far below the newest change id Start looks for ids
// that are missing.
const startWindow = 1000

// startHoles finds the ids missing among the newest startWindow changes on
// PostgreSQL, above the oldest one present (ids below it are pruned, not
// pending). Each is a transaction still open, or one rolled back: it is
// looked for on every poll, and a notification for it is applied, for
// Retention. SQLite hands out ids at commit, so it has none.
func (w *Watcher) startHoles(ctx context.Context, latest int64) (map[int64]time.Time, error) {
	holes := map[int64]time.Time{}
	if !w.store.IsPostgres() || latest <= 1 {
		return holes, nil
	}
	rows, err := w.store.ChangesSince(ctx, max(0, latest-startWindow), startWindow)
	if err != nil || len(rows) == 0 {
		return holes, err
	}
	now := time.Now()
	next := rows[0].ID + 1
	for _, r := range rows[1:] {
		if r.ID > latest {
			break // committed since: polling reads it
		}
		for ; next < r.ID; next++ {
			holes[next] = now
		}
		next = r.ID + 1
	}
	return holes, nil
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
	defer func() {
		// lib/pq blocks sending to Notify until Close closes it: keep
		// reading so that its goroutine can finish.
		for range w.listener.Notify {
		}
	}()
	// Listen waits until a connection exists, so it runs here, not in Start.
	if err := w.listener.Listen(ChangeChannel); err != nil {
		if ctx.Err() == nil {
			w.log.Error("change listener: LISTEN failed; polling only", "err", err)
		}
		return
	}
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
			if w.unapplied(ch.ID) {
				// Applied before it is noted: a poll that finds it noted
				// knows it is applied. (A poll in between applies it too,
				// which is harmless.)
				w.sink.Apply([]Change{ch})
				w.noteNotified(ch.ID)
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

// unapplied reports whether a notified change id still needs applying.
// Every notification is applied unless polling already applied that id: an
// id below the poller's position may belong to a transaction that
// committed late, a hole.
func (w *Watcher) unapplied(id int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if id > w.high {
		return !w.notified[id]
	}
	_, hole := w.holes[id]
	return hole
}

// noteNotified records that a notified change id has been applied, so that
// polling does not apply it again.
func (w *Watcher) noteNotified(id int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if id > w.high {
		w.notified[id] = true
		return
	}
	delete(w.holes, id)
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

// maxHoles bounds the ids remembered as missing; past it the cache is
// flushed and the holes forgotten.
const maxHoles = 10000

// Poll reads the change log once and applies what is new: every row after
// the last one seen, and any row that filled a hole (a PostgreSQL
// transaction that committed after a later id became visible). It reads
// until it has caught up. The poller calls it every PollInterval; tests and
// tools may call it to catch up at once: when it returns nil, every change
// committed before the call, and every change notified before it, has
// been applied.
func (w *Watcher) Poll(ctx context.Context) error {
	w.polling.Lock()
	defer w.polling.Unlock()
	fresh, flush, err := w.read(ctx)
	w.mu.Lock()
	recovered := w.failing && err == nil
	replaced := !w.failing && errors.Is(err, ErrDatabaseReplaced)
	w.failing = err != nil
	now := time.Now()
	prune := err == nil && now.Sub(w.lastPrune) > time.Minute
	if prune {
		w.lastPrune = now
	}
	w.mu.Unlock()
	if replaced {
		// Unlike an outage, what the cache holds came from a database
		// that is gone: drop it, so that every decision fails closed.
		w.sink.Flush()
	}
	if err != nil {
		return err
	}

	if recovered || flush {
		// After an outage, or a backlog too large to track, whatever was
		// decided meanwhile is suspect.
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

// read fetches the new rows and the rows of holes, updating the position.
func (w *Watcher) read(ctx context.Context) (fresh []Change, flush bool, err error) {
	const batch = 1000
	for {
		w.mu.Lock()
		after := w.high
		w.mu.Unlock()
		rows, err := w.store.ChangesSince(ctx, after, batch)
		if err != nil {
			return nil, false, err
		}
		now := time.Now()
		w.mu.Lock()
		for _, ch := range rows {
			for id := w.high + 1; id < ch.ID; id++ {
				if len(w.holes) >= maxHoles {
					flush = true
					clear(w.holes)
					break
				}
				w.holes[id] = now
			}
			w.high = ch.ID
			if w.notified[ch.ID] {
				delete(w.notified, ch.ID)
				continue
			}
			fresh = append(fresh, ch)
		}
		w.mu.Unlock()
		if len(rows) < batch {
			break
		}
	}

	w.mu.Lock()
	var look []int64
	for id, since := range w.holes {
		if time.Since(since) > w.opts.Retention {
			delete(w.holes, id) // a rolled-back id, or pruned
			continue
		}
		look = append(look, id)
	}
	for id := range w.notified {
		if id <= w.high {
			delete(w.notified, id)
		}
	}
	w.mu.Unlock()
	if len(look) == 0 {
		return fresh, flush, nil
	}
	late, err := w.store.ChangesIn(ctx, look)
	if err != nil {
		return nil, false, err
	}
	w.mu.Lock()
	for _, ch := range late {
		if _, ok := w.holes[ch.ID]; ok {
			delete(w.holes, ch.ID)
			fresh = append(fresh, ch)
		}
	}
	w.mu.Unlock()
	return fresh, flush, nil
}
