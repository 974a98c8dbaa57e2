package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestTunnelChange: an operator edits the tunnel block in the middle of a
// migration (a new VNI and UDP port: the device must be made again). The
// moved service keeps working through the new device, and rollback still
// restores both hosts exactly.
func TestTunnelChange(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	write := func(extra string) {
		t.Helper()
		tunnel := fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q\n%s", l.OldIP, l.NewIP, extra)
		service := fmt.Sprintf("service \"web\" {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"new\"\n}\n", l.OldIP, scenario.MigratedPort)
		if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, service)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	write("")
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	// A connection moved to NEW, open across the change: its packets pause
	// while the devices are made again, then flow through the new ones.
	// Its read timeout outlasts the failing apply's tunnel check (5 pings,
	// 5 s each), during which the tunnel is the one that fails.
	held := startHolderTimeout(t, s, fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort), "60s")
	if held.servedBy() != "new" {
		t.Fatalf("held connection served by %q, want new", held.servedBy())
	}

	// A change the underlay does not pass (the router drops UDP to port
	// 4791): the tunnel check fails, and the undo makes the old devices
	// again with everything on them. Both hosts are as they were and the
	// held connection goes on.
	mid, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := l.Exec(ctx, lab.RoleRouter, "nft", "add table inet mgtest; add chain inet mgtest blocked { type filter hook forward priority 0; }; add rule inet mgtest blocked udp dport 4791 drop"); err != nil {
		t.Fatalf("router: %v %s", err, out)
	}
	write("  vni          = 78\n  port         = 4791\n")
	r := mustMigrate(t, ctx, s, 1, "apply", "--auto-approve", "-f", s.PlanFile)
	if !strings.Contains(r.Stderr, "tunnel check failed") {
		t.Errorf("apply over a blocked port: %s", r.Stderr)
	}
	if out, err := l.Exec(ctx, lab.RoleRouter, "nft", "delete table inet mgtest"); err != nil {
		t.Fatalf("router: %v %s", err, out)
	}
	undone, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Counters move with the held connection's pings, and the devices made
	// again have new indexes; the rest is the same.
	diffSnap(t, "a tunnel change undone", noIfindex(stripCounters(mid)), noIfindex(stripCounters(undone)))
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	held.expectAnswering(t, "new")

	write("  vni          = 77\n  port         = 4790\n")
	r = mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, "made again") {
		t.Errorf("plan does not say the tunnel devices are made again:\n%s", r.Stdout)
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	held.expectAnswering(t, "new")
	held.stop(t)
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		out, err := l.Exec(ctx, host, "ip", "-d", "link", "show", "mig0")
		if err != nil || !strings.Contains(string(out), "vxlan id 77 ") || !strings.Contains(string(out), "dstport 4790") {
			t.Errorf("%s: mig0 after the change: %v\n%s", host, err, out)
		}
	}
	mustMigrate(t, ctx, s, 0, "plan", "--detailed-exitcode", "-f", s.PlanFile)

	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "apply, tunnel change, rollback", before, after)
}

var ifindexLine = regexp.MustCompile(`(?m)^(\s*)\d+: `)

// noIfindex blanks the interface indexes of `ip addr`/`ip link` lines.
func noIfindex(snaps map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range snaps {
		out[k] = ifindexLine.ReplaceAllString(v, "${1}N: ")
	}
	return out
}
