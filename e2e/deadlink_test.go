package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// blackHole makes role silent to the admin: its namespace drops every
// packet from the admin's address to sshd without an answer (no RST, no
// ICMP), established connections included, as a dead link or a hung
// firewall would. A table "labhole" in role's namespace only.
func blackHole(t *testing.T, ctx context.Context, l *lab.Lab, role string) {
	t.Helper()
	for _, args := range [][]string{
		{"nft", "add", "table", "inet", "labhole"},
		{"nft", "add", "chain", "inet", "labhole", "in", "{", "type", "filter", "hook", "input", "priority", "-300", ";", "policy", "accept", ";", "}"},
		{"nft", "add", "rule", "inet", "labhole", "in", "ip", "saddr", l.AdminIP.String(), "tcp", "dport", "22", "drop"},
	} {
		if out, err := l.Exec(ctx, role, args...); err != nil {
			t.Fatalf("black-hole %s: %v: %s", role, err, out)
		}
	}
}

func unHole(t *testing.T, ctx context.Context, l *lab.Lab, role string) {
	t.Helper()
	if out, err := l.Exec(ctx, role, "nft", "delete", "table", "inet", "labhole"); err != nil {
		t.Fatalf("remove the black hole on %s: %v: %s", role, err, out)
	}
}

// pausedRun is a migrate started with MIGRATE_TEST_FAULT=pause-at:N.
type pausedRun struct {
	cmd  *exec.Cmd
	log  string
	done chan error
}

func startPaused(t *testing.T, s *scenario.Scenario, n string, args ...string) *pausedRun {
	t.Helper()
	cmd, err := s.StartMigrate([]string{"MIGRATE_TEST_FAULT=pause-at:" + n}, args...)
	if err != nil {
		t.Fatal(err)
	}
	p := &pausedRun{cmd: cmd, log: s.Lab.LogPath(cmd), done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	deadline := time.Now().Add(scenario.Slow(60 * time.Second))
	for !strings.Contains(p.text(), "paused before step "+n) {
		select {
		case err := <-p.done:
			t.Fatalf("migrate %v ended (%v) before pausing:\n%s", args, err, p.text())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("migrate %v never paused before step %s:\n%s", args, n, p.text())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

func (p *pausedRun) text() string { b, _ := os.ReadFile(p.log); return string(b) }

// resume lets the paused migrate go on and waits for its exit, at most
// bound. It returns the exit code and how long it took.
func (p *pausedRun) resume(t *testing.T, bound time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		took := time.Since(start)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), took
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, took
	case <-time.After(bound):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("migrate still running %s after its host went silent (it hangs):\n%s", bound, p.text())
		return 0, 0
	}
}

func lockGone(t *testing.T, s *scenario.Scenario) {
	t.Helper()
	lp := strings.TrimSuffix(s.PlanFile, "migration.hcl") + "migration.state.json.lock"
	if _, err := os.Stat(lp); !os.IsNotExist(err) {
		t.Errorf("the local lock %s is still there after migrate exited (%v)", lp, err)
	}
}

// TestDeadLinkApply: OLD goes silent (a black hole, no reset) in the
// middle of apply, after NEW's steps and some of OLD's. The CLI gives up
// within --host-timeout, releases the local lock, and says what each host
// still holds and what undoes it: the undo stops at OLD's steps, so NEW
// keeps its steps until its revert timer, and so does OLD. When OLD
// answers again the hosts are as they were before the apply.
func TestDeadLinkApply(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const confirm = 30 * time.Second
	p := startPaused(t, s, "14", "apply", "-f", s.PlanFile, "--auto-approve", "--confirm-timeout", confirm.String(), "--host-timeout", "6s")
	armed := time.Now()
	mid, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mid[lab.RoleNew] == before[lab.RoleNew] || mid[lab.RoleOld] == before[lab.RoleOld] {
		t.Fatal("at step 14 NEW or OLD is unchanged: the test would prove nothing")
	}
	blackHole(t, ctx, l, lab.RoleOld)
	code, took := p.resume(t, 25*time.Second)
	out := p.text()
	t.Logf("apply gave up %.1fs after OLD went silent (host timeout 6s), exit %d:\n%s", took.Seconds(), code, out)
	if code == 0 {
		t.Fatal("apply succeeded with OLD black-holed")
	}
	if took > 15*time.Second {
		t.Errorf("apply took %s to give up on a silent host; want about the 6s host timeout", took)
	}
	for _, want := range []string{
		"host old stopped answering (no reply for 6s) during apply",
		"host old: ", "its revert timer",
		"host new: answers, but", "stopped at host old's step",
		"The local lock is released",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("apply's error lacks %q", want)
		}
	}
	lockGone(t, s)
	// NEW still holds its steps (the undo could not pass OLD's): the
	// message must not claim otherwise.
	if now, _ := s.Snapshot(ctx); now[lab.RoleNew] == before[lab.RoleNew] {
		t.Errorf("NEW is back to its snapshot already, but the CLI said its steps are still in place")
	}

	unHole(t, ctx, l, lab.RoleOld)
	// Both revert timers fire at the deadline; then the hosts are as before.
	waitSnapshots(t, ctx, s, before, time.Until(armed.Add(confirm))+30*time.Second)
	t.Logf("both hosts back to their snapshots %.1fs after the apply was armed (confirm timeout %s)", time.Since(armed).Seconds(), confirm)
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "revert timer") {
		t.Errorf("plan does not report the hosts' own revert:\n%s", r.Stdout)
	}
	r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	if !strings.Contains(r.Stdout, "Nothing to roll back") {
		t.Errorf("rollback after the hosts reverted:\n%s", r.Stdout)
	}
	after, _ := s.Snapshot(ctx)
	diffSnap(t, "after the dead link in apply", before, after)
}

