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

// TestStatusIdleBeforeApply: a client opens a connection to OLD before the
// first apply and then sends nothing (no keep-alive either). conntrack
// only starts in OLD's namespace when migrate's table loads, so it never
// sees that connection; OLD still serves it. status must keep the service
// draining, and OLD needed, until the connection closes: OLD's own
// sockets show it. Then the service is drained.
func TestStatusIdleBeforeApply(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	addr := fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort)
	if err := s.WritePlan(scenario.PlanOptions{TunnelType: "vxlan", Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The greeting, then silence: the first ping would be in an hour.
	cmd, err := l.Start(lab.RoleClient, s.LabtoolBin, "hold", "-keepalive=false", "-every", "1h", "-count", "1", "-timeout", "5s", addr)
	if err != nil {
		t.Fatal(err)
	}
	idle := &holder{cmd: cmd, log: l.LogPath(cmd)}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(scenario.Slow(10 * time.Second))
	for !strings.Contains(idle.text(), "served-by=") {
		if time.Now().After(deadline) {
			t.Fatalf("idle client never connected: %s", idle.text())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if idle.servedBy() != "old" {
		t.Fatalf("before apply the idle client is served by %q", idle.servedBy())
	}
	connected := time.Now()
	// plan's readiness line counts it too: OLD's socket, not conntrack.
	if p := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile); !strings.Contains(p.Stdout, "OLD holds 1 established flow(s), 0 going to NEW") {
		t.Errorf("plan before apply does not count the idle connection:\n%s", p.Stdout)
	}

	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	// New connections go to NEW: the stage is live.
	out, err := s.Labtool(ctx, time.Minute, lab.RoleClient, "many", "-n", "3", addr)
	if err != nil || !strings.Contains(out, "served-by=new:3") {
		t.Fatalf("3 connections after apply: %v %s", err, out)
	}

	expectDraining := func(when string) {
		t.Helper()
		r := readStatus(t, ctx, s)
		web := r.Services[0]
		t.Logf("%s: %+v", when, web)
		if web.LiveStage != "new" || web.Drained || web.OnOld != 1 || web.OnOldSocketsOnly != 1 || !strings.HasPrefix(web.State, "draining") {
			t.Errorf("%s: %+v; want stage new, 1 connection on OLD (seen in its sockets only), draining", when, web)
		}
		if !strings.Contains(r.Verdict, "1 service(s) are draining") || strings.Contains(r.Verdict, "switched off") {
			t.Errorf("%s: verdict %q", when, r.Verdict)
		}
		human := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
		for _, bad := range []string{"drained:", "may be switched off"} {
			if strings.Contains(human.Stdout, bad) {
				t.Errorf("%s: status says %q while OLD serves the idle connection:\n%s", when, bad, human.Stdout)
			}
		}
		if !strings.Contains(human.Stdout, "draining: 1 established flow(s) still served by OLD") || !strings.Contains(human.Stdout, "OLD is still needed") {
			t.Errorf("%s: status output:\n%s", when, human.Stdout)
		}
		t.Logf("%s: status:\n%s", when, human.Stdout)
	}
	expectDraining("idle connection from before the apply")
	// Still so once OLD's daemon has sent its own keep-alive probe (Go's
	// default, after 15 s idle): conntrack may pick the connection up in
	// the reverse direction, which must not change the count.
	time.Sleep(time.Until(connected.Add(20 * time.Second)))
	expectDraining("20 s later")
	if strings.Count(idle.text(), "\n") != 1 {
		t.Errorf("the idle client printed more than its greeting:\n%s", idle.text())
	}

	// The connection closes: the service is drained.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	deadline = time.Now().Add(scenario.Slow(20 * time.Second))
	for {
		r := readStatus(t, ctx, s)
		if web := r.Services[0]; web.Drained {
			if web.OnOld != 0 || !strings.HasPrefix(web.State, "drained") {
				t.Errorf("drained: %+v", web)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no drain after the idle connection closed: %+v", r.Services[0])
		}
		time.Sleep(time.Second)
	}
	human := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if !strings.Contains(human.Stdout, "drained: OLD serves no established flow of it") {
		t.Errorf("status after the connection closed:\n%s", human.Stdout)
	}

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", before, after)
}
