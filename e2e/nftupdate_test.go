package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
	"github.com/opsmigrate/migrate/views"
)

// TestNftUpdatesKeepFlowsAndCounters: changes to other services (one
// added, its stage changed twice, one removed and a port range added)
// update OLD's nft table in place. Two long-lived connections, one
// served on OLD (open before the move: draining) and one on NEW, keep
// answering from where they were across every update; the moved
// service's counters in `migrate status` never go back (a table
// replaced whole would start them from zero), the sets holding its
// elements are the same kernel objects (same handles) throughout, and
// rollback --all ends as before the first apply.
func TestNftUpdatesKeepFlowsAndCounters(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	addr := fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort)
	base := s.PlanText(scenario.PlanOptions{Stage: "new"})
	write := func(webStage, extra string) {
		t.Helper()
		text := strings.Replace(base, `stage    = "new"`, fmt.Sprintf(`stage    = %q`, webStage), 1)
		writePlan(t, s, text+extra)
	}
	extra := func(name, ports, stage string, percent int) string {
		p := ""
		if percent > 0 {
			p = fmt.Sprintf("\n  canary_percent = %d", percent)
		}
		return fmt.Sprintf("\nservice %q {\n  address       = %q\n  protocol      = \"tcp\"\n  ports         = %s\n  stage         = %q%s\n  allow_unready = true\n}\n",
			name, l.OldIP.String(), ports, stage, p)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A connection served on OLD, open before the service moves.
	write("old", "")
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	onOld := startHolder(t, s, addr)
	if onOld.servedBy() != "old" {
		t.Fatalf("before the move the holder is served by %q", onOld.servedBy())
	}
	write("new", "")
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	onNew := startHolder(t, s, addr)
	if onNew.servedBy() != "new" {
		t.Fatalf("after the move a new holder is served by %q", onNew.servedBy())
	}
	onOld.expectAnswering(t, "old")

	handles := regexp.MustCompile(`(?m)^\s*(set|map) (\S+) \{ # handle (\d+)`)
	setHandles := func() string {
		t.Helper()
		out, err := l.Exec(ctx, lab.RoleOld, "nft", "-a", "list", "table", "inet", "migrate")
		if err != nil {
			t.Fatalf("nft list: %v: %s", err, out)
		}
		var hs []string
		for _, m := range handles.FindAllStringSubmatch(string(out), -1) {
			hs = append(hs, m[2]+"="+m[3])
		}
		return strings.Join(hs, " ")
	}
	web := func() views.StatusSvc {
		t.Helper()
		for _, sv := range readStatus(t, ctx, s).Services {
			if sv.Name == "web" {
				return sv
			}
		}
		t.Fatal("status has no service web")
		return views.StatusSvc{}
	}
	prev := web()
	if prev.NewFlows < 1 || prev.Packets == 0 {
		t.Fatalf("no counts for web after the move: %+v", prev)
	}
	sets := setHandles()
	t.Logf("after the move: web %d flow(s), %d packet(s); sets %s", prev.NewFlows, prev.Packets, sets)

	for _, u := range []struct{ what, extra string }{
		{"a service added", extra("extra", "[8090]", "new", 0)},
		{"its stage changed to canary (a new canary chain)", extra("extra", "[8090]", "canary", 30)},
		{"another canary percent", extra("extra", "[8090]", "canary", 60)},
		{"it removed, a port range added", extra("range", `["8100-8199"]`, "new", 0)},
		{"the range removed", ""},
	} {
		write("new", u.extra)
		mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
		onOld.expectAnswering(t, "old")
		onNew.expectAnswering(t, "new")
		now := web()
		t.Logf("%s: web %d flow(s), %d packet(s), %d byte(s)", u.what, now.NewFlows, now.Packets, now.Bytes)
		if now.NewFlows < prev.NewFlows || now.Packets < prev.Packets || now.Bytes < prev.Bytes {
			t.Errorf("%s: web's counters went back: %+v, before %+v", u.what, now, prev)
		}
		if got := setHandles(); got != sets {
			t.Errorf("%s: OLD's sets are other objects now: %s, before %s", u.what, got, sets)
		}
		if r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile); !strings.Contains(r.Stdout, "No changes") {
			t.Errorf("%s: plan after apply:\n%s", u.what, r.Stdout)
		}
		prev = now
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	onOld.stop(t)
	onNew.stop(t)
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", before, after)
}
