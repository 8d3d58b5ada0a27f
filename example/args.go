package main

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// pflagArgs rewrites a command line so that pflag reads it as the Go flag
// package, which this CLI was first built on, did: "-flag" is "--flag",
// and a negative number that no flag takes as its value is an argument,
// so that "keys revoke -1" is refused as a bad key id, not as an unknown
// shorthand flag -1.
func pflagArgs(root *cobra.Command, args []string) []string {
	if len(args) > 0 && strings.HasPrefix(args[0], cobra.ShellCompRequestCmd) {
		return args // a completion request: the shell's words, as typed
	}
	args = doubleDash(allFlags(root), args)
	cmd, rest, err := root.Find(args)
	if err != nil {
		return args
	}
	var flags, positional []string
	negative := false
	for i := 0; i < len(rest); i++ {
		s := rest[i]
		switch {
		case s == "--":
			positional = append(positional, rest[i+1:]...)
			i = len(rest)
		case isNegativeNumber(s):
			positional, negative = append(positional, s), true
		case len(s) > 1 && s[0] == '-':
			flags = append(flags, s)
			if takesValue(cmd.Flags(), s) && i+1 < len(rest) {
				i++
				flags = append(flags, rest[i])
			}
		default:
			positional = append(positional, s)
		}
	}
	if !negative {
		return args
	}
	// After "--" pflag takes everything as an argument, in order.
	return slices.Concat(strings.Fields(path(cmd)), flags, []string{"--"}, positional)
}

// doubleDash rewrites "-name" and "-name=value" as "--name…" where name
// is a flag of some command. Which arguments are flags' values is decided
// by the flags of every command together: a name means the same kind of
// flag in every command that has it.
func doubleDash(fs *pflag.FlagSet, args []string) []string {
	out := slices.Clone(args)
	for i := 0; i < len(out) && out[i] != "--"; i++ {
		s := out[i]
		if len(s) > 2 && s[0] == '-' && s[1] != '-' {
			if name, _, _ := strings.Cut(s[1:], "="); fs.Lookup(name) != nil {
				out[i] = "-" + s
			}
		}
		if takesValue(fs, out[i]) {
			i++
		}
	}
	return out
}

// allFlags collects the flags of every command below root.
func allFlags(root *cobra.Command) *pflag.FlagSet {
	all := pflag.NewFlagSet("all", pflag.ContinueOnError)
	visit(root, func(c *cobra.Command) {
		all.AddFlagSet(c.PersistentFlags())
		all.AddFlagSet(c.Flags())
	})
	return all
}

// takesValue reports whether pflag reads the argument after the flag s as
// its value.
func takesValue(fs *pflag.FlagSet, s string) bool {
	var f *pflag.Flag
	switch {
	case strings.Contains(s, "="):
	case strings.HasPrefix(s, "--"):
		f = fs.Lookup(s[2:])
	case len(s) == 2 && s[0] == '-':
		f = fs.ShorthandLookup(s[1:])
	}
	return f != nil && f.NoOptDefVal == ""
}

// isNegativeNumber reports whether s is a minus sign followed by digits.
func isNegativeNumber(s string) bool {
	if len(s) < 2 || s[0] != '-' {
		return false
	}
	for _, r := range s[1:] {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
