package main

import (
	"context"

	"github.com/spf13/cobra"
)

func newCmdClientsUnlock(a *app, runF func(context.Context, *clientsLockOptions) error) *cobra.Command {
	o := &clientsLockOptions{app: a, locked: false}
	if runF == nil {
		runF = clientsSetLockedRun
	}
	return &cobra.Command{
		Use:   "unlock NAME",
		Short: "Lift a client's lock: with no active key it is open again",
		Long: "Lift a client's lock. With no active key it then accepts anonymous\n" +
			"requests, and a warning on stderr says so. Unlocking an unlocked client\n" +
			"changes nothing. Prints nothing on stdout. Running servers see the change\n" +
			"within a second.\n",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.name = args[0]
			return runF(cmd.Context(), o)
		},
	}
}
