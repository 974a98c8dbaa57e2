package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestSysctlFilesWarning: hardened images ship `net.ipv4.ip_forward = 0`
// in /etc/sysctl.d. migrate's boot unit runs after systemd-sysctl, so a
// reboot is fine, and so is a restart of systemd-sysctl where systemd is
// PID 1 (TestSysctlRestartRestores); but anything else that applies the
// files again mid-migration (`sysctl --system`, configuration management)
// turns OLD's forwarding off, and every moved service stops answering
// until the next apply (shown here). plan warns with the file
// and line, and stops warning once the file agrees.
func TestSysctlFilesWarning(t *testing.T) {
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
	// OLD's /etc/sysctl.d, only in the mount namespace of OLD's sshd
	// (where its agents run).
	inOld := oldMountNS(t, ctx, l)
	const conf = "/etc/sysctl.d/60-hardening.conf"
	inOld("mount -t tmpfs -o size=1m migrate-test /etc/sysctl.d && printf '# CIS 3.1.1\\nnet.ipv4.ip_forward = 0\\n' > " + conf)
	t.Cleanup(func() {
		_ = exec.Command("nsenter", "-t", oldSSHDPid(t, l), "-m", "umount", "-l", "/etc/sysctl.d").Run()
	})

	want := "WARNING host old: " + conf + ":2 sets net.ipv4.ip_forward = 0 and migrate sets 1."
	r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, want) || !strings.Contains(r.Stdout, "OLD stops forwarding the moved services' flows") {
		t.Errorf("plan does not warn of %s:\n%s", conf, r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, scenario.MigratedPort, "new")

	// What the warning is about: the file applied again, in OLD's
	// network namespace only (ip_forward is per namespace).
	if out, err := exec.CommandContext(ctx, "nsenter", "-t", oldSSHDPid(t, l), "-m", "-n", "sysctl", "-p", conf).CombinedOutput(); err != nil {
		t.Fatalf("sysctl -p %s in OLD: %v %s", conf, err, out)
	}
	if out, err := s.Dial(ctx, lab.RoleClient, fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort)); err == nil {
		t.Errorf("the moved service still answers with OLD's forwarding off: %s", out)
	}
	// status sees it (it said "drained" before: it read no sysctl).
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); !strings.Contains(r.Stdout, "OLD has net.ipv4.ip_forward = 0 again, not 1") || !strings.Contains(r.Stdout, "BROKEN") {
		t.Errorf("status with OLD's forwarding off:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile) // repairs the drift
	expectServed(t, ctx, s, scenario.MigratedPort, "new")

	inOld("printf 'net.ipv4.ip_forward = 1\\n' > " + conf)
	if r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile); strings.Contains(r.Stdout, conf) {
		t.Errorf("plan still warns once the file agrees:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	expectSnap(t, ctx, s, "rollback --all", before)
}
