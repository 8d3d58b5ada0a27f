package sqlstore

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"
)

// SQLite lets one connection write at a time. A write that finds the lock
// taken waits in SQLite's busy handler, which sleeps and polls, up to the
// connection's busy timeout, and then fails with SQLITE_BUSY. So on SQLite
// a write is bounded by QueryTimeout plus that busy timeout, never by
// QueryTimeout alone, which would cancel writes SQLite would have let
// through. And the store's own writes take turns in Go first: waiting in
// order, none of them can lose every poll to its siblings and starve until
// SQLITE_BUSY; SQLite's busy handler is left to arbitrate between
// processes. Reads need neither: in WAL mode they never wait for the write
// lock.

// writeCtx bounds a write and, on SQLite, waits for the store's turn to
// write; the returned cancel also gives the turn back. A turn not had
// within the bound returns an ended context, on which the write fails as
// unavailable.
func (s *Store) writeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout+s.lockWait)
	if s.writeTurn == nil {
		return ctx, cancel
	}
	select {
	case s.writeTurn <- struct{}{}:
		return ctx, func() {
			<-s.writeTurn
			cancel()
		}
	case <-ctx.Done():
		return ctx, cancel
	}
}

// busyTimeout reads how long a SQLite connection of db waits for the write
// lock: [SQLiteBusyTimeout] when db comes from [Open]. Every connection of
// a pool comes from one DSN, so one answers for all.
func busyTimeout(ctx context.Context, db *sqlx.DB) (time.Duration, error) {
	var ms int64
	if err := db.GetContext(ctx, &ms, `PRAGMA busy_timeout`); err != nil {
		return 0, unavailable("read the busy timeout", err)
	}
	return time.Duration(ms) * time.Millisecond, nil
}
