package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// keysStateOptions are the options of "keys revoke" and "keys activate".
type keysStateOptions struct {
	*app
	id     string
	active bool // the state to set: true for activate
}

func newCmdKeysRevoke(a *app, runF func(context.Context, *keysStateOptions) error) *cobra.Command {
	o := &keysStateOptions{app: a, active: false}
	if runF == nil {
		runF = keysSetStateRun
	}
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke (deactivate) a key",
		Long: "Revoke (deactivate) a key.\n\n" +
			"Prints nothing on stdout. When it was its client's last active key, warns\n" +
			"on stderr that the client now accepts anonymous requests. Running servers\n" +
			"see the change within a second. \"keys activate ID\" undoes it.\n",
		Args:              exactArgs("ID"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.id = args[0]
			return runF(cmd.Context(), o)
		},
	}
}

// keysSetStateRun revokes or activates a key.
func keysSetStateRun(ctx context.Context, o *keysStateOptions) error {
	id, err := parseKeyID(o.id)
	if err != nil {
		return err
	}
	return o.withStore(ctx, writes, func(store *sqlstore.Store) error {
		before, err := store.GetKey(ctx, id)
		if err != nil {
			return err
		}
		var k keystore.APIKey
		if o.active {
			k, err = store.ActivateKey(ctx, id)
		} else {
			k, err = store.DeactivateKey(ctx, id)
		}
		if err != nil {
			return err
		}
		verb, state := "revoked", "revoked"
		if o.active {
			verb, state = "activated", "active"
		}
		// The store writes only a real change, and a write moves
		// updated_at: unchanged, the key was already in that state, even
		// if someone else changed it between the two reads.
		if k.UpdatedAt.Equal(before.UpdatedAt) {
			// Nothing changed, so there is nothing new to warn about.
			fmt.Fprintf(o.stderr, "key %d %q of client %s was already %s\n", k.ID, k.Name, k.Client, state)
			return nil
		}
		fmt.Fprintf(o.stderr, "%s key %d %q of client %s\n", verb, k.ID, k.Name, k.Client)
		if !o.active {
			return o.warnIfOpen(ctx, store, k.Client)
		}
		return nil
	})
}
