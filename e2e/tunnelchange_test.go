package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestTunnelChange: an operator edits the tunnel block in the middle of a
// migration. A new VNI and UDP port make the devices again; the inner
// addresses, MTU and table change in place; a new name or mark is refused.
// A connection moved to NEW stays open through all of it, a change the
// underlay does not pass is undone exactly, and rollback still restores
// both hosts exactly.
func TestTunnelChange(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	write := func(extra string) { t.Helper(); writeEditedPlan(t, s, "vxlan", extra) }
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
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		out, err := l.Exec(ctx, host, "ip", "-d", "link", "show", "mig0")
		if err != nil || !strings.Contains(string(out), "vxlan id 77 ") || !strings.Contains(string(out), "dstport 4790") {
			t.Errorf("%s: mig0 after the change: %v\n%s", host, err, out)
		}
	}

	// The inner addresses, the MTU and the routing table change in place
	// (new address, route and rules before the old ones go).
	changed := "  vni          = 77\n  port         = 4790\n  old_inner    = \"169.254.50.1/30\"\n  new_inner    = \"169.254.50.2/30\"\n  mtu          = 1400\n  table        = 4343\n"
	write(changed)
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	if out := expectServed(t, ctx, s, scenario.MigratedPort, "new"); !strings.Contains(out, "mss=1348 ") {
		t.Errorf("after mtu = 1400 the client's MSS toward NEW should be 1348: %s", out)
	}
	held.expectAnswering(t, "new")

	// A new name or mark is refused while the tunnel is in use: routes and
	// rules name the device, and moved connections carry the mark in
	// conntrack (with a new mark OLD takes them back and resets them).
	unchanged, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ edit, want string }{
		{"  name         = \"mig7\"\n", `a tunnel cannot be renamed during a migration (the moved connections' routes and rules name the device, and the kernel refuses a second VXLAN device with the same VNI and port). Keep name = "mig0"`},
		{"  mark         = \"0x40000\"\n", `tunnel: mark 0x40000, but migrate's table on host old marks the moved connections with 0x20000`},
	} {
		write(changed + c.edit)
		r := mustMigrate(t, ctx, s, 1, "apply", "--auto-approve", "-f", s.PlanFile)
		if !strings.Contains(r.Stderr, c.want) || !strings.Contains(r.Stderr, "migration.hcl:") {
			t.Errorf("apply with %q: want %q at the plan's tunnel block:\n%s", c.edit, c.want, r.Stderr)
		}
	}
	refused, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "refused name and mark changes", stripCounters(unchanged), stripCounters(refused))
	held.expectAnswering(t, "new")
	held.stop(t)
	write(changed)
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

// tunnelEdit is a migration whose tunnel block is edited while a
// connection moved to NEW stays open, for TestTunnelChangeTypes: apply
// Steps[0], then each later step in turn.
type tunnelEdit struct {
	Name  string // subtest name
	Steps []tunnelStep
}

// tunnelStep is one version of the tunnel block.
type tunnelStep struct {
	Type  string // tunnel.type
	Extra string // more tunnel attributes, one per line
	// Remade: the plan must say the devices are made again (false: the
	// change is made in place, and the plan must not say so). Not
	// checked for the first step.
	Remade bool
	// Check, when set, checks the hosts after the step's apply.
	Check func(t *testing.T, ctx context.Context, s *scenario.Scenario)
}

// tunnelEdits are TestTunnelChangeTypes' cases, for the types this
// machine's kernel lacks (the VM lane, scripts/vm-lane.sh, runs them under
// Debian's kernel). The GRE key change follows the type switch in one
// subtest: the lab, the first apply and the rollback are the slow part
// under emulation.
var tunnelEdits = []tunnelEdit{
	{
		// WireGuard's port (like its keys and peer) changes in place.
		Name: "wireguard",
		Steps: []tunnelStep{
			{Type: "wireguard"},
			{Type: "wireguard", Extra: "  listen_port  = 51821\n", Check: func(t *testing.T, ctx context.Context, s *scenario.Scenario) {
				for _, host := range []string{lab.RoleOld, lab.RoleNew} {
					out, err := s.Lab.Exec(ctx, host, "ss", "-Hlun")
					if err != nil || !strings.Contains(string(out), ":51821 ") || strings.Contains(string(out), fmt.Sprintf(":%d ", config.DefaultWGPort)) {
						t.Errorf("%s: UDP sockets after listen_port = 51821 (want 51821, not %d): %v\n%s", host, config.DefaultWGPort, err, out)
					}
				}
			}},
		},
	},
	{
		// A new type, then a GRE key: neither changes in place, so the
		// devices are made again each time. VXLAN to GRE brings GRE's MTU
		// (1450 to 1476: a fresh connection's MSS follows) and moves the
		// underlay filter from VXLAN's UDP port to GRE.
		Name: "vxlan-to-gre",
		Steps: []tunnelStep{
			{Type: "vxlan", Check: func(t *testing.T, ctx context.Context, s *scenario.Scenario) {
				if out := expectServed(t, ctx, s, scenario.MigratedPort, "new"); !strings.Contains(out, "mss=1398 ") {
					t.Errorf("over VXLAN (mtu 1450) the client's MSS toward NEW should be 1398: %s", out)
				}
				underlayFilter(t, ctx, s, "udp dport 4789 ", "gre")
			}},
			{Type: "gre", Remade: true, Check: func(t *testing.T, ctx context.Context, s *scenario.Scenario) {
				if out := expectServed(t, ctx, s, scenario.MigratedPort, "new"); !strings.Contains(out, "mss=1424 ") {
					t.Errorf("over GRE (mtu 1476) the client's MSS toward NEW should be 1424: %s", out)
				}
				underlayFilter(t, ctx, s, "gre", "udp dport 4789 ")
				for _, host := range []string{lab.RoleOld, lab.RoleNew} {
					out, err := s.Lab.Exec(ctx, host, "ip", "-d", "link", "show", "mig0")
					if err != nil || !strings.Contains(string(out), " mtu 1476 ") || !strings.Contains(string(out), "link/gre ") || strings.Contains(string(out), "key ") {
						t.Errorf("%s: mig0 after the switch to gre: %v\n%s", host, err, out)
					}
				}
			}},
			{Type: "gre", Extra: "  key          = 5\n", Remade: true, Check: func(t *testing.T, ctx context.Context, s *scenario.Scenario) {
				for _, host := range []string{lab.RoleOld, lab.RoleNew} {
					out, err := s.Lab.Exec(ctx, host, "ip", "-d", "link", "show", "mig0")
					if err != nil || !strings.Contains(string(out), "ikey 0.0.0.5 ") || !strings.Contains(string(out), "okey 0.0.0.5 ") {
						t.Errorf("%s: mig0 after key = 5: %v\n%s", host, err, out)
					}
				}
			}},
		},
	},
}

