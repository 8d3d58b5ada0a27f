package sqlstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/llmauth/llmauth/keystore"

	"github.com/lib/pq"
)

// Invalidator is what a [Watcher] feeds: [Cache] implements it.
type Invalidator interface {
	// Apply drops what a batch of changes affects.
	Apply(changes []keystore.Change)
	// Flush drops everything: changes may have been missed.
	Flush()
	// Confirm records that every change committed before seen has been
	// applied (see [Cache.Confirm]).
	Confirm(seen time.Time)
}

// FlushReason says why a [Watcher] dropped a whole cache.
type FlushReason string

// The reasons a watcher flushes: each is a moment it could not prove that
// it had seen every change.
const (
	// FlushListenerReconnect: the LISTEN connection was re-established;
	// notifications sent meanwhile are lost.
	FlushListenerReconnect FlushReason = "listener_reconnect"
	// FlushUnreadableNotification: a notification's payload did not parse.
	FlushUnreadableNotification FlushReason = "unreadable_notification"
	// FlushIDsBackwards: the newest change id is below the highest one
	// seen (TRUNCATE … RESTART IDENTITY, an older backup restored, a
	// failover to a lagging replica).
	FlushIDsBackwards FlushReason = "ids_backwards"
	// FlushRowsMissing: the last row seen is gone or is another row (the
	// log was cleared or rewritten), though newer ids exist.
	FlushRowsMissing FlushReason = "rows_missing"
	// FlushHoleExpired: a missing change id stayed missing for Retention;
	// a change committed later than that would be lost.
	FlushHoleExpired FlushReason = "hole_expired"
	// FlushBacklog: more missing ids than the watcher tracks, or more new
	// rows than a poll applies one by one (50,000).
	FlushBacklog FlushReason = "backlog"
	// FlushRecovered: the change log could not be read for so long that
	// rows may have been pruned unseen.
	FlushRecovered FlushReason = "recovered"
	// FlushDatabaseReplaced: the SQLite file was replaced under the store.
	FlushDatabaseReplaced FlushReason = "database_replaced"
)

// FlushReasons lists every FlushReason, for metrics that start at zero.
var FlushReasons = []FlushReason{
	FlushListenerReconnect, FlushUnreadableNotification, FlushIDsBackwards, FlushRowsMissing,
	FlushHoleExpired, FlushBacklog, FlushRecovered, FlushDatabaseReplaced,
}

// WatcherObserver receives the watcher's events; metrics.Metrics implements
// it. An observer that also has a method ListenerExpected(expected bool)
// is told once, at start, whether this watcher keeps a LISTEN connection
// (PostgresURL set) or polls only, so that "listener down" alerts can
// leave polling-only (SQLite) instances alone.
type WatcherObserver interface {
	ChangeEvent(path string)
	ListenerUp(up bool)
	// Flushed counts one flush of the whole cache, by reason.
	Flushed(reason string)
}

// WatcherOptions configures a [Watcher]. The zero value polls only.
type WatcherOptions struct {
	// PostgresURL, when set, makes the watcher LISTEN on [ChangeChannel]
	// through a dedicated connection, so changes arrive within
	// milliseconds. Leave it empty on SQLite.
	PostgresURL string
	// PollInterval is how often the change log is polled: the bound on
	// staleness when notifications are lost or unavailable, and how often
	// the cache's freshness is confirmed. Keep it well below the sink's
	// staleness bound (see [CacheOptions.MaxStaleness]), or cached answers
	// lapse between polls and requests go to the store.
	// Default: 500ms, or half the bound if that is shorter.
	PollInterval time.Duration
	// PollTimeout bounds one poll, so that a hung connection cannot keep
	// the poller waiting while the staleness bound passes. It must be
	// shorter than the bound. Default: 3/4 of the sink's staleness bound
	// (750ms with the default 1s).
	PollTimeout time.Duration
	// Retention is how long change-log rows are kept, and how long a hole
	// in the change ids (on PostgreSQL, a transaction that took an id and
	// has not committed yet, or one that rolled back) is looked for on
	// every poll; a hole still missing after Retention flushes the cache.
	// Default: 10m.
	Retention time.Duration
	// Now is the clock of freshness confirmations; it must be the sink's
	// clock (see [CacheOptions.Now]). Default: time.Now.
	Now func() time.Time
	// Logger receives connection events, flushes and poll failures.
	// Default: discard.
	Logger *slog.Logger
	// Observer, when set, counts events by path, flushes by reason and the
	// listener's state.
	Observer WatcherObserver
}

