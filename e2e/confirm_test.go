package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

func migrateWithEnv(t *testing.T, ctx context.Context, s *scenario.Scenario, env []string, wantCode int, args ...string) scenario.Result {
	t.Helper()
	r, err := s.MigrateEnv(ctx, env, args...)
	if err != nil {
		t.Fatalf("migrate %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, r.Stdout, r.Stderr)
	}
	if r.Code != wantCode {
		t.Fatalf("migrate %v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, r.Code, wantCode, r.Stdout, r.Stderr)
	}
	return r
}

// TestConfirmSecondHostTooLate: NEW confirms, OLD's confirm arrives after
// OLD's deadline (MIGRATE_TEST_FAULT delays it past the grace). OLD
// decides to revert; migrate must undo NEW too (no split) and say what
// each host decided. Before the two-phase confirm, NEW kept the change,
// OLD reverted, and the message said each host undoes it by itself.
func TestConfirmSecondHostTooLate(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := migrateWithEnv(t, ctx, s, []string{"MIGRATE_TEST_FAULT=delay-confirm-old-at:7000"}, 1,
		"apply", "-f", s.PlanFile, "--auto-approve", "--confirm-timeout", "5s")
	for _, want := range []string{"host old", "too late", "migrate aborted the run", "host new is revert"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("apply's error does not say %q:\n%s", want, r.Stderr)
		}
	}
	if strings.Contains(r.Stdout+r.Stderr, "Confirmed") {
		t.Errorf("apply claims a confirmation:\n%s\n%s", r.Stdout, r.Stderr)
	}
	// Both hosts, not just OLD, are back where they were.
	waitSnapshots(t, ctx, s, before, 20*time.Second)
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
}

// TestConfirmCLIKilledBetweenConfirms: migrate dies right after NEW
// confirmed, before OLD's confirm. OLD (prepared, not confirmed) reverts
// by itself; NEW keeps its part. That is the only split the confirm
// order allows, and it is the state every apply passes through (NEW's
// steps done, OLD's not), so the service is still served, by OLD. The
// next plan says what OLD did, and rollback undoes NEW's part.
func TestConfirmCLIKilledBetweenConfirms(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := migrateWithEnv(t, ctx, s, []string{"MIGRATE_TEST_FAULT=die-between-confirms-at:1"}, 3,
		"apply", "-f", s.PlanFile, "--auto-approve", "--confirm-timeout", "5s")
	if !strings.Contains(r.Stderr, "dying between the two confirms") {
		t.Fatalf("the fault did not fire:\n%s", r.Stderr)
	}
	// OLD reverts within its grace (at most the 5 s timeout).
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got[lab.RoleOld] == before[lab.RoleOld] {
			if got[lab.RoleNew] == before[lab.RoleNew] {
				t.Fatal("NEW reverted too although it was confirmed")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("OLD did not revert its unconfirmed run")
		}
		time.Sleep(250 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	if got, _ := s.Snapshot(ctx); got[lab.RoleNew] == before[lab.RoleNew] {
		t.Fatal("NEW reverted although it was confirmed")
	}
	// The data path works: OLD serves again as before the apply.
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
	pr := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(pr.Stdout, "host old undid") {
		t.Errorf("plan does not report OLD's own revert:\n%s", pr.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	after, _ := s.Snapshot(ctx)
	diffSnap(t, "rollback after the split", before, after)
}
