package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

type keysRotateOptions struct {
	*app
	id    string
	grace time.Duration
	json  bool
}

func newCmdKeysRotate(a *app, runF func(context.Context, *keysRotateOptions) error) *cobra.Command {
	o := &keysRotateOptions{app: a}
	if runF == nil {
		runF = keysRotateRun
	}
	cmd := &cobra.Command{
		Use:   "rotate ID [--grace DURATION] [--json]",
		Short: "Create a successor to a key, for the same client and with the same name",
		Long: "Create a successor to a key, for the same client and with the same name.\n\n" +
			"Prints the new token like \"keys create\". The old key stays valid until it\n" +
			"is revoked, or until --grace has passed when that is given.\n",
		Args:              exactArgs("ID"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.id = args[0]
			return runF(cmd.Context(), o)
		},
	}
	cmd.Flags().DurationVar(&o.grace, "grace", 0, "let the old key expire after `DURATION` (default: valid until revoked)")
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	return cmd
}

func keysRotateRun(ctx context.Context, o *keysRotateOptions) error {
	id, err := parseKeyID(o.id)
	if err != nil {
		return err
	}
	if o.grace < 0 {
		return usagef("keys rotate: --grace must not be negative, got %s", o.grace)
	}
	return o.withStore(ctx, func(store *sqlstore.Store) error {
		key, err := store.RotateKey(ctx, id, keystore.RotateSpec{Grace: o.grace})
		if err != nil {
			return err
		}
		if err := o.printNewKey(key, o.json); err != nil {
			return err
		}
		old := "stays valid until revoked (example keys revoke " + strconv.FormatInt(id, 10) + ")"
		if o.grace > 0 {
			if k, err := store.GetKey(ctx, id); err == nil && k.ExpiresAt != nil {
				old = "expires at " + formatTime(k.ExpiresAt, "")
			}
		}
		fmt.Fprintf(o.stderr, "rotated key %d of client %s: new key %d; the token is shown only now; the old key %s\n", id, key.Client, key.ID, old)
		return nil
	})
}
