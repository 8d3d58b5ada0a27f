package llmauth_test

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeExample keeps the README's library snippet identical to
// ExampleNew, which the tests compile and run.
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- code from ExampleNew -->\n```go\n")
	if !ok {
		t.Fatal("README has no block marked <!-- code from ExampleNew -->")
	}
	block, _, _ = strings.Cut(block, "```")
	_, body, ok := strings.Cut(string(src), "func ExampleNew() {\n")
	if !ok {
		t.Fatal("example_test.go has no ExampleNew")
	}
	body, _, _ = strings.Cut(body, "\n}\n")
	var want []string
	for _, l := range strings.Split(body, "\n") {
		want = append(want, strings.TrimPrefix(l, "\t"))
	}
	if got := strings.TrimRight(block, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("the README's snippet differs from ExampleNew; copy the function body (one tab less) into the README.\nREADME:\n%s\nExampleNew:\n%s", got, strings.Join(want, "\n"))
	}
}
