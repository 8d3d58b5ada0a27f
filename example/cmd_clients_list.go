package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore/sqlstore"
)

type clientsListOptions struct {
	*app
	json bool
}

func newCmdClientsList(a *app, runF func(context.Context, *clientsListOptions) error) *cobra.Command {
	o := &clientsListOptions{app: a}
	if runF == nil {
		runF = clientsListRun
	}
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List clients and whether each requires a key",
		Long: "List clients and whether each requires a key.\n\n" +
			"A client requires a key while it has an active key or is locked.\n" +
			"Prints a table, or with --json a JSON array of objects with name,\n" +
			"requires_key, locked, active_keys, keys and created_at ([] when there are\n" +
			"none).\n",
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              func(cmd *cobra.Command, _ []string) error { return runF(cmd.Context(), o) },
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	return cmd
}

// clientView is a client as "clients list --json" prints it.
type clientView struct {
	Name        string    `json:"name"`
	RequiresKey bool      `json:"requires_key"`
	Locked      bool      `json:"locked"`
	ActiveKeys  int       `json:"active_keys"`
	Keys        int       `json:"keys"`
	CreatedAt   time.Time `json:"created_at"`
}

func clientsListRun(ctx context.Context, o *clientsListOptions) error {
	return o.withStore(ctx, reads, func(store *sqlstore.Store) error {
		clients, err := store.ListClients(ctx)
		if err != nil {
			return err
		}
		if o.json {
			out := make([]clientView, 0, len(clients))
			for _, c := range clients {
				out = append(out, clientView{Name: c.Name, RequiresKey: c.RequiresKey, Locked: c.Locked, ActiveKeys: c.ActiveKeys, Keys: c.Keys, CreatedAt: c.CreatedAt.UTC()})
			}
			return o.printJSON(out)
		}
		tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tREQUIRES KEY\tLOCKED\tACTIVE KEYS\tKEYS\tCREATED")
		for _, c := range clients {
			requires := "no (open)"
			if c.RequiresKey {
				requires = "yes"
			}
			locked := "no"
			if c.Locked {
				locked = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", c.Name, requires, locked, c.ActiveKeys, c.Keys, formatTime(&c.CreatedAt, ""))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(clients) == 0 {
			fmt.Fprintln(o.stderr, "no clients yet: create one with \"example clients create NAME\"")
		}
		return nil
	})
}
