package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestStatusDeadDaemonOnNew: in the third week the service's daemon on
// NEW dies. Seen before: status called the service drained and said OLD
// may be switched off, while NEW refused every client of it. Now status
// names the service NOT SERVED ON NEW, warns with what NEW listens on,
// and its verdict keeps the address where it is; once the daemon is back
// it reads as before.
func TestStatusDeadDaemonOnNew(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	const freed = "OLD may be switched off"
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); !strings.Contains(r.Stdout, freed) {
		t.Fatalf("status with NEW serving:\n%s", r.Stdout)
	}

	signalListener(t, ctx, l, lab.RoleNew, scenario.MigratedPort, "-KILL") // the daemon dies
	if out, err := s.Dial(ctx, lab.RoleClient, fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort)); err == nil {
		t.Fatalf("the client still reaches a server with NEW's daemon dead: %s", out)
	}
	r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	for _, want := range []string{
		fmt.Sprintf("NOT SERVED ON NEW: its new flows go to NEW, where nothing listens on port %d", scenario.MigratedPort),
		fmt.Sprintf(`WARNING: nothing on NEW listens on tcp %s port %d of service "web"`, l.OldIP, scenario.MigratedPort),
		"NEW does not serve 1 service(s) whose new flows go to it",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("status with NEW's daemon dead lacks %q:\n%s", want, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, freed) {
		t.Errorf("status with NEW's daemon dead says %q:\n%s", freed, r.Stdout)
	}
	if r := mustMigrate(t, ctx, s, 0, "status", "--json", "-f", s.PlanFile); !strings.Contains(r.Stdout, fmt.Sprintf(`"new_unserved":[%d]`, scenario.MigratedPort)) {
		t.Errorf("status --json with NEW's daemon dead lacks new_unserved:\n%s", r.Stdout)
	}

	if err := s.Serve(ctx, lab.RoleNew, "new", fmt.Sprintf(":%d", scenario.MigratedPort), false); err != nil {
		t.Fatal(err)
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	// (The client's dials since linger in OLD's conntrack: "OLD still
	// relays", not yet "may be switched off".)
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "NOT SERVED") || !strings.Contains(r.Stdout, "Every service is on NEW and drained") {
		t.Errorf("status with NEW's daemon back:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	expectSnap(t, ctx, s, "rollback --all", before)
}
