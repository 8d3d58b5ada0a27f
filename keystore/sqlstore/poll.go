package sqlstore

import (
	"context"
	"errors"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

func (w *Watcher) pollLoop(ctx context.Context) {
	defer w.wg.Done()
	t := time.NewTicker(w.opts.PollInterval)
	defer t.Stop()
	// A sink that asks for renewal (cache.Cache.RenewRequests) is polled
	// at once when a lookup finds its lease lapsed.
	var renew <-chan struct{}
	if r, ok := w.sink.(interface{ RenewRequests() <-chan struct{} }); ok {
		renew = r.RenewRequests()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew:
			t.Reset(w.opts.PollInterval)
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, w.opts.PollTimeout)
		err := w.Poll(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			w.log.Debug("change poll failed", "err", err)
		}
	}
}

// recoveryFlushAfter is the share of Retention after which a watcher that
// could not read the change log flushes when it can again: rows it has not
// seen may have been pruned by then.
const recoveryFlushAfter = 2

// Poll reads the change log once and applies what is new: every row after
// the last one seen, and any row that filled a hole (a PostgreSQL
// transaction that committed after a later id became visible). It reads
// until it has caught up, flushes instead where it cannot prove it saw
// every change, and then confirms the sink's freshness as of the moment it
// started. The poller calls it every PollInterval with PollTimeout; tests
// and tools may call it to catch up at once: when it returns nil, every
// change committed before the call, and every change notified before it,
// has been applied.
func (w *Watcher) Poll(ctx context.Context) error {
	w.polling.Lock()
	defer w.polling.Unlock()
	seen := w.opts.Now()
	fresh, reason, err := w.read(ctx)
	now := time.Now()
	w.mu.Lock()
	wasFailing := w.failing
	switch {
	case err != nil && wasFailing.IsZero():
		w.failing = now
	case err == nil:
		w.failing = time.Time{}
	}
	prune := err == nil && now.Sub(w.lastPrune) > time.Minute
	if prune {
		w.lastPrune = now
	}
	w.mu.Unlock()
	if errors.Is(err, ErrDatabaseReplaced) {
		// Unlike an outage, what the cache holds came from a database
		// that is gone: drop it, so that every decision fails closed.
		if wasFailing.IsZero() {
			w.flush(FlushDatabaseReplaced)
		}
		return err
	}
	if err != nil {
		if wasFailing.IsZero() {
			w.log.Warn("cannot read the change log; cached decisions stop being used at the staleness bound", "err", err)
		}
		return err
	}
	if !wasFailing.IsZero() {
		w.log.Info("change log readable again", "after", now.Sub(wasFailing).Round(time.Millisecond))
		if reason == "" && now.Sub(wasFailing) > w.opts.Retention/recoveryFlushAfter {
			reason = FlushRecovered
		}
	}
	if reason != "" {
		w.log.Warn("flushing the cache: cannot prove every change was seen", "reason", string(reason))
		w.flush(reason)
	} else if len(fresh) > 0 {
		w.sink.Apply(fresh)
	}
	if w.opts.Observer != nil {
		for range fresh {
			w.opts.Observer.ChangeEvent("poll")
		}
	}
	w.sink.Confirm(seen)
	if prune {
		if _, err := w.store.pruneChanges(ctx, w.opts.Retention); err != nil {
			w.log.Debug("change log prune failed", "err", err)
		}
	}
	return nil
}

// pollBatch is how many change-log rows one statement reads.
const pollBatch = 1000

// maxBacklog is the most change-log rows a poll applies one by one; a
// longer backlog flushes the cache instead (FlushBacklog), so that a poll
// after a long partition or a bulk change takes bounded memory and time.
// It matches the cache's own threshold for flushing a batch.
const maxBacklog = 50000

// read fetches the new rows and the rows of holes, updating the position.
// A non-empty reason means the cache must be flushed: the position has
// then been taken anew.
func (w *Watcher) read(ctx context.Context) (fresh []keystore.Change, reason FlushReason, err error) {
	for {
		w.mu.Lock()
		after := w.pos.high
		w.mu.Unlock()
		win, err := w.store.changesAfter(ctx, after, pollBatch)
		if err != nil {
			return nil, "", err
		}
		if win.latest != nil && win.latest.ID-after > maxBacklog {
			// Too far behind to apply change by change in bounded memory
			// and time: take the position anew at the newest row, then
			// flush, so that whatever was committed in between is dropped
			// from the cache.
			if err := w.reposition(ctx); err != nil {
				return nil, "", err
			}
			return nil, FlushBacklog, nil
		}
		w.mu.Lock()
		rows, r := w.pos.advance(win, w.store.isPostgres(), time.Now())
		w.mu.Unlock()
		if r == FlushIDsBackwards || r == FlushRowsMissing {
			// Take the position anew before the flush, so that a change
			// committed after the flush is beyond it.
			if err := w.reposition(ctx); err != nil {
				return nil, "", err
			}
			return nil, r, nil
		}
		if r != "" {
			reason = r
		}
		if len(fresh)+len(rows) > maxBacklog {
			// More than one batch should hold (ids can leave gaps, so the
			// check above cannot see every backlog): stop keeping rows and
			// flush at the end, reading on only to advance the position.
			reason, fresh, rows = FlushBacklog, nil, nil
		}
		fresh = append(fresh, rows...)
		if len(win.rows) < pollBatch {
			break
		}
	}

	if err := w.bindHoles(ctx); err != nil {
		return nil, "", err
	}
	w.mu.Lock()
	look, expired := w.pos.pending(time.Now())
	w.mu.Unlock()
	if expired && reason == "" {
		reason = FlushHoleExpired
	}
	if len(look) == 0 {
		return fresh, reason, nil
	}
	late, xmin, err := w.store.holesIn(ctx, look)
	if err != nil {
		return nil, "", err
	}
	w.mu.Lock()
	found, lost := w.pos.filled(late, xmin)
	w.mu.Unlock()
	if lost && reason == "" {
		reason = FlushHoleExpired
	}
	return append(fresh, found...), reason, nil
}
