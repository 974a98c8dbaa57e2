package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// NEW's second address in TestNewEndpointChanges, on its link to the
// router (198.18.0.0/15, as the lab's NAT addresses; 198.18.0.x and
// 198.18.1.x are taken by them).
var (
	reipNew = netip.MustParsePrefix("198.18.2.20/24")
	reipGW  = netip.MustParseAddr("198.18.2.1")
)

// TestNewEndpointChanges: NEW's public address changes in the middle of a
// migration (a cloud VM stopped and started, or moved to another address),
// and the operator edits new_endpoint (and NEW's ssh address, which is the
// same address in the lab) and applies. Over VXLAN, the only type this
// kernel has (GRE's path is the same, with its own filter: not tested):
//
//   - with a service moved to NEW, NEW gets a second address on its link
//     to the router and loses the first (lab.Readdress): from then on the
//     moved service is broken for new clients, OLD's tunnel sends to an
//     address no one holds;
//   - plan says the tunnel devices are made again, in plain words, and
//     does not take NEW for a host behind NAT; apply passes its tunnel
//     check;
//   - from the outside: a client reaches the moved service and NEW sees
//     the client's own address; NEW's outbound from the migrated address
//     leaves from OLD's; the underlay filters (nft) name only the new
//     address, and a forged VXLAN packet from the old address (a third
//     party that holds it now) is dropped and counted on OLD while NEW's
//     from the new one gets through;
//   - a connection moved to NEW and held open since before the change is
//     reported: it pauses while the tunnel points at the gone address and
//     resumes after the apply (TCP resends);
//   - `rollback --all` then removes everything: what is compared. The
//     snapshot is taken before the first apply, with NEW at its first
//     address; the second address is the operator's (the provider's)
//     change, not migrate's, so rollback leaves it. OLD is compared as it
//     is, byte for byte. NEW's address is put back by the test the way
//     it was taken away (lab.Readdress back to 203.0.113.20/24 via
//     203.0.113.1: the second address and its default route go), and
//     then NEW too is compared byte for byte: `nft list ruleset`, ip
//     rules, routes of every table and addresses (v4 and v6), the
//     sysctls migrate may touch, and `ip -d link` on both hosts. So
//     nothing of migrate remains on NEW whatever its address, and what
//     differs from the first snapshot is exactly the re-IP.
//
// Subtest "with-a-service" makes the same edit with a second service
// added (at stage old): OLD's table then changes in two steps, its
// underlay filter before the tunnel check and the rest after it.
func TestNewEndpointChanges(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	t.Logf("TUNNEL vxlan: running on this kernel (%s); gre and wireguard endpoints are not tested (this kernel lacks them)", kernelRelease())
	t.Run("endpoint", func(t *testing.T) { newEndpointChanges(t, false) })
	t.Run("with-a-service", func(t *testing.T) { newEndpointChanges(t, true) })
}

