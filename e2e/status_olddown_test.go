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

// TestStatusStoppedDaemonOnOld: OLD's daemon is stopped too early (or
// crashes) while OLD still takes the service's new flows: at stage old
// all of them, at canary the share NEW does not get. Every such client is
// refused on OLD, and status used to say nothing ("on OLD", "OLD is
// still needed"). Now status names the service NOT SERVED ON OLD, warns,
// its verdict says OLD refuses the clients, and --json lists the port in
// old_unserved; with the daemon back it reads as before. At stage new,
// OLD's daemon stopped is the normal end ("drained, OLD may be switched
// off") and is not flagged.
func TestStatusStoppedDaemonOnOld(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	port := scenario.MigratedPort
	addr := fmt.Sprintf("%s:%d", l.OldIP, port)
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "old"); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, port, "old")
	const notMoved = "OLD is still needed: 1 service(s) are not fully on NEW."
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "NOT SERVED") || !strings.Contains(r.Stdout, notMoved) {
		t.Fatalf("status with OLD serving:\n%s", r.Stdout)
	}

	// Stage old: OLD's daemon stops (labtool serve closes its listener
	// on SIGUSR1, as a graceful stop does).
	stopListening(t, ctx, l, port)
	if out, err := s.Dial(ctx, lab.RoleClient, addr); err == nil || !strings.Contains(out, "connection refused") {
		t.Fatalf("client to %s with OLD's daemon stopped at stage old: %v %q, want connection refused", addr, err, out)
	} else {
		t.Logf("client (in %s) to %s with OLD's daemon stopped: %s", l.NS[lab.RoleClient], addr, out)
	}
	r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	for _, want := range []string{
		fmt.Sprintf("NOT SERVED ON OLD: its new flows stay on OLD, where nothing listens on port %d: those clients are refused", port),
		fmt.Sprintf(`WARNING: nothing on OLD listens on tcp %s port %d of service "web", whose new flows stay on OLD: OLD refuses those clients.`, l.OldIP, port),
		"OLD does not serve 1 service(s) whose new flows still go to it",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("status with OLD's daemon stopped at stage old lacks %q:\n%s", want, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, notMoved) {
		t.Errorf("status with OLD's daemon stopped at stage old says only %q:\n%s", notMoved, r.Stdout)
	}
	t.Logf("status with OLD's daemon stopped at stage old:\n%s", r.Stdout)
	if r := mustMigrate(t, ctx, s, 0, "status", "--json", "-f", s.PlanFile); !strings.Contains(r.Stdout, fmt.Sprintf(`"old_unserved":[%d]`, port)) {
		t.Errorf("status --json with OLD's daemon stopped lacks old_unserved:\n%s", r.Stdout)
	}

	// The daemon is back: status reads as before.
	if err := s.Serve(ctx, lab.RoleOld, "old", addr, false); err != nil {
		t.Fatal(err)
	}
	expectServed(t, ctx, s, port, "old")
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "NOT SERVED") || strings.Contains(r.Stdout, "WARNING") || !strings.Contains(r.Stdout, notMoved) {
		t.Errorf("status with OLD's daemon back:\n%s", r.Stdout)
	}
	if r := mustMigrate(t, ctx, s, 0, "status", "--json", "-f", s.PlanFile); !strings.Contains(r.Stdout, `"old_unserved":[]`) {
		t.Errorf("status --json with OLD's daemon back:\n%s", r.Stdout)
	}

	// Canary 50%: half the new flows still go to OLD, which refuses them
	// once its daemon stops; NEW serves the other half.
	writeCanaryPlan(t, s, 50)
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	stopListening(t, ctx, l, port)
	refused, byNew := 0, 0
	for i := 0; i < 30 && (refused == 0 || byNew == 0); i++ {
		out, err := s.Dial(ctx, lab.RoleClient, addr)
		switch {
		case err != nil && strings.Contains(out, "connection refused"):
			refused++
		case err == nil && strings.Contains(out, "served-by=new "):
			byNew++
		default:
			t.Fatalf("client to %s at canary 50%% with OLD's daemon stopped: %v %q", addr, err, out)
		}
	}
	if refused == 0 || byNew == 0 {
		t.Errorf("at canary 50%% with OLD's daemon stopped: %d refused, %d served by NEW; want both", refused, byNew)
	}
	r = mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	for _, want := range []string{
		fmt.Sprintf("NOT SERVED ON OLD: 50%% of its new flows stay on OLD, where nothing listens on port %d: those clients are refused", port),
		fmt.Sprintf(`WARNING: nothing on OLD listens on tcp %s port %d of service "web", 50%% of whose new flows stay on OLD`, l.OldIP, port),
		"OLD does not serve 1 service(s) whose new flows still go to it",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("status at canary 50%% with OLD's daemon stopped lacks %q:\n%s", want, r.Stdout)
		}
	}

	// Stage new with OLD's daemon still stopped: the normal end, not
	// flagged.
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, port, "new")
	// (The client's dials linger in OLD's conntrack: "OLD still relays",
	// not yet "may be switched off".)
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "NOT SERVED") || strings.Contains(r.Stdout, "WARNING") || !strings.Contains(r.Stdout, "Every service is on NEW and drained") {
		t.Errorf("status at stage new with OLD's daemon stopped:\n%s", r.Stdout)
	}
	if r := mustMigrate(t, ctx, s, 0, "status", "--json", "-f", s.PlanFile); !strings.Contains(r.Stdout, `"old_unserved":[]`) {
		t.Errorf("status --json at stage new with OLD's daemon stopped:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	expectSnap(t, ctx, s, "rollback --all", before)
}

// writeCanaryPlan writes the core scenario's plan (vxlan) with service
// "web" at stage canary, percent of its new flows to NEW.
func writeCanaryPlan(t *testing.T, s *scenario.Scenario, percent int) {
	t.Helper()
	oldEP, newEP := tunnelCase{Type: "vxlan"}.endpoints(s.Lab)
	tunnel := fmt.Sprintf("  type         = %q\n  old_endpoint = %q\n  new_endpoint = %q", "vxlan", oldEP, newEP)
	svc := strings.Replace(webService(s, "canary"), "  stage    = \"canary\"\n", fmt.Sprintf("  stage    = \"canary\"\n  canary_percent = %d\n", percent), 1)
	if !strings.Contains(svc, "canary_percent") {
		t.Fatalf("no canary_percent in %q", svc)
	}
	if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, svc)), 0o644); err != nil {
		t.Fatal(err)
	}
}
