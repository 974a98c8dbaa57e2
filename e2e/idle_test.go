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

// TestIdleConntrackTimeout: OLD knows a connection went to NEW only from
// its conntrack entry. On a host whose nf_conntrack_tcp_timeout_established
// was lowered (busy servers do, to save entries), a moved connection idle
// for longer loses its entry, and its next packet is reset by OLD (seen
// here with the timeout at 5 s and a 9 s pause). plan must warn with the
// value and the fix; with the kernel's default the same idle connection
// lives on.
func TestIdleConntrackTimeout(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	const name = "net.netfilter.nf_conntrack_tcp_timeout_established"
	setTimeout := func(v int) {
		t.Helper()
		if out, err := l.Exec(ctx, lab.RoleOld, "sysctl", "-w", fmt.Sprintf("%s=%d", name, v)); err != nil {
			t.Fatalf("old: %v %s", err, out)
		}
	}
	setTimeout(5)
	defer setTimeout(432000)
	r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	want := "WARNING host old: " + name + " is 5 (5s; the kernel's default is 5 days): a connection moved to NEW that stays idle longer than that is reset by OLD"
	if !strings.Contains(r.Stdout, want) || !strings.Contains(r.Stdout, "sysctl -w "+name+"=432000") {
		t.Errorf("plan with a 5 s timeout on OLD: want %q and the fix in:\n%s", want, r.Stdout)
	}

	setTimeout(432000)
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if strings.Contains(r.Stdout, name) {
		t.Errorf("plan with the default timeout still warns:\n%s", r.Stdout)
	}
	// Two pings 9 s apart on one connection moved to NEW.
	out, err := s.Labtool(ctx, scenario.Slow(40*time.Second), lab.RoleClient, "hold", "-every", "9s", "-count", "2", "-timeout", "5s", "-keepalive=false", fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort))
	if err != nil || strings.Count(out, "new: ping") != 2 {
		t.Errorf("an idle connection moved to NEW, default timeout: %v\n%s", err, out)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
}