// Watcher turns database changes into cache invalidations and confirms the
// cache's freshness. On PostgreSQL it listens for the triggers'
// notifications; on every database it polls the change log, which covers
// SQLite, lost notifications and reconnects, and proves after each
// successful read that every change up to the read's start has been
// applied. Whenever it cannot prove it saw everything (a reconnect, ids
// going backwards, rows missing, a hole outliving Retention) it flushes the
// cache, counted by [FlushReason].
type Watcher struct {
	store *Store
	sink  Invalidator
	opts  WatcherOptions
	log   *slog.Logger

	// polling serialises polls, so that a Poll returns only after every
	// change it, or a poll running when it was called, took as seen has
	// been applied.
	polling sync.Mutex

	mu        sync.Mutex
	pos       changePosition
	failing   time.Time // when polls started failing; zero while they succeed
	lastPrune time.Time

	closeOnce sync.Once
	closeErr  error
	listener  *pq.Listener
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// NewWatcher builds a watcher over store's change log that feeds sink.
// It fails with ErrInvalidInput on a negative duration, a PostgresURL on
// SQLite, or a PollInterval or PollTimeout not shorter than the sink's
// staleness bound.
//
// Like the cache and the usage audit, the watcher starts in its
// constructor: it reads the change log's position (failing with
// keystore.ErrUnavailable if the database does not answer), confirms the
// sink's freshness, and starts the poller and, on PostgreSQL, the
// listener, which connects in the background (polling covers the
// meantime). Close stops both.
func NewWatcher(ctx context.Context, store *Store, sink Invalidator, opts WatcherOptions) (*Watcher, error) {
	if store == nil || sink == nil {
		return nil, fmt.Errorf("%w: watcher needs a store and a sink", keystore.ErrInvalidInput)
	}
	if opts.PollInterval < 0 || opts.Retention < 0 || opts.PollTimeout < 0 {
		return nil, fmt.Errorf("%w: negative watcher interval", keystore.ErrInvalidInput)
	}
	if opts.PostgresURL != "" && !store.isPostgres() {
		return nil, fmt.Errorf("%w: PostgresURL set for a SQLite store", keystore.ErrInvalidInput)
	}
	bound := keystore.StalenessPromise
	if b, ok := sink.(interface{ MaxStaleness() time.Duration }); ok {
		bound = b.MaxStaleness()
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = min(500*time.Millisecond, bound/2)
	}
	if opts.PollTimeout == 0 {
		opts.PollTimeout = bound * 3 / 4
	}
	if opts.PollTimeout >= bound {
		return nil, fmt.Errorf("%w: PollTimeout %v must be shorter than the staleness bound %v", keystore.ErrInvalidInput, opts.PollTimeout, bound)
	}
	if opts.Retention == 0 {
		opts.Retention = 10 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{store: store, sink: sink, opts: opts, log: log, pos: newChangePosition(opts.Retention)}
	if o, ok := opts.Observer.(interface{ ListenerExpected(bool) }); ok {
		o.ListenerExpected(opts.PostgresURL != "")
	}
	if err := w.start(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// start takes the position and starts the goroutines.
func (w *Watcher) start(ctx context.Context) error {
	seen := w.opts.Now()
	if err := w.reposition(ctx); err != nil {
		return err
	}
	w.mu.Lock()
	w.lastPrune = time.Now()
	w.mu.Unlock()
	// What the sink holds may have been read before seen (lookups before
	// the first watcher started, or while none ran, when a watcher is
	// replaced): changes committed then are behind the position just
	// taken, and no poll will bring them. Drop it all; fills in flight are
	// discarded too (the cache's generation), and what is read from now on
	// is covered by the polls from the position.
	w.sink.Flush()
	w.sink.Confirm(seen)

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

// startWindow is how far below the newest change id the watcher looks for
// ids that are missing when it takes its position.
const startWindow = 1000

// reposition places the watcher after the newest change, remembering as
// holes the ids missing between the rows of the log on PostgreSQL (ids
// below the oldest row are pruned, not pending): each is a transaction
// that took an id without the commit-order lock and is still open, or one
// that rolled back; their bound resolves the rolled-back ones at the next
// poll. SQLite hands out ids at commit, so it has none.
func (w *Watcher) reposition(ctx context.Context) error {
	win, err := w.store.changesAfter(ctx, 1<<63-1, 1)
	if err != nil {
		return err
	}
	var missing []int64
	if w.store.isPostgres() && win.latest != nil && win.latest.ID > 1 {
		if missing, err = w.store.missingIDs(ctx, win.latest.ID, maxHoles); err != nil {
			return err
		}
	}
	now := time.Now()
	w.mu.Lock()
	w.pos.reset(win.latest, nil, now)
	w.pos.addHoles(missing, now)
	w.mu.Unlock()
	return w.bindHoles(ctx)
}

// bindHoles gives new holes their transaction-id bound, from a statement
// run after the read that found them.
func (w *Watcher) bindHoles(ctx context.Context) error {
	w.mu.Lock()
	need := w.pos.unbound()
	w.mu.Unlock()
	if !need {
		return nil
	}
	xid, err := w.store.newXid(ctx)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.pos.bind(xid)
	w.mu.Unlock()
	return nil
}

// Close stops the watcher and waits for its goroutines. Closing twice, or
// a watcher never started, is fine.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		if w.cancel != nil {
			w.cancel()
		}
		if w.listener != nil {
			w.closeErr = w.listener.Close()
		}
		w.wg.Wait()
		if w.opts.Observer != nil && w.listener != nil {
			w.opts.Observer.ListenerUp(false)
		}
	})
	return w.closeErr
}

// flush drops the whole cache and counts why.
func (w *Watcher) flush(reason FlushReason) {
	w.sink.Flush()
	if w.opts.Observer != nil {
		w.opts.Observer.Flushed(string(reason))
	}
}
