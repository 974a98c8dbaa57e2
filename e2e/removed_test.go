package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestServiceRemoved: an operator deletes a service block while
// connections of it go through the tunnel. With another service left on
// the same address they keep draining (OLD still routes what it moved,
// NEW keeps the address), and plan says status no longer shows them.
// Deleting the last service takes the tunnel's routing away: plan warns
// that this apply cuts them, before it does. What was seen before the
// warning: the held connection reset, and nothing said.
func TestServiceRemoved(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	const apiPort = 8090
	if err := s.Serve(ctx, lab.RoleNew, "new", fmt.Sprintf(":%d", apiPort), false); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ctx, lab.RoleOld, "old", fmt.Sprintf("%s:%d", l.OldIP, apiPort), false); err != nil {
		t.Fatal(err)
	}
	tunnel := fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q\n", l.OldIP, l.NewIP)
	svc := func(name string, port int) string {
		return fmt.Sprintf("service %q {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"new\"\n}\n", name, l.OldIP, port)
	}
	write := func(services string) {
		t.Helper()
		if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, services)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	write(svc("web", scenario.MigratedPort) + svc("api", apiPort))
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	api := startHolderTimeout(t, s, fmt.Sprintf("%s:%d", l.OldIP, apiPort), "10s")
	web := startHolderTimeout(t, s, fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort), "10s")
	if api.servedBy() != "new" || web.servedBy() != "new" {
		t.Fatalf("held connections served by %q and %q, want new", api.servedBy(), web.servedBy())
	}

	// "api" leaves the plan; "web" keeps the address and the tunnel.
	write(svc("web", scenario.MigratedPort))
	r := mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	want := fmt.Sprintf("WARNING host old: %s tcp port(s) %d left the plan while 1 connection(s) to them go through the tunnel to NEW: they keep draining there", l.OldIP, apiPort)
	if !strings.Contains(r.Stdout, want) {
		t.Errorf("apply without api: want %q in:\n%s", want, r.Stdout)
	}
	api.expectAnswering(t, "new")
	expectServedAt(t, ctx, s, fmt.Sprintf("%s:%d", l.OldIP, apiPort), "old")
	api.stop(t)

	// The last service leaves: the plan says this apply cuts its
	// connection, and it does.
	write("")
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	want = fmt.Sprintf("WARNING host old: %s tcp port(s) %d left the plan while 1 connection(s) to them go through the tunnel to NEW: this apply cuts them (it removes OLD's route into the tunnel)", l.OldIP, scenario.MigratedPort)
	if !strings.Contains(r.Stdout, want) {
		t.Errorf("plan without services: want %q in:\n%s", want, r.Stdout)
	}
	web.expectAnswering(t, "new")
	web.stop(t)

	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", stripCounters(before), stripCounters(after))
}
