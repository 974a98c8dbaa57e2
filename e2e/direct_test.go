package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestDirectSegment: what a direct tunnel must never do to the segment it
// shares with OLD and the router, checked from the router (a host of the
// segment), each check shown able to fail by undoing its fix by hand
// (plan then shows the drift, apply puts it back):
//
//   - NEW never answers ARP for a migrated IPv4 address: with OLD's ARP
//     replies held back, the router's request goes unanswered (NEW's
//     answer is dropped by migrate's arp table; without the table, NEW
//     answers);
//   - NEW never answers NDP for a migrated IPv6 address (the kernel
//     answers only for an address of the interface the solicitation
//     arrives on; the address is on lo), while it does answer for its
//     own segment address;
//   - NEW's own ARP requests (for OLD, when it sends from a migrated
//     address) do not claim that address: the router keeps OLD's MAC
//     for it (arp_announce 2; with 0 NEW's request names the migrated
//     address as its sender and the router takes NEW's MAC);
//   - OLD sends no ICMP redirects for the flows it forwards to NEW out of
//     the interface they came in on (send_redirects 0; with 1 it does);
//   - a drained flow stays on OLD while new ones go to NEW.
//
// Then rollback restores both hosts byte for byte.
func TestDirectSegment(t *testing.T) {
	needRoot(t)
	t.Logf("TUNNEL direct (one segment, no device): running on this kernel (%s)", kernelRelease())
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newScenarioOpts(t, ctx, lab.Options{Prefix: "mge", Segment: true})
	l := s.Lab
	old4, old6 := l.OldIP.String(), l.OldIP6.String()
	if err := s.Serve(ctx, lab.RoleOld, "old", hp(old6, scenario.StayPort), false); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// init proposes direct: OLD and NEW share 198.51.100.0/24.
	initOut := l.Dir + "/init.hcl"
	r := mustMigrate(t, ctx, s, 0, "init", "--old", "root@"+old4, "--new", "root@"+l.NewIP.String(),
		"--identity-file", l.IdentityFile, "--known-hosts", l.KnownHosts, "-o", initOut)
	if !strings.Contains(r.Stdout, "share the subnet 198.51.100.0/24: the plan uses a direct tunnel") {
		t.Errorf("init does not say why it chose direct:\n%s", r.Stdout)
	}
	if cfg, err := config.Load(initOut); err != nil || cfg.Tunnel == nil || cfg.Tunnel.Type != "direct" ||
		cfg.Tunnel.OldEndpoint != l.OldIP || cfg.Tunnel.NewEndpoint != l.NewSegIP {
		text, _ := os.ReadFile(initOut)
		t.Errorf("init wrote no direct tunnel between %s and %s (%v):\n%s", l.OldIP, l.NewSegIP, err, text)
	}

	// plan refuses direct between hosts that are not on one link (NEW's
	// own address is behind the router), touching nothing.
	notOne := fmt.Sprintf("  type         = \"direct\"\n  old_endpoint = %q\n  new_endpoint = %q", old4, l.NewIP)
	if err := os.WriteFile(s.PlanFile, []byte(s.HCL(notOne, fmt.Sprintf("service \"web\" {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"new\"\n}\n", old4, scenario.MigratedPort))), 0o644); err != nil {
		t.Fatal(err)
	}
	r = mustMigrate(t, ctx, s, 1, "plan", "-f", s.PlanFile)
	if want := fmt.Sprintf("OLD reaches NEW's endpoint %s through the gateway 198.51.100.1 (dev eth0): OLD and NEW are not on one link", l.NewIP); !strings.Contains(r.Stderr, want) {
		t.Errorf("plan of a direct tunnel across the router: want %q in:\n%s", want, r.Stderr)
	}
	if snap, err := s.Snapshot(ctx); err != nil {
		t.Fatal(err)
	} else {
		diffSnap(t, "a refused plan", before, snap)
	}

	// A client connection held open across the move: it must stay on
	// OLD (drain).
	held := startHolder(t, s, hp(old4, scenario.MigratedPort))
	held.expectAnswering(t, "old")

	tunnel := fmt.Sprintf("  type         = \"direct\"\n  old_endpoint = %q\n  new_endpoint = %q", old4, l.NewSegIP)
	services := fmt.Sprintf(`service "web" {
  address  = %q
  protocol = "tcp"
  ports    = [%d]
  stage    = "new"
}

service "web6" {
  address       = %q
  protocol      = "tcp"
  ports         = [%d]
  stage         = "old"
  allow_unready = true
}
`, old4, scenario.MigratedPort, old6, scenario.MigratedPort)
	if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, services)), 0o644); err != nil {
		t.Fatal(err)
	}
	r = mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	if !strings.Contains(r.Stdout, "source/destination check") {
		t.Errorf("apply does not tell the cloud caveat:\n%s", r.Stdout)
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	r = mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if want := fmt.Sprintf("Tunnel eth0/eth1 (direct, %s <-> %s): up", old4, l.NewSegIP); !strings.Contains(r.Stdout, want) {
		t.Errorf("status: want %q in:\n%s", want, r.Stdout)
	}
	// The held connection drains on OLD; it ends here, before the checks
	// below break the segment on purpose.
	held.expectAnswering(t, "old")
	held.stop(t)

	run := func(role string, args ...string) string {
		t.Helper()
		out, err := l.Exec(ctx, role, args...)
		if err != nil {
			t.Fatalf("%s: %v: %v: %s", role, args, err, out)
		}
		return string(out)
	}
	mac := func(role, dev string) string {
		t.Helper()
		m := etherRE.FindStringSubmatch(run(role, "ip", "-o", "link", "show", "dev", dev))
		if m == nil {
			t.Fatalf("%s %s: no MAC", role, dev)
		}
		return m[1]
	}
	oldMAC, newMAC := mac(lab.RoleOld, "eth0"), mac(lab.RoleNew, "eth1")
	br := l.SegmentBridge
	lladdrRE := regexp.MustCompile(`lladdr ([0-9a-f:]{17})`)
	// resolve has the router (on the segment) look addr up afresh and
	// returns the MAC it settled on ("" for none).
	resolve := func(addr string, port int) string {
		t.Helper()
		run(lab.RoleRouter, "ip", "neigh", "flush", "to", addr, "dev", br)
		_, _ = s.Labtool(ctx, 10*time.Second, lab.RoleRouter, "dial", "-timeout", "2s", hp(addr, port))
		m := lladdrRE.FindStringSubmatch(run(lab.RoleRouter, "ip", "neigh", "show", "to", addr, "dev", br))
		if m == nil {
			return ""
		}
		return m[1]
	}
	block := func(role, rules string) {
		t.Helper()
		f := fmt.Sprintf("%s/block-%s.nft", l.Dir, role)
		if err := os.WriteFile(f, []byte(rules), 0o644); err != nil {
			t.Fatal(err)
		}
		run(role, "nft", "-f", f)
	}
	const holdARP = "table arp labhold {\n  chain out { type filter hook output priority 0; policy accept; arp operation reply counter drop; }\n}\n"
	const holdNDP = "table ip6 labhold {\n  chain out { type filter hook output priority 0; policy accept; icmpv6 type nd-neighbor-advert counter drop; }\n}\n"

	// ARP: OLD's answers held back, nobody answers for OLD's address.
	block(lab.RoleOld, holdARP)
	if got := resolve(old4, scenario.StayPort); got != "" {
		t.Errorf("with OLD silent, %s was answered on the segment by %s (NEW is %s): NEW answers ARP for a migrated address", old4, got, newMAC)
	}
	// The check can fail: without migrate's arp table NEW answers.
	run(lab.RoleNew, "nft", "delete", "table", "arp", "migrate")
	if got := resolve(old4, scenario.StayPort); got != newMAC {
		t.Errorf("without migrate's arp table on NEW, %s resolved to %q, want NEW's %s (the ARP check cannot fail)", old4, got, newMAC)
	}
	// That is the danger itself: the router now sends OLD's traffic
	// (migrate's own SSH connection too) to NEW. Put OLD back in the
	// router's cache by hand; a unicast probe confirms it with OLD.
	run(lab.RoleOld, "nft", "delete", "table", "arp", "labhold")
	run(lab.RoleRouter, "ip", "neigh", "replace", old4, "lladdr", oldMAC, "dev", br, "nud", "stale")
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "nft table inet migrate") {
		t.Errorf("plan does not repair NEW's nft tables:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	block(lab.RoleOld, holdARP)
	if got := resolve(old4, scenario.StayPort); got != "" {
		t.Errorf("after the repair, %s was answered by %s with OLD silent", old4, got)
	}
	run(lab.RoleOld, "nft", "delete", "table", "arp", "labhold")
	if got := resolve(old4, scenario.StayPort); got != oldMAC {
		t.Errorf("router resolves %s to %q, want OLD's %s", old4, got, oldMAC)
	}

	// NDP: OLD's advertisements held back, nobody answers for OLD's
	// IPv6 address; NEW does answer for its own segment address.
	block(lab.RoleOld, holdNDP)
	if got := resolve(old6, scenario.StayPort); got != "" {
		t.Errorf("with OLD silent, %s was answered on the segment by %s (NEW is %s): NEW answers NDP for a migrated address", old6, got, newMAC)
	}
	if got := resolve(l.NewSegIP6.String(), scenario.StayPort); got != newMAC {
		t.Errorf("router resolves NEW's own %s to %q, want %s: the NDP check would not see NEW answer", l.NewSegIP6, got, newMAC)
	}
	run(lab.RoleOld, "nft", "delete", "table", "ip6", "labhold")
	if got := resolve(old6, scenario.StayPort); got != oldMAC {
		t.Errorf("router resolves %s to %q, want OLD's %s", old6, got, oldMAC)
	}

	// NEW's own ARP for OLD, sent when it talks from the migrated
	// address, leaves the router's entry for that address alone.
	claim := func() string {
		t.Helper()
		if got := resolve(old4, scenario.StayPort); got != oldMAC {
			t.Fatalf("router resolves %s to %q, want OLD's %s", old4, got, oldMAC)
		}
		time.Sleep(1200 * time.Millisecond) // past the router's locktime (1 s)
		run(lab.RoleNew, "ip", "neigh", "flush", "dev", "eth1")
		mustDial(t, ctx, s, lab.RoleNew, "served-by=client peer="+old4+" ", "-bind", old4, hp(l.ClientIP.String(), scenario.ClientPort))
		m := lladdrRE.FindStringSubmatch(run(lab.RoleRouter, "ip", "neigh", "show", "to", old4, "dev", br))
		if m == nil {
			return ""
		}
		return m[1]
	}
	if got := claim(); got != oldMAC {
		t.Errorf("after NEW sent from %s, the router has %s at %q, want OLD's %s", old4, old4, got, oldMAC)
	}
	run(lab.RoleNew, "sysctl", "-qw", "net.ipv4.conf.eth1.arp_announce=0")
	if got := claim(); got != newMAC {
		t.Errorf("with arp_announce 0 on NEW, the router has %s at %q, want NEW's %s (the check cannot fail)", old4, got, newMAC)
	}
	run(lab.RoleRouter, "ip", "neigh", "replace", old4, "lladdr", oldMAC, "dev", br, "nud", "stale")
	r = mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	if !strings.Contains(r.Stdout, "arp_announce") {
		t.Errorf("apply did not restore arp_announce:\n%s", r.Stdout)
	}
	if got := claim(); got != oldMAC {
		t.Errorf("after the repair, the router has %s at %q, want OLD's %s", old4, got, oldMAC)
	}

	// ICMP redirects: the client's flows come in from the router on the
	// segment and leave to NEW on it.
	redirects := func() int {
		t.Helper()
		out := run(lab.RoleOld, "cat", "/proc/net/snmp")
		var names, vals []string
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == "Icmp:" {
				if names == nil {
					names = f
				} else {
					vals = f
				}
			}
		}
		for i, n := range names {
			if n == "OutRedirects" && i < len(vals) {
				v, _ := strconv.Atoi(vals[i])
				return v
			}
		}
		t.Fatalf("no Icmp OutRedirects in OLD's /proc/net/snmp:\n%s", out)
		return 0
	}
	r0 := redirects()
	for i := 0; i < 3; i++ {
		expectServed(t, ctx, s, scenario.MigratedPort, "new")
	}
	if n := redirects() - r0; n != 0 {
		t.Errorf("OLD sent %d ICMP redirect(s) for flows it forwarded to NEW", n)
	}
	run(lab.RoleOld, "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=1", "net.ipv4.conf.eth0.send_redirects=1")
	r0 = redirects()
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if n := redirects() - r0; n == 0 {
		t.Errorf("with send_redirects 1, OLD sent no redirect: the check cannot fail")
	}
	r = mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	if !strings.Contains(r.Stdout, "send_redirects") {
		t.Errorf("apply did not restore send_redirects:\n%s", r.Stdout)
	}

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", before, after)
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
}
