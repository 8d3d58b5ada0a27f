package main

import (
	"errors"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() {
	// Help lists the commands in the order they are added: serve, the
	// default, first.
	cobra.EnableCommandSorting = false
}

const rootLong = `example: the llmauth example server and its admin CLI.

LLM clients are served at /v1/clients/NAME/…. A client with no active API key
is open to anonymous callers; once it has one, every call needs
"Authorization: Bearer TOKEN" with a valid key of that client.

With no command, example serves HTTP and takes the flags of serve (see
example serve --help).
`

// newRootCmd returns the command tree of one invocation. Every command
// reports its errors to the caller: usage errors as *usageError, so that
// run can tell exit 2 from exit 1, and none of them printed by cobra.
func newRootCmd(a *app) *cobra.Command {
	serve := newCmdServe(a, nil)
	root := &cobra.Command{
		Use:     "example [COMMAND] [flags] [arguments]",
		Short:   "The llmauth example server and its admin CLI",
		Long:    rootLong,
		Version: version(),
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				return usagef("unknown command %q: did you mean %q? (see example --help)", args[0], s[0])
			}
			return usagef("unknown command %q (see example --help)", args[0])
		},
		RunE:          serve.RunE,
		SilenceErrors: true,
		SilenceUsage:  true,

		SuggestionsMinimumDistance: 2,
	}
	if _, ok := a.stdout.(*resultWriter); !ok {
		a.stdout = &resultWriter{w: a.stdout}
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetVersionTemplate("llmauth example {{.Version}}\n")
	root.PersistentFlags().StringVar(&a.databaseFlag, "database-url", "",
		"database `URL`: postgres://…, postgresql://…, sqlite:PATH or file:PATH (default $DATABASE_URL, else sqlite:llmauth.db)")
	// The flags of serve, the default command, on the root too: copies
	// that fill the same options, hidden from the root's help.
	serve.Flags().VisitAll(func(f *pflag.Flag) {
		hidden := *f
		hidden.Hidden = true
		root.Flags().AddFlag(&hidden)
		if complete, ok := serve.GetFlagCompletionFunc(f.Name); ok {
			_ = root.RegisterFlagCompletionFunc(f.Name, complete)
		}
	})
	root.SetFlagErrorFunc(flagError(serve))
	root.SetHelpFunc(printHelp)
	root.SetHelpCommand(newCmdHelp())

	root.AddCommand(serve, newCmdMigrate(a, nil), newCmdClients(a), newCmdKeys(a), newCmdVersion(a))

	// Cobra adds these when it executes; added now, help lists them and
	// the loop below fixes them up like the others.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	visit(root, func(c *cobra.Command) {
		c.DisableFlagsInUseLine = true // every Use spells out its synopsis
		c.Flags().SortFlags = false    // help lists them as they are added
		c.InitDefaultHelpFlag()
		if c.HasSubCommands() && c != root {
			// A group: "example keys" alone is bad usage, not a request
			// for help, and so is an unknown subcommand.
			c.Args, c.RunE = cobra.ArbitraryArgs, groupRun
		}
		if validate := c.Args; validate != nil {
			c.Args = func(cmd *cobra.Command, args []string) error {
				// Cobra's own validators (completion's) return plain errors.
				err := validate(cmd, args)
				var ue *usageError
				if err != nil && !errors.As(err, &ue) {
					err = &usageError{msg: err.Error()}
				}
				return err
			}
		}
	})
	return root
}

// visit calls fn on c and every command below it.
func visit(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		visit(sub, fn)
	}
}

// path is a command as typed after the program's name: "keys create", or
// "" for the root.
func path(c *cobra.Command) string {
	_, p, _ := strings.Cut(c.CommandPath(), " ")
	return p
}

// prefix is "PATH: " before a command's messages, or "" for the root.
func prefix(p string) string {
	if p == "" {
		return ""
	}
	return p + ": "
}

// groupRun runs when a group ("clients", "keys") is given no subcommand
// that it knows.
func groupRun(cmd *cobra.Command, args []string) error {
	var names []string
	for _, sub := range cmd.Commands() {
		if sub.IsAvailableCommand() {
			names = append(names, sub.Name())
		}
	}
	p := path(cmd)
	if len(args) == 0 {
		return usagef("%s: missing subcommand: %s (see example %s --help)", p, strings.Join(names, ", "), p)
	}
	return usagef("%s: unknown subcommand %q: want %s (see example %s --help)", p, args[0], strings.Join(names, ", "), p)
}

// exactArgs accepts exactly the named positional arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return usagef("%s: missing %s (usage: %s)", path(cmd), names[len(args)], cmd.UseLine())
		case len(args) > len(names):
			return usagef("%s: unexpected argument %q (usage: %s)", path(cmd), args[len(names)], cmd.UseLine())
		}
		return nil
	}
}

// flagError turns a flag that cannot be parsed into a usage error. A flag
// of serve given to another command, typically before its command word,
// says so.
func flagError(serve *cobra.Command) func(*cobra.Command, error) error {
	return func(cmd *cobra.Command, err error) error {
		p := path(cmd)
		var invalid *pflag.InvalidValueError
		if errors.As(err, &invalid) && errors.Is(err, errBadDuration) {
			return usagef("%sinvalid --%s %q: %s", prefix(p), invalid.GetFlag().Name, invalid.GetValue(), durationHint)
		}
		var unknown *pflag.NotExistError
		if errors.As(err, &unknown) && unknown.GetSpecifiedShortnames() == "" && cmd != serve && cmd.HasParent() &&
			serve.LocalFlags().Lookup(unknown.GetSpecifiedName()) != nil {
			return usagef("%s: --%s applies to serve only (see example serve --help)", p, unknown.GetSpecifiedName())
		}
		if p == "" {
			return usagef("%v (see example --help)", err)
		}
		return usagef("%s: %v (see example %s --help)", p, err, p)
	}
}
