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

// TestUnderlayMTU: the path between OLD's and NEW's endpoints carries less
// than 1500 bytes (a tunnel or VPN on the way, a cloud's smaller MTU) and
// drops fragments (firewalls and cloud networks often do). VXLAN does not
// set DF on its packets, so the router on the way fragments the full-size
// ones and its next hop drops the fragments: small packets pass, so did
// apply's ping and probe, and a client's request; every upload to the
// moved service stalled (seen before the fix: 500 KB up timed out while
// apply said "tunnel verified"). apply now pings through the tunnel with
// packets of the tunnel's MTU, unfragmented, and on failure finds the
// largest size that makes the round trip and says which `mtu` to set;
// nothing stays applied. With that MTU, uploads and downloads complete.
func TestUnderlayMTU(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	t.Log("TUNNEL vxlan: TestUnderlayMTU")
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The router's link to NEW: 1400 bytes, and fragments dropped as they
	// leave (netdev egress sees the fragments the router made).
	dev := l.RouterIf(lab.RoleNew)
	for _, c := range [][]string{
		{"ip", "link", "set", "dev", dev, "mtu", "1400"},
		{"nft", fmt.Sprintf("add table netdev fragdrop; add chain netdev fragdrop out { type filter hook egress device %q priority 0; }; add rule netdev fragdrop out ip frag-off & 0x3fff != 0 counter drop", dev)},
	} {
		if out, err := l.Exec(ctx, lab.RoleRouter, c...); err != nil {
			t.Fatalf("router: %v %s", err, out)
		}
	}
	writeEditedPlan(t, s, "vxlan", "")
	r := mustMigrate(t, ctx, s, 1, "apply", "--auto-approve", "-f", s.PlanFile)
	// OLD's pings of 1450 bytes leave as 1500-byte VXLAN packets: 1400 at
	// most on the router's link to NEW, less VXLAN's 50 bytes.
	if want := "1350 bytes is the largest size that makes the round trip"; !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, "Set `mtu = 1350` in the tunnel block") {
		t.Errorf("apply over a 1400-byte underlay: want %q and the mtu to set:\n%s", want, r.Stderr)
	}
	expectSnap(t, ctx, s, "apply failed by the full-size check", before)
	if out, err := l.Exec(ctx, lab.RoleRouter, "nft", "list", "table", "netdev", "fragdrop"); err != nil || strings.Contains(string(out), "packets 0 ") {
		t.Errorf("the router dropped no fragment (the check showed nothing): %v %s", err, out)
	}

	writeEditedPlan(t, s, "vxlan", "  mtu          = 1350\n")
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("NEW's server saw %q, want the client's address %s", out, l.ClientIP)
	}
	for _, dir := range []string{"up", "down"} {
		out, err := s.Labtool(ctx, 40*time.Second, lab.RoleClient, "bulk", "-dir", dir, "-bytes", "2000000", "-timeout", scenario.Slow(20*time.Second).String(), hp(l.OldIP.String(), scenario.MigratedPort))
		if err != nil || !strings.Contains(out, "ok") {
			t.Errorf("2 MB %s through a 1350-byte tunnel over a 1400-byte underlay: %v %s", dir, err, out)
		}
	}
	// Weeks later the path shrinks (another route, a VPN on the way):
	// status says so, where small pings still pass.
	if out, err := l.Exec(ctx, lab.RoleRouter, "ip", "link", "set", "dev", dev, "mtu", "1300"); err != nil {
		t.Fatalf("router: %v %s", err, out)
	}
	r = mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if want := "packets of 1350 bytes (the tunnel's MTU) get no answer while small ones do"; !strings.Contains(r.Stdout, want) || !strings.Contains(r.Stdout, "BROKEN") {
		t.Errorf("status over a path shrunk to 1300 bytes: want %q and the moved service BROKEN:\n%s", want, r.Stdout)
	}
	if out, err := l.Exec(ctx, lab.RoleRouter, "ip", "link", "set", "dev", dev, "mtu", "1400"); err != nil {
		t.Fatalf("router: %v %s", err, out)
	}
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "get no answer") || strings.Contains(r.Stdout, "BROKEN") {
		t.Errorf("status with the path back at 1400 bytes:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	for _, c := range [][]string{{"nft", "delete", "table", "netdev", "fragdrop"}, {"ip", "link", "set", "dev", dev, "mtu", "1500"}} {
		if out, err := l.Exec(ctx, lab.RoleRouter, c...); err != nil {
			t.Fatalf("router: %v %s", err, out)
		}
	}
	expectSnap(t, ctx, s, "rollback --all", before)
}

// TestJumboNew: NEW sits on a jumbo-frame network (AWS instances have
// 9001), OLD on 1500, and the path between them carries 1500 and drops
// the rest (here the router's link to NEW, whose veth drops frames above
// its MTU, as a path that sends no ICMP). migrate sizes each host's tunnel
// device from that host's own underlay: 1450 on OLD, 8950 on NEW. plan
// warns and names the value to set; apply's full-size check fails on
// NEW's side (undone, hosts unchanged) with the same value; with it set,
// transfers both ways complete and rollback is exact.
func TestJumboNew(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	t.Log("TUNNEL vxlan: TestJumboNew")
	if out, err := l.Exec(ctx, lab.RoleNew, "ip", "link", "set", "dev", "eth0", "mtu", "9000"); err != nil {
		t.Fatalf("new: %v %s", err, out)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	writeEditedPlan(t, s, "vxlan", "")
	r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if want := "WARNING: the tunnel's MTU differs between the hosts: 1450 on OLD, 8950 on NEW"; !strings.Contains(r.Stdout, want) || !strings.Contains(r.Stdout, "set `mtu = 1450` in the tunnel block") {
		t.Errorf("plan with NEW on 9000-byte frames: want %q and the mtu to set:\n%s", want, r.Stdout)
	}
	r = mustMigrate(t, ctx, s, 1, "apply", "--auto-approve", "-f", s.PlanFile)
	// 1450, or up to 1454 here: a veth takes frames up to its MTU plus a
	// VLAN tag's 4 bytes (is_skb_forwardable), so this lab's path carries
	// 4 bytes more than a real 1500-byte one.
	found := regexp.MustCompile("new's pings of 8950 bytes \\(the tunnel's MTU\\) to old's inner address 169.254.42.1 through the tunnel got no answer, and (145[0-4]) bytes is the largest size that makes the round trip").FindStringSubmatch(r.Stderr)
	if found == nil || !strings.Contains(r.Stderr, "Set `mtu = "+found[1]+"` in the tunnel block") {
		t.Errorf("apply with NEW on 9000-byte frames: want the largest size (1450-1454) and the mtu to set:\n%s", r.Stderr)
	}
	expectSnap(t, ctx, s, "apply failed by the full-size check", before)

	writeEditedPlan(t, s, "vxlan", "  mtu          = 1450\n")
	if r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile); strings.Contains(r.Stdout, "MTU differs") {
		t.Errorf("plan still warns with mtu set:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("NEW's server saw %q, want the client's address %s", out, l.ClientIP)
	}
	for _, dir := range []string{"up", "down"} {
		out, err := s.Labtool(ctx, 40*time.Second, lab.RoleClient, "bulk", "-dir", dir, "-bytes", "2000000", "-timeout", scenario.Slow(20*time.Second).String(), hp(l.OldIP.String(), scenario.MigratedPort))
		if err != nil || !strings.Contains(out, "ok") {
			t.Errorf("2 MB %s with NEW on 9000-byte frames and mtu = 1450: %v %s", dir, err, out)
		}
	}
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	expectSnap(t, ctx, s, "rollback --all", before)
}