// TestDeadLinkRollback: OLD goes silent in the middle of a rollback,
// with the default host timeout. The CLI gives up in about 30s, releases
// the lock, says how far it got; a rollback run again when OLD answers
// finishes the job.
func TestDeadLinkRollback(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve", "--confirm-timeout", "0")
	total := len(loadState(t, s).Active())
	// Undo newest first: OLD's steps come first; pause before the 4th.
	p := startPaused(t, s, "4", "rollback", "-f", s.PlanFile, "--auto-approve")
	blackHole(t, ctx, l, lab.RoleOld)
	code, took := p.resume(t, 50*time.Second)
	out := p.text()
	t.Logf("rollback gave up %.1fs after OLD went silent (default host timeout 30s), exit %d:\n%s", took.Seconds(), code, out)
	if code == 0 {
		t.Fatal("rollback succeeded with OLD black-holed")
	}
	if took < 25*time.Second || took > 40*time.Second {
		t.Errorf("rollback took %s to give up on a silent host; want about the default 30s", took)
	}
	for _, want := range []string{
		"host old stopped answering (no reply for 30s) during rollback",
		"3 of " + strconv.Itoa(total) + " step(s) were undone",
		"a rollback arms no revert timer", "The local lock is released",
		"run `migrate rollback`", "migrate force-unlock",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rollback's error lacks %q", want)
		}
	}
	lockGone(t, s)
	if n := len(loadState(t, s).Active()); n != total-3 {
		t.Errorf("state file: %d active step(s) after 3 of %d were undone", n, total)
	}
	m := regexp.MustCompile("`migrate force-unlock ([0-9a-f]+)`").FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("rollback's error does not name its lock ID for force-unlock")
	}
	unHole(t, ctx, l, lab.RoleOld)
	r, err := s.Migrate(ctx, "rollback", "-f", s.PlanFile, "--auto-approve")
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != 0 && strings.Contains(r.Stderr, "lock ID "+m[1]) {
		// OLD's sshd has not noticed yet that the connection is gone: the
		// abandoned agent holds the host lock. Do what the message says.
		t.Logf("OLD still held the abandoned session's lock; force-unlock %s as the message says:\n%s", m[1], r.Stderr)
		mustMigrate(t, ctx, s, 0, "force-unlock", "-f", s.PlanFile, m[1])
		r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	} else if r.Code != 0 {
		t.Fatalf("rollback once OLD answers: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	t.Logf("rollback once OLD answers:\n%s%s", r.Stdout, r.Stderr)
	after, _ := s.Snapshot(ctx)
	diffSnap(t, "after the dead link in rollback", before, after)
}
