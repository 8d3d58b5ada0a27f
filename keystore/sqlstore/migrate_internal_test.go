package sqlstore

import (
	"io/fs"
	"strings"
	"testing"
)

// TestMigrationsInStep keeps the two dialect directories one set: the same
// versions with the same names.
func TestMigrationsInStep(t *testing.T) {
	names := func(dir string) []string {
		entries, err := fs.ReadDir(migrations, "migrations/"+dir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	pg, lite := names("postgres"), names("sqlite")
	if len(pg) == 0 || strings.Join(pg, ",") != strings.Join(lite, ",") {
		t.Fatalf("postgres migrations %v, sqlite migrations %v: must match", pg, lite)
	}
}
