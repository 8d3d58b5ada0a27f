package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/llmauth/llmauth/internal/pgtest"
	"github.com/llmauth/llmauth/internal/storetest"
	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

// These tests write, by hand, values into every time column of the three
// tables that the database accepts, and check that the store reads each as
// one exact time and can still list, verify, rotate, revoke, activate and
// delete the row, with the other rows beside it untouched. On SQLite they
// also check that the forms the store could not read are refused with an
// exact message.

// timeColumn is a time column of one of the three tables.
type timeColumn struct{ table, column string }

func (c timeColumn) String() string { return c.table + "." + c.column }

func (c timeColumn) isExpiry() bool { return c == timeColumn{"api_keys", "expires_at"} }

func (c timeColumn) nullable() bool {
	return c.column == "expires_at" || c.column == "last_used_at"
}

// refusal is the exact message SQLite gives for a time it refuses in c.
func (c timeColumn) refusal() string {
	if c.nullable() {
		return "constraint failed: api_keys: expires_at and last_used_at must be NULL or a time such as '2030-01-02 15:04:05+00:00' (1811)"
	}
	return "constraint failed: " + c.table + ": created_at and updated_at must be a time such as '2030-01-02 15:04:05+00:00' (1811)"
}

// timeColumns lists every time column the three tables have.
func timeColumns() []timeColumn {
	return []timeColumn{
		{"llm_clients", "created_at"}, {"llm_clients", "updated_at"},
		{"api_keys", "expires_at"}, {"api_keys", "last_used_at"},
		{"api_keys", "created_at"}, {"api_keys", "updated_at"},
		{"llm_client_api_keys", "created_at"}, {"llm_client_api_keys", "updated_at"},
	}
}

// timeCase is a value written by hand (an SQL expression) and the time the
// store reads back. never: an expires_at holding it means the key never
// expires (PostgreSQL's infinity).
type timeCase struct {
	expr  string
	want  time.Time
	never bool
}

