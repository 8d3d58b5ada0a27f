package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"runtime/debug"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/llmauth/llmauth/keystore"
)

// optionalDuration is a duration flag that knows whether it was given, so
// that "--expires 0" can be refused rather than read as "no expiry".
type optionalDuration struct {
	d   time.Duration
	set bool
}

func (o *optionalDuration) String() string {
	if o == nil || !o.set {
		return ""
	}
	return o.d.String()
}

func (o *optionalDuration) Set(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("not a duration like 90s or 720h")
	}
	o.d, o.set = d, true
	return nil
}

func cliCommands() []*command {
	return []*command{
		{
			path:     "clients create",
			synopsis: "NAME",
			args:     []string{"NAME"},
			summary:  "create an LLM client, open to anonymous callers until it gets a key",
			details: "NAME must match ^[a-z0-9][a-z0-9-]{0,62}$. The client is served at\n" +
				"/v1/clients/NAME/chat and /v1/clients/NAME/chat/completions.\nPrints nothing on stdout.\n",
			run: clientsCreate,
		},
		{
			path:     "clients list",
			synopsis: "[--json]",
			summary:  "list clients and whether each requires a key",
			details: "Prints a table, or with --json a JSON array of objects with name,\n" +
				"requires_key, active_keys, keys and created_at ([] when there are none).\n",
			flags: func(o *options, fs *flag.FlagSet) { fs.BoolVar(&o.json, "json", false, "print JSON") },
			run:   clientsList,
		},
		{
			path:     "clients delete",
			synopsis: "NAME",
			args:     []string{"NAME"},
			summary:  "delete a client and the keys linked only to it",
			details:  "Prints nothing on stdout.\n",
			run:      clientsDelete,
		},
		{
			path:     "keys create",
			synopsis: "--client NAME [--name LABEL] [--description TEXT] [--expires DURATION] [--json]",
			summary:  "provision a new API key for a client",
			details: "Prints the token alone on one line, or with --json one JSON object with id,\n" +
				"token, client, name, prefix, expires_at (null when none) and created_at.\n" +
				"The token is shown only now: it is never stored, only its SHA-256 digest.\n" +
				"The client's first active key makes it require a key from then on.\n" +
				"An expired key still locks its client: revoke it to open the client.\n",
			flags: func(o *options, fs *flag.FlagSet) {
				fs.StringVar(&o.client, "client", "", "the client `NAME` (required)")
				fs.StringVar(&o.keyName, "name", "", "a `LABEL` for people, at most 200 characters")
				fs.StringVar(&o.description, "description", "", "free `TEXT`, at most 1000 characters")
				fs.Var(&o.expires, "expires", "expire the key after `DURATION` (a positive Go duration: 90s, 720h); default never")
				fs.BoolVar(&o.json, "json", false, "print JSON")
			},
			run: keysCreate,
		},
		{
			path:     "keys list",
			synopsis: "--client NAME [--json]",
			summary:  "list a client's keys (never their token or digest)",
			details: "Prints a table, or with --json a JSON array of objects with id, name, prefix,\n" +
				"state (active, expired or revoked), active, expires_at, last_used_at and\n" +
				"created_at ([] when there are none). last_used_at is written by running\n" +
				"servers every --usage-flush-interval and at shutdown.\n",
			flags: func(o *options, fs *flag.FlagSet) {
				fs.StringVar(&o.client, "client", "", "the client `NAME` (required)")
				fs.BoolVar(&o.json, "json", false, "print JSON")
			},
			run: keysList,
		},
		{
			path:     "keys revoke",
			synopsis: "ID",
			args:     []string{"ID"},
			summary:  "revoke (deactivate) a key",
			details: "Prints nothing on stdout. When it was its client's last active key, warns\n" +
				"on stderr that the client now accepts anonymous requests. Running servers\n" +
				"see the change within a second. \"keys activate ID\" undoes it.\n",
			run: func(ctx context.Context, a *app, args []string) error { return keysSetActive(ctx, a, args[0], false) },
		},
		{
			path:     "keys activate",
			synopsis: "ID",
			args:     []string{"ID"},
			summary:  "make a revoked key active again",
			details:  "Prints nothing on stdout.\n",
			run:      func(ctx context.Context, a *app, args []string) error { return keysSetActive(ctx, a, args[0], true) },
		},
		{
			path:     "keys rotate",
			synopsis: "ID [--grace DURATION] [--json]",
			args:     []string{"ID"},
			summary:  "create a successor to a key, for the same client and with the same name",
			details: "Prints the new token like \"keys create\". The old key stays valid until it\n" +
				"is revoked, or until --grace has passed when that is given.\n",
			flags: func(o *options, fs *flag.FlagSet) {
				fs.DurationVar(&o.grace, "grace", 0, "let the old key expire after `DURATION` (default: valid until revoked)")
				fs.BoolVar(&o.json, "json", false, "print JSON")
			},
			run: keysRotate,
		},
		{
			path:     "keys delete",
			synopsis: "ID",
			args:     []string{"ID"},
			summary:  "delete a key for good",
			details: "Prints nothing on stdout. Warns like \"keys revoke\" when the client is left\n" +
				"without an active key.\n",
			run: keysDelete,
		},
	}
}

