package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestDataPathTraps proves that each of the first three traps of
// docs/design.md (found by hand on a real kernel) is real and that
// migrate's fix for it is what makes the data path work: after apply, the fix is removed by hand and the user-visible check
// fails; `migrate plan` shows the missing piece as a change, `migrate
// apply` puts it back, and the check passes again. Finally `rollback --all`
// restores both hosts byte for byte.
func TestDataPathTraps(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this test uses vxlan, which this kernel lacks")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	if err := s.WritePlan(scenario.PlanOptions{TunnelType: "vxlan", Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	l := s.Lab
	served := func() error {
		out, err := s.Dial(ctx, lab.RoleClient, fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort))
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(out, "served-by=new peer="+l.ClientIP.String()+" ") {
			return fmt.Errorf("unexpected answer %q", out)
		}
		return nil
	}
	outbound := func() error {
		out, err := s.Dial(ctx, lab.RoleNew, "-bind", l.OldIP.String(), fmt.Sprintf("%s:%d", l.ClientIP, scenario.ClientPort))
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(out, "peer="+l.OldIP.String()+" ") {
			return fmt.Errorf("unexpected answer %q", out)
		}
		return nil
	}
	traps := []struct {
		name  string
		role  string
		undo  [][]string // commands that remove migrate's fix
		redo  [][]string // commands that undo extra hand changes after the repair
		check func() error
		drift string // what plan must show
	}{
		{
			// Without a real local address, ip_nonlocal_bind lets the
			// service bind OLD_IP, but connect() from it fails.
			name: "non-local bind",
			role: lab.RoleNew,
			undo: [][]string{
				{"ip", "addr", "del", l.OldIP.String() + "/32", "dev", "lo"},
				{"sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"},
			},
			redo:  [][]string{{"sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=0"}},
			check: outbound,
			drift: "+ addr " + l.OldIP.String() + "/32 dev lo",
		},
		{
			// Without "to ADDR iif lo lookup main", NEW's own tunnel
			// packets to OLD's endpoint (= ADDR, now local on NEW) loop
			// back into NEW.
			name:  "underlay loop",
			role:  lab.RoleNew,
			undo:  [][]string{{"ip", "rule", "del", "pref", "500"}},
			check: served,
			drift: "+ rule v4 pref 500 to " + l.OldIP.String() + "/32 iif lo lookup main",
		},
		{
			// Without the throw route, OLD's outer tunnel packets inherit
			// the fwmark and are routed back into the tunnel.
			name:  "fwmark on outer packets",
			role:  lab.RoleOld,
			undo:  [][]string{{"ip", "route", "del", "throw", l.NewIP.String() + "/32", "table", "4242"}},
			check: served,
			drift: "+ route table 4242 throw " + l.NewIP.String() + "/32",
		},
	}
	for _, tr := range traps {
		t.Run(tr.name, func(t *testing.T) {
			if err := tr.check(); err != nil {
				t.Fatalf("check fails before the fix was removed: %v", err)
			}
			for _, c := range tr.undo {
				if out, err := l.Exec(ctx, tr.role, c...); err != nil {
					t.Fatalf("%v: %v: %s", c, err, out)
				}
			}
			if err := tr.check(); err == nil {
				t.Fatalf("the data path still works without the fix for %q: the test proves nothing", tr.name)
			} else {
				t.Logf("without the fix, as expected: %v", err)
			}
			r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
			if !strings.Contains(r.Stdout, tr.drift) {
				t.Errorf("plan does not show the missing piece %q:\n%s", tr.drift, r.Stdout)
			}
			mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
			for _, c := range tr.redo {
				if out, err := l.Exec(ctx, tr.role, c...); err != nil {
					t.Fatalf("%v: %v: %s", c, err, out)
				}
			}
			if err := tr.check(); err != nil {
				t.Fatalf("apply did not repair %q: %v", tr.name, err)
			}
		})
	}
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", before, after)
}
