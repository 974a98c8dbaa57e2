package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
	"github.com/opsmigrate/migrate/status"
	"github.com/opsmigrate/migrate/views"
)

// readStatus runs `migrate status --json` and decodes its one document.
func readStatus(t *testing.T, ctx context.Context, s *scenario.Scenario) views.StatusDoc {
	t.Helper()
	r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile, "--json")
	return decodeStatus(t, r.Stdout)
}

// decodeStatus decodes one line of status --json (docs/json.md).
func decodeStatus(t *testing.T, line string) views.StatusDoc {
	t.Helper()
	var doc views.StatusDoc
	if err := json.Unmarshal([]byte(strings.TrimSpace(line)), &doc); err != nil || doc.Type != "status" || doc.SchemaVersion != views.JSONSchemaVersion {
		t.Fatalf("status --json printed %q: %v", line, err)
	}
	return doc
}

// TestStatus follows one service's move the way an operator would: what
// `migrate status` says before apply, while a connection drains on OLD,
// and once it is gone; then `state list/show` and `status --watch`.
func TestStatus(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	addr := fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort)
	if err := s.WritePlan(scenario.PlanOptions{TunnelType: "vxlan", Stage: "new"}); err != nil {
		t.Fatal(err)
	}

	// Before anything is applied: nothing moves, no tunnel.
	r := readStatus(t, ctx, s)
	if len(r.Services) != 1 || r.Services[0].LiveStage != status.StageAbsent || r.Tunnel == nil || r.Tunnel.Up() {
		t.Fatalf("before apply: %+v", r)
	}
	if !strings.Contains(r.Verdict, "not fully on NEW") {
		t.Fatalf("before apply, verdict %q", r.Verdict)
	}

	onOld := startHolder(t, s, addr) // established on OLD, must drain
	apply := mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	if !strings.Contains(apply.Stdout, "... done [") {
		t.Errorf("apply printed no per-step timings:\n%s", apply.Stdout)
	}
	const moved = 5
	out, err := s.Labtool(ctx, time.Minute, lab.RoleClient, "many", "-n", fmt.Sprint(moved), addr)
	if err != nil || !strings.Contains(out, fmt.Sprintf("served-by=new:%d", moved)) {
		t.Fatalf("%d connections after apply: %v %s", moved, err, out)
	}

	r = readStatus(t, ctx, s)
	web := r.Services[0]
	t.Logf("draining: %+v tunnel %+v", web, r.Tunnel)
	if web.LiveStage != "new" || web.NewFlows < moved || web.Bytes == 0 || web.OnOld != 1 || web.Drained {
		t.Errorf("while a connection drains on OLD: %+v; want stage new, >= %d new flows, bytes, 1 on OLD, not drained", web, moved)
	}
	if !r.Tunnel.Up() || r.Tunnel.OldToNew.RTTMS <= 0 || r.Tunnel.NewToOld.RTTMS <= 0 || r.Tunnel.OldToNew.RTTMS > 2000 {
		t.Errorf("tunnel %+v: want up with a round-trip time both ways", r.Tunnel)
	}
	if !strings.Contains(r.Verdict, "draining") {
		t.Errorf("verdict while draining: %q", r.Verdict)
	}
	human := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	for _, want := range []string{fmt.Sprintf("Tunnel mig0 (vxlan, %s <-> %s): up", l.OldIP, l.NewIP), "rtt ", "web", "draining: 1 established flow(s) still served by OLD"} {
		if !strings.Contains(human.Stdout, want) {
			t.Errorf("status output lacks %q:\n%s", want, human.Stdout)
		}
	}
	t.Logf("status while draining:\n%s", human.Stdout)

	// The last connection on OLD ends: the service is drained.
	onOld.stop(t)
	deadline := time.Now().Add(scenario.Slow(20 * time.Second))
	for {
		r = readStatus(t, ctx, s)
		if r.Services[0].Drained {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no drain after the last connection on OLD closed: %+v", r.Services[0])
		}
		time.Sleep(time.Second)
	}
	if !strings.HasPrefix(r.Services[0].State, "drained") {
		t.Errorf("drained service state %q", r.Services[0].State)
	}

	// --watch --json streams one document per reading until interrupted.
	cmd, err := s.StartMigrate(nil, "status", "-f", s.PlanFile, "--watch", "--json", "--interval", "1s")
	if err != nil {
		t.Fatal(err)
	}
	logPath := l.LogPath(cmd)
	var lines []string
	deadline = time.Now().Add(scenario.Slow(30 * time.Second))
	for len(lines) < 2 && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		lines = jsonLines(logPath)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	waitErr := cmd.Wait()
	if len(lines) < 2 {
		t.Fatalf("status --watch printed %d reading(s) in 30 s:\n%s", len(lines), fileText(logPath))
	}
	if waitErr != nil {
		t.Errorf("status --watch interrupted: %v (want exit 0)\n%s", waitErr, fileText(logPath))
	}
	second := decodeStatus(t, lines[1])
	if second.Services[0].NewFlowsPerSec < 0 {
		t.Errorf("second reading has no rate: %+v", second.Services[0])
	}

	// state list / show read the state file only.
	list := mustMigrate(t, ctx, s, 0, "state", "list", "-f", s.PlanFile)
	for _, want := range []string{"new.link.mig0", "old.link.mig0", "old.nft.table_inet_migrate"} {
		if !strings.Contains(list.Stdout, want+"\n") {
			t.Errorf("state list lacks %s:\n%s", want, list.Stdout)
		}
	}
	show := mustMigrate(t, ctx, s, 0, "state", "show", "-f", s.PlanFile, "old.nft.table_inet_migrate")
	for _, want := range []string{"rollback: delete it (migrate created it)", fmt.Sprintf("service %s tcp %d: 100%% of new flows to NEW", l.OldIP, scenario.MigratedPort)} {
		if !strings.Contains(show.Stdout, want) {
			t.Errorf("state show lacks %q:\n%s", want, show.Stdout)
		}
	}
	bad := mustMigrate(t, ctx, s, 1, "state", "show", "-f", s.PlanFile, "old.link.nosuch")
	if !strings.Contains(bad.Stderr, "migrate state list") {
		t.Errorf("unknown address error: %s", bad.Stderr)
	}

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	if r := readStatus(t, ctx, s); r.Services[0].LiveStage != status.StageAbsent {
		t.Errorf("after rollback: %+v", r.Services[0])
	}
}

func jsonLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "{") {
			out = append(out, sc.Text())
		}
	}
	return out
}

func fileText(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
