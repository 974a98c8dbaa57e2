package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestSavedTable: in week 2 an admin persists a firewall change the
// common way, `nft list ruleset > /etc/nftables.conf`, and saves
// migrate's table, at the stage of the day, with their own.
// nftables.service loads that file at every boot and restart. What was
// seen before this test: a restart put the stale stage back (clients
// served by OLD again) while status called the service moved and drained
// (from the agent's record), and after `rollback --all` a reboot brought
// the table back, which the next apply took over as an update, so that
// its rollback kept migrate's table on OLD. Now plan warns of the file
// with its line, status says the stage is unknown, apply puts the right
// table back, and apply then rollback --all leave the hosts as before.
// NEW's saved copy (with its ARP table) is loaded again after the
// rollback too.
func TestSavedTable(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conf := nftablesConf(t, ctx, l, lab.RoleOld)
	confNew := nftablesConf(t, ctx, l, lab.RoleNew)
	// nftables.service in a host's namespaces (mount: its
	// /etc/nftables.conf; network: its ruleset). A restart is ExecStop,
	// `nft flush ruleset` (Debian's and RHEL's), then ExecStart, `nft -f
	// /etc/nftables.conf`; a boot is ExecStart alone on an empty ruleset,
	// the same here; Debian's reload is ExecReload, `nft -f` alone, onto
	// what is there.
	nft := func(role string, args ...string) ([]byte, error) {
		return exec.CommandContext(ctx, "nsenter", append([]string{"-t", sshdPid(t, l, role), "-m", "-n", "--", "nft"}, args...)...).CombinedOutput()
	}
	restart := func(role, what string) {
		t.Helper()
		for _, args := range [][]string{{"flush", "ruleset"}, {"-f", "/etc/nftables.conf"}} {
			if out, err := nft(role, args...); err != nil {
				t.Fatalf("%s: %s: nft %v: %v %s", role, what, args, err, out)
			}
		}
	}
	// save is `nft list ruleset > /etc/nftables.conf` on role; it
	// returns the lines where migrate's tables begin.
	save := func(role, file string) map[string]int {
		t.Helper()
		saved, err := l.Exec(ctx, role, "nft", "list", "ruleset")
		if err != nil {
			t.Fatalf("%s: %v %s", role, err, saved)
		}
		writeFile(t, file, "#!/usr/sbin/nft -f\n"+string(saved))
		lines := map[string]int{}
		for i, s := range strings.Split(string(saved), "\n") {
			if f := strings.Fields(s); len(f) == 4 && f[0] == "table" && f[2] == "migrate" && f[3] == "{" {
				lines[f[1]] = i + 2 // after the #! line
			}
		}
		return lines
	}

	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "old"); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
	// The admin's own table, and the save.
	if out, err := l.Exec(ctx, lab.RoleOld, "nft", "add table inet filter; add chain inet filter input { type filter hook input priority filter; policy accept; }"); err != nil {
		t.Fatalf("old: %v %s", err, out)
	}
	line := save(lab.RoleOld, conf)["inet"]
	warning := fmt.Sprintf("WARNING host old: a file nftables.service loads holds a saved copy of migrate's table: /etc/nftables.conf:%d (table inet migrate).", line)
	if r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile); line == 0 || !strings.Contains(r.Stdout, warning) {
		t.Errorf("plan does not warn of the saved table (%q):\n%s", warning, r.Stdout)
	}

	// Mid-migration: the service moves, then nftables restarts and
	// loads the saved stage old.
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	// NEW's table saved too: its ARP table with it.
	lines := save(lab.RoleNew, confNew)
	warningNew := fmt.Sprintf("WARNING host new: a file nftables.service loads holds a saved copy of migrate's table: /etc/nftables.conf:%d (table inet migrate), /etc/nftables.conf:%d (table arp migrate).", lines["inet"], lines["arp"])
	if r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile); lines["arp"] == 0 || !strings.Contains(r.Stdout, warningNew) {
		t.Errorf("plan does not warn of NEW's saved tables (%q):\n%s", warningNew, r.Stdout)
	}
	restart(lab.RoleOld, "restart")
	expectServed(t, ctx, s, scenario.MigratedPort, "old") // what the copy says
	r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, "host old: nft table migrate was changed outside migrate: set svc4 has 0 elements, migrate wrote 1") ||
		!strings.Contains(r.Stdout, "~ nft table inet migrate: role old") || !strings.Contains(r.Stdout, warning) {
		t.Errorf("plan after the restart:\n%s", r.Stdout)
	}
	r = mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, "unknown (table changed outside migrate)") || strings.Contains(r.Stdout, "drained") ||
		!strings.Contains(r.Stdout, "OLD is still needed: 1 service(s) are not fully on NEW.") || !strings.Contains(r.Stdout, warning) {
		t.Errorf("status after the restart calls the service moved:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("NEW's server saw %q, want the client's address %s", out, l.ClientIP)
	}
	r = mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if strings.Contains(r.Stdout, "changed outside migrate") || !strings.Contains(r.Stdout, "drained") {
		t.Errorf("status after apply:\n%s", r.Stdout)
	}

	// Debian's reload loads the copy onto migrate's live table. nft
	// 1.0.6 refuses the whole file (the sets exist: "File exists"), so
	// nothing changes, the admin's own rules included; should an nft
	// take it, the table is no longer what migrate wrote and plan says
	// so.
	if out, err := nft(lab.RoleOld, "-f", "/etc/nftables.conf"); err != nil {
		t.Logf("Debian's reload failed, as nft -f does on a live copy of its sets: %v %s", err, out)
		expectServed(t, ctx, s, scenario.MigratedPort, "new")
	} else if r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile); !strings.Contains(r.Stdout, "changed outside migrate") {
		t.Errorf("the reload was taken, and plan does not see it:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)

	// The end of the migration: rollback says what will come back.
	r = mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	for _, w := range []string{warning, warningNew} {
		if i := strings.Index(r.Stdout, w); i < 0 || i > strings.Index(r.Stdout, "Rolling back") {
			t.Errorf("rollback does not warn before it starts: %q\n%s", w, r.Stdout)
		}
	}
	// The reboot after the migration, of both hosts.
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		restart(role, "boot")
		if out, err := l.Exec(ctx, role, "nft", "list", "table", "inet", "migrate"); err != nil {
			t.Fatalf("%s: the saved table is not back after the reboot: %v %s", role, err, out)
		}
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	for _, want := range []string{warning, warningNew, "host old has a table inet migrate that no migrate apply recorded", "+ nft table inet migrate: role old",
		"host new has a table inet migrate that no migrate apply recorded", "+ nft table inet migrate: role new"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("plan with the saved tables back after rollback does not say %q:\n%s", want, r.Stdout)
		}
	}
	// A new migration over it, and its rollback: the table goes too.
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	if out, err := l.Exec(ctx, lab.RoleOld, "nft", "delete", "table", "inet", "filter"); err != nil {
		t.Fatalf("old: %v %s", err, out)
	}
	expectSnap(t, ctx, s, "apply over the saved tables, then rollback --all", before)
}

