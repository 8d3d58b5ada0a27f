package sqlstore

import "github.com/jmoiron/sqlx"

// DB gives the package's external tests the pool, for plain SQL as an
// operator would type it.
func (s *Store) DB() *sqlx.DB { return s.db }

// LatestChange gives the tests the newest change id.
var LatestChange = (*Store).latestChange
