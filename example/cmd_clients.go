package main

import (
	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore"
)

// newCmdClients is the group of the clients commands.
func newCmdClients(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "clients COMMAND",
		Short: "Manage LLM clients",
		Long:  "Manage LLM clients. A client requires a key while it has an active key or\nis locked; otherwise it is open to anonymous callers.\n",
	}
	cmd.AddCommand(newCmdClientsCreate(a, nil), newCmdClientsList(a, nil), newCmdClientsLock(a, nil),
		newCmdClientsUnlock(a, nil), newCmdClientsDelete(a, nil))
	return cmd
}

// checkClientName refuses a bad name before the database is touched.
func checkClientName(name string) error {
	if !keystore.ValidClientName(name) {
		if len(name) > 70 {
			name = name[:70] + "…"
		}
		return usagef("invalid client name %q: must match ^[a-z0-9][a-z0-9-]{0,62}$", name)
	}
	return nil
}
