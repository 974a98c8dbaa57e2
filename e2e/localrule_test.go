package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestLocalRuleBackByHand: weeks into the migration an admin on OLD sees
// `ip rule` without the usual `0: from all lookup local`, takes it for
// damage and puts it back (`ip rule add pref 0 lookup local`, protocol 0).
// That rule comes before migrate's fwmark rule: OLD's own stack takes
// the moved service's packets again, and new clients get OLD's daemon.
// status said "drained" and nothing else; plan proposed to remove the
// rule, but the agent refused to touch a local rule that is not the
// kernel's (protocol 0), so neither apply (the repair) nor rollback --all
// could run until someone found and deleted it by hand. Now status calls
// the moved service BROKEN and says why, apply moves the rule away again,
// and rollback --all is exact. Then migrate's own rules, removed (by hand,
// or by systemd-networkd restarting with its defaults): status said
// nothing of those either; it now names the missing rule.
func TestLocalRuleBackByHand(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	t.Log("TUNNEL vxlan: TestLocalRuleBackByHand")
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, 8080, "new")
	addByHand := func() {
		t.Helper()
		if out, err := l.Exec(ctx, lab.RoleOld, "ip", "rule", "add", "pref", "0", "lookup", "local"); err != nil {
			t.Fatalf("old: %v %s", err, out)
		}
	}
	addByHand()
	expectServed(t, ctx, s, 8080, "old") // what the admin's rule does
	r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if want := "OLD has a rule `pref 0 lookup local` (IPv4) again, ahead of migrate's rule for moved flows (pref 900; added by hand?)"; !strings.Contains(r.Stdout, want) || !strings.Contains(r.Stdout, "BROKEN") || strings.Contains(r.Stdout, "drained:") {
		t.Errorf("status with the local rule back at pref 0: want %q and the service BROKEN:\n%s", want, r.Stdout)
	}
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, "- rule v4 pref 0 lookup local\n") {
		t.Errorf("plan does not remove the hand-made rule:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	out := expectServed(t, ctx, s, 8080, "new")
	if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("NEW's server saw %q, want the client's address %s", out, l.ClientIP)
	}
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "BROKEN") {
		t.Errorf("status after the repair:\n%s", r.Stdout)
	}
	// migrate's own rules removed (by hand, or by systemd-networkd at a
	// restart with its defaults: README): status names the missing one,
	// apply puts it back.
	for _, c := range []struct{ role, pref, want, servedBy string }{
		{lab.RoleOld, "900", "OLD lacks migrate's rule `fwmark 0x20000/0x20000 lookup 4242` (IPv4; removed by hand, or by systemd-networkd at a restart?)", "old"},
		{lab.RoleNew, "1100", "NEW lacks migrate's rule `from 198.51.100.10/32 lookup 4242` (removed by hand, or by systemd-networkd at a restart?)", ""},
	} {
		if out, err := l.Exec(ctx, c.role, "ip", "rule", "del", "pref", c.pref); err != nil {
			t.Fatalf("%s: %v %s", c.role, err, out)
		}
		if c.servedBy != "" {
			expectServed(t, ctx, s, 8080, c.servedBy)
		} else if out, err := s.Dial(ctx, lab.RoleClient, "198.51.100.10:8080"); err == nil {
			t.Errorf("the moved service answers without NEW's rule pref %s: %s", c.pref, out)
		}
		r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
		if !strings.Contains(r.Stdout, c.want) || !strings.Contains(r.Stdout, "BROKEN") {
			t.Errorf("status without %s's rule pref %s: want %q:\n%s", c.role, c.pref, c.want, r.Stdout)
		}
		mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
		expectServed(t, ctx, s, 8080, "new")
	}
	// And the local rule once more, then the end of the migration
	// straight away.
	addByHand()
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	expectSnap(t, ctx, s, "rollback --all", before)
}
