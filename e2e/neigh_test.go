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

// TestNewNeverAnswersForMigratedAddresses: the migrated addresses are
// local on NEW, but a neighbour on NEW's uplink asking for them (ARP,
// IPv6 neighbour solicitation) gets no answer, so NEW never draws OLD's
// traffic to itself outside the tunnel.
func TestNewNeverAnswersForMigratedAddresses(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	services := fmt.Sprintf(`service "web" {
  address  = %q
  protocol = "tcp"
  ports    = [8080]
  stage    = "new"
}

service "web6" {
  address  = %q
  protocol = "tcp"
  ports    = [8080]
  stage    = "new"
}
`, l.OldIP, l.OldIP6)
	tunnel := fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", l.OldIP, l.NewIP)
	if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, services)), 0o644); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	dev := l.RouterIf(lab.RoleNew)
	for _, a := range []struct{ addr, host, family string }{
		{l.OldIP.String(), l.OldIP.String() + "/32", "-4"},
		{l.OldIP6.String(), l.OldIP6.String() + "/128", "-6"},
	} {
		// The router asks NEW's link for the migrated address.
		if out, err := l.Exec(ctx, lab.RoleRouter, "ip", a.family, "route", "add", a.host, "dev", dev); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		out, err := s.Labtool(ctx, 10*time.Second, lab.RoleRouter, "dial", "-timeout", "3s", hp(a.addr, scenario.MigratedPort))
		if err == nil {
			t.Errorf("the router reached %s through NEW's uplink: %s", a.addr, out)
		}
		neigh, _ := l.Exec(ctx, lab.RoleRouter, "ip", a.family, "neigh", "show", a.addr, "dev", dev)
		t.Logf("router's neighbour entry for %s on NEW's link: %q", a.addr, strings.TrimSpace(string(neigh)))
		if strings.Contains(string(neigh), "lladdr") {
			t.Errorf("NEW answered for %s on its uplink: %s", a.addr, neigh)
		}
		if out, err := l.Exec(ctx, lab.RoleRouter, "ip", a.family, "route", "del", a.host, "dev", dev); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	// The client is still served through OLD and the tunnel.
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
}
