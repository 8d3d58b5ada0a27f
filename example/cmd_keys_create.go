package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

type keysCreateOptions struct {
	*app
	client       string
	name         string
	description  string
	expires      time.Duration
	expiresSet   bool // "--expires 0" is refused, not read as "never"
	expiresNever bool // --expires never: the default, said out loud
	json         bool
}

func newCmdKeysCreate(a *app, runF func(context.Context, *keysCreateOptions) error) *cobra.Command {
	o := &keysCreateOptions{app: a}
	if runF == nil {
		runF = keysCreateRun
	}
	cmd := &cobra.Command{
		Use:   "create --client NAME [--name LABEL] [--description TEXT] [--expires DURATION] [--json]",
		Short: "Provision a new API key for a client",
		Long: "Provision a new API key for a client.\n\n" +
			"Prints the token alone on one line, or with --json one JSON object with id,\n" +
			"token, client, name, prefix, expires_at (null when none) and created_at.\n" +
			"The token is shown only now: it is never stored, only its SHA-256 digest.\n" +
			"If it cannot be printed (stdout full, closed or a broken pipe), the key is\n" +
			"deleted again and the command fails (with stdout sent to " + os.DevNull + ", the\n" +
			"key is created and the token discarded, with a warning).\n" +
			"The client's first active key makes it require a key from then on.\n" +
			"An expired key still locks its client: revoke it to open the client.\n",
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.expiresSet = cmd.Flags().Changed("expires")
			return runF(cmd.Context(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.client, "client", "", "the client `NAME` (required)")
	fs.StringVar(&o.name, "name", "", "a `LABEL` for people, at most 200 characters")
	fs.StringVar(&o.description, "description", "", "free `TEXT`, at most 1000 characters")
	expiresVar(fs, &o.expires, &o.expiresNever, "expire the key `DURATION` from now (90s, 720h, 30d, 1d12h), or never (the default)")
	fs.BoolVar(&o.json, "json", false, "print JSON")
	return cmd
}

// expiryFromNow checks --expires of command what and returns the expiry
// it asks for, or nil for never.
func expiryFromNow(what string, d time.Duration, never bool) (*time.Time, error) {
	if never {
		return nil, nil
	}
	if d <= 0 {
		return nil, usagef("%s: --expires must be a positive duration or never, got %s", what, formatDuration(d))
	}
	at := time.Now().Add(d)
	return &at, nil
}

func keysCreateRun(ctx context.Context, o *keysCreateOptions) error {
	if err := checkClientFlag("keys create", o.client); err != nil {
		return err
	}
	spec := keystore.KeySpec{Name: o.name, Description: o.description}
	if o.expiresSet {
		at, err := expiryFromNow("keys create", o.expires, o.expiresNever)
		if err != nil {
			return err
		}
		spec.ExpiresAt = at
	}
	if err := o.refuseNullStdout("keys create"); err != nil {
		return err
	}
	return o.withStore(ctx, writes, func(store *sqlstore.Store) error {
		// A locked client required a key already, with or without one.
		before, err := store.ClientState(ctx, o.client)
		if err != nil {
			return err
		}
		key, err := store.CreateKey(ctx, o.client, spec)
		if err != nil {
			return err
		}
		if err := o.deliverNewKey(ctx, store, key, o.json, "keys create", ""); err != nil {
			return err
		}
		fmt.Fprintf(o.stderr, "created key %d %q for client %s; the token is shown only now (prefix %s)\n", key.ID, key.Name, key.Client, key.Prefix)
		if !before.RequiresKey {
			fmt.Fprintf(o.stderr, "client %s now requires a key: anonymous requests are refused\n", key.Client)
		}
		return nil
	})
}
