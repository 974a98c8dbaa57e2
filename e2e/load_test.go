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

// TestLoadDuringMoves holds 1 000 long-lived TCP connections and opens 50
// new ones a second while the service moves old -> new and back. Nothing
// may fail: long-lived connections stay where they started, new ones go
// where the plan says at that moment.
func TestLoadDuringMoves(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	write := func(stage string) {
		if err := s.WritePlan(scenario.PlanOptions{Stage: stage}); err != nil {
			t.Fatal(err)
		}
	}
	// The path first (everything on OLD), so the moves below only change
	// the nft sets, as an operator would run it.
	write("old")
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")

	cmd, err := s.Lab.Start(lab.RoleClient, s.LabtoolBin, "load", "-conns", "1000", "-every", "1s", "-rate", "50", "-duration", "30s",
		fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	time.Sleep(6 * time.Second)
	write("new")
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	time.Sleep(8 * time.Second)
	write("old")
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	var waitErr error
	select {
	case waitErr = <-done:
	case <-ctx.Done():
		t.Fatal("load generator did not finish")
	}
	out := strings.TrimSpace(s.LogText(cmd))
	t.Logf("load: %s", out)
	if waitErr != nil {
		t.Fatalf("load generator reported failures: %v\n%s", waitErr, out)
	}
	if !strings.Contains(out, "long-lived: attempted 1000 completed 1000 failed 0") || !strings.Contains(out, " failed 0;") {
		t.Errorf("load: %s", out)
	}
	if !strings.Contains(out, "long-lived served-by=old:1000") {
		t.Errorf("long-lived connections did not all stay on OLD: %s", out)
	}
	if !strings.Contains(out, "new served-by=new:") || !strings.Contains(out, "new served-by=old:") {
		t.Errorf("new connections did not follow the moves: %s", out)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
}
