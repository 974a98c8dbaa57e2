package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
	"github.com/opsmigrate/migrate/state"
)

// startMigrate runs the CLI in the background in the admin namespace; its
// output goes to a log file.
func startMigrate(t *testing.T, s *scenario.Scenario, env []string, args ...string) (*bgProc, error) {
	t.Helper()
	cmd, err := s.StartMigrate(env, args...)
	if err != nil {
		return nil, err
	}
	return &bgProc{log: s.Lab.LogPath(cmd), kill: func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }}, nil
}

type bgProc struct {
	log  string
	kill func()
}

func (b *bgProc) text() string { x, _ := os.ReadFile(b.log); return string(x) }

func (b *bgProc) waitFor(t *testing.T, what string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(b.text(), what) {
		if time.Now().After(deadline) {
			t.Fatalf("background migrate never printed %q:\n%s", what, b.text())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitSnapshots polls until both hosts match want, or d passes.
func waitSnapshots(t *testing.T, ctx context.Context, s *scenario.Scenario, want map[string]string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got[lab.RoleOld] == want[lab.RoleOld] && got[lab.RoleNew] == want[lab.RoleNew] {
			return
		}
		if time.Now().After(deadline) {
			diffSnap(t, "hosts did not return to their snapshots", want, got)
			t.FailNow()
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func loadState(t *testing.T, s *scenario.Scenario) *state.Journal {
	t.Helper()
	j, err := state.LoadJournal(strings.TrimSuffix(s.PlanFile, "migration.hcl") + "migration.state.json")
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func hostJournal(t *testing.T, dir string) *state.Journal {
	t.Helper()
	j, err := state.LoadJournal(dir + "/journal.json")
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestConfirmTimeoutRevertsWhenAdminCutOff: the admin's link goes down in
// the middle of apply. Each host's revert timer undoes the apply by
// itself; the next migrate run learns it from the hosts' journals.
func TestConfirmTimeoutRevertsWhenAdminCutOff(t *testing.T) {
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
	// Hang before step 14: NEW is done, OLD half way.
	bg, err := startMigrate(t, s, []string{"MIGRATE_TEST_FAULT=hang-at:14"}, "apply", "-f", s.PlanFile, "--auto-approve", "--confirm-timeout", "6s")
	if err != nil {
		t.Fatal(err)
	}
	defer bg.kill()
	bg.waitFor(t, "hanging before step 14", 60*time.Second)
	mid, _ := s.Snapshot(ctx)
	if mid[lab.RoleNew] == before[lab.RoleNew] {
		t.Fatal("NEW unchanged at step 14: the test would prove nothing")
	}
	if out, err := s.Lab.Exec(ctx, lab.RoleAdmin, "ip", "link", "set", "eth0", "down"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	start := time.Now()
	waitSnapshots(t, ctx, s, before, 20*time.Second)
	t.Logf("both hosts back to their snapshots %.1fs after the admin was cut off (timeout 6s)", time.Since(start).Seconds())
	bg.kill()
	if out, err := s.Lab.Exec(ctx, lab.RoleAdmin, "ip", "link", "set", "eth0", "up"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := s.Lab.Exec(ctx, lab.RoleAdmin, "ip", "route", "add", "default", "via", "192.0.2.65"); err != nil && !strings.Contains(string(out), "File exists") {
		t.Fatalf("%v: %s", err, out)
	}
	// The state file still lists the steps as applied; the next command
	// learns from the hosts that they were undone.
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "undid") || !strings.Contains(r.Stdout, "revert timer") {
		t.Errorf("plan does not report the hosts' own revert:\n%s", r.Stdout)
	}
	if n := len(loadState(t, s).Active()); n != 0 {
		t.Errorf("state file still has %d active entries after the hosts reverted", n)
	}
	r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	if !strings.Contains(r.Stdout, "Nothing to roll back") {
		t.Errorf("rollback after a host revert:\n%s", r.Stdout)
	}
	// And a normal apply is confirmed and kept past its timeout.
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve", "--confirm-timeout", "3s")
	time.Sleep(4 * time.Second)
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	after, _ := s.Snapshot(ctx)
	diffSnap(t, "rollback", before, after)
}

// TestLocks: a second apply is refused while one runs, naming the holder
// and its start time; a lock left by a hung migrate is removed with
// force-unlock and its ID.
func TestLocks(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	bg, err := startMigrate(t, s, []string{"MIGRATE_TEST_FAULT=hang-at:1"}, "apply", "-f", s.PlanFile, "--auto-approve", "--confirm-timeout", "0")
	if err != nil {
		t.Fatal(err)
	}
	defer bg.kill()
	bg.waitFor(t, "hanging before step 1", 60*time.Second)

	r := mustMigrate(t, ctx, s, 1, "apply", "-f", s.PlanFile, "--auto-approve")
	m := regexp.MustCompile(`locked by (\S+) for apply since (\S+), lock ID ([0-9a-f]+)`).FindStringSubmatch(r.Stderr)
	if m == nil {
		t.Fatalf("second apply: want a lock error naming holder, start and ID:\n%s", r.Stderr)
	}
	id := m[3]
	// Through another state file the local lock is not in the way, but
	// the hosts' locks are.
	other := s.Lab.Dir + "/other.state.json"
	r = mustMigrate(t, ctx, s, 1, "apply", "-f", s.PlanFile, "--state", other, "--auto-approve")
	if !strings.Contains(r.Stderr, "host is locked by") || !strings.Contains(r.Stderr, id) {
		t.Fatalf("apply through another state file: want the host lock error with ID %s:\n%s", id, r.Stderr)
	}
	// The holder hangs (alive): force-unlock with its ID ends it.
	r = mustMigrate(t, ctx, s, 0, "force-unlock", "-f", s.PlanFile, id)
	t.Logf("force-unlock:\n%s", r.Stdout)
	bg.kill()
	r = mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve", "--confirm-timeout", "0")
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
}

// TestFaultInjection: apply dies before step N, for every N, in three
// ways (the CLI dies, the SSH connection drops, the agent is killed).
// Each time the state file and the hosts' journals tell the truth and
// rollback returns both hosts to their snapshots.
func TestFaultInjection(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile, "--json")
	var total int
	for _, line := range strings.Split(r.Stdout, "\n") {
		var doc struct {
			Type    string         `json:"type"`
			Summary map[string]int `json:"summary"`
		}
		if json.Unmarshal([]byte(line), &doc) == nil && doc.Type == "plan" {
			total = doc.Summary["add"] + doc.Summary["change"] + doc.Summary["destroy"]
		}
	}
	if total < 10 {
		t.Fatalf("plan has %d steps?\n%s", total, r.Stdout)
	}
	for _, mode := range []string{"die", "drop-ssh", "kill-agent"} {
		for n := 1; n <= total; n++ {
			t.Run(fmt.Sprintf("%s-at-%d", mode, n), func(t *testing.T) {
				r, err := s.MigrateEnv(ctx, []string{"MIGRATE_TEST_FAULT=" + mode + "-at:" + fmt.Sprint(n)}, "apply", "-f", s.PlanFile, "--auto-approve", "--confirm-timeout", "0")
				if err != nil {
					t.Fatal(err)
				}
				if r.Code == 0 {
					t.Fatalf("apply succeeded despite the fault:\n%s", r.Stdout)
				}
				// The truth: the state file and the hosts' journals list the
				// same applied steps; when the CLI died, exactly 1..n-1.
				local := map[string]bool{}
				for _, e := range loadState(t, s).Active() {
					local[fmt.Sprintf("%s/%d", e.Run, e.Seq)] = true
				}
				onHosts := map[string]bool{}
				for _, dir := range []string{s.Lab.OldStateDir, s.Lab.NewStateDir} {
					for _, e := range hostJournal(t, dir).Active() {
						onHosts[fmt.Sprintf("%s/%d", e.Run, e.Seq)] = true
					}
				}
				if fmt.Sprint(local) != fmt.Sprint(onHosts) {
					t.Errorf("state file and host journals disagree: %v vs %v", local, onHosts)
				}
				if mode == "die" && len(local) != n-1 {
					t.Errorf("the CLI died before step %d, but the state file has %d active steps", n, len(local))
				}
				r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
				after, err := s.Snapshot(ctx)
				if err != nil {
					t.Fatal(err)
				}
				diffSnap(t, "rollback after the fault", before, after)
				if t.Failed() {
					t.Logf("rollback:\n%s%s", r.Stdout, r.Stderr)
				}
			})
			if t.Failed() {
				return
			}
		}
	}
}