// nftablesConf puts a file of the test's own in place of
// /etc/nftables.conf, only in the mount namespace of role's sshd (where
// its agents run, and where the test runs nft -f as nftables.service
// would), and returns its path as the test writes it.
func nftablesConf(t *testing.T, ctx context.Context, l *lab.Lab, role string) string {
	t.Helper()
	pid := sshdPid(t, l, role)
	in := func(cmd string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, "nsenter", "-t", pid, "-m", "sh", "-c", cmd).CombinedOutput(); err != nil {
			t.Fatalf("in %s's mount namespace: %s: %v\n%s", role, cmd, err, out)
		}
	}
	conf := filepath.Join(l.Dir, role+"-nftables.conf")
	writeFile(t, conf, "#!/usr/sbin/nft -f\n")
	if _, err := os.Stat("/etc/nftables.conf"); err == nil {
		in("mount --bind " + conf + " /etc/nftables.conf")
		t.Cleanup(func() { _ = exec.Command("nsenter", "-t", pid, "-m", "umount", "-l", "/etc/nftables.conf").Run() })
		return conf
	}
	// No file to bind over: an overlay on /etc, its upper layer on a
	// tmpfs, so that the root's /etc is not written.
	ov := filepath.Join(l.Dir, role+"-etc")
	if err := os.MkdirAll(ov, 0o755); err != nil {
		t.Fatal(err)
	}
	in("mount -t tmpfs -o size=1m migrate-test " + ov + " && mkdir " + ov + "/u " + ov + "/w && mount -t overlay migrate-test -o lowerdir=/etc,upperdir=" + ov + "/u,workdir=" + ov + "/w /etc && ln -sf " + conf + " /etc/nftables.conf")
	t.Cleanup(func() { _ = exec.Command("nsenter", "-t", pid, "-m", "umount", "-l", "/etc", ov).Run() })
	return conf
}
