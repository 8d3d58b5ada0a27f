package target_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/llmauth/llmauth/internal/loadgen/target"
	"github.com/llmauth/llmauth/internal/pgtest"
	"github.com/llmauth/llmauth/keystore"
	"github.com/llmauth/llmauth/keystore/sqlstore"
)

type reply struct {
	Client    string  `json:"client"`
	Anonymous bool    `json:"anonymous"`
	KeyID     *int64  `json:"key_id"`
	Reply     *string `json:"reply"`
}

func post(t *testing.T, h http.Handler, client, token string) (int, reply) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/v1/clients/"+client+"/chat", strings.NewReader(`{"message":"hi"}`))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var r reply
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", rec.Body, err)
		}
	}
	return rec.Code, r
}

func TestBare(t *testing.T) {
	code, r := post(t, target.Bare(), "anyone", "")
	if code != http.StatusOK || r.Client != "anyone" || !r.Anonymous || r.Reply == nil || *r.Reply != "hi" {
		t.Errorf("%d %+v", code, r)
	}
}

func TestNaive(t *testing.T) {
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := sqlstore.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	s, err := sqlstore.New(ctx, db, sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"open", "secure", "other"} {
		if _, err := s.CreateClient(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	key, err := s.CreateKey(ctx, "secure", keystore.KeySpec{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := s.CreateKey(ctx, "other", keystore.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	unknownToken, _ := keystore.NewToken()
	e, err := target.NaiveApp(db)
	if err != nil {
		t.Fatal(err)
	}

	code, r := post(t, e, "secure", key.Token.Reveal())
	if code != http.StatusOK || r.Anonymous || r.KeyID == nil || *r.KeyID != key.ID || r.Client != "secure" || r.Reply == nil {
		t.Errorf("valid: %d %+v", code, r)
	}
	if code, r := post(t, e, "open", ""); code != http.StatusOK || !r.Anonymous || r.Client != "open" {
		t.Errorf("anonymous: %d %+v", code, r)
	}
	for name, tt := range map[string]struct {
		client, token string
		want          int
	}{
		"missing":        {"secure", "", http.StatusUnauthorized},
		"unknown token":  {"secure", unknownToken.Reveal(), http.StatusUnauthorized},
		"other's token":  {"secure", otherKey.Token.Reveal(), http.StatusUnauthorized},
		"malformed":      {"secure", "nope", http.StatusUnauthorized},
		"unknown client": {"nobody", "", http.StatusNotFound},
	} {
		if code, _ := post(t, e, tt.client, tt.token); code != tt.want {
			t.Errorf("%s: %d, want %d", name, code, tt.want)
		}
	}
}
