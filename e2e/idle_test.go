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
// for longer lost its entry, and its next packet was reset by OLD (seen
// here, before nft layout 3, with the timeout at 5 s and a 9 s pause).
// Now every flow OLD marks for NEW carries migrate's ct timeout object
// (7 days established), whatever the sysctl says: the same idle
// connection lives on, and so does one NEW opened out through OLD.
func TestIdleConntrackTimeout(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
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

	// Two pings 9 s apart on one connection moved to NEW, and on one NEW
	// opened to the client through OLD.
	for _, c := range []struct {
		what, from, addr, by string
	}{
		{"client to a service moved to NEW", lab.RoleClient, fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort), "new"},
		{"NEW out to the client through OLD", lab.RoleNew, fmt.Sprintf("%s:%d", l.ClientIP, scenario.ClientPort), "client"},
	} {
		args := []string{"hold", "-every", "9s", "-count", "2", "-timeout", "5s", "-keepalive=false"}
		if c.from == lab.RoleNew {
			args = append(args, "-bind", l.OldIP.String())
		}
		out, err := s.Labtool(ctx, scenario.Slow(40*time.Second), c.from, append(args, c.addr)...)
		if err != nil || strings.Count(out, c.by+": ping") != 2 {
			t.Errorf("%s, idle 9 s with OLD's %s at 5 s: %v\n%s", c.what, name, err, out)
		}
	}
	out, err := l.Exec(ctx, lab.RoleOld, "nft", "list", "table", "inet", "migrate")
	if err != nil || !strings.Contains(string(out), "ct timeout moved_tcp {") || !strings.Contains(string(out), "policy = { established : 604800 }") {
		t.Errorf("OLD's table has no ct timeout moved_tcp of 7 days: %v\n%s", err, out)
	}

	setTimeout(432000)
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", stripCounters(before), stripCounters(after))
}
