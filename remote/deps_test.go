package remote

import (
	"os/exec"
	"strings"
	"testing"
)

// The SSH transport needs the plain state values and the wire format, not
// the planner: importing apply once pulled HCL and plan into every agent
// connection. Keep it out.
func TestNoPlannerDependencies(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v: %s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == "github.com/opsmigrate/migrate/apply",
			dep == "github.com/opsmigrate/migrate/plan",
			strings.HasPrefix(dep, "github.com/hashicorp/hcl"):
			t.Errorf("package remote depends on %s", dep)
		}
	}
}
