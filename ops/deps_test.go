package ops

import (
	"os/exec"
	"strings"
	"testing"
)

// Operations never print nor parse flags: ops imports neither the views
// nor cobra, and not the agent's kernel code (only the agent binary runs
// it).
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch dep {
		case "github.com/opsmigrate/migrate/views", "github.com/spf13/cobra", "github.com/opsmigrate/migrate/agent/kernel":
			t.Errorf("ops depends on %s", dep)
		}
	}
}
