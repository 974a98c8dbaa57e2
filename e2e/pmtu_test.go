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

// TestPathMTUThroughTunnel: clients behind a smaller MTU than the
// tunnel's (PPPoE, mobile, VPN users) download from a moved service. NEW
// sends segments sized for the tunnel (1410 bytes of payload); the
// router in front of the client cannot forward them (its link to the
// client is 1280 here) and sends the ICMP "fragmentation needed" (IPv6:
// "packet too big") to the segments' source, OLD's address. OLD must send
// that error to NEW through the tunnel (conntrack relates it to the moved
// flow, whose mark routes it), or NEW never learns the path MTU and the
// download stalls (a PMTU black hole). Checked: 5 MB down and up over
// IPv4 and IPv6 complete, and NEW's route to the client has learned 1280.
func TestPathMTUThroughTunnel(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	tunnel := fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", l.OldIP, l.NewIP)
	var svcs strings.Builder
	for name, a := range map[string]string{"web4": l.OldIP.String(), "web6": l.OldIP6.String()} {
		fmt.Fprintf(&svcs, "service %q {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"new\"\n}\n\n", name, a, scenario.MigratedPort)
	}
	if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, svcs.String())), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	if out, err := l.Exec(ctx, lab.RoleRouter, "ip", "link", "set", "dev", l.RouterIf(lab.RoleClient), "mtu", "1280"); err != nil {
		t.Fatalf("router: %v %s", err, out)
	}
	for _, c := range []struct{ family, client, service string }{
		{"-4", l.ClientIP.String(), l.OldIP.String()},
		{"-6", l.ClientIP6.String(), l.OldIP6.String()},
	} {
		for _, dir := range []string{"down", "up"} {
			out, err := s.Labtool(ctx, 40*time.Second, lab.RoleClient, "bulk", "-dir", dir, "-bytes", "5000000", "-timeout", scenario.Slow(20*time.Second).String(), hp(c.service, scenario.MigratedPort))
			if err != nil || !strings.Contains(out, "ok") {
				t.Errorf("5 MB %s to %s behind a 1280-byte link: %v %s", dir, c.service, err, out)
			}
		}
		out, err := l.Exec(ctx, lab.RoleNew, "ip", c.family, "route", "get", c.client, "from", c.service)
		if err != nil || !strings.Contains(string(out), "dev mig0") || !strings.Contains(string(out), "mtu 1280") {
			t.Errorf("NEW's route to %s did not learn the path MTU through the tunnel: %v %s", c.client, err, out)
		}
	}
	if out, err := l.Exec(ctx, lab.RoleRouter, "ip", "link", "set", "dev", l.RouterIf(lab.RoleClient), "mtu", "1500"); err != nil {
		t.Fatalf("router: %v %s", err, out)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	expectSnap(t, ctx, s, "rollback --all", before)
}