func migrateCommand() *command {
	return &command{
		path:    "migrate",
		summary: "apply pending database migrations (every command also does)",
		details: "Idempotent. Prints nothing on stdout.\n",
		run: func(ctx context.Context, a *app, _ []string) error {
			store, db, err := a.openStore(ctx)
			if err != nil {
				return err
			}
			defer db.Close()
			current, _, err := keystore.MigrationVersion(ctx, store.DB())
			if err != nil {
				return err
			}
			url, _ := a.databaseURL()
			fmt.Fprintf(a.stderr, "database %s is at schema version %d\n", keystore.RedactURL(url), current)
			return nil
		},
	}
}

func versionCommand() *command {
	return &command{
		path:    "version",
		summary: "print the version",
		details: "Prints one line on stdout: the module version and, when known, the commit.\n",
		run: func(_ context.Context, a *app, _ []string) error {
			version, revision := "(devel)", ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				version = bi.Main.Version
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						revision = " " + s.Value
					}
				}
			}
			fmt.Fprintf(a.stdout, "llmauth example %s%s\n", version, revision)
			return nil
		},
	}
}

// checkClientName refuses a bad name before the database is touched.
func checkClientName(name string) error {
	if !keystore.ValidClientName(name) {
		if len(name) > 70 {
			name = name[:70] + "…"
		}
		return usagef("invalid client name %q: must match ^[a-z0-9][a-z0-9-]{0,62}$", name)
	}
	return nil
}

// requireClient checks --client.
func requireClient(a *app, path string) error {
	if a.opts.client == "" {
		return usagef("%s: missing --client NAME", path)
	}
	return checkClientName(a.opts.client)
}

// parseKeyID reads a key id argument.
func parseKeyID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, usagef("invalid key id %q: want a positive integer (see keys list)", s)
	}
	return id, nil
}

func clientsCreate(ctx context.Context, a *app, args []string) error {
	name := args[0]
	if err := checkClientName(name); err != nil {
		return err
	}
	return a.withStore(ctx, func(store *keystore.SQLStore) error {
		if _, err := store.CreateClient(ctx, name); err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "created client %s: open to anonymous requests until it gets a key (example keys create --client %s)\n", name, name)
		return nil
	})
}

// clientView is a client as "clients list --json" prints it.
type clientView struct {
	Name        string    `json:"name"`
	RequiresKey bool      `json:"requires_key"`
	ActiveKeys  int       `json:"active_keys"`
	Keys        int       `json:"keys"`
	CreatedAt   time.Time `json:"created_at"`
}

