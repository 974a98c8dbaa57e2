package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// foreignRuleset is what other software left on the hosts: another table
// with a set, a Docker-like filter table whose FORWARD chain drops by
// default (with the accept rules an operator adds for the tunnel).
const foreignRuleset = `table inet foreign {
	set blocked {
		type ipv4_addr
		elements = { 192.0.2.99 }
	}
	chain pre {
		type filter hook prerouting priority -300; policy accept;
		ip saddr @blocked drop
		meta mark set 0x1
	}
}
table ip filter {
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
		iifname "mig0" accept
		oifname "mig0" accept
	}
}
`

// TestForeignConfigStaysForeign: migrate changes nothing it does not own.
// After apply and rollback, other nft tables, policy rules with their own
// marks and extra routing tables are byte-identical; plan notes that the
// forward drop policy's own rules accept migrate's flows.
func TestForeignConfigStaysForeign(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	rs := filepath.Join(l.Dir, "foreign.nft")
	if err := os.WriteFile(rs, []byte(foreignRuleset), 0o644); err != nil {
		t.Fatal(err)
	}
	gw := map[string]string{lab.RoleOld: "198.51.100.1", lab.RoleNew: "203.0.113.1"}
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		for _, c := range [][]string{
			{"nft", "-f", rs},
			{"ip", "rule", "add", "pref", "200", "fwmark", "0x1/0x1", "lookup", "100"},
			{"ip", "rule", "add", "pref", "300", "from", "192.0.2.99", "lookup", "101"},
			{"ip", "-6", "rule", "add", "pref", "300", "from", "2001:db8:ffff::1", "lookup", "101"},
			{"ip", "route", "add", "default", "via", gw[role], "table", "100"},
			{"ip", "route", "add", "blackhole", "192.0.2.99", "table", "101"},
		} {
			if out, err := l.Exec(ctx, role, c...); err != nil {
				t.Fatalf("%s: %v: %v: %s", role, c, err, out)
			}
		}
	}
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Its FORWARD's policy drop comes with accept rules for mig0 both
	// ways: plan reads them and notes it instead of warning.
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if note := "host old: table ip filter, chain FORWARD (hook forward) has policy drop; its rules accept what migrate forwards (in and out on mig0)"; !strings.Contains(r.Stdout, note) || strings.Contains(r.Stdout, "WARNING host old: table ip filter") {
		t.Errorf("plan does not note that the forward drop policy's rules accept migrate's flows:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	// The data path works through the foreign configuration (its accept
	// rules for mig0, its mark 0x1 kept beside migrate's bit).
	out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("client address not seen: %s", out)
	}
	mid, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		for _, want := range []string{"table inet foreign", "table ip filter", "200:\tfrom all fwmark 0x1/0x1 lookup 100", "blackhole 192.0.2.99 table 101"} {
			if !strings.Contains(mid[role], want) {
				t.Errorf("%s after apply lacks foreign %q", role, want)
			}
		}
	}
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "foreign configuration after apply and rollback", before, after)
}
