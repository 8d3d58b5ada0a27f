package sqlstore

import (
	"fmt"

	"github.com/llmauth/llmauth/keystore"
)

// ErrDatabaseReplaced: the SQLite file was replaced or removed while the
// store had it open, so what the store would read is no longer the
// database. It wraps keystore.ErrUnavailable; a restart opens the new file.
var ErrDatabaseReplaced = fmt.Errorf("%w: the SQLite file was replaced or removed while open", keystore.ErrUnavailable)

// unavailable wraps a database error as keystore.ErrUnavailable with the
// operation's name: the one place this package's prefix is added to it.
func unavailable(op string, err error) error {
	return fmt.Errorf("sqlstore: %s: %w: %w", op, keystore.ErrUnavailable, err)
}