func clientsList(ctx context.Context, a *app, _ []string) error {
	return a.withStore(ctx, func(store *keystore.SQLStore) error {
		clients, err := store.ListClients(ctx)
		if err != nil {
			return err
		}
		if a.opts.json {
			out := make([]clientView, 0, len(clients))
			for _, c := range clients {
				out = append(out, clientView{Name: c.Name, RequiresKey: c.RequiresKey, ActiveKeys: c.ActiveKeys, Keys: c.Keys, CreatedAt: c.CreatedAt.UTC()})
			}
			return a.printJSON(out)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tREQUIRES KEY\tACTIVE KEYS\tKEYS\tCREATED")
		for _, c := range clients {
			requires := "no (open)"
			if c.RequiresKey {
				requires = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", c.Name, requires, c.ActiveKeys, c.Keys, formatTime(&c.CreatedAt, ""))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(clients) == 0 {
			fmt.Fprintln(a.stderr, "no clients yet: create one with \"example clients create NAME\"")
		}
		return nil
	})
}

func clientsDelete(ctx context.Context, a *app, args []string) error {
	name := args[0]
	if err := checkClientName(name); err != nil {
		return err
	}
	return a.withStore(ctx, func(store *keystore.SQLStore) error {
		if err := store.DeleteClient(ctx, name); err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "deleted client %s and the keys linked only to it\n", name)
		return nil
	})
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
func (a *app) printNewKey(k keystore.NewKey) error {
	if a.opts.json {
		return a.printJSON(newKeyView{
			ID: k.ID, Token: k.Token.Reveal(), Client: k.Client, Name: k.Name, Prefix: k.Prefix,
			ExpiresAt: k.ExpiresAt, CreatedAt: k.CreatedAt.UTC(),
		})
	}
	_, err := fmt.Fprintln(a.stdout, k.Token.Reveal())
	return err
}

func keysCreate(ctx context.Context, a *app, _ []string) error {
	if err := requireClient(a, "keys create"); err != nil {
		return err
	}
	spec := keystore.KeySpec{Name: a.opts.keyName, Description: a.opts.description}
	if a.opts.expires.set {
		if a.opts.expires.d <= 0 {
			return usagef("keys create: --expires must be a positive duration, got %s", a.opts.expires.d)
		}
		at := time.Now().Add(a.opts.expires.d)
		spec.ExpiresAt = &at
	}
	return a.withStore(ctx, func(store *keystore.SQLStore) error {
		locked, err := store.HasActiveAPIKey(ctx, a.opts.client)
		if err != nil {
			return err
		}
		key, err := store.CreateKey(ctx, a.opts.client, spec)
		if err != nil {
			return err
		}
		if err := a.printNewKey(key); err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "created key %d %q for client %s; the token is shown only now (prefix %s)\n", key.ID, key.Name, key.Client, key.Prefix)
		if !locked {
			fmt.Fprintf(a.stderr, "client %s now requires a key: anonymous requests are refused\n", key.Client)
		}
		return nil
	})
}

// keyView is a key as "keys list --json" prints it: never its token or
// digest.
type keyView struct {
	ID          int64             `json:"id"`
	Client      string            `json:"client"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Prefix      string            `json:"prefix"`
	State       keystore.KeyState `json:"state"`
	Active      bool              `json:"active"`
	ExpiresAt   *time.Time        `json:"expires_at"`
	LastUsedAt  *time.Time        `json:"last_used_at"`
	CreatedAt   time.Time         `json:"created_at"`
}

func keysList(ctx context.Context, a *app, _ []string) error {
	if err := requireClient(a, "keys list"); err != nil {
		return err
	}
	return a.withStore(ctx, func(store *keystore.SQLStore) error {
		keys, err := store.ListKeys(ctx, a.opts.client)
		if err != nil {
			return err
		}
		if a.opts.json {
			out := make([]keyView, 0, len(keys))
			for _, k := range keys {
				out = append(out, keyView{
					ID: k.ID, Client: k.Client, Name: k.Name, Description: k.Description, Prefix: k.Prefix,
					State: k.State, Active: k.Active, ExpiresAt: k.ExpiresAt, LastUsedAt: k.LastUsedAt, CreatedAt: k.CreatedAt.UTC(),
				})
			}
			return a.printJSON(out)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tPREFIX\tSTATE\tEXPIRES\tLAST USED\tCREATED")
		for _, k := range keys {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, strconv.Quote(k.Name), k.Prefix, k.State,
				formatTime(k.ExpiresAt, "never"), formatTime(k.LastUsedAt, "never"), formatTime(&k.CreatedAt, ""))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(keys) == 0 {
			fmt.Fprintf(a.stderr, "client %s has no keys: it is open to anonymous requests\n", a.opts.client)
		}
		return nil
	})
}

func keysSetActive(ctx context.Context, a *app, arg string, active bool) error {
	id, err := parseKeyID(arg)
	if err != nil {
		return err
	}
	return a.withStore(ctx, func(store *keystore.SQLStore) error {
		before, err := store.GetKey(ctx, id)
		if err != nil {
			return err
		}
		var k keystore.APIKey
		if active {
			k, err = store.ActivateKey(ctx, id)
		} else {
			k, err = store.DeactivateKey(ctx, id)
		}
		if err != nil {
			return err
		}
		verb, state := "revoked", "revoked"
		if active {
			verb, state = "activated", "active"
		}
		// The store writes only a real change, and a write moves
		// updated_at: unchanged, the key was already in that state, even
		// if someone else changed it between the two reads.
		if k.UpdatedAt.Equal(before.UpdatedAt) {
			// Nothing changed, so there is nothing new to warn about.
			fmt.Fprintf(a.stderr, "key %d %q of client %s was already %s\n", k.ID, k.Name, k.Client, state)
			return nil
		}
		fmt.Fprintf(a.stderr, "%s key %d %q of client %s\n", verb, k.ID, k.Name, k.Client)
		if !active {
			return a.warnIfOpen(ctx, store, k.Client)
		}
		return nil
	})
}

// warnIfOpen tells the operator when client has no active key left.
func (a *app) warnIfOpen(ctx context.Context, store *keystore.SQLStore, client string) error {
	if client == "" {
		return nil
	}
	locked, err := store.HasActiveAPIKey(ctx, client)
	if err != nil {
		return fmt.Errorf("checking client %s: %w", client, err)
	}
	if !locked {
		fmt.Fprintf(a.stderr, "warning: client %s has no active key left and now accepts anonymous requests\n", client)
	}
	return nil
}

func keysRotate(ctx context.Context, a *app, args []string) error {
	id, err := parseKeyID(args[0])
	if err != nil {
		return err
	}
	if a.opts.grace < 0 {
		return usagef("keys rotate: --grace must not be negative, got %s", a.opts.grace)
	}
	return a.withStore(ctx, func(store *keystore.SQLStore) error {
		key, err := store.RotateKey(ctx, id, keystore.RotateSpec{Grace: a.opts.grace})
		if err != nil {
			return err
		}
		if err := a.printNewKey(key); err != nil {
			return err
		}
		old := "stays valid until revoked (example keys revoke " + strconv.FormatInt(id, 10) + ")"
		if a.opts.grace > 0 {
			if k, err := store.GetKey(ctx, id); err == nil && k.ExpiresAt != nil {
				old = "expires at " + formatTime(k.ExpiresAt, "")
			}
		}
		fmt.Fprintf(a.stderr, "rotated key %d of client %s: new key %d; the token is shown only now; the old key %s\n", id, key.Client, key.ID, old)
		return nil
	})
}

func keysDelete(ctx context.Context, a *app, args []string) error {
	id, err := parseKeyID(args[0])
	if err != nil {
		return err
	}
	return a.withStore(ctx, func(store *keystore.SQLStore) error {
		k, err := store.GetKey(ctx, id)
		if err != nil {
			return err
		}
		if err := store.DeleteKey(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "deleted key %d %q of client %s\n", k.ID, k.Name, k.Client)
		return a.warnIfOpen(ctx, store, k.Client)
	})
}

// printJSON writes v as indented JSON on stdout.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// formatTime prints a time in UTC, or none when it is nil.
func formatTime(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(time.RFC3339)
}
