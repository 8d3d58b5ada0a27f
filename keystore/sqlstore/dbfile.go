package sqlstore

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
)

// dbFile is the SQLite file a store's connections hold open. A file
// replaced (a backup moved over it) or removed while they do is not seen by
// them: they keep reading the old one, and would serve decisions the
// database no longer holds. Calls check that the path still names the file
// first, and fail as unavailable if not.
type dbFile struct {
	path string
	info os.FileInfo
	// checked is when the path last named the file, in nanoseconds since
	// base (monotonic): within fileCheckEvery of it, calls skip the stat.
	checked atomic.Int64
	base    time.Time
}

// fileCheckEvery spaces out the stat calls of a busy store. A replaced
// file is noticed within it, well inside the one-second bound on changes.
const fileCheckEvery = 100 * time.Millisecond

// check reports ErrUnavailable when the path no longer names the file.
func (f *dbFile) check() error {
	if f == nil {
		return nil
	}
	now := int64(time.Since(f.base))
	if now-f.checked.Load() < int64(fileCheckEvery) {
		return nil
	}
	info, err := os.Stat(f.path)
	if err == nil && os.SameFile(info, f.info) {
		f.checked.Store(now)
		return nil
	}
	return fmt.Errorf("%w (%s); restart to open the new one", ErrDatabaseReplaced, f.path)
}

// openedFile finds the file of a SQLite pool's main database: nil for an
// in-memory or temporary one.
func openedFile(ctx context.Context, db *sqlx.DB) (*dbFile, error) {
	var path string
	if err := db.GetContext(ctx, &path, `SELECT file FROM pragma_database_list WHERE name = 'main'`); err != nil {
		return nil, unavailable("find the database file", err)
	}
	if path == "" {
		return nil, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, unavailable("find the database file", err)
	}
	f := &dbFile{path: path, info: info, base: time.Now()}
	f.checked.Store(int64(-fileCheckEvery)) // the first call checks
	return f, nil
}
