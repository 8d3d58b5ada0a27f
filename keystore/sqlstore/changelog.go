package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/lib/pq"

	"github.com/llmauth/llmauth/keystore"

	"github.com/jmoiron/sqlx"
)

// latestChange returns the id of the newest change-log row, 0 when empty.
func (s *Store) latestChange(ctx context.Context) (int64, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return 0, err
	}
	var id int64
	if err := s.db.GetContext(ctx, &id, `SELECT COALESCE(MAX(id), 0) FROM llmauth_changes`); err != nil {
		return 0, unavailable("latest change", err)
	}
	return id, nil
}

// changesSince returns up to limit change-log rows with id > after, oldest
// first: one indexed range scan.
func (s *Store) changesSince(ctx context.Context, after int64, limit int) ([]changeRow, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, s.q(`
SELECT id, source, COALESCE(llm_client_id, 0), COALESCE(api_key_id, 0), CAST(created_at AS TEXT) || '/' || CAST(nonce AS TEXT), '0'
FROM llmauth_changes WHERE id > ? ORDER BY id LIMIT ?`), after, limit)
	if err != nil {
		return nil, unavailable("changes", err)
	}
	out, _, err := scanChanges(rows)
	return out, err
}

// changeRow is a change-log row as the watcher reads it.
type changeRow struct {
	keystore.Change
	// stamp is the row's created_at as the database prints it: with the
	// id, it tells a row the watcher saw from one that replaced it.
	stamp string
}

// changeWindow is what one poll statement sees of the change log.
type changeWindow struct {
	rows   []changeRow // id > after, oldest first, at most limit
	anchor *changeRow  // the row with id == after, when it exists
	latest *changeRow  // the newest row; nil when the log is empty
}

// snapshotExpr is a bound of the statement snapshot on PostgreSQL, as text
// (xid8); SQLite has no concurrent writers to track.
func (s *Store) snapshotExpr(bound string) string {
	if s.dialect == dialectPostgres {
		return "pg_snapshot_" + bound + "(pg_current_snapshot())::text"
	}
	return "'0'"
}

// changesAfter reads, in one statement, the rows after after (up to limit),
// the row at after itself, and the newest row: enough to apply what is new
// and to notice a log whose ids went backwards or whose rows went missing.
func (s *Store) changesAfter(ctx context.Context, after int64, limit int) (changeWindow, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return changeWindow{}, err
	}
	rows, err := s.db.QueryContext(ctx, s.q(`
SELECT w.id, w.source, COALESCE(w.llm_client_id, 0), COALESCE(w.api_key_id, 0), CAST(w.created_at AS TEXT) || '/' || CAST(w.nonce AS TEXT), '0'

FROM (
  SELECT * FROM (SELECT * FROM llmauth_changes WHERE id >= ? ORDER BY id LIMIT ?) a
  UNION ALL
  SELECT * FROM (SELECT * FROM llmauth_changes ORDER BY id DESC LIMIT 1) b
) w ORDER BY w.id`), after, limit+1)
	if err != nil {
		return changeWindow{}, unavailable("changes", err)
	}
	all, _, err := scanChanges(rows)
	if err != nil {
		return changeWindow{}, err
	}
	win := changeWindow{}
	for i := range all {
		ch := &all[i]
		if i > 0 && all[i-1].ID == ch.ID {
			continue // the newest row, also in the range
		}
		switch {
		case ch.ID == after:
			win.anchor = ch
		case ch.ID > after && len(win.rows) < limit:
			win.rows = append(win.rows, *ch)
		}
		win.latest = ch
	}
	return win, nil
}

// missingIDs returns, on PostgreSQL, up to limit ids missing between the
// rows of the change log up to upTo, oldest first.
func (s *Store) missingIDs(ctx context.Context, upTo int64, limit int) ([]int64, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var ids []int64
	err := s.db.SelectContext(ctx, &ids, `
SELECT g FROM (
  SELECT id, lead(id) OVER (ORDER BY id) AS next FROM llmauth_changes WHERE id <= $1
) w, generate_series(w.id + 1, w.next - 1) g
WHERE w.next > w.id + 1
ORDER BY g LIMIT $2`, upTo, limit)
	if err != nil {
		return nil, unavailable("changes", err)
	}
	return ids, nil
}

