package llmauth_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestLayering keeps the arrows of the house pointing down: the contract
// links nothing but the standard library, the middleware nothing of SQL or
// the cache, the cache nothing of SQL, metrics nothing of the others.
func TestLayering(t *testing.T) {
	const mod = "github.com/llmauth/llmauth"
	sqlish := []string{"database/sql", "github.com/jmoiron/sqlx", "github.com/lib/pq", "github.com/pressly/goose",
		"modernc.org/sqlite", mod + "/keystore/sqlstore"}
	tests := []struct {
		pkg       string
		forbidden []string // prefixes of packages it must not depend on
		stdOnly   bool     // only the standard library and the module's own contract
	}{
		{pkg: mod + "/keystore", stdOnly: true},
		{pkg: mod + "/middleware", forbidden: append(sqlish, "github.com/patrickmn/go-cache", mod+"/keystore/cache", mod+"/metrics")},
		{pkg: mod + "/keystore/cache", forbidden: sqlish},
		{pkg: mod + "/metrics", forbidden: append(sqlish, mod+"/keystore", mod+"/middleware")},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "-json=ImportPath,Standard", tt.pkg).Output()
			if err != nil {
				t.Fatalf("go list: %v", err)
			}
			dec := json.NewDecoder(strings.NewReader(string(out)))
			for dec.More() {
				var p struct {
					ImportPath string
					Standard   bool
				}
				if err := dec.Decode(&p); err != nil {
					t.Fatal(err)
				}
				if tt.stdOnly && !p.Standard && p.ImportPath != tt.pkg {
					t.Errorf("%s depends on %s: the contract takes the standard library only", tt.pkg, p.ImportPath)
				}
				for _, f := range tt.forbidden {
					if p.ImportPath == f || strings.HasPrefix(p.ImportPath, f+"/") {
						t.Errorf("%s depends on %s", tt.pkg, p.ImportPath)
					}
				}
			}
		})
	}
}
