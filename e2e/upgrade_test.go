package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab/scenario"
)

// upgradeBaseline is the migrate an operator started the migration with in
// TestUpgradeMidMigration: main of 2026-11-22, two weeks before this test,
// with nft layout 1, the host journals and the state file of that time.
// Move it forward only with a reason: the older it is, the more formats
// the test crosses.
const upgradeBaseline = "7196d8053b5460a677994c2a9b21aedc41943db9"

// TestUpgradeMidMigration: a migration lasts weeks, and the operator (or a
// colleague) upgrades migrate in the middle of it. The hosts keep what the
// old migrate wrote: its nft table (an older layout), its routes, rules
// and sysctls, the host journals and revert records of its agent, and the
// laptop keeps its state file. The new migrate must read all of it, plan
// only what really changes (the table's newer layout, in place: nothing
// added or destroyed), apply it with the moved service answering
// throughout, roll back its own apply to exactly what the old migrate had
// written, and roll back everything to the hosts as they were.
func TestUpgradeMidMigration(t *testing.T) {
	needRoot(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("git", "-C", root, "cat-file", "-e", upgradeBaseline+"^{commit}").Run(); err != nil {
		t.Skipf("SKIP (not run): the baseline commit %s is not in this clone (a shallow clone?): the upgrade across versions is not checked", upgradeBaseline)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	oldBin := buildAt(t, ctx, root, upgradeBaseline)
	s := newScenario(t, ctx)
	l := s.Lab
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	current := s.MigrateBin
	t.Log("TUNNEL vxlan: TestUpgradeMidMigration")
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	s.MigrateBin = oldBin
	r := mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	oldTables := nftDigests(r.Stdout)
	if len(oldTables) != 2 {
		t.Fatalf("the old migrate's apply names %d nft tables with digests, want 2:\n%s", len(oldTables), r.Stdout)
	}
	expectServed(t, ctx, s, 8080, "new")
	afterOld, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	s.MigrateBin = current
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, "Plan: 0 to add, ") || !strings.Contains(r.Stdout, ", 0 to destroy.") {
		t.Errorf("plan after the upgrade replaces objects (only the table's layout should change, in place):\n%s", r.Stdout)
	}
	upgrade := mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	out := expectServed(t, ctx, s, 8080, "new")
	if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("NEW's server saw %q, want the client's address %s", out, l.ClientIP)
	}
	if r := mustMigrate(t, ctx, s, 0, "plan", "--detailed-exitcode", "-f", s.PlanFile); !strings.Contains(r.Stdout, "No changes") {
		t.Errorf("plan after the new migrate's apply:\n%s", r.Stdout)
	}
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "WARNING") || strings.Contains(r.Stdout, "BROKEN") {
		t.Errorf("status after the upgrade:\n%s", r.Stdout)
	}
	// Its own apply undone: every object back to what the old migrate
	// recorded. Two things cannot be byte for byte, and are not: the nft
	// table is the recorded one (its digest, the services, marks and
	// stages the old migrate wrote) in the layout this agent writes (it
	// verifies older layouts but writes only its own: the older ones
	// carry the data-path bugs fixed since), and the tunnel device keeps
	// the fixed MAC address (the old record says none). Everything else
	// is the old migrate's, byte for byte.
	r = mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "-f", s.PlanFile)
	changed := 0
	for _, d := range oldTables {
		if !strings.Contains(upgrade.Stdout, "(digest "+d+")) ... done") {
			continue // the upgrade's apply left that table as it was
		}
		changed++
		if !strings.Contains(r.Stdout, "(digest "+d+") (was: ") {
			t.Errorf("rollback does not put back the old migrate's table (digest %s):\n%s", d, r.Stdout)
		}
	}
	if changed == 0 {
		t.Errorf("the upgrade's apply changed no table the old migrate wrote (the layout upgrade is not exercised):\n%s", upgrade.Stdout)
	}
	expectServed(t, ctx, s, 8080, "new")
	afterRollback, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback of the new migrate's apply (but the nft layout and mig0's MAC)", withoutLayoutAndMAC(afterOld), withoutLayoutAndMAC(afterRollback))
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	expectSnap(t, ctx, s, "rollback --all", before)
}

// buildAt builds the migrate CLI (static: it is its own agent) of commit
// rev of the repository at root, from `git archive` (the repository is
// not touched), into the test's temporary directory.
func buildAt(t *testing.T, ctx context.Context, root, rev string) string {
	t.Helper()
	src := t.TempDir()
	if out, err := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, rev, src).CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v %s", rev, err, out)
	}
	bin := filepath.Join(t.TempDir(), "migrate-"+rev[:7])
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/migrate")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build migrate at %s: %v\n%s", rev, err, out)
	}
	t.Logf("built migrate at %s", rev[:7])
	return bin
}

// nftDigests are the spec digests of the nft tables an apply's output
// creates or changes ("... nft table inet migrate: ... (digest D) ... done").
func nftDigests(out string) []string {
	var ds []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, " nft table inet migrate: ") || !strings.HasSuffix(strings.TrimSpace(line[:max(0, strings.LastIndex(line, " ... done"))]), ")") {
			continue
		}
		if i := strings.LastIndex(line, "(digest "); i >= 0 {
			d, _, _ := strings.Cut(line[i+len("(digest "):], ")")
			ds = append(ds, d)
		}
	}
	return ds
}

// withoutLayoutAndMAC drops, from each host's snapshot, the nft ruleset
// section and the link/ether line of the tunnel device.
func withoutLayoutAndMAC(snap map[string]string) map[string]string {
	out := map[string]string{}
	for host, text := range snap {
		var b strings.Builder
		skip, inMig0 := false, false
		for _, line := range strings.SplitAfter(text, "\n") {
			if strings.HasPrefix(line, "### ") {
				skip = line == "### nft list ruleset\n"
			}
			if !strings.HasPrefix(line, " ") {
				inMig0 = strings.Contains(line, ": mig0: ")
			}
			if skip || inMig0 && strings.Contains(line, "link/ether ") {
				continue
			}
			b.WriteString(line)
		}
		out[host] = b.String()
	}
	return out
}
