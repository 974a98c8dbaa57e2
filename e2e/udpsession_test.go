package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
	"github.com/opsmigrate/migrate/state"
)

// TestUDPSessionAtFirstApply: a UDP client that keeps its socket (a
// game, QUIC, VoIP) talks to OLD's UDP service when the first apply moves
// it. OLD keeps a flow it knows from its conntrack entry, and on a host
// where nothing tracked flows before migrate's table there was none: the
// session's next datagram looked new and went to NEW mid-session (seen:
// every answer from OLD, then every answer from NEW). Now the table
// tracks before it moves UDP services (state.UDPWarmup): the session
// stays with OLD, a new flow goes to NEW, and rollback is exact.
func TestUDPSessionAtFirstApply(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		if err := s.Serve(ctx, role, role, fmt.Sprintf(":%d", udpWildPort), true); err != nil {
			t.Fatal(err)
		}
	}
	tunnel := fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", l.OldIP, l.NewIP)
	svc := fmt.Sprintf("service \"game\" {\n  address  = %q\n  protocol = \"udp\"\n  ports    = [%d]\n  stage    = \"new\"\n}\n", l.OldIP, udpWildPort)
	if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, svc)), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := l.Exec(ctx, lab.RoleOld, "sysctl", "-n", "net.netfilter.nf_conntrack_count"); err == nil && strings.TrimSpace(string(out)) != "0" {
		t.Fatalf("OLD tracks flows before the first apply (%s): this test needs a namespace that does not", out)
	}
	if r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile); !strings.Contains(r.Stdout, "host old tracks no flows yet: apply turns tracking on 3s before it sends UDP service(s) game to NEW") {
		t.Errorf("plan does not say what the first apply does for UDP sessions:\n%s", r.Stdout)
	}
	addr := fmt.Sprintf("%s:%d", l.OldIP, udpWildPort)
	session, err := l.Start(lab.RoleClient, s.LabtoolBin, "hold", "-udp", "-every", "100ms", "-count", "0", "-timeout", "1s", addr)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(scenario.Slow(time.Second))
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	mark := strings.Count(s.LogText(session), "\n")
	time.Sleep(scenario.Slow(2 * time.Second))
	lines := strings.Split(strings.TrimSpace(s.LogText(session)), "\n")
	if len(lines) < mark+10 {
		t.Fatalf("the UDP session stopped:\n%s", s.LogText(session))
	}
	for _, line := range lines[1:] {
		if !strings.HasSuffix(line, " old") {
			t.Fatalf("the UDP session that began before the first apply left OLD (state.UDPWarmup %s): %q\n%s", state.UDPWarmup, line, s.LogText(session))
		}
	}
	if out, err := s.Dial(ctx, lab.RoleClient, "-udp", addr); err != nil || !strings.Contains(out, "served-by=new ") {
		t.Errorf("a new UDP flow after the apply: %v %s", err, out)
	}
	_ = session.Process.Kill()
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	expectSnap(t, ctx, s, "rollback --all", before)
}
