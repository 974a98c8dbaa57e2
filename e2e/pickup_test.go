package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestConntrackFlushOnOld: `conntrack -F` on OLD mid-migration (a common
// debugging habit) empties the only place where OLD knows that a
// connection went to NEW. Every moved connection's next client packet is
// then a mid-stream pickup; before nft layout 4 it stayed on OLD, whose
// stack reset the connection. Now chain pickup sends it to NEW unless OLD
// holds a socket bound to its specific address for it. A connection
// draining on OLD (opened before the apply) survives the flush in every
// case. The moved one survives when OLD's daemon listens on the wildcard
// address or is stopped; with OLD's daemon listening on the specific
// address (the lab's default) it is still reset: the gap README's
// Limitations describes.
func TestConntrackFlushOnOld(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		name          string
		wildcard      bool // OLD's daemon on :8080 instead of OLD_IP:8080
		stopOld       bool // OLD's daemon stops listening after the apply (drains)
		movedSurvives bool
	}{
		{name: "wildcard", wildcard: true, movedSurvives: true},
		{name: "stopped", stopOld: true, movedSurvives: true},
		{name: "specific", movedSurvives: false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
			defer cancel()
			s := newScenario(t, ctx)
			l := s.Lab
			addr := fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort)
			if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
				t.Fatal(err)
			}
			before, err := s.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if c.wildcard {
				stopListening(t, ctx, l, scenario.MigratedPort)
				if err := s.Serve(ctx, lab.RoleOld, "old", fmt.Sprintf(":%d", scenario.MigratedPort), false); err != nil {
					t.Fatal(err)
				}
			}
			draining := startHolder(t, s, addr)
			if by := draining.servedBy(); by != "old" {
				t.Fatalf("before apply the holder is served by %q", by)
			}
			mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
			moved := startHolder(t, s, addr)
			if by := moved.servedBy(); by != "new" {
				t.Fatalf("after apply a new holder is served by %q", by)
			}
			if c.stopOld {
				stopListening(t, ctx, l, scenario.MigratedPort)
			}
			draining.expectAnswering(t, "old")
			moved.expectAnswering(t, "new")

			// A flush that falls between a ping and its answer lets the
			// answer come first (from NEW through the tunnel: OLD marks
			// the flow again, chain pickup plays no part); the ping
			// period (100 ms) makes that rare, and a few flushes make it
			// certain that one meets the client's packet first.
			const flushes = 3
			for i := 1; ; i++ {
				if out, err := l.Exec(ctx, lab.RoleOld, "conntrack", "-F"); err != nil {
					t.Fatalf("old: conntrack -F: %v %s", err, out)
				}
				time.Sleep(scenario.Slow(2 * time.Second))
				draining.expectAnswering(t, "old")
				if c.movedSurvives {
					moved.expectAnswering(t, "new")
					if pickupCount(t, ctx, l) > 0 {
						break
					}
				} else if strings.Contains(moved.text(), "connection reset by peer") {
					break
				}
				if i == flushes {
					if c.movedSurvives {
						t.Errorf("%d flushes: chain pickup sent no packet to NEW", flushes)
					} else {
						t.Errorf("%d flushes: with OLD's daemon on its specific address the moved connection was not reset (README says it is):\n%s", flushes, moved.text())
					}
					break
				}
			}
			if c.movedSurvives {
				moved.stop(t)
			} else {
				if picked := pickupCount(t, ctx, l); picked != 0 {
					t.Errorf("chain pickup sent %d packets to NEW, want 0 (OLD's listener on the very address keeps them)", picked)
				}
				_ = moved.cmd.Process.Kill()
				_ = moved.cmd.Wait()
			}
			draining.stop(t)

			mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
			after, err := s.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			diffSnap(t, "rollback --all", stripCounters(before), stripCounters(after))
		})
	}
}

var pidRe = regexp.MustCompile(`pid=(\d+)`)

// stopListening sends SIGUSR1 to the labtool serve listening on port on
// OLD: it closes its listener and goes on serving the connections it has
// (a daemon's graceful stop).
func stopListening(t *testing.T, ctx context.Context, l *lab.Lab, port int) {
	t.Helper()
	signalListener(t, ctx, l, lab.RoleOld, port, "-USR1")
}

// signalListener sends sig (a kill(1) option) to the process listening
// on TCP port in role's namespace, and checks that nothing listens there
// after.
func signalListener(t *testing.T, ctx context.Context, l *lab.Lab, role string, port int, sig string) {
	t.Helper()
	filter := fmt.Sprintf("sport = :%d", port)
	out, err := l.Exec(ctx, role, "ss", "-Htlnp", filter)
	m := pidRe.FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("%s: no listener on port %d: %v %s", role, port, err, out)
	}
	if out, err := l.Exec(ctx, role, "kill", sig, string(m[1])); err != nil {
		t.Fatalf("%s: kill %s %s: %v %s", role, sig, m[1], err, out)
	}
	deadline := time.Now().Add(scenario.Slow(5 * time.Second))
	for {
		out, err := l.Exec(ctx, role, "ss", "-Htln", filter)
		if err == nil && strings.TrimSpace(string(out)) == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still listening on port %d: %v %s", role, port, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var pickupCounter = regexp.MustCompile(`@svc4 .* counter packets (\d+) `)

// pickupCount is the packet counter of chain pickup's rule that sends a
// moved IPv4 service's pickups to NEW.
func pickupCount(t *testing.T, ctx context.Context, l *lab.Lab) int {
	t.Helper()
	out, err := l.Exec(ctx, lab.RoleOld, "nft", "list", "chain", "inet", "migrate", "pickup")
	if err != nil {
		t.Fatalf("old: no chain pickup: %v %s", err, out)
	}
	m := pickupCounter.FindSubmatch(out)
	if m == nil {
		t.Fatalf("old: chain pickup has no @svc4 rule with a counter:\n%s", out)
	}
	var n int
	fmt.Sscan(string(m[1]), &n)
	return n
}
