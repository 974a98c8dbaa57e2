package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/ops"
	"github.com/opsmigrate/migrate/remote"
)

// --host-timeout reaches every target the CLI builds; below 1s it is
// refused before anything else runs.
func TestHostTimeoutFlag(t *testing.T) {
	run := func(args ...string) error {
		var out, errb bytes.Buffer
		root := newCLI(strings.NewReader(""), &out, &errb).root()
		root.SetArgs(args)
		return root.Execute()
	}
	if err := run("validate", "-f", "/nonexistent/migration.hcl", "--host-timeout", "500ms"); err == nil || !strings.Contains(err.Error(), "--host-timeout 500ms: must be at least 1s") {
		t.Errorf("--host-timeout 500ms: %v", err)
	}
	_ = run("validate", "-f", "/nonexistent/migration.hcl", "--host-timeout", "7s")
	if got := ops.TargetOf("old", hostBlock(), hostTimeout).Timeout.String(); got != "7s" {
		t.Errorf("target timeout %s after --host-timeout 7s", got)
	}
	_ = run("validate", "-f", "/nonexistent/migration.hcl")
	if got := ops.TargetOf("old", hostBlock(), hostTimeout).Timeout; got != remote.DefaultTimeout || got.String() != "30s" {
		t.Errorf("default target timeout %s, want 30s", got)
	}
}

func hostBlock() *config.Host {
	return &config.Host{Name: "old", User: "root", Address: "192.0.2.1", Port: 22, KnownHosts: "/dev/null"}
}
