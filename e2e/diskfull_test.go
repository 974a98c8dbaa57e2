package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/agent/reserve"
	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestStateDirFull: in the third week, logs fill /var, where the agent
// keeps its journal. Seen before agent/reserve, with OLD's state
// directory on a nearly full tmpfs:
//   - an apply whose nft step ran but whose record could not be written
//     reported the step failed and left the table behind; its undo
//     stopped at the first undo it could not record, OLD half applied,
//     and a later rollback --all left migrate's table on OLD;
//   - an apply that filled the disk at its confirm left NEW reverted and
//     OLD still sending moved flows into the tunnel.
//
// Now a forward apply refuses to start (nothing touched) unless the state
// directory has migrate's reserve and working space beyond it; a disk
// that fills in the middle of an apply, or after it, frees the reserve,
// so the apply and a later rollback record every step, and rollback is
// exact.
func TestStateDirFull(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile) // installs the agents
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// OLD's state directory on a tmpfs of its own, mounted in the mount
	// namespace of OLD's sshd (where the agents run; `ip netns exec`
	// gave it one), never on the machine itself.
	dir := l.OldStateDir
	inOld := oldMountNS(t, ctx, l)
	used, err := strconv.ParseInt(strings.TrimSpace(inOld("du -s -B1 "+dir+" | cut -f1")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	size := func(extra int64) string { return strconv.FormatInt((used+extra+4095)/4096*4096, 10) }
	inOld(fmt.Sprintf("cp -a %[1]s %[1]s.copy && mount -t tmpfs -o size=%[2]s,mode=0700 migrate-test %[1]s && cp -a %[1]s.copy/. %[1]s/", dir, size(2<<20)))
	t.Cleanup(func() { _ = exec.Command("nsenter", "-t", oldSSHDPid(t, l), "-m", "umount", "-l", dir).Run() })
	fill := func() { inOld("dd if=/dev/zero of=" + dir + "/filler bs=64k 2>/dev/null; df -B1 " + dir) }

	// 1. Too little space: plan says so, and apply refuses before any
	// host changes.
	const warn = "WARNING host old: the file system of "
	if r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile); !strings.Contains(r.Stdout, warn+dir+" has") || !strings.Contains(r.Stdout, "apply refuses until there is room") {
		t.Errorf("plan on a nearly full OLD does not say apply will refuse:\n%s", r.Stdout)
	}
	r := mustMigrate(t, ctx, s, 1, "apply", "--auto-approve", "-f", s.PlanFile)
	if !strings.Contains(r.Stderr, "host old: arm the revert timer: the file system of "+dir+" has") ||
		!strings.Contains(r.Stderr, "free some space on it and run again") || !strings.Contains(r.Stderr, "nothing was changed") {
		t.Errorf("apply on a nearly full OLD, stderr:\n%s", r.Stderr)
	}
	expectSnap(t, ctx, s, "the apply refused for space", before)

	// 2. Room enough: apply, and the reserve is there.
	inOld(fmt.Sprintf("mount -o remount,size=%s %s", size(24<<20), dir))
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if out := inOld("stat -c %s " + dir + "/" + reserve.Name + " 2>&1 || true"); strings.TrimSpace(out) != strconv.Itoa(reserve.Size) {
		t.Errorf("reserve after apply: %q bytes, want %d", out, reserve.Size)
	}

	// 3. Weeks later the disk is full: status says so; rollback --all
	// uses the reserve, records every undo and is exact.
	fill()
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); !strings.Contains(r.Stdout, warn+dir) || !strings.Contains(r.Stdout, "Its reserve is there, so a rollback can still record every step") {
		t.Errorf("status on a full OLD:\n%s", r.Stdout)
	}
	r = mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, "Rollback complete!") {
		t.Errorf("rollback on a full OLD:\n%s", r.Stdout)
	}
	expectSnap(t, ctx, s, "rollback --all on a full OLD", before)
	if r := mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile); !strings.Contains(r.Stdout, "Nothing to roll back") {
		t.Errorf("a second rollback: the journals do not record the first:\n%s", r.Stdout)
	}

	// 4. Still full: the reserve went into the rollback's records, plan
	// says so, and apply refuses again.
	if r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile); !strings.Contains(r.Stdout, "Its reserve is gone") {
		t.Errorf("plan after the rollback on a full OLD:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 1, "apply", "--auto-approve", "-f", s.PlanFile)
	expectSnap(t, ctx, s, "the apply refused on a full OLD", before)

	// 5. The disk fills in the middle of an apply (before OLD's first
	// step: NEW's ten come first): the reserve takes the records, the
	// apply completes, and rollback after the cleanup is exact.
	inOld("rm " + dir + "/filler")
	p := startPaused(t, s, "11", "apply", "--auto-approve", "-f", s.PlanFile)
	fill()
	if code, _ := p.resume(t, scenario.Slow(time.Minute)); code != 0 {
		t.Fatalf("apply with OLD's disk filled before its first step: exit %d\n%s", code, p.text())
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	inOld("rm " + dir + "/filler")
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	expectSnap(t, ctx, s, "rollback --all after an apply that filled OLD's disk", before)
}

// expectSnap compares both hosts with a snapshot taken before.
func expectSnap(t *testing.T, ctx context.Context, s *scenario.Scenario, what string, before map[string]string) {
	t.Helper()
	now, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, what, stripCounters(before), stripCounters(now))
}

// oldSSHDPid is the PID of OLD's sshd, whose mount namespace its agents
// share.
func oldSSHDPid(t *testing.T, l *lab.Lab) string { t.Helper(); return sshdPid(t, l, lab.RoleOld) }

// oldMountNS returns a runner of shell commands in OLD's sshd's mount
// namespace (its network namespace is not entered: nothing here sends a
// packet).
func oldMountNS(t *testing.T, ctx context.Context, l *lab.Lab) func(cmd string) string {
	pid := oldSSHDPid(t, l)
	return func(cmd string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, "nsenter", "-t", pid, "-m", "sh", "-c", cmd).CombinedOutput()
		if err != nil {
			t.Fatalf("in OLD's mount namespace: %s: %v\n%s", cmd, err, out)
		}
		return string(out)
	}
}
