package e2e

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
	"github.com/opsmigrate/migrate/status"
	"github.com/opsmigrate/migrate/views"
)

// TestStatusHostDown: during an incident one host's sshd stops answering.
// `migrate status` still shows what the other host sees, says which host
// could not be read and exits 1; --watch keeps going and picks the host up
// again when it answers; only when neither answers is there no report.
func TestStatusHostDown(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	if err := s.WritePlan(scenario.PlanOptions{TunnelType: "vxlan", Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	expectServed(t, ctx, s, scenario.MigratedPort, "new")

	block := func(role string) {
		t.Helper()
		if err := l.BlockSSHFromAdmin(ctx, role); err != nil {
			t.Fatal(err)
		}
	}
	unblock := func(role string) {
		t.Helper()
		if err := l.UnblockSSHFromAdmin(ctx, role); err != nil {
			t.Fatal(err)
		}
	}

	// NEW's sshd is gone: OLD's view stands, the ping from OLD through the
	// tunnel still passes (NEW's kernel answers), OLD is not released.
	block(lab.RoleNew)
	r := mustMigrate(t, ctx, s, 1, "status", "-f", s.PlanFile, "--json")
	rep := decodeStatus(t, r.Stdout)
	if rep.Reached("new") || !rep.Reached("old") || rep.Services[0].LiveStage != "new" || rep.Services[0].NewFlows < 1 {
		t.Errorf("NEW unreachable: %+v", rep)
	}
	if !rep.Tunnel.OldToNew.OK() || rep.Tunnel.NewToOld.Target != "" {
		t.Errorf("NEW unreachable: tunnel %+v, want OLD's ping through and none from NEW", rep.Tunnel)
	}
	if !strings.Contains(r.Stderr, "host new could not be read") {
		t.Errorf("stderr: %s", r.Stderr)
	}
	human := mustMigrate(t, ctx, s, 1, "status", "-f", s.PlanFile)
	for _, want := range []string{"Host new UNREACHABLE:", "UNKNOWN (a host could not be read)", "NEW could not be read"} {
		if !strings.Contains(human.Stdout, want) {
			t.Errorf("status with NEW down lacks %q:\n%s", want, human.Stdout)
		}
	}
	t.Logf("status with NEW's sshd down:\n%s", human.Stdout)
	unblock(lab.RoleNew)

	// --watch: OLD drops out mid-watch and comes back.
	cmd, err := s.StartMigrate(nil, "status", "-f", s.PlanFile, "--watch", "--json", "--interval", "1s")
	if err != nil {
		t.Fatal(err)
	}
	logPath := l.LogPath(cmd)
	defer cmd.Process.Kill()
	// waitFor returns the first reading after `after` lines that satisfies ok.
	waitFor := func(what string, after int, ok func(views.StatusDoc) bool) int {
		t.Helper()
		deadline := time.Now().Add(scenario.Slow(60 * time.Second))
		for time.Now().Before(deadline) {
			lines := jsonLines(logPath)
			for i := after; i < len(lines); i++ {
				if ok(decodeStatus(t, lines[i])) {
					return i + 1
				}
			}
			time.Sleep(300 * time.Millisecond)
		}
		t.Fatalf("status --watch: no reading %s within a minute:\n%s", what, fileText(logPath))
		return 0
	}
	n := waitFor("with both hosts", 0, func(r views.StatusDoc) bool { return len(r.Unreachable) == 0 })
	block(lab.RoleOld)
	n = waitFor("with OLD unreachable", n, func(r views.StatusDoc) bool {
		return !r.Reached("old") && r.Services[0].LiveStage == status.StageUnknown && r.Tunnel.NewToOld.OK()
	})
	unblock(lab.RoleOld)
	waitFor("with OLD back", n, func(r views.StatusDoc) bool { return len(r.Unreachable) == 0 && r.Services[0].LiveStage == "new" })
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("status --watch through a host outage: %v (want exit 0)\n%s", err, fileText(logPath))
	}

	// Neither host answers: no report, an error naming both.
	block(lab.RoleOld)
	block(lab.RoleNew)
	r = mustMigrate(t, ctx, s, 1, "status", "-f", s.PlanFile)
	if !strings.Contains(r.Stderr, "neither host could be read") || strings.Contains(r.Stdout, "SERVICE") {
		t.Errorf("both down:\nstdout:\n%s\nstderr:\n%s", r.Stdout, r.Stderr)
	}
	unblock(lab.RoleOld)
	unblock(lab.RoleNew)
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
}