// underlayFilter checks that each host's underlay filter (the drop rule for
// tunnel packets to the host's endpoint from anyone but its peer) matches
// want and that no drop rule matches gone.
func underlayFilter(t *testing.T, ctx context.Context, s *scenario.Scenario, want, gone string) {
	t.Helper()
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		ep := s.Lab.OldIP
		if host == lab.RoleNew {
			ep = s.Lab.NewIP
		}
		b, err := s.Lab.Exec(ctx, host, "nft", "list", "table", "inet", "migrate")
		if err != nil {
			t.Fatalf("%s: nft list: %v: %s", host, err, b)
		}
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, " drop") || !strings.Contains(line, "daddr "+ep.String()+" ") {
				continue
			}
			if strings.Contains(line, gone) {
				t.Errorf("%s: underlay filter still drops %q: %s", host, gone, strings.TrimSpace(line))
			}
			found = found || strings.Contains(line, want)
		}
		if !found {
			t.Errorf("%s: no underlay filter for %q to %s:\n%s", host, want, ep, b)
		}
	}
}

// TestTunnelChangeTypes: the tunnel block edited mid-migration for the
// types TestTunnelChange (VXLAN) does not cover: WireGuard's listen_port
// (in place), a switch from VXLAN to GRE (made again, with GRE's MTU and
// underlay filter) and then a GRE key (made again). A connection moved to
// NEW stays open and answered by NEW through each change, fresh
// connections go to NEW, nothing is left to do afterwards, and rollback
// restores both hosts exactly. A type this kernel lacks is reported "NOT
// RUN here" and runs in the VM lane (scripts/vm-lane.sh).
func TestTunnelChangeTypes(t *testing.T) {
	needRoot(t)
	for _, e := range tunnelEdits {
		t.Run(e.Name, func(t *testing.T) {
			for _, st := range e.Steps {
				if !kernelHas(st.Type) {
					t.Logf("TUNNEL change-%s: NOT RUN here: kernel %s lacks %s; runs in the VM lane (scripts/vm-lane.sh)", e.Name, kernelRelease(), st.Type)
					t.Skipf("kernel lacks %s; runs in the VM lane", st.Type)
				}
			}
			t.Logf("TUNNEL change-%s: running on this kernel (%s)", e.Name, kernelRelease())
			tunnelEditCase(t, e)
		})
	}
}

func tunnelEditCase(t *testing.T, e tunnelEdit) {
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	write := func(st tunnelStep) { t.Helper(); writeEditedPlan(t, s, st.Type, st.Extra) }
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	write(e.Steps[0])
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if e.Steps[0].Check != nil {
		e.Steps[0].Check(t, ctx, s)
	}
	// A connection moved to NEW, open across the changes.
	held := startHolderTimeout(t, s, fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort), fmt.Sprintf("%.0fs", scenario.Slow(60*time.Second).Seconds()))
	if held.servedBy() != "new" {
		t.Fatalf("held connection served by %q, want new", held.servedBy())
	}

	for _, st := range e.Steps[1:] {
		write(st)
		r := mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
		t.Logf("apply of type %s %q:\n%s", st.Type, st.Extra, r.Stdout)
		if remade := strings.Contains(r.Stdout, "made again"); remade != st.Remade {
			t.Errorf("type %s %q: plan says the tunnel devices are made again: %v, want %v:\n%s", st.Type, st.Extra, remade, st.Remade, r.Stdout)
		}
		if !strings.Contains(r.Stdout, "tunnel verified in both directions") {
			t.Errorf("type %s %q: apply did not check the tunnel:\n%s", st.Type, st.Extra, r.Stdout)
		}
		held.expectAnswering(t, "new")
		expectServed(t, ctx, s, scenario.MigratedPort, "new")
		if st.Check != nil {
			st.Check(t, ctx, s)
		}
	}
	mustMigrate(t, ctx, s, 0, "plan", "--detailed-exitcode", "-f", s.PlanFile)
	held.expectAnswering(t, "new")
	held.stop(t)

	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "apply, tunnel changes, rollback", before, after)
}

// writeEditedPlan writes the lab's plan: service "web" on NEW, through a
// tunnel of type typ between the lab's IPv4 addresses whose block also
// holds extra (the operator's edit).
func writeEditedPlan(t *testing.T, s *scenario.Scenario, typ, extra string) {
	t.Helper()
	tunnel := fmt.Sprintf("  type         = %q\n  old_endpoint = %q\n  new_endpoint = %q\n%s", typ, s.Lab.OldIP, s.Lab.NewIP, extra)
	if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, webService(s, "new"))), 0o644); err != nil {
		t.Fatal(err)
	}
}
