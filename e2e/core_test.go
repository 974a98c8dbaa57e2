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

// tunnelTypes are the types the e2e tests know. Each runs when this kernel
// supports it; the others are reported, never skipped silently.
var tunnelTypes = []string{"vxlan", "gre"}

// kernelHas reports whether the kernel can create a link of typ, trying in
// a throwaway network namespace.
func kernelHas(typ string) bool {
	args := []string{"--net", "--", "ip", "link", "add", "probe0", "type", typ}
	switch typ {
	case "vxlan":
		args = append(args, "id", "1", "dstport", "4789", "local", "192.0.2.1")
	case "gre":
		args = append(args, "local", "192.0.2.1", "remote", "192.0.2.2")
	}
	return exec.Command("unshare", args...).Run() == nil
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tests need root (network namespaces, sshd); run the README's test command as root")
	}
}

func newScenario(t *testing.T, ctx context.Context) *scenario.Scenario {
	t.Helper()
	l, err := lab.New(ctx, lab.Options{Prefix: "mge"})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for role, p := range l.SSHDLog {
				if b, err := os.ReadFile(p); err == nil {
					t.Logf("sshd log %s:\n%s", role, b)
				}
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	s, err := scenario.Setup(ctx, l)
	if err != nil {
		t.Fatalf("scenario: %v", err)
	}
	return s
}

func mustMigrate(t *testing.T, ctx context.Context, s *scenario.Scenario, wantCode int, args ...string) scenario.Result {
	t.Helper()
	r, err := s.Migrate(ctx, args...)
	if err != nil {
		t.Fatalf("migrate %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, r.Stdout, r.Stderr)
	}
	if r.Code != wantCode {
		t.Fatalf("migrate %v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, r.Code, wantCode, r.Stdout, r.Stderr)
	}
	return r
}

func expectServed(t *testing.T, ctx context.Context, s *scenario.Scenario, port int, by string) string {
	t.Helper()
	out, err := s.Dial(ctx, lab.RoleClient, fmt.Sprintf("%s:%d", s.Lab.OldIP, port))
	if err != nil {
		t.Fatalf("client dial %s:%d: %v: %s", s.Lab.OldIP, port, err, out)
	}
	if !strings.Contains(out, "served-by="+by+" ") {
		t.Fatalf("client to %s:%d: %q, want served-by=%s", s.Lab.OldIP, port, out, by)
	}
	return out
}

func diffSnap(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for host, b := range before {
		if a := after[host]; a != b {
			t.Errorf("%s: host %s changed:\n--- before\n%s\n--- after\n%s", what, host, b, a)
		}
	}
}

// TestCoreSlice moves one TCP service from OLD to NEW and back, for every
// tunnel type this kernel has.
func TestCoreSlice(t *testing.T) {
	needRoot(t)
	for _, typ := range tunnelTypes {
		t.Run(typ, func(t *testing.T) {
			if !kernelHas(typ) {
				t.Logf("TUNNEL %s: NOT RUN here: this kernel (%s) cannot create %s links", typ, kernelRelease(), typ)
				t.Skipf("kernel lacks %s", typ)
			}
			t.Logf("TUNNEL %s: running on this kernel (%s)", typ, kernelRelease())
			coreSlice(t, typ)
		})
	}
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func coreSlice(t *testing.T, typ string) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	if err := s.WritePlan(scenario.PlanOptions{TunnelType: typ, Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "old")

	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "Plan: ") || !strings.Contains(r.Stdout, "host new") {
		t.Fatalf("plan output:\n%s", r.Stdout)
	}
	afterPlan, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "plan must not change hosts", before, afterPlan)

	r = mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	t.Logf("apply:\n%s", r.Stdout)
	if !strings.Contains(r.Stdout, "tunnel verified in both directions") {
		t.Errorf("apply did not report the tunnel check:\n%s", r.Stdout)
	}

	// (a) served by NEW, which sees the client's real address; the client
	// talks to OLD_IP:port.
	out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if !strings.Contains(out, "peer="+s.Lab.ClientIP.String()+" ") {
		t.Errorf("NEW does not see the client's address: %q", out)
	}
	if !strings.Contains(out, fmt.Sprintf("remote=%s:%d", s.Lab.OldIP, scenario.MigratedPort)) {
		t.Errorf("client's peer is not OLD_IP:port: %q", out)
	}
	// (b) another port on OLD_IP stays on OLD.
	expectServed(t, ctx, s, scenario.StayPort, "old")
	// (c) NEW connects out from OLD_IP; the client's listener sees OLD_IP.
	out, err = s.Dial(ctx, lab.RoleNew, "-bind", s.Lab.OldIP.String(), fmt.Sprintf("%s:%d", s.Lab.ClientIP, scenario.ClientPort))
	if err != nil {
		t.Fatalf("NEW outbound from OLD_IP: %v: %s", err, out)
	}
	if !strings.Contains(out, "served-by=client peer="+s.Lab.OldIP.String()+" ") {
		t.Errorf("client's listener did not see OLD_IP as source: %q", out)
	}

	// (d) plan after apply: no changes; apply again changes nothing.
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "No changes") {
		t.Errorf("plan after apply:\n%s", r.Stdout)
	}
	r = mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	if !strings.Contains(r.Stdout, "No changes") {
		t.Errorf("second apply:\n%s", r.Stdout)
	}

	// (e) rollback restores both hosts byte for byte, and OLD serves again.
	r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	t.Logf("rollback:\n%s", r.Stdout)
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback", before, after)
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
}
