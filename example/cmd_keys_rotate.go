package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

type keysRotateOptions struct {
	*app
	id           string
	grace        time.Duration
	expires      time.Duration
	expiresSet   bool // without --expires the new key inherits the old one's lifetime
	expiresNever bool
	json         bool
}

const keysRotateLong = `Create a successor to a key, for the same client and with the same name.

Prints the new token like "keys create" (and, like it, deletes the new key
again if the token cannot be printed). The old key stays valid until it is
revoked, or until --grace has passed when that is given.

The new key's expiry: without --expires it inherits the old key's lifetime
(expires_at - created_at), counted from now. A key created with --expires
30d and rotated on its 20th day gets a successor that expires 30 days after
the rotation (not 10 days later, with the old key); the successor of a key
that never expires never expires, and so does, with a warning, that of a key
whose stored times give no lifetime. --expires DURATION sets the new key's
lifetime from now instead, and --expires never makes it never expire.
`

func newCmdKeysRotate(a *app, runF func(context.Context, *keysRotateOptions) error) *cobra.Command {
	o := &keysRotateOptions{app: a}
	if runF == nil {
		runF = keysRotateRun
	}
	cmd := &cobra.Command{
		Use:               "rotate ID [--grace DURATION] [--expires DURATION] [--json]",
		Short:             "Create a successor to a key, for the same client and with the same name",
		Long:              keysRotateLong,
		Args:              exactArgs("ID"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.id = args[0]
			o.expiresSet = cmd.Flags().Changed("expires")
			return runF(cmd.Context(), o)
		},
	}
	durationVar(cmd.Flags(), &o.grace, "grace", 0, "let the old key expire `DURATION` after the rotation (0, the default: valid until revoked)")
	expiresVar(cmd.Flags(), &o.expires, &o.expiresNever, "expire the new key `DURATION` from now, or never (default: the old key's lifetime, from now)")
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	return cmd
}

func keysRotateRun(ctx context.Context, o *keysRotateOptions) error {
	id, err := parseKeyID(o.id)
	if err != nil {
		return err
	}
	if o.grace < 0 {
		return usagef("keys rotate: --grace must not be negative, got %s", formatDuration(o.grace))
	}
	var expiresAt *time.Time
	if o.expiresSet {
		if expiresAt, err = expiryFromNow("keys rotate", o.expires, o.expiresNever); err != nil {
			return err
		}
	}
	if err := o.refuseNullStdout("keys rotate"); err != nil {
		return err
	}
	return o.withStore(ctx, writes, func(store *sqlstore.Store) error {
		old, err := store.GetKey(ctx, id)
		if err != nil {
			return err
		}
		if !o.expiresSet {
			expiresAt = o.inheritedExpiry(old)
		}
		key, err := store.RotateKey(ctx, id, keystore.RotateSpec{Grace: o.grace, ExpiresAt: expiresAt})
		if err != nil {
			return err
		}
		note := ""
		if o.grace > 0 {
			note = fmt.Sprintf("; key %d keeps the expiry --grace gave it", id)
		}
		if err := o.deliverNewKey(ctx, store, key, o.json, "keys rotate", note); err != nil {
			return err
		}
		oldState := "stays valid until revoked (example keys revoke " + strconv.FormatInt(id, 10) + ")"
		if k, err := store.GetKey(ctx, id); err == nil && k.ExpiresAt != nil {
			oldState = "expires at " + formatTime(k.ExpiresAt, "")
		}
		fmt.Fprintf(o.stderr, "rotated key %d of client %s: new key %d %s; the token is shown only now; the old key %s\n",
			id, key.Client, key.ID, newExpiry(key, old, o.expiresSet), oldState)
		return nil
	})
}

// inheritedExpiry is the expiry a successor of old gets by default: old's
// lifetime (expires_at - created_at), counted from now; none when old
// never expires. A key whose stored times give no lifetime (written by
// hand, or unreadable: see the README's Schema) is rotated all the same,
// as before --expires existed: its successor never expires, and a
// warning says so.
func (o *keysRotateOptions) inheritedExpiry(old keystore.APIKey) *time.Time {
	if old.ExpiresAt == nil {
		return nil
	}
	lifetime := lifetimeOf(old)
	if lifetime <= 0 {
		fmt.Fprintf(o.stderr, "warning: key %d has no lifetime to pass on (it expires at %s, created at %s): its successor never expires; rotate with --expires DURATION to give it one\n",
			old.ID, formatTime(old.ExpiresAt, ""), formatTime(&old.CreatedAt, ""))
		return nil
	}
	at := time.Now().Add(lifetime)
	return &at
}

// newExpiry says when the new key expires, and why.
func newExpiry(key keystore.NewKey, old keystore.APIKey, expiresSet bool) string {
	switch {
	case key.ExpiresAt == nil && expiresSet:
		return "never expires"
	case key.ExpiresAt == nil && old.ExpiresAt != nil:
		return "never expires"
	case key.ExpiresAt == nil:
		return "never expires, like the old key"
	case expiresSet:
		return "expires at " + formatTime(key.ExpiresAt, "")
	}
	return fmt.Sprintf("expires at %s (the old key's lifetime, %s, from now)", formatTime(key.ExpiresAt, ""), formatDuration(lifetimeOf(old)))
}

// lifetimeOf is how long a key with an expiry was valid for when created,
// to the second: "keys create --expires 30d" reads the clock a moment
// before the store stamps created_at, and its key's lifetime is 30d, not
// 29d23h59m59.998s.
func lifetimeOf(k keystore.APIKey) time.Duration {
	return k.ExpiresAt.Sub(k.CreatedAt).Round(time.Second)
}
