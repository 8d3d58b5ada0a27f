package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore/sqlstore"
)

type clientsCreateOptions struct {
	*app
	name string
}

func newCmdClientsCreate(a *app, runF func(context.Context, *clientsCreateOptions) error) *cobra.Command {
	o := &clientsCreateOptions{app: a}
	if runF == nil {
		runF = clientsCreateRun
	}
	return &cobra.Command{
		Use:   "create NAME",
		Short: "Create an LLM client, open to anonymous callers until it gets a key",
		Long: "Create an LLM client, open to anonymous callers until it gets a key.\n\n" +
			"NAME must match ^[a-z0-9][a-z0-9-]{0,62}$. The client is served at\n" +
			"/v1/clients/NAME/chat and /v1/clients/NAME/chat/completions.\nPrints nothing on stdout.\n",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.name = args[0]
			return runF(cmd.Context(), o)
		},
	}
}

func clientsCreateRun(ctx context.Context, o *clientsCreateOptions) error {
	if err := checkClientName(o.name); err != nil {
		return err
	}
	return o.withStore(ctx, writes, func(store *sqlstore.Store) error {
		if _, err := store.CreateClient(ctx, o.name); err != nil {
			return err
		}
		fmt.Fprintf(o.stderr, "created client %s: open to anonymous requests until it gets a key (example keys create --client %s)\n", o.name, o.name)
		return nil
	})
}
