package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestRulesetFlushed: in the third week somebody reloads OLD's firewall
// the Debian way (`nft -f /etc/nftables.conf`, which begins with `flush
// ruleset`), and migrate's table goes with it. What was seen: the moved
// connection is reset by OLD's own stack and new connections stay on OLD.
// plan and status must say what happened (not "nothing applied"), apply
// puts the table back and new connections move again, and rollback is
// still exact.
func TestRulesetFlushed(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, scenario.MigratedPort, "new")

	conf := l.Dir + "/nftables.conf"
	writeFile(t, conf, "#!/usr/sbin/nft -f\nflush ruleset\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n")
	if out, err := l.Exec(ctx, lab.RoleOld, "nft", "-f", conf); err != nil {
		t.Fatalf("old: nft -f %s: %v %s", conf, err, out)
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "old")

	const gone = "is gone, although migrate wrote it and has not removed it"
	r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, "migrate's nft table on host old "+gone) || !strings.Contains(r.Stdout, "+ nft table inet migrate: role old") {
		t.Errorf("plan after the flush does not say the table is gone and puts it back:\n%s", r.Stdout)
	}
	r = mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, "migrate's nft table on OLD "+gone) || strings.Contains(r.Stdout, "nothing moves yet") || !strings.Contains(r.Stdout, "old (table removed)") {
		t.Errorf("status after the flush:\n%s", r.Stdout)
	}

	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	r = mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if strings.Contains(r.Stdout, gone) {
		t.Errorf("status after apply still says the table is gone:\n%s", r.Stdout)
	}

	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	if out, err := l.Exec(ctx, lab.RoleOld, "nft", "delete", "table", "inet", "filter"); err != nil {
		t.Fatalf("old: %v %s", err, out)
	}
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "apply, flush, apply, rollback", before, after)
}
