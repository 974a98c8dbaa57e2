package e2e

import (
	"context"
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
// migrate's table with their own. nftables.service loads that file at
// every boot and restart.
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
	conf := oldNftablesConf(t, ctx, l)
	// nftables.service in OLD's namespaces: stop (Debian's and RHEL's
	// ExecStop is `nft flush ruleset`), then start (`nft -f FILE`); a
	// boot is the start alone, on an empty ruleset.
	pid := oldSSHDPid(t, l)
	restart := func() {
		t.Helper()
		for _, args := range [][]string{{"nft", "flush", "ruleset"}, {"nft", "-f", "/etc/nftables.conf"}} {
			if out, err := exec.CommandContext(ctx, "nsenter", append([]string{"-t", pid, "-m", "-n", "--"}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("old: %v: %v %s", args, err, out)
			}
		}
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
	saved, err := l.Exec(ctx, lab.RoleOld, "nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("old: %v %s", err, saved)
	}
	writeFile(t, conf, "#!/usr/sbin/nft -f\n"+string(saved))
	line := 0
	for i, s := range strings.Split(string(saved), "\n") {
		if s == "table inet migrate {" {
			line = i + 2
		}
	}

	r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	t.Logf("plan:\n%s", r.Stdout)

	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
	t.Logf("served: %s", out)

	restart()
	o, _ := l.Exec(ctx, lab.RoleOld, "nft", "list", "ruleset")
	t.Logf("after restart:\n%s", o)
	out, err = s.Dial(ctx, lab.RoleClient, l.OldIP.String()+":8080")
	t.Logf("client after restart: %v %s", err, out)
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	t.Logf("plan after restart:\n%s", r.Stdout)
	r = mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	t.Logf("status after restart:\n%s", r.Stdout)
	r = mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	t.Logf("apply after restart:\n%s", r.Stdout)
	out = expectServed(t, ctx, s, scenario.MigratedPort, "new")
	t.Logf("served: %s", out)
	r = mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	t.Logf("status after apply:\n%s", r.Stdout)

	r = mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	t.Logf("rollback:\n%s\n%s", r.Stdout, r.Stderr)
	restart()
	o, _ = l.Exec(ctx, lab.RoleOld, "nft", "list", "ruleset")
	t.Logf("after reboot:\n%s", o)
	out, err = s.Dial(ctx, lab.RoleClient, l.OldIP.String()+":8080")
	t.Logf("client after reboot: %v %s", err, out)
	r, err = s.Migrate(ctx, "plan", "-f", s.PlanFile)
	t.Logf("plan after reboot: %v %d\n%s\n%s", err, r.Code, r.Stdout, r.Stderr)
	r, err = s.Migrate(ctx, "status", "-f", s.PlanFile)
	t.Logf("status after reboot: %v %d\n%s\n%s", err, r.Code, r.Stdout, r.Stderr)
	r, err = s.Migrate(ctx, "apply", "--auto-approve", "-f", s.PlanFile)
	t.Logf("apply after reboot: %v %d\n%s\n%s", err, r.Code, r.Stdout, r.Stderr)
	r, err = s.Migrate(ctx, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	t.Logf("rollback after reboot: %v %d\n%s\n%s", err, r.Code, r.Stdout, r.Stderr)
	if out, err := l.Exec(ctx, lab.RoleOld, "nft", "delete", "table", "inet", "filter"); err != nil {
		t.Fatalf("old: %v %s", err, out)
	}
	expectSnap(t, ctx, s, "rollback --all after the saved table came back", before)
	_ = line
}

// oldNftablesConf puts a file of the test's own in place of
// /etc/nftables.conf, only in the mount namespace of OLD's sshd (where its
// agents run and where the test runs nft -f as nftables.service would),
// and returns its path as the test writes it.
func oldNftablesConf(t *testing.T, ctx context.Context, l *lab.Lab) string {
	t.Helper()
	conf := filepath.Join(l.Dir, "old-nftables.conf")
	writeFile(t, conf, "#!/usr/sbin/nft -f\n")
	inOld := oldMountNS(t, ctx, l)
	if _, err := os.Stat("/etc/nftables.conf"); err == nil {
		inOld("mount --bind " + conf + " /etc/nftables.conf")
		t.Cleanup(func() {
			_ = exec.Command("nsenter", "-t", oldSSHDPid(t, l), "-m", "umount", "-l", "/etc/nftables.conf").Run()
		})
		return conf
	}
	// No file to bind over: an overlay on /etc, its upper layer on a
	// tmpfs, so that the root's /etc is not written.
	ov := filepath.Join(l.Dir, "old-etc")
	if err := os.MkdirAll(ov, 0o755); err != nil {
		t.Fatal(err)
	}
	inOld("mount -t tmpfs -o size=1m migrate-test " + ov + " && mkdir " + ov + "/u " + ov + "/w && mount -t overlay migrate-test -o lowerdir=/etc,upperdir=" + ov + "/u,workdir=" + ov + "/w /etc && ln -s " + conf + " /etc/nftables.conf")
	t.Cleanup(func() {
		_ = exec.Command("nsenter", "-t", oldSSHDPid(t, l), "-m", "umount", "-l", "/etc", ov).Run()
	})
	return conf
}
