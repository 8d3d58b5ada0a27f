package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

type keysCreateOptions struct {
	*app
	client      string
	name        string
	description string
	expires     time.Duration
	expiresSet  bool // "--expires 0" is refused, not read as "never"
	json        bool
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
	fs.DurationVar(&o.expires, "expires", 0, "expire the key after `DURATION` (a positive Go duration: 90s, 720h); default never")
	fs.BoolVar(&o.json, "json", false, "print JSON")
	return cmd
}

func keysCreateRun(ctx context.Context, o *keysCreateOptions) error {
	if err := checkClientFlag("keys create", o.client); err != nil {
		return err
	}
	spec := keystore.KeySpec{Name: o.name, Description: o.description}
	if o.expiresSet {
		if o.expires <= 0 {
			return usagef("keys create: --expires must be a positive duration, got %s", o.expires)
		}
		at := time.Now().Add(o.expires)
		spec.ExpiresAt = &at
	}
	return o.withStore(ctx, func(store *sqlstore.Store) error {
		// A locked client required a key already, with or without one.
		before, err := store.ClientState(ctx, o.client)
		if err != nil {
			return err
		}
		key, err := store.CreateKey(ctx, o.client, spec)
		if err != nil {
			return err
		}
		if err := o.printNewKey(key, o.json); err != nil {
			return err
		}
		fmt.Fprintf(o.stderr, "created key %d %q for client %s; the token is shown only now (prefix %s)\n", key.ID, key.Name, key.Client, key.Prefix)
		if !before.RequiresKey {
			fmt.Fprintf(o.stderr, "client %s now requires a key: anonymous requests are refused\n", key.Client)
		}
		return nil
	})
}
