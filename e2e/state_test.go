package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestLostStateFileAndStalePlan: rollback works from the hosts' own
// journals when the local state file is lost, and says so; a saved plan
// is refused once a host changed.
func TestLostStateFileAndStalePlan(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A saved plan, then a hand change on OLD: applying it is refused.
	saved := filepath.Join(s.Lab.Dir, "saved.plan")
	mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--out", saved, "--detailed-exitcode")
	if out, err := s.Lab.Exec(ctx, lab.RoleOld, "ip", "rule", "add", "pref", "30000", "from", "192.0.2.99", "lookup", "main"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	r := mustMigrate(t, ctx, s, 1, "apply", saved)
	if !strings.Contains(r.Stderr, "stale") || !strings.Contains(r.Stderr, "host old changed") {
		t.Errorf("stale saved plan: %s", r.Stderr)
	}
	after, _ := s.Snapshot(ctx)
	if after[lab.RoleNew] != before[lab.RoleNew] {
		t.Errorf("a refused stale plan changed NEW")
	}
	if out, err := s.Lab.Exec(ctx, lab.RoleOld, "ip", "rule", "del", "pref", "30000"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// An unchanged saved plan applies.
	mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--out", saved, "--detailed-exitcode")
	mustMigrate(t, ctx, s, 0, "apply", saved)
	expectServed(t, ctx, s, scenario.MigratedPort, "new")

	// The state file is lost: rollback from the hosts' journals.
	state := filepath.Join(filepath.Dir(s.PlanFile), "migration.state.json")
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	if !strings.Contains(r.Stdout, "was missing; it was rebuilt from the hosts' own journals") {
		t.Errorf("rollback without a state file does not say so:\n%s", r.Stdout)
	}
	after, err = s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback from the hosts' journals", before, after)
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
}
