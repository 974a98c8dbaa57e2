package main

import (
	"bytes"
	"strings"
	"testing"
)

// A test binary is a dev build: it carries no agents and says how to get
// a build that does.
func TestAgentBinaryDevBuild(t *testing.T) {
	var out, errb bytes.Buffer
	c := newCLI(strings.NewReader(""), &out, &errb)
	root := c.root()
	root.SetArgs([]string{"agent-binary"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "carries no agents") || !strings.Contains(err.Error(), "make release") {
		t.Fatalf("agent-binary in a dev build: %v", err)
	}
}