// newXid takes a fresh transaction id on PostgreSQL (0 on SQLite). Every
// transaction that held a change id missing from a read made before this
// call has a smaller id, so once the snapshot xmin passes it they have all
// ended. (A snapshot's own xmax is no such bound: it is one past the
// newest completed transaction, and an older one may still be running.)
func (s *Store) newXid(ctx context.Context) (uint64, error) {
	if s.dialect != dialectPostgres {
		return 0, nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var v string
	if err := s.db.GetContext(ctx, &v, `SELECT pg_current_xact_id()::text`); err != nil {
		return 0, unavailable("transaction id", err)
	}
	xid, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, unavailable("transaction id", err)
	}
	return xid, nil
}

// pruneChanges deletes change-log rows older than age (by the database's
// clock) and returns how many went. The newest row older than age always
// stays, and every row after it: a watcher that has been quiet has that
// row as its last one seen, and tells by it a quiet log from one whose ids
// went backwards.
func (s *Store) pruneChanges(ctx context.Context, age time.Duration) (int64, error) {
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return 0, err
	}
	secs := int64(age / time.Second)
	query := `DELETE FROM llmauth_changes WHERE id < (
  SELECT MAX(id) FROM llmauth_changes WHERE created_at < now() - make_interval(secs => $1))`
	if s.dialect == dialectSQLite {
		query = `DELETE FROM llmauth_changes WHERE id < (
  SELECT MAX(id) FROM llmauth_changes WHERE created_at < datetime('now', '-' || ? || ' seconds'))`
	}
	res, err := s.db.ExecContext(ctx, query, secs)
	if err != nil {
		return 0, unavailable("prune changes", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, unavailable("prune changes", err)
	}
	return n, nil
}

// holesIn returns the change-log rows with the given ids that exist and,
// on PostgreSQL, the statement snapshot's xmin: every transaction with a
// smaller id has ended, so a hole it held that is still missing was rolled
// back.
func (s *Store) holesIn(ctx context.Context, ids []int64) ([]changeRow, uint64, error) {
	if len(ids) == 0 {
		return nil, 0, nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return nil, 0, err
	}
	cols := `id, source, COALESCE(llm_client_id, 0), COALESCE(api_key_id, 0), CAST(created_at AS TEXT) || '/' || CAST(nonce AS TEXT), ` + s.snapshotExpr("xmin")
	tail := `
UNION ALL SELECT 0, '', 0, 0, '', ` + s.snapshotExpr("xmin") + `
ORDER BY 1`
	var rows *sql.Rows
	var err error
	if s.dialect == dialectPostgres {
		// One array parameter: an IN list would run into the protocol's
		// limit of 65535 parameters.
		rows, err = s.db.QueryContext(ctx, `SELECT `+cols+` FROM llmauth_changes WHERE id = ANY($1)`+tail, pq.Array(ids))
	} else {
		query, args, qerr := sqlx.In(`SELECT `+cols+` FROM llmauth_changes WHERE id IN (?)`+tail, ids)
		if qerr != nil {
			return nil, 0, fmt.Errorf("sqlstore: changes: %w", qerr)
		}
		rows, err = s.db.QueryContext(ctx, query, args...)
	}
	if err != nil {
		return nil, 0, unavailable("changes", err)
	}
	out, xmin, err := scanChanges(rows)
	if len(out) > 0 && out[0].ID == 0 {
		out = out[1:] // the row that carries the snapshot alone
	}
	return out, xmin, err
}

// scanChanges reads change-log rows and closes them, returning the snapshot
// bound each row carries in its last column.
func scanChanges(rows *sql.Rows) ([]changeRow, uint64, error) {
	defer rows.Close()
	var out []changeRow
	var bound string
	for rows.Next() {
		var c changeRow
		if err := rows.Scan(&c.ID, &c.Source, &c.ClientID, &c.KeyID, &c.stamp, &bound); err != nil {
			return nil, 0, unavailable("changes", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, unavailable("changes", err)
	}
	var xid uint64
	if bound != "" {
		var err error
		if xid, err = strconv.ParseUint(bound, 10, 64); err != nil {
			return nil, 0, unavailable("changes", fmt.Errorf("snapshot bound %q: %w", bound, err))
		}
	}
	return out, xid, nil
}
