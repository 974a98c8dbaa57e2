package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// holder is a long-lived TCP connection from the client that sends a ping
// every 100 ms and logs each reply ("old: ping 7").
type holder struct {
	cmd *exec.Cmd
	log string
}

func startHolder(t *testing.T, s *scenario.Scenario, addr string) *holder {
	t.Helper()
	return startHolderTimeout(t, s, addr, "5s")
}

// startHolderTimeout is startHolder with the given read timeout.
func startHolderTimeout(t *testing.T, s *scenario.Scenario, addr, timeout string) *holder {
	t.Helper()
	cmd, err := s.Lab.Start(lab.RoleClient, s.LabtoolBin, "hold", "-every", "100ms", "-count", "0", "-timeout", timeout, addr)
	if err != nil {
		t.Fatal(err)
	}
	h := &holder{cmd: cmd, log: s.Lab.LogPath(cmd)}
	deadline := time.Now().Add(scenario.Slow(10 * time.Second))
	for !strings.Contains(h.text(), "served-by=") {
		if time.Now().After(deadline) {
			t.Fatalf("holder to %s never connected: %s", addr, h.text())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return h
}

func (h *holder) text() string {
	b, _ := os.ReadFile(h.log)
	return string(b)
}

// servedBy returns the greeting's server name.
func (h *holder) servedBy() string {
	f := strings.Fields(h.text())
	if len(f) == 0 {
		return ""
	}
	return strings.TrimPrefix(f[0], "served-by=")
}

// expectAnswering waits for fresh replies and checks they come from who.
func (h *holder) expectAnswering(t *testing.T, who string) {
	t.Helper()
	n := strings.Count(h.text(), "\n")
	time.Sleep(scenario.Slow(700 * time.Millisecond))
	lines := strings.Split(strings.TrimSpace(h.text()), "\n")
	if len(lines) <= n {
		t.Fatalf("long-lived connection stopped answering:\n%s", h.text())
	}
	for _, l := range lines[n:] {
		if !strings.HasPrefix(l, who+": ping") {
			t.Fatalf("long-lived connection: line %q, want answers from %s:\n%s", l, who, h.text())
		}
	}
}

func (h *holder) stop(t *testing.T) {
	t.Helper()
	if h.cmd.ProcessState != nil {
		t.Fatalf("holder exited early:\n%s", h.text())
	}
	if strings.Contains(h.text(), "labtool") {
		t.Errorf("holder reported an error:\n%s", h.text())
	}
	_ = h.cmd.Process.Kill()
	_ = h.cmd.Wait()
}

// TestDrain: connections open when a service moves stay where they were;
// only new ones go where the plan says, in both directions.
func TestDrain(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	addr := fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort)
	write := func(stage string) {
		if err := s.WritePlan(scenario.PlanOptions{TunnelType: "vxlan", Stage: stage}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// old -> new: an established connection stays on OLD.
	onOld := startHolder(t, s, addr)
	if onOld.servedBy() != "old" {
		t.Fatalf("before apply the holder is served by %q", onOld.servedBy())
	}
	write("new")
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	onOld.expectAnswering(t, "old")
	expectServed(t, ctx, s, scenario.MigratedPort, "new")

	// new -> old: a connection going through the tunnel stays on NEW.
	onNew := startHolder(t, s, addr)
	if onNew.servedBy() != "new" {
		t.Fatalf("after apply a new holder is served by %q", onNew.servedBy())
	}
	write("old")
	r := mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	t.Logf("moving back:\n%s", r.Stdout)
	onNew.expectAnswering(t, "new")
	onOld.expectAnswering(t, "old")
	expectServed(t, ctx, s, scenario.MigratedPort, "old")

	onOld.stop(t)
	onNew.stop(t)
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", before, after)
}

// TestCanary: about canary_percent of new flows go to NEW. With n = 300
// and p = 0.3 the count is binomial with sd 7.9; the bound of 4.5 sd
// (55..125) fails a correct implementation about once in 150 000 runs.
func TestCanary(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	text := strings.Replace(s.PlanText(scenario.PlanOptions{TunnelType: "vxlan", Stage: "canary"}),
		`stage    = "canary"`, "stage    = \"canary\"\n  canary_percent = 30", 1)
	if err := os.WriteFile(s.PlanFile, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	out, err := s.Labtool(ctx, 2*time.Minute, lab.RoleClient, "many", "-n", "300", fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort))
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var onNew, onOld, errs int
	for _, f := range strings.Fields(out) {
		fmt.Sscanf(f, "served-by=new:%d", &onNew)
		fmt.Sscanf(f, "served-by=old:%d", &onOld)
		fmt.Sscanf(f, "errors:%d", &errs)
	}
	t.Logf("canary 30%%: %s", out)
	if errs != 0 || onNew+onOld != 300 {
		t.Errorf("connections failed: %s", out)
	}
	if onNew < 55 || onNew > 125 {
		t.Errorf("%d of 300 new flows went to NEW; want 55..125 for canary_percent = 30", onNew)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
}
