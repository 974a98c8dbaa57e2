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
// connection lives on.
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

	// Two pings 9 s apart on one connection moved to NEW. (NEW's own
	// outbound flows get the object too, but a test where NEW speaks first
	// after the pause cannot fail: OLD marks a new flow from the tunnel
	// again. Only the client speaking first shows the reset.)
	out, err := s.Labtool(ctx, scenario.Slow(40*time.Second), lab.RoleClient, "hold", "-every", "9s", "-count", "2", "-timeout", "5s", "-keepalive=false", fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort))
	if err != nil || strings.Count(out, "new: ping") != 2 {
		t.Errorf("a connection moved to NEW, idle 9 s with OLD's %s at 5 s: %v\n%s", name, err, out)
	}
	nftOut, err := l.Exec(ctx, lab.RoleOld, "nft", "list", "table", "inet", "migrate")
	if err != nil || !strings.Contains(string(nftOut), "ct timeout moved_tcp {") || !strings.Contains(string(nftOut), "policy = { established : 604800 }") {
		t.Errorf("OLD's table has no ct timeout moved_tcp of 7 days: %v\n%s", err, nftOut)
	}

	setTimeout(432000)
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", stripCounters(before), stripCounters(after))
}
