package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

const databaseHelp = `Database (every command; pending migrations are applied first):
  --database-url URL, else $DATABASE_URL, else the embedded default: the
  SQLite file llmauth.db in the working directory.
    postgres://… or postgresql://…   PostgreSQL
    sqlite:PATH or file:PATH          SQLite file (several processes may share it)
  A command that writes creates a missing SQLite file and says so on stderr;
  one that only reads (clients list, keys list) answers as an empty database
  would, creates nothing, and says on stderr which file it looked for.
`

const exitHelp = `A command's flags come after its command words (--database-url anywhere),
before or after its arguments; -flag and --flag are the same.
A DURATION is a Go duration (90s, 15m, 720h) or days of 24h (30d, 1d12h).
Only documented results (and help asked for) go to stdout; messages go to stderr.
Exit status: 0 success; 2 bad usage or bad input (one-line reason on stderr);
1 any other failure (for example an unreachable database).
`

// newCmdHelp is "example help [COMMAND]". Unlike cobra's own, it refuses
// an unknown command with exit 2.
func newCmdHelp() *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND]",
		Short: "Show a command's help",
		Long:  "Show a command's help: the same as \"example COMMAND --help\".\n",
		Args:  cobra.ArbitraryArgs,
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			var out []cobra.Completion
			if target, rest, err := cmd.Root().Find(args); err == nil && len(rest) == 0 {
				for _, sub := range target.Commands() {
					if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
						out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
					}
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			target, rest, err := cmd.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return usagef("help: unknown command %q (see example --help)", strings.Join(args, " "))
			}
			return target.Help()
		},
	}
}

// printHelp is the help of every command. Help that was asked for is a
// result: it goes to stdout, so that it pages.
func printHelp(cmd *cobra.Command, _ []string) {
	w := cmd.OutOrStdout()
	about := strings.TrimSpace(cmd.Long)
	if about == "" {
		about = cmd.Short + "."
	}
	fmt.Fprintf(w, "%s\n\nUsage:\n  %s\n", about, cmd.UseLine())
	if cmd.HasAvailableSubCommands() {
		fmt.Fprint(w, "\nCommands:\n")
		for _, c := range leafCommands(cmd) {
			fmt.Fprintf(w, "  %s\n        %s\n", strings.TrimPrefix(c.UseLine(), cmd.Root().Name()+" "), c.Short)
		}
	}
	if cmd.HasAvailableLocalFlags() {
		fmt.Fprintf(w, "\nFlags:\n%s", cmd.LocalFlags().FlagUsagesWrapped(80))
	}
	if cmd.HasAvailableInheritedFlags() {
		fmt.Fprintf(w, "\nGlobal flags:\n%s", cmd.InheritedFlags().FlagUsagesWrapped(80))
	}
	fmt.Fprintf(w, "\n%s\n%s", databaseHelp, exitHelp)
	if cmd.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\nRun \"%s COMMAND --help\" for a command's flags.\n", cmd.CommandPath())
	}
}

// leafCommands lists the commands below c that do something, in help
// order: the subcommands of groups rather than the groups.
func leafCommands(c *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, sub := range c.Commands() {
		switch {
		case sub.Hidden || !sub.IsAvailableCommand() && sub.Name() != "help":
		case sub.HasAvailableSubCommands():
			out = append(out, leafCommands(sub)...)
		default:
			out = append(out, sub)
		}
	}
	return out
}
