package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// migrateOptions are the flags of migrate: the database alone.
type migrateOptions struct {
	*app
}

func newCmdMigrate(a *app, runF func(context.Context, *migrateOptions) error) *cobra.Command {
	o := &migrateOptions{app: a}
	if runF == nil {
		runF = migrateRun
	}
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending database migrations (every command also does)",
		Long:  "Apply pending database migrations; every command also does. Idempotent.\nCreates a SQLite file that does not exist yet. Prints nothing on stdout.\n",
		Args:  exactArgs(),
		RunE:  func(cmd *cobra.Command, _ []string) error { return runF(cmd.Context(), o) },
	}
}

func migrateRun(ctx context.Context, o *migrateOptions) error {
	_, db, err := o.openStore(ctx, writes)
	if err != nil {
		return err
	}
	defer db.Close()
	current, _, err := sqlstore.MigrationVersion(ctx, db)
	if err != nil {
		return o.databaseError(err)
	}
	fmt.Fprintf(o.stderr, "database %s is at schema version %d\n", o.databaseName(), current)
	return nil
}
