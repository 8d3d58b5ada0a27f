package main

import (
	"context"

	"github.com/spf13/cobra"
)

func newCmdKeysActivate(a *app, runF func(context.Context, *keysStateOptions) error) *cobra.Command {
	o := &keysStateOptions{app: a, active: true}
	if runF == nil {
		runF = keysSetStateRun
	}
	return &cobra.Command{
		Use:               "activate ID",
		Short:             "Make a revoked key active again",
		Long:              "Make a revoked key active again.\nPrints nothing on stdout.\n",
		Args:              exactArgs("ID"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.id = args[0]
			return runF(cmd.Context(), o)
		},
	}
}
