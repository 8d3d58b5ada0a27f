package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// newCmdVersion is "example version", the same as "example --version".
func newCmdVersion(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Long:  "Print one line on stdout: the module version and, when known, the commit.\nThe same as \"example --version\".\n",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(a.stdout, "llmauth example %s\n", cmd.Root().Version)
			return err
		},
	}
}

// version is the module version and, when known, the commit.
func version() string {
	version, revision := "(devel)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = " " + s.Value
			}
		}
	}
	return version + revision
}
