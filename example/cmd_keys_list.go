package main

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

type keysListOptions struct {
	*app
	client string
	json   bool
}

func newCmdKeysList(a *app, runF func(context.Context, *keysListOptions) error) *cobra.Command {
	o := &keysListOptions{app: a}
	if runF == nil {
		runF = keysListRun
	}
	cmd := &cobra.Command{
		Use:   "list --client NAME [--json]",
		Short: "List a client's keys (never their token or digest)",
		Long: "List a client's keys, never their token or digest.\n\n" +
			"Prints a table, or with --json a JSON array of objects with id, name, prefix,\n" +
			"state (active, expired or revoked), active, expires_at, last_used_at and\n" +
			"created_at ([] when there are none). last_used_at is written by running\n" +
			"servers every --usage-flush-interval and at shutdown.\n",
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              func(cmd *cobra.Command, _ []string) error { return runF(cmd.Context(), o) },
	}
	cmd.Flags().StringVar(&o.client, "client", "", "the client `NAME` (required)")
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	return cmd
}

// keyView is a key as "keys list --json" prints it: never its token or
// digest.
type keyView struct {
	ID          int64             `json:"id"`
	Client      string            `json:"client"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Prefix      string            `json:"prefix"`
	State       keystore.KeyState `json:"state"`
	Active      bool              `json:"active"`
	ExpiresAt   *time.Time        `json:"expires_at"`
	LastUsedAt  *time.Time        `json:"last_used_at"`
	CreatedAt   time.Time         `json:"created_at"`
}

func keysListRun(ctx context.Context, o *keysListOptions) error {
	if err := checkClientFlag("keys list", o.client); err != nil {
		return err
	}
	return o.withStore(ctx, reads, func(store *sqlstore.Store) error {
		keys, err := store.ListKeys(ctx, o.client)
		if err != nil {
			return err
		}
		if o.json {
			out := make([]keyView, 0, len(keys))
			for _, k := range keys {
				out = append(out, keyView{
					ID: k.ID, Client: k.Client, Name: k.Name, Description: k.Description, Prefix: k.Prefix,
					State: k.State, Active: k.Active, ExpiresAt: k.ExpiresAt, LastUsedAt: k.LastUsedAt, CreatedAt: k.CreatedAt.UTC(),
				})
			}
			return o.printJSON(out)
		}
		tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tPREFIX\tSTATE\tEXPIRES\tLAST USED\tCREATED")
		for _, k := range keys {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, strconv.Quote(k.Name), k.Prefix, k.State,
				formatTime(k.ExpiresAt, "never"), formatTime(k.LastUsedAt, "never"), formatTime(&k.CreatedAt, ""))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(keys) == 0 {
			fmt.Fprintf(o.stderr, "client %s has no keys: it is open to anonymous requests\n", o.client)
		}
		return nil
	})
}
