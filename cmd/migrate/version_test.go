package main

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/agent/proto"
)

// version names the build's platform and the agent protocol it speaks,
// the real constant rather than a number written twice.
func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	c := newCLI(strings.NewReader(""), &out, &errb)
	root := c.root()
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("migrate %s %s/%s (agent protocol %d)\n", Version, runtime.GOOS, runtime.GOARCH, proto.Version)
	if out.String() != want {
		t.Fatalf("version printed %q, want %q", out.String(), want)
	}
}
