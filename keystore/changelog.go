package keystore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// LatestChange returns the id of the newest change-log row, 0 when empty.
func (s *SQLStore) LatestChange(ctx context.Context) (int64, error) {
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

// ChangesSince returns up to limit change-log rows with id > after, oldest
// first: one indexed range scan.
func (s *SQLStore) ChangesSince(ctx context.Context, after int64, limit int) ([]Change, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, s.q(`
SELECT id, source, COALESCE(llm_client_id, 0), COALESCE(api_key_id, 0)
FROM llmauth_changes WHERE id > ? ORDER BY id LIMIT ?`), after, limit)
	if err != nil {
		return nil, unavailable("changes", err)
	}
	return scanChanges(rows)
}

// PruneChanges deletes change-log rows older than age (by the database's
// clock) and returns how many went.
func (s *SQLStore) PruneChanges(ctx context.Context, age time.Duration) (int64, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return 0, err
	}
	secs := int64(age / time.Second)
	query := `DELETE FROM llmauth_changes WHERE created_at < now() - make_interval(secs => $1)`
	if s.dialect == dialectSQLite {
		query = `DELETE FROM llmauth_changes WHERE created_at < datetime('now', '-' || ? || ' seconds')`
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

// ChangesIn returns the change-log rows with the given ids that exist.
func (s *SQLStore) ChangesIn(ctx context.Context, ids []int64) ([]Change, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.file.check(); err != nil {
		return nil, err
	}
	query, args, err := sqlx.In(`
SELECT id, source, COALESCE(llm_client_id, 0), COALESCE(api_key_id, 0)
FROM llmauth_changes WHERE id IN (?) ORDER BY id`, ids)
	if err != nil {
		return nil, fmt.Errorf("keystore: changes: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, unavailable("changes", err)
	}
	return scanChanges(rows)
}

// scanChanges reads change-log rows and closes them.
func scanChanges(rows *sql.Rows) ([]Change, error) {
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var c Change
		if err := rows.Scan(&c.ID, &c.Source, &c.ClientID, &c.KeyID); err != nil {
			return nil, unavailable("changes", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("changes", err)
	}
	return out, nil
}
