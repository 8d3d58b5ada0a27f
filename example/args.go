package main

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

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

// durationHint is the one way every duration flag says what it wants.
const durationHint = "want a duration such as 90s, 720h or 30d"

// errBadDuration is what a duration flag's Set returns for a value that is
// not a duration; flagError turns it into
// `invalid --NAME "VALUE": want a duration such as 90s, 720h or 30d`.
var errBadDuration = errors.New(durationHint)

// day is the unit "d" of parseDuration: 24 hours, whatever the calendar.
const day = 24 * time.Hour

// parseDuration reads a duration flag's value: a Go duration (90s, 1h30m,
// 720h) in which days may also appear as "d" (30d, 1d12h, 1.5d). A day is
// 24 hours. Sign and range are the flag's to check.
func parseDuration(s string) (time.Duration, error) {
	if !strings.Contains(s, "d") {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, errBadDuration
		}
		return d, nil
	}
	rest, neg := s, false
	if rest != "" && (rest[0] == '-' || rest[0] == '+') {
		rest, neg = rest[1:], rest[0] == '-'
	}
	if rest == "" {
		return 0, errBadDuration
	}
	var total time.Duration
	for rest != "" {
		n := strings.IndexFunc(rest, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
		if n <= 0 {
			return 0, errBadDuration // no number, or a number without a unit
		}
		u := n + strings.IndexFunc(rest[n:], func(r rune) bool { return r >= '0' && r <= '9' || r == '.' })
		if u < n {
			u = len(rest)
		}
		number, unit := rest[:n], rest[n:u]
		rest = rest[u:]
		var part time.Duration
		if unit == "d" {
			h, err := time.ParseDuration(number + "h")
			if err != nil || h > math.MaxInt64/day*time.Hour {
				return 0, errBadDuration
			}
			part = h * 24
		} else {
			var err error
			if part, err = time.ParseDuration(number + unit); err != nil {
				return 0, errBadDuration
			}
		}
		if total > math.MaxInt64-part {
			return 0, errBadDuration // overflow
		}
		total += part
	}
	if neg {
		total = -total
	}
	return total, nil
}

// formatDuration prints a duration the way parseDuration reads it, in
// whole days where it is a whole number of days: 30d rather than 720h0m0s.
func formatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d%day == 0:
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}

// durationValue is a duration flag read by parseDuration.
type durationValue time.Duration

func (d *durationValue) Set(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = durationValue(v)
	return nil
}

func (d *durationValue) String() string { return formatDuration(time.Duration(*d)) }

func (d *durationValue) Type() string { return "duration" }

// durationVar defines a duration flag, like pflag's DurationVar but read by
// parseDuration, so that every duration flag takes days and fails alike.
func durationVar(fs *pflag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var((*durationValue)(p), name, usage)
}

// expiresValue is --expires: a duration from now, or "never".
type expiresValue struct {
	d     *time.Duration
	never *bool
}

func (e expiresValue) Set(s string) error {
	if s == "never" {
		*e.d, *e.never = 0, true
		return nil
	}
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*e.d, *e.never = v, false
	return nil
}

func (e expiresValue) String() string {
	switch {
	case e.never != nil && *e.never:
		return "never"
	case e.d == nil || *e.d == 0:
		return ""
	}
	return formatDuration(*e.d)
}

func (e expiresValue) Type() string { return "duration" }

// expiresVar defines --expires on fs: DURATION or never.
func expiresVar(fs *pflag.FlagSet, d *time.Duration, never *bool, usage string) {
	fs.Var(expiresValue{d: d, never: never}, "expires", usage)
}
