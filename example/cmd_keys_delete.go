package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore/sqlstore"
)

type keysDeleteOptions struct {
	*app
	id string
}

func newCmdKeysDelete(a *app, runF func(context.Context, *keysDeleteOptions) error) *cobra.Command {
	o := &keysDeleteOptions{app: a}
	if runF == nil {
		runF = keysDeleteRun
	}
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a key for good",
		Long: "Delete a key for good.\n\n" +
			"Prints nothing on stdout. Warns like \"keys revoke\" when the client is left\n" +
			"without an active key.\n",
		Args:              exactArgs("ID"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.id = args[0]
			return runF(cmd.Context(), o)
		},
	}
}

func keysDeleteRun(ctx context.Context, o *keysDeleteOptions) error {
	id, err := parseKeyID(o.id)
	if err != nil {
		return err
	}
	return o.withStore(ctx, writes, func(store *sqlstore.Store) error {
		k, err := store.GetKey(ctx, id)
		if err != nil {
			return err
		}
		if err := store.DeleteKey(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(o.stderr, "deleted key %d %q of client %s\n", k.ID, k.Name, k.Client)
		return o.warnIfOpen(ctx, store, k.Client)
	})
}
