package sqlstore

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzDatabaseURL feeds parseDatabaseURL and RedactURL any string. Neither
// may panic, and neither the error nor the redacted form may show a
// password: the user-info password or a password or sslpassword query
// parameter, as net/url (and so lib/pq) reads the URL.
//
// A password may coincide with other text of the URL ("postgres://db:db@db"),
// so the check is differential: the same URL with each password replaced
// by other characters of the same length must print that password's text
// as often as the original does. Whatever the original shows more often
// can only come from the password.
func FuzzDatabaseURL(f *testing.F) {
	for _, s := range []string{
		"postgres://user:s3cr3t@db.example:5432/llmauth?sslmode=disable",
		"postgresql://user:s3cr3t@db.example/llmauth",
		"postgres://user@db.example/llmauth?password=s3cr3t&sslmode=require",
		"postgres://user:s3cr3t@db.example/llmauth?sslpassword=k3yp4ss&password=other",
		"postgres://user:p%40ss%2Fw0rd@db.example/llmauth",
		"postgres://user:s3cr3t@db.example:bad/llmauth",
		"postgres://user:s3cr3t@[::1/llmauth",
		"postgres://user:s3cr3t@db example/llmauth",
		"postgres://user:s3%zzcr3t@db.example/llmauth",
		"postgres://user:s3cr3t@db.example/llmauth?password=%zz&password=s3cr3t",
		"postgres://user:s3cr3t@db.example/llmauth?x=1;password=s3cr3t",
		"postgres://db:db@db/db?password=db",
		"postgres://user:xxxxx@db.example/llmauth",
		"postgres://:s3cr3t@db.example/llmauth",
		"postgres://user:s3cr3t@db.example/llmauth#password=s3cr3t",
		"postgres://user:12345@db.example/llmauth",
		"postgres://\x00user:s3cr3t@db.example/llmauth",
		"sqlite:llmauth.db", "sqlite:", "sqlite://", "file:", "file:///tmp/x.db",
		"sqlite:llmauth.db?password=s3cr3t", "sqlite://user:s3cr3t@host/llmauth.db",
		"sqlite:x.db#frag", "mysql://user:s3cr3t@db/x", "", "postgres://",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		_, _, err := parseDatabaseURL(raw)
		red := RedactURL(raw)
		for _, p := range urlPasswords(raw) {
			raw2 := raw[:p.start] + p.other + raw[p.end:]
			if !samePasswordsBut(raw, raw2, p) {
				continue // the replacement changed how the URL parses
			}
			_, _, err2 := parseDatabaseURL(raw2)
			if n, n2 := strings.Count(red, p.value), strings.Count(RedactURL(raw2), p.value); n > n2 {
				t.Fatalf("RedactURL(%q) = %q shows the password %q", raw, red, p.value)
			}
			if err != nil {
				e2 := ""
				if err2 != nil {
					e2 = err2.Error()
				}
				if n, n2 := strings.Count(err.Error(), p.value), strings.Count(e2, p.value); n > n2 {
					t.Fatalf("parseDatabaseURL(%q): the error %q shows the password %q", raw, err, p.value)
				}
			}
		}
	})
}

// urlPassword is one password in a URL: its decoded value, where its
// encoded form lies in the URL, and a replacement of the same length that
// shares no character with the value.
type urlPassword struct {
	value      string
	start, end int
	other      string
	query      string // "" for the user-info password, else the parameter name
}

// urlPasswords finds the passwords net/url sees in raw, with the offsets
// of their encoded forms, following url.Parse's own splitting: fragment at
// the first '#', query at the first '?', authority after "scheme://" up to
// the next '/', user info up to the authority's last '@', password after
// the user info's first ':'; query parameters split at '&', those with a
// ';' skipped, as url.ParseQuery does.
func urlPasswords(raw string) []urlPassword {
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	var out []urlPassword
	add := func(value string, start, end int, query string) {
		if value == "" {
			return
		}
		other := strings.Repeat("Q", end-start)
		if strings.Contains(value, "Q") {
			other = strings.Repeat("R", end-start)
		}
		out = append(out, urlPassword{value: value, start: start, end: end, other: other, query: query})
	}
	beforeFrag, _, _ := strings.Cut(raw, "#")
	if pw, ok := u.User.Password(); ok {
		if i := strings.Index(beforeFrag, "://"); i >= 0 && u.Opaque == "" {
			authStart := i + len("://")
			auth := beforeFrag[authStart:]
			if j := strings.IndexAny(auth, "/?"); j >= 0 {
				auth = auth[:j]
			}
			if at := strings.LastIndex(auth, "@"); at >= 0 {
				if c := strings.Index(auth[:at], ":"); c >= 0 {
					add(pw, authStart+c+1, authStart+at, "")
				}
			}
		}
	}
	q := strings.Index(beforeFrag, "?")
	if q < 0 {
		return out
	}
	off := q + 1
	for part := range strings.SplitSeq(beforeFrag[off:], "&") {
		start := off
		off += len(part) + 1
		if strings.Contains(part, ";") {
			continue
		}
		key, value, _ := strings.Cut(part, "=")
		k, err1 := url.QueryUnescape(key)
		v, err2 := url.QueryUnescape(value)
		if err1 != nil || err2 != nil || (k != "password" && k != "sslpassword") {
			continue
		}
		vStart := start + len(key) + 1
		add(v, vStart, vStart+len(value), k)
	}
	return out
}

// samePasswordsBut reports whether raw2 parses like raw except that the
// password p now reads as its replacement.
func samePasswordsBut(raw, raw2 string, p urlPassword) bool {
	u, err := url.Parse(raw)
	u2, err2 := url.Parse(raw2)
	if err != nil || err2 != nil {
		return false
	}
	if p.query == "" {
		pw2, ok := u2.User.Password()
		if !ok || pw2 != p.other || u2.User.Username() != u.User.Username() {
			return false
		}
		u2.User = u.User
	} else {
		q, q2 := u.Query(), u2.Query()
		for i, v := range q2[p.query] {
			if v == p.other {
				q2[p.query][i] = p.value
			}
		}
		if !sameValues(q, q2) {
			return false
		}
		u2.RawQuery = u.RawQuery
	}
	return u.String() == u2.String()
}

func sameValues(a, b url.Values) bool {
	if len(a) != len(b) {
		return false
	}
	for k, vs := range a {
		if strings.Join(vs, "\x00") != strings.Join(b[k], "\x00") || len(vs) != len(b[k]) {
			return false
		}
	}
	return true
}