// The ends of what the store returns for values outside what RFC 3339
// prints, and for values that are no time at all.
var (
	earliest = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	latest   = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

// timesEpoch is the store's clock in these tests: every time the store
// writes itself is this one.
var timesEpoch = time.Date(2029, 6, 1, 12, 0, 0, 0, time.UTC)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// timeRow is one client with two keys: odd, whose rows get the value by
// hand, and plain, which must read as created whatever odd holds.
type timeRow struct {
	client     string
	odd, plain keystore.NewKey
	col        timeColumn
}

func newTimeRow(t *testing.T, s *sqlstore.Store, name string, col timeColumn) timeRow {
	t.Helper()
	ctx := context.Background()
	if _, err := s.CreateClient(ctx, name); err != nil {
		t.Fatal(err)
	}
	odd, err := s.CreateKey(ctx, name, keystore.KeySpec{Name: "odd"})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := s.CreateKey(ctx, name, keystore.KeySpec{Name: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	return timeRow{client: name, odd: odd, plain: plain, col: col}
}

// write sets the row's column to expr by plain SQL, as an operator would.
func (r timeRow) write(ctx context.Context, s *sqlstore.Store, expr string) error {
	where, arg := "id = ?", any(r.odd.ID)
	switch r.col.table {
	case "llm_clients":
		where, arg = "name = ?", r.client
	case "llm_client_api_keys":
		where = "api_key_id = ?"
	}
	_, err := s.DB().ExecContext(ctx, s.DB().Rebind(`UPDATE `+r.col.table+` SET `+r.col.column+` = `+expr+` WHERE `+where), arg)
	return err
}

// expect is what the store should read after tc was written.
type expect struct {
	clientCreated, clientUpdated time.Time
	expires, lastUsed            *time.Time
	keyCreated, keyUpdated       time.Time
}

// asCreated is what the store reads of rows nobody wrote by hand.
func asCreated() expect {
	return expect{clientCreated: timesEpoch, clientUpdated: timesEpoch, keyCreated: timesEpoch, keyUpdated: timesEpoch}
}

func (r timeRow) expect(tc timeCase) expect {
	e := asCreated()
	want := tc.want
	switch r.col {
	case timeColumn{"llm_clients", "created_at"}:
		e.clientCreated = want
	case timeColumn{"llm_clients", "updated_at"}:
		e.clientUpdated = want
	case timeColumn{"api_keys", "expires_at"}:
		if !tc.never {
			e.expires = &want
		}
	case timeColumn{"api_keys", "last_used_at"}:
		e.lastUsed = &want
	case timeColumn{"api_keys", "created_at"}:
		e.keyCreated = want
	case timeColumn{"api_keys", "updated_at"}:
		e.keyUpdated = want
	}
	return e
}

// checkReads checks every read of the row, and of its plain key beside it.
func (r timeRow) checkReads(t *testing.T, s *sqlstore.Store, e expect) {
	t.Helper()
	ctx := context.Background()
	now := timesEpoch
	expired := e.expires != nil && !now.Before(*e.expires)
	wantState := keystore.KeyActive
	if expired {
		wantState = keystore.KeyExpired
	}

	c, err := s.GetClient(ctx, r.client)
	if err != nil || !c.CreatedAt.Equal(e.clientCreated) || !c.UpdatedAt.Equal(e.clientUpdated) {
		t.Errorf("GetClient = %+v, %v; want created %v, updated %v", c, err, e.clientCreated, e.clientUpdated)
	}
	clients, err := s.ListClients(ctx)
	if err != nil {
		t.Fatalf("ListClients: %v", err)
	}
	found := false
	for _, cs := range clients {
		if cs.Name == r.client {
			found = true
			if !cs.CreatedAt.Equal(e.clientCreated) || !cs.UpdatedAt.Equal(e.clientUpdated) || !cs.RequiresKey || cs.ActiveKeys != 2 || cs.Keys != 2 {
				t.Errorf("ListClients has %+v; want created %v, updated %v, 2 active keys", cs, e.clientCreated, e.clientUpdated)
			}
		}
	}
	if !found {
		t.Errorf("ListClients does not list %s", r.client)
	}

	keys, err := s.ListKeys(ctx, r.client)
	if err != nil || len(keys) != 2 {
		t.Fatalf("ListKeys = %+v, %v; want both keys", keys, err)
	}
	got, err := s.GetKey(ctx, r.odd.ID)
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	for _, k := range []keystore.APIKey{keys[0], got} {
		if k.ID != r.odd.ID || !sameTimePtr(k.ExpiresAt, e.expires) || !sameTimePtr(k.LastUsedAt, e.lastUsed) ||
			!k.CreatedAt.Equal(e.keyCreated) || !k.UpdatedAt.Equal(e.keyUpdated) || k.State != wantState || !k.Active {
			t.Errorf("key read as %+v; want expires %v, last used %v, created %v, updated %v, %s",
				k, fmtTime(e.expires), fmtTime(e.lastUsed), e.keyCreated, e.keyUpdated, wantState)
		}
	}
	if p := keys[1]; p.ID != r.plain.ID || p.ExpiresAt != nil || p.LastUsedAt != nil || !p.CreatedAt.Equal(timesEpoch) || p.State != keystore.KeyActive {
		t.Errorf("the plain key beside it read as %+v", p)
	}

	st, err := s.ClientState(ctx, r.client)
	if err != nil || !st.RequiresKey {
		t.Errorf("ClientState = %+v, %v; want RequiresKey (expiry never opens a client)", st, err)
	}
	p, err := s.Verify(ctx, r.client, r.odd.Token)
	switch {
	case expired:
		if !errors.Is(err, keystore.ErrInvalidToken) || errors.Is(err, keystore.ErrUnavailable) {
			t.Errorf("Verify of the expired key = %v, want ErrInvalidToken", err)
		}
	case err != nil || p.KeyID != r.odd.ID || !sameTimePtr(p.ExpiresAt, e.expires):
		t.Errorf("Verify = %+v, %v; want key %d expiring %v", p, err, r.odd.ID, fmtTime(e.expires))
	}
	if _, err := s.Verify(ctx, r.client, r.plain.Token); err != nil {
		t.Errorf("Verify of the plain key beside it: %v", err)
	}
}

// checkWrites rotates, revokes, activates and deletes the odd key, then
// deletes its client: what the CLI does with a row.
func (r timeRow) checkWrites(t *testing.T, s *sqlstore.Store, e expect) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.RotateKey(ctx, r.odd.ID, keystore.RotateSpec{Grace: time.Hour}); err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	k, err := s.GetKey(ctx, r.odd.ID)
	wantExpiry := timesEpoch.Add(time.Hour)
	if e.expires != nil && e.expires.Before(wantExpiry) {
		wantExpiry = *e.expires // the grace never lengthens a key's life
	}
	if err != nil || k.ExpiresAt == nil || !k.ExpiresAt.Equal(wantExpiry) {
		t.Errorf("after RotateKey with an hour's grace: %+v, %v; want expiry %v", k, err, wantExpiry)
	}
	k, err = s.DeactivateKey(ctx, r.odd.ID)
	if err != nil || k.Active || k.State != keystore.KeyRevoked || !k.UpdatedAt.Equal(timesEpoch) {
		t.Errorf("DeactivateKey = %+v, %v", k, err)
	}
	if k, err = s.ActivateKey(ctx, r.odd.ID); err != nil || !k.Active {
		t.Errorf("ActivateKey = %+v, %v", k, err)
	}
	if err := s.DeleteKey(ctx, r.odd.ID); err != nil {
		t.Errorf("DeleteKey: %v", err)
	}
	if _, err := s.GetKey(ctx, r.odd.ID); !errors.Is(err, keystore.ErrKeyNotFound) {
		t.Errorf("GetKey after DeleteKey: %v", err)
	}
	if err := s.DeleteClient(ctx, r.client); err != nil {
		t.Errorf("DeleteClient: %v", err)
	}
}

func sameTimePtr(a, b *time.Time) bool {
	return (a == nil) == (b == nil) && (a == nil || (a.Equal(*b) && a.Location() == time.UTC))
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.Format(time.RFC3339Nano)
}

// timesStore is a store on a fresh database whose clock stands still.
func timesStore(t *testing.T, url func(testing.TB) string) *sqlstore.Store {
	return rawHarness(url)(t, storetest.NewClock(timesEpoch)).Admin
}

// runTimeCases writes each case into each column, each into rows of its
// own, and checks every read and write of them.
func runTimeCases(t *testing.T, s *sqlstore.Store, cases []timeCase) {
	ctx := context.Background()
	n := 0
	for _, col := range timeColumns() {
		for _, tc := range cases {
			t.Run(col.String()+"="+tc.expr, func(t *testing.T) {
				n++
				r := newTimeRow(t, s, fmt.Sprintf("c%d", n), col)
				if err := r.write(ctx, s, tc.expr); err != nil {
					t.Fatalf("the database refused %s: %v", tc.expr, err)
				}
				e := r.expect(tc)
				r.checkReads(t, s, e)
				r.checkWrites(t, s, e)
			})
		}
	}
}

// TestPostgresTimesByHand: values PostgreSQL's timestamptz accepts that
// lib/pq cannot hand over as a time (infinity, -infinity) or that RFC 3339
// cannot print (years past 9999, BC) are read in every time column, and
// the row stays manageable. An expires_at of infinity never expires; one
// of -infinity has expired (401), and the client stays locked.
func TestPostgresTimesByHand(t *testing.T) {
	t.Parallel()
	s := timesStore(t, pgtest.NewDatabase)
	runTimeCases(t, s, []timeCase{
		{expr: "'infinity'", want: latest, never: true},
		{expr: "'-infinity'", want: earliest},
		{expr: "'10000-01-01 00:00:00+00'", want: latest},
		{expr: "'294276-12-31 23:59:59+00'", want: latest},
		{expr: "'0001-01-01 00:00:00+00 BC'", want: earliest},
		{expr: "'4713-01-01 00:00:00+00 BC'", want: earliest},
		{expr: "'2030-01-02 03:04:05.123456+05:30'", want: utc("2030-01-01T21:34:05.123456Z")},
		{expr: "'2000-01-02 03:04:05+00'", want: utc("2000-01-02T03:04:05Z")},
	})
}

// TestSQLiteTimesByHand: SQLite keeps times as text; every time column
// takes the forms an operator would type, read back exactly.
func TestSQLiteTimesByHand(t *testing.T) {
	t.Parallel()
	s := timesStore(t, sqliteURL)
	runTimeCases(t, s, []timeCase{
		{expr: "'2999-01-02 15:04:05+00:00'", want: utc("2999-01-02T15:04:05Z")},
		{expr: "'2999-01-02T15:04:05.123Z'", want: utc("2999-01-02T15:04:05.123Z")},
		{expr: "'2999-01-02 15:04:05'", want: utc("2999-01-02T15:04:05Z")},
		{expr: "'2999-01-02 15:04'", want: utc("2999-01-02T15:04:00Z")},
		{expr: "'2999-01-02T15:04Z'", want: utc("2999-01-02T15:04:00Z")},
		{expr: "'2999-01-02 15:04:05.5-05:00'", want: utc("2999-01-02T20:04:05.5Z")},
		{expr: "'2999-01-02'", want: utc("2999-01-02T00:00:00Z")},
		{expr: "'2000-01-02 03:04:05'", want: utc("2000-01-02T03:04:05Z")},
		{expr: "datetime('2000-01-02', '+1 hour')", want: utc("2000-01-02T01:00:00Z")},
	})
}

// TestSQLiteTimesRefused: the forms the store could not read are refused
// in every time column, on update and on insert, with a message that says
// what is wanted, and leave the row as it was.
func TestSQLiteTimesRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := timesStore(t, sqliteURL)
	refused := []string{
		"1700000000", "'1700000000'", "julianday('2030-01-02')", "'now'", "'junk'", "''",
		"'2999-02-31 00:00:00'", "'2999-01-02 15:04:05 +01:00'", "'2999-01-02 24:00:00'",
		"'2999-01-02 15:04+01:00'", "'2999-01-02T15:04-05:00'",
		// Accepted by version 3, but not read by the driver:
		"'2999-01-02 '", "'2999-01-02T'", "'2999-01-02 15:04:05'||x'00'",
		"'infinity'", "'-infinity'", "x'00'", "'2999-01-02 15:04:05é'",
	}
	for i, col := range timeColumns() {
		exprs := refused
		if !col.nullable() {
			exprs = append(exprs[:len(exprs):len(exprs)], "NULL")
		}
		// One row per column: each refusal must leave it as created.
		r := newTimeRow(t, s, fmt.Sprintf("r%d", i), col)
		for _, expr := range exprs {
			t.Run(col.String()+"="+expr, func(t *testing.T) {
				err := r.write(ctx, s, expr)
				if err == nil || err.Error() != col.refusal() {
					t.Fatalf("write = %v, want the refusal %q", err, col.refusal())
				}
				r.checkReads(t, s, asCreated())
			})
		}
	}
	// Inserts too.
	digest := strings.Repeat("0", 64)
	for _, tc := range []struct {
		col   timeColumn
		query string
		args  []any
	}{
		{timeColumn{"llm_clients", "created_at"}, `INSERT INTO llm_clients (name, created_at) VALUES ('ins', 'junk')`, nil},
		{timeColumn{"llm_clients", "updated_at"}, `INSERT INTO llm_clients (name, updated_at) VALUES ('ins', NULL)`, nil},
		{timeColumn{"api_keys", "created_at"}, `INSERT INTO api_keys (lookup_id, secret_digest, created_at) VALUES ('ins', ?, '2999-01-02 ')`, []any{digest}},
		{timeColumn{"api_keys", "expires_at"}, `INSERT INTO api_keys (lookup_id, secret_digest, expires_at) VALUES ('ins', ?, '2999-01-02T')`, []any{digest}},
		{timeColumn{"api_keys", "updated_at"}, `INSERT INTO api_keys (lookup_id, secret_digest, updated_at) VALUES ('ins', ?, 1700000000)`, []any{digest}},
		{timeColumn{"llm_client_api_keys", "updated_at"}, `INSERT INTO llm_client_api_keys (llm_client_id, api_key_id, updated_at) SELECT c.id, k.id, 'now' FROM llm_clients c, api_keys k LIMIT 1`, nil},
	} {
		if _, err := s.DB().ExecContext(ctx, tc.query, tc.args...); err == nil || err.Error() != tc.col.refusal() {
			t.Errorf("%s: %v, want the refusal %q", tc.query, err, tc.col.refusal())
		}
	}
}

// TestSQLiteTimesFromBefore: rows written before the schema refused them
// (here: with the triggers dropped) may hold anything. The store reads
// each value as one exact time (a value that is no time as the earliest
// time, so such an expires_at has expired) and the row stays manageable.
func TestSQLiteTimesFromBefore(t *testing.T) {
	t.Parallel()
	s := timesStore(t, sqliteURL)
	dropTimeTriggers(t, s)
	runTimeCases(t, s, []timeCase{
		{expr: "'junk'", want: earliest},
		{expr: "''", want: earliest},
		{expr: "'now'", want: earliest},
		{expr: "1700000000", want: earliest},
		{expr: "julianday('2030-01-02')", want: earliest},
		{expr: "x'00'", want: earliest},
		{expr: "'2999-02-31 00:00:00'", want: earliest},
		{expr: "'2999-01-02 15:04:05 +01:00'", want: earliest},
		{expr: "'-infinity'", want: earliest},
		{expr: "'infinity'", want: latest, never: true},
		{expr: "'2999-01-02 '", want: utc("2999-01-02T00:00:00Z")},
		{expr: "'2999-01-02T'", want: utc("2999-01-02T00:00:00Z")},
		{expr: "'2999-01-02 15:04:05'||x'00'", want: earliest},
	})
}

// dropTimeTriggers removes the triggers that guard time columns, so that a
// test can write what an older schema let through.
func dropTimeTriggers(t *testing.T, s *sqlstore.Store) {
	t.Helper()
	var names []string
	if err := s.DB().Select(&names, `SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%times%'`); err != nil {
		t.Fatal(err)
	}
	if len(names) != 8 {
		t.Fatalf("time triggers %v, want 8", names)
	}
	for _, name := range names {
		if _, err := s.DB().Exec(`DROP TRIGGER ` + name); err != nil {
			t.Fatal(err)
		}
	}
}
