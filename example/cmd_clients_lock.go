package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// clientsLockOptions are the options of "clients lock" and "clients unlock".
type clientsLockOptions struct {
	*app
	name   string
	locked bool // the state to set: true for lock
}

func newCmdClientsLock(a *app, runF func(context.Context, *clientsLockOptions) error) *cobra.Command {
	o := &clientsLockOptions{app: a, locked: true}
	if runF == nil {
		runF = clientsSetLockedRun
	}
	return &cobra.Command{
		Use:   "lock NAME",
		Short: "Lock a client: it requires a key even when it has none",
		Long: "Lock a client: it requires a key even when it has none, so that every\n" +
			"caller gets 401 until a key exists. Revoking or deleting its last key no\n" +
			"longer opens it. Locking a locked client changes nothing.\n" +
			"Prints nothing on stdout. Running servers see the change within a second.\n" +
			"\"clients unlock NAME\" undoes it.\n",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.name = args[0]
			return runF(cmd.Context(), o)
		},
	}
}

// clientsSetLockedRun locks or unlocks a client.
func clientsSetLockedRun(ctx context.Context, o *clientsLockOptions) error {
	if err := checkClientName(o.name); err != nil {
		return err
	}
	return o.withStore(ctx, writes, func(store *sqlstore.Store) error {
		before, err := store.GetClient(ctx, o.name)
		if err != nil {
			return err
		}
		var c keystore.Client
		if o.locked {
			c, err = store.LockClient(ctx, o.name)
		} else {
			c, err = store.UnlockClient(ctx, o.name)
		}
		if err != nil {
			return err
		}
		verb, state := "locked", "locked"
		if !o.locked {
			verb, state = "unlocked", "unlocked"
		}
		// The store writes only a real change, and a write moves
		// updated_at: unchanged, the client was already in that state.
		if c.UpdatedAt.Equal(before.UpdatedAt) {
			fmt.Fprintf(o.stderr, "client %s was already %s\n", c.Name, state)
			return nil
		}
		if o.locked {
			fmt.Fprintf(o.stderr, "%s client %s: it requires a key even without one (every caller gets 401 until it has a key)\n", verb, c.Name)
			return nil
		}
		fmt.Fprintf(o.stderr, "%s client %s\n", verb, c.Name)
		return o.warnIfOpen(ctx, store, c.Name)
	})
}
