package sqlstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/llmauth/llmauth/keystore"

	"github.com/lib/pq"
)

// ChangeChannel is the PostgreSQL channel the triggers notify.
const ChangeChannel = "llmauth_changes"

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
				w.log.Warn("change listener reconnected; flushing the cache (notifications sent meanwhile are lost)")
				w.flush(FlushListenerReconnect)
				continue
			}
			ch, err := parseNotification(n.Extra)
			if err != nil {
				w.log.Warn("unreadable change notification; flushing the cache", "err", err)
				w.flush(FlushUnreadableNotification)
				continue
			}
			// Every notification is applied, whatever its id: invalidation
			// is idempotent, and an id below the poller's position may be
			// a late commit or a log whose ids went backwards.
			w.sink.Apply([]keystore.Change{ch})
			if w.opts.Observer != nil {
				w.opts.Observer.ChangeEvent("notify")
			}
		case <-ping.C:
			// Finds a dead connection that TCP has not yet reported; lib/pq
			// then reconnects, and the nil notification flushes.
			_ = w.listener.Ping()
		}
	}
}

func parseNotification(payload string) (keystore.Change, error) {
	f := strings.Fields(payload)
	if len(f) != 4 {
		return keystore.Change{}, fmt.Errorf("sqlstore: notification %q: want 4 fields", payload)
	}
	id, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return keystore.Change{}, fmt.Errorf("sqlstore: notification id: %w", err)
	}
	num := func(s string) (int64, error) {
		if s == "-" {
			return 0, nil
		}
		return strconv.ParseInt(s, 10, 64)
	}
	cid, err := num(f[2])
	if err != nil {
		return keystore.Change{}, fmt.Errorf("sqlstore: notification client id: %w", err)
	}
	kid, err := num(f[3])
	if err != nil {
		return keystore.Change{}, fmt.Errorf("sqlstore: notification key id: %w", err)
	}
	src := keystore.ChangeSource(f[1])
	switch src {
	case keystore.SourceClient, keystore.SourceKey, keystore.SourceLink, keystore.SourceFlush:
	default:
		return keystore.Change{}, fmt.Errorf("sqlstore: notification source %q: unknown", f[1])
	}
	return keystore.Change{ID: id, Source: src, ClientID: cid, KeyID: kid}, nil
}
