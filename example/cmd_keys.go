package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// newCmdKeys is the group of the keys commands.
func newCmdKeys(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys COMMAND",
		Short: "Manage the API keys of clients",
		Long:  "Manage the API keys of clients. A client's first active key makes it require\na key; revoking its last one opens it again.\n",
	}
	cmd.AddCommand(newCmdKeysCreate(a, nil), newCmdKeysList(a, nil), newCmdKeysRevoke(a, nil),
		newCmdKeysActivate(a, nil), newCmdKeysRotate(a, nil), newCmdKeysDelete(a, nil))
	return cmd
}

// checkClientFlag checks --client of command path.
func checkClientFlag(path, client string) error {
	if client == "" {
		return usagef("%s: missing --client NAME", path)
	}
	return checkClientName(client)
}

// parseKeyID reads a key id argument.
func parseKeyID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, usagef("invalid key id %q: want a positive integer (see keys list)", s)
	}
	return id, nil
}

// newKeyView is a created key as "keys create --json" prints it: the only
// place a token is ever printed.
type newKeyView struct {
	ID        int64      `json:"id"`
	Token     string     `json:"token"`
	Client    string     `json:"client"`
	Name      string     `json:"name"`
	Prefix    string     `json:"prefix"`
	ExpiresAt *time.Time `json:"expires_at"`
	CreatedAt time.Time  `json:"created_at"`
}

// printNewKey prints a new key's token, alone or as JSON.
func (a *app) printNewKey(k keystore.NewKey, asJSON bool) error {
	if asJSON {
		return a.printJSON(newKeyView{
			ID: k.ID, Token: k.Token.Reveal(), Client: k.Client, Name: k.Name, Prefix: k.Prefix,
			ExpiresAt: k.ExpiresAt, CreatedAt: k.CreatedAt.UTC(),
		})
	}
	_, err := fmt.Fprintln(a.stdout, k.Token.Reveal())
	return err
}

// deliverNewKey prints a key that was just created, the only time its
// token is shown. When stdout fails, the token is lost: the key is
// deleted again (not revoked, so that its client is as it was) and the
// error says so. what names the command; note adds what deleting the key
// does not undo.
func (a *app) deliverNewKey(ctx context.Context, store *sqlstore.Store, k keystore.NewKey, asJSON bool, what, note string) error {
	// A write to a closed pipe then fails with EPIPE instead of killing
	// the process before it can delete the key.
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, syscall.SIGPIPE)
	defer signal.Stop(sigpipe)
	err := a.printNewKey(k, asJSON)
	if err == nil {
		return nil
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if derr := store.DeleteKey(dctx, k.ID); derr != nil {
		return fmt.Errorf("%s: could not print the token (%v), and deleting key %d failed too (%v): delete it with \"example keys delete %d\"%s",
			what, err, k.ID, a.nameDatabase(derr), k.ID, note)
	}
	return fmt.Errorf("%s: could not print the token (%v): deleted key %d again, client %s is as it was%s", what, err, k.ID, k.Client, note)
}

// refuseNullStdout warns, before a key is created, when its token will go
// to the null device and be lost: the key is still created, since sending
// stdout there can be deliberate (a script that only needs the client to
// require a key). A stdout that was closed when the program started is the
// null device too: the Go runtime opens it there.
func (a *app) refuseNullStdout(what string) error {
	if a.stdoutDiscards() {
		fmt.Fprintf(a.stderr, "%s: warning: stdout is %s, so the new token, shown only once, is discarded\n", what, os.DevNull)
	}
	return nil
}

// warnIfOpen tells the operator when client no longer requires a key: it
// has no active key left and is not locked. A locked client stays closed
// (every caller 401), which is said too, without the warning.
func (a *app) warnIfOpen(ctx context.Context, store *sqlstore.Store, client string) error {
	if client == "" {
		return nil
	}
	st, err := store.ClientState(ctx, client)
	if err != nil {
		return fmt.Errorf("checking client %s: %w", client, err)
	}
	switch {
	case !st.RequiresKey:
		fmt.Fprintf(a.stderr, "warning: client %s has no active key left and now accepts anonymous requests\n", client)
	case st.Locked:
		has, err := store.HasActiveAPIKey(ctx, client)
		if err != nil {
			return fmt.Errorf("checking client %s: %w", client, err)
		}
		if !has {
			fmt.Fprintf(a.stderr, "client %s has no active key left but is locked: every caller gets 401 until it gets a key\n", client)
		}
	}
	return nil
}
