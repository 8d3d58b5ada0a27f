package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore/sqlstore"
)

type clientsDeleteOptions struct {
	*app
	name string
}

func newCmdClientsDelete(a *app, runF func(context.Context, *clientsDeleteOptions) error) *cobra.Command {
	o := &clientsDeleteOptions{app: a}
	if runF == nil {
		runF = clientsDeleteRun
	}
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete a client and the keys linked only to it",
		Long:              "Delete a client and the keys linked only to it.\nPrints nothing on stdout.\n",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.name = args[0]
			return runF(cmd.Context(), o)
		},
	}
}

func clientsDeleteRun(ctx context.Context, o *clientsDeleteOptions) error {
	if err := checkClientName(o.name); err != nil {
		return err
	}
	return o.withStore(ctx, writes, func(store *sqlstore.Store) error {
		if err := store.DeleteClient(ctx, o.name); err != nil {
			return err
		}
		fmt.Fprintf(o.stderr, "deleted client %s and the keys linked only to it\n", o.name)
		return nil
	})
}
