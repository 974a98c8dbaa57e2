package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

var vxlanCase = tunnelCase{Name: "vxlan", Type: "vxlan"}

// TestDriftRepair edits every kind of object migrate owns by hand, one at
// a time, after an apply: `plan` shows each edit as a change, `apply`
// restores it, and both hosts are then byte for byte as the apply left
// them. rollback --all ends as before the first apply.
func TestDriftRepair(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	if err := writeTunnelPlan(s, vxlanCase, "new"); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	applied, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := s.Lab.OldIP.String()
	for _, k := range []struct {
		kind, role string
		cmds       [][]string
		plan       string // what plan must show
	}{
		{"nft table edited", lab.RoleOld, [][]string{{"nft", "insert", "rule", "inet", "migrate", "prerouting", "ip", "saddr", "192.0.2.99", "counter", "drop"}},
			"~ nft table inet migrate: role old"},
		{"nft table deleted", lab.RoleOld, [][]string{{"nft", "delete", "table", "inet", "migrate"}},
			"+ nft table inet migrate: role old"},
		{"rule", lab.RoleOld, [][]string{{"ip", "rule", "del", "pref", "900"}},
			"+ rule v4 pref 900 fwmark 0x20000/0x20000 lookup 4242 proto 77"},
		{"route", lab.RoleNew, [][]string{{"ip", "route", "del", "default", "table", "4242"}},
			"+ route table 4242 0.0.0.0/0 via 169.254.42.1 dev mig0"},
		{"address", lab.RoleNew, [][]string{{"ip", "addr", "del", old + "/32", "dev", "lo"}},
			"+ addr " + old + "/32 dev lo"},
		{"link", lab.RoleOld, [][]string{{"ip", "link", "set", "mig0", "mtu", "1300"}},
			"~ link mig0 type vxlan local " + old + " remote"},
		{"sysctl", lab.RoleOld, [][]string{{"sysctl", "-w", "net.ipv4.ip_forward=0"}},
			"~ sysctl net.ipv4.ip_forward: 0 -> 1"},
	} {
		for _, c := range k.cmds {
			if out, err := s.Lab.Exec(ctx, k.role, c...); err != nil {
				t.Fatalf("%s: %v: %v: %s", k.kind, c, err, out)
			}
		}
		r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
		if !strings.Contains(r.Stdout, k.plan) {
			t.Errorf("%s edited by hand: plan does not show %q:\n%s", k.kind, k.plan, r.Stdout)
		}
		mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
		now, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		diffSnap(t, k.kind+" repaired", noCounters(applied), noCounters(now))
		if r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile); !strings.Contains(r.Stdout, "No changes") {
			t.Errorf("%s: plan after the repair:\n%s", k.kind, r.Stdout)
		}
		t.Logf("%s: shown by plan, repaired by apply", k.kind)
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "new")

	// NEW rebooted: every object migrate made there is runtime kernel
	// state, and all of it is gone. status must say so and keep OLD.
	for _, c := range [][]string{
		{"ip", "link", "del", "mig0"}, {"ip", "addr", "del", old + "/32", "dev", "lo"},
		{"nft", "delete", "table", "inet", "migrate"}, {"nft", "delete", "table", "arp", "migrate"},
		{"ip", "rule", "del", "pref", "500"}, {"ip", "rule", "del", "pref", "1100"},
		{"ip", "rule", "add", "pref", "0", "lookup", "local", "proto", "kernel"}, {"ip", "rule", "del", "pref", "1000"},
	} {
		if out, err := s.Lab.Exec(ctx, lab.RoleNew, c...); err != nil {
			t.Fatalf("NEW rebooted: %v: %v: %s", c, err, out)
		}
	}
	st := readStatus(t, ctx, s)
	if !strings.Contains(st.PathBroken, "NEW lost migrate's configuration (rebooted?)") || !strings.Contains(st.Verdict, "The path to NEW is broken") ||
		strings.Contains(st.Verdict, "switched off") || st.Services[0].Drained || !strings.HasPrefix(st.Services[0].State, "BROKEN") {
		t.Errorf("status after NEW lost its part: path %q, verdict %q, services %+v", st.PathBroken, st.Verdict, st.Services)
	}
	human := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	t.Logf("status with NEW's part gone:\n%s", human.Stdout)
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	if st := readStatus(t, ctx, s); st.PathBroken != "" {
		t.Errorf("after apply put NEW's part back, status still says: %q", st.PathBroken)
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", before, after)
}

// TestRollbackToWhatWasMeant: rollback lands on the previous change of
// the plan. First the sequence: apply; the table deleted, a rule
// removed and a sysctl changed by hand; apply repairs; rollback (without
// --all) is back before the first apply, not half way. Then the stages
// old -> canary -> new and rollback, rollback, rollback --all, each
// landing on the snapshot of the change before.
func TestRollbackToWhatWasMeant(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	write := func(stage string) {
		t.Helper()
		text := s.PlanText(scenario.PlanOptions{Stage: stage})
		if stage == "canary" {
			text = strings.Replace(text, `stage    = "canary"`, "stage    = \"canary\"\n  canary_percent = 30", 1)
		}
		writePlan(t, s, text)
	}
	snap := func() map[string]string {
		t.Helper()
		m, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	before := snap()

	write("new")
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	for _, c := range []struct {
		role string
		cmd  []string
	}{
		{lab.RoleOld, []string{"nft", "delete", "table", "inet", "migrate"}},
		{lab.RoleNew, []string{"ip", "rule", "del", "pref", "1100"}},
		{lab.RoleOld, []string{"sysctl", "-w", "net.ipv4.ip_forward=0"}},
	} {
		if out, err := s.Lab.Exec(ctx, c.role, c.cmd...); err != nil {
			t.Fatalf("%v: %v: %s", c.cmd, err, out)
		}
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	r := mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	if !strings.Contains(r.Stdout, "with 1 later apply(s) that only repaired drift") {
		t.Errorf("rollback does not say it undoes the repair with the change it repaired:\n%s", r.Stdout)
	}
	diffSnap(t, "rollback after a repair", before, snap())
	r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	if !strings.Contains(r.Stdout, "Nothing to roll back") {
		t.Errorf("a second rollback:\n%s", r.Stdout)
	}

	write("old")
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	atOld := snap()
	write("canary")
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	atCanary := snap()
	write("new")
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	// A hand edit of what stays applied is put back as well.
	if out, err := s.Lab.Exec(ctx, lab.RoleNew, "ip", "route", "del", "default", "table", "4242"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	t.Logf("rollback from new:\n%s", r.Stdout)
	diffSnap(t, "rollback from new (back at canary)", noCounters(atCanary), noCounters(snap()))
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	diffSnap(t, "second rollback (back at the first apply)", noCounters(atOld), noCounters(snap()))
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	diffSnap(t, "rollback --all", before, snap())
}

var nftCounter = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// noCounters blanks nft counters in snapshots: apply's probe through the
// tunnel and the lab's own traffic move them; what is compared is the
// configuration.
func noCounters(snaps map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range snaps {
		out[k] = nftCounter.ReplaceAllString(v, "counter")
	}
	return out
}