// newEndpointChanges is TestNewEndpointChanges; withService adds service
// "api" (OLD's StayPort, stage old) in the edit that follows NEW's new
// address.
func newEndpointChanges(t *testing.T, withService bool) {
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	svc := fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort)
	extra, oldTables := "", 1
	if withService {
		extra = fmt.Sprintf("\nservice \"api\" {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"old\"\n}\n", l.OldIP, scenario.StayPort)
		oldTables = 2
	}
	write := func(newEP netip.Addr, extra string) {
		t.Helper()
		tunnel := fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", l.OldIP, newEP)
		text := s.HCL(tunnel, webService(s, "new")+extra)
		// The lab reaches NEW's sshd at its endpoint address.
		text = strings.Replace(text, fmt.Sprintf("root@%s:22", l.NewIP), fmt.Sprintf("root@%s:22", newEP), 1)
		if err := os.WriteFile(s.PlanFile, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	beforeLinks := linkSnapshot(t, ctx, s)

	write(l.NewIP, "")
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	// Its read timeout outlasts the gap (the re-IP, plan and apply, and
	// TCP's resend backoff) on a loaded machine.
	holdFor := scenario.Slow(2 * time.Minute)
	held := startHolderTimeout(t, s, svc, fmt.Sprintf("%.0fs", holdFor.Seconds()))
	if held.servedBy() != "new" {
		t.Fatalf("held connection served by %q, want new", held.servedBy())
	}

	// The re-IP: NEW's first address is gone.
	if err := l.Readdress(ctx, lab.RoleNew, reipNew, reipGW); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	if out, err := l.Exec(ctx, lab.RoleNew, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); err != nil || strings.Contains(string(out), l.NewIP.String()) || !strings.Contains(string(out), reipNew.String()) {
		t.Fatalf("NEW's eth0 after the re-IP (want only %s): %v\n%s", reipNew, err, out)
	}
	// Until the apply, OLD sends the moved flows to an address no one holds.
	if out, err := s.Dial(ctx, lab.RoleClient, svc); err == nil {
		t.Errorf("a new client reached the moved service while NEW's endpoint was gone: %s", out)
	}

	newEP := reipNew.Addr()
	write(newEP, extra)
	r := mustMigrate(t, ctx, s, 2, "plan", "--detailed-exitcode", "-f", s.PlanFile)
	t.Logf("plan after the re-IP:\n%s\n%s", r.Stdout, r.Stderr)
	plan := r.Stdout + r.Stderr
	for _, want := range []string{
		"host new: tunnel device mig0 is made again",
		"host old: tunnel device mig0 is made again",
		"connections through the tunnel pause for a moment",
		fmt.Sprintf("link mig0 type vxlan local %s remote %s ", newEP, l.OldIP),
		fmt.Sprintf("link mig0 type vxlan local %s remote %s ", l.OldIP, newEP),
		fmt.Sprintf("udp/4789 to %s only from %s", l.OldIP, newEP),
		fmt.Sprintf("udp/4789 to %s only from %s", newEP, l.OldIP),
	} {
		if !strings.Contains(plan, want) {
			t.Errorf("plan after the re-IP does not say %q", want)
		}
	}
	if strings.Contains(plan, "behind NAT") {
		t.Errorf("plan takes NEW, which holds its new endpoint, for a host behind NAT")
	}
	if n := strings.Count(r.Stdout, "~ nft table inet migrate: role old"); n != oldTables {
		t.Errorf("plan changes OLD's table in %d step(s), want %d", n, oldTables)
	}

	r = mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	t.Logf("apply after the re-IP:\n%s", r.Stdout)
	// OLD's underlay filter changes before the check (the old one drops
	// NEW's new address, the check's packets too).
	filter := strings.Index(r.Stdout, "old: ~ nft table inet migrate: role old, mark 0x20000, 1 port(s) to NEW, 1 counted")
	if check := strings.Index(r.Stdout, "tunnel verified in both directions"); check < 0 || filter < 0 || filter > check {
		t.Errorf("apply did not change OLD's underlay filter (at %d) before it checked the tunnel (at %d):\n%s", filter, check, r.Stdout)
	}
	if withService {
		expectServed(t, ctx, s, scenario.StayPort, "old")
	}

	// From the outside: the client is served by NEW, which sees its
	// address; NEW's outbound leaves from OLD's.
	if out := expectServed(t, ctx, s, scenario.MigratedPort, "new"); !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("NEW does not see the client's address: %q", out)
	}
	mustDial(t, ctx, s, lab.RoleNew, "served-by=client peer="+l.OldIP.String()+" ", "-bind", l.OldIP.String(), fmt.Sprintf("%s:%d", l.ClientIP, scenario.ClientPort))

	// The held connection: it stalled from the re-IP until the apply,
	// and TCP resends with a doubling backoff (the next resend can come
	// as long after the apply as the gap before it). Wait for its next
	// answer.
	n := strings.Count(held.text(), "\n")
	deadline := changed.Add(holdFor - 5*time.Second)
	for strings.Count(held.text(), "\n") == n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Count(held.text(), "\n") > n {
		paused := time.Since(changed)
		held.expectAnswering(t, "new")
		t.Logf("HELD: the connection moved to NEW before the re-IP survived it: no answer for about %s (from the re-IP until the apply's new devices, plus TCP's resend backoff), then NEW answers again", paused.Round(time.Second))
	} else {
		t.Errorf("HELD: the connection moved to NEW before the re-IP does not answer after the apply:\n%s", held.text())
	}

	// The underlay filters name only the new address.
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		b, err := l.Exec(ctx, host, "nft", "list", "table", "inet", "migrate")
		if err != nil {
			t.Fatal(err)
		}
		local, peer := l.OldIP, newEP
		if host == lab.RoleNew {
			local, peer = newEP, l.OldIP
		}
		want := fmt.Sprintf("udp dport 4789 ip daddr %s ip saddr != %s counter", local, peer)
		if !strings.Contains(string(b), want) || strings.Contains(string(b), l.NewIP.String()) {
			t.Errorf("%s: underlay filter after the re-IP: want %q and no %s:\n%s", host, want, l.NewIP, b)
		}
	}
	// A forged VXLAN packet from the old address (a third party holding
	// it now: the client, with the address on its lo) is dropped on OLD;
	// NEW's, from the new address, gets through.
	probe := newUnderlayProbe(t, ctx, s, "vxlan", l.OldIP)
	old32 := netip.PrefixFrom(l.NewIP, 32).String()
	if out, err := l.Exec(ctx, lab.RoleClient, "ip", "addr", "add", old32, "dev", "lo"); err != nil {
		t.Fatalf("client: %v %s", err, out)
	}
	t.Logf("client (holding %s) -> OLD: %s", l.NewIP, probe.expectDropped(lab.RoleClient, l.NewIP))
	if out, err := l.Exec(ctx, lab.RoleClient, "ip", "addr", "del", old32, "dev", "lo"); err != nil {
		t.Fatalf("client: %v %s", err, out)
	}
	t.Logf("NEW (%s) -> OLD: %s", newEP, probe.expectDelivered(lab.RoleNew, newEP))
	if out, err := l.Exec(ctx, lab.RoleOld, "nft", "delete", "table", "netdev", "forgedcheck"); err != nil {
		t.Fatalf("old: %v %s", err, out)
	}

	mustMigrate(t, ctx, s, 0, "plan", "--detailed-exitcode", "-f", s.PlanFile)
	// A rollback of only the last apply would put the devices back
	// towards the address that is gone: it says so before asking (and
	// is not confirmed here: no terminal).
	if r, err := s.Migrate(ctx, "rollback", "-f", s.PlanFile); err != nil || r.Code == 0 ||
		!strings.Contains(r.Stdout+r.Stderr, fmt.Sprintf("WARNING host new: this rollback makes the tunnel device mig0 again with local endpoint %s, which host new no longer holds", l.NewIP)) ||
		!strings.Contains(r.Stdout+r.Stderr, "no terminal to ask for confirmation") {
		t.Errorf("rollback of the re-IP apply, declined: want the warning of the gone endpoint: %v\n%s\n%s", err, r.Stdout, r.Stderr)
	}
	held.stop(t)
	r = mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	t.Logf("rollback --all:\n%s", r.Stdout)
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all, OLD", map[string]string{lab.RoleOld: before[lab.RoleOld]}, after)
	// NEW's own address back as it was (the operator's change undone):
	// the rest must be as before the first apply.
	if err := l.Readdress(ctx, lab.RoleNew, netip.PrefixFrom(l.NewIP, 24), netip.MustParseAddr("203.0.113.1")); err != nil {
		t.Fatal(err)
	}
	after, err = s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all, then NEW's first address back", before, after)
	diffSnap(t, "rollback --all (ip -d link)", beforeLinks, linkSnapshot(t, ctx, s))
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
}
