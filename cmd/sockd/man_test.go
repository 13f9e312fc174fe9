package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestReferenceFlagTable: docs/reference.md's flag table is `sockd man
// markdown`'s output, byte for byte (regenerate it with that command).
func TestReferenceFlagTable(t *testing.T) {
	b, err := os.ReadFile("../../docs/reference.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- sockd man markdown: generated from the flag definitions; TestReferenceFlagTable keeps it equal -->\n", "<!-- end of sockd man markdown -->\n"
	_, rest, ok := strings.Cut(string(b), begin)
	table, _, ok2 := strings.Cut(rest, end)
	if !ok || !ok2 {
		t.Fatalf("docs/reference.md has no table between %q and %q", begin, end)
	}
	var want bytes.Buffer
	if code := sockd([]string{"man", "markdown"}, &want, os.Stderr); code != 0 {
		t.Fatalf("sockd man markdown: exit %d", code)
	}
	if table != want.String() {
		t.Errorf("docs/reference.md's flag table differs from sockd man markdown; regenerate it:\n%s", want.String())
	}
}
