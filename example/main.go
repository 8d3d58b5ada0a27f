package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/llmauth/llmauth/keystore"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // anything that is not the caller's mistake
	exitUsage   = 2 // bad usage or bad input
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills the process the
		// default way instead of waiting for a graceful shutdown.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the exit code. ctx ends
// on SIGINT or SIGTERM.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr, getenv: getenv}
	root := newRootCmd(a)
	root.SetArgs(pflagArgs(root, args))
	err := root.ExecuteContext(ctx)
	if err == nil {
		err = a.stdoutErr() // output cobra wrote and did not check: help, --version
	}
	switch {
	case err != nil && a.created != "":
		// One line still: the reason, and the file the command left.
		fmt.Fprintln(stderr, "example: "+oneLine(a.redact(err.Error()))+" (created SQLite database "+a.created+")")
	case err != nil:
		fmt.Fprintln(stderr, "example: "+oneLine(a.redact(err.Error())))
	case a.created != "":
		fmt.Fprintf(stderr, "created SQLite database %s\n", a.created)
	}
	return exitCode(err)
}

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCode maps an error to the process's exit code: the caller's mistakes
// (usage, and every keystore error about the input) are 2, the rest 1.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue),
		errors.Is(err, keystore.ErrInvalidName),
		errors.Is(err, keystore.ErrInvalidInput),
		errors.Is(err, keystore.ErrClientExists),
		errors.Is(err, keystore.ErrUnknownClient),
		errors.Is(err, keystore.ErrKeyNotFound):
		return exitUsage
	}
	return exitFailure
}

// oneLine keeps an error message on one line, as the contract promises.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
