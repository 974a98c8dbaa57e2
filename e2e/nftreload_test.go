package e2e

import (
	"bufio"
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

// debianNftablesConf is Debian's /etc/nftables.conf as the package ships
// it: it begins with `flush ruleset`.
const debianNftablesConf = `#!/usr/sbin/nft -f

flush ruleset

table inet filter {
	chain input {
		type filter hook input priority filter;
	}
	chain forward {
		type filter hook forward priority filter;
	}
	chain output {
		type filter hook output priority filter;
	}
}
`

// dropInCmds are the commands of role's drop-in for service, by
// directive (ExecStartPost, ExecReload), without systemd's "-" prefix.
func dropInCmds(t *testing.T, s *scenario.Scenario, role, service string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(state.BootDropInPath(s.Lab.SystemdDir(role), service))
	if err != nil {
		t.Fatalf("%s: the %s drop-in: %v", role, service, err)
	}
	cmds := map[string][]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && (k == "ExecStartPost" || k == "ExecReload") {
			cmds[k] = strings.Fields(strings.TrimPrefix(v, "-"))
		}
	}
	if want := map[string]int{"nftables.service": 2, "systemd-sysctl.service": 1}[service]; len(cmds) != want || len(cmds["ExecStartPost"]) == 0 {
		t.Fatalf("%s: the %s drop-in has not the %d command(s) it should:\n%s", role, service, want, b)
	}
	return cmds
}

// TestNftablesReloadRestores: in the third week an administrator adds a
// firewall rule the Debian way, in /etc/nftables.conf (which begins with
// `flush ruleset`), then `systemctl reload nftables`. That removed
// migrate's table: a moved connection's next packet went to OLD's own
// stack (reset) and new connections stayed on OLD until the next `migrate
// apply`. apply now installs a drop-in for nftables.service whose
// ExecStartPost and ExecReload run migrate's restore right after the
// service's own command. The lab's hosts have no systemd as PID 1, so the
// test runs what nftables.service runs, in its order: `nft -f` of the
// file, then the drop-in's command (the reboot lane runs the real
// service). Checked from the outside: a connection moved to NEW and quiet
// across the reload lives on, new connections are served by NEW with the
// client's address, both hosts are exactly as after the apply, plan and
// status say what happened. The same with a file that holds a saved copy
// of migrate's table from an earlier stage. At boot the drop-in leaves the
// work to the boot unit, which writes the confirmed table over such a
// copy; rollback removes the drop-in and its directory, and a systemd
// that still runs the removed drop-in's command changes nothing.
func TestNftablesReloadRestores(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := bootLab(t, ctx)
	l := s.Lab
	if err := writeTunnelPlan(s, vxlanCase, "new"); err != nil {
		t.Fatal(err)
	}
	before := snap(t, ctx, s)
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		if want := "+ file " + state.BootDropInPath(l.SystemdDir(role), "nftables.service"); !strings.Contains(r.Stdout, want) {
			t.Errorf("plan does not show %q:\n%s", want, r.Stdout)
		}
	}
	// First at stage old, whose table the administrator saves with the
	// rest of OLD's ruleset (`nft list ruleset > /etc/nftables.conf`).
	if err := writeTunnelPlan(s, vxlanCase, "old"); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	savedAtOld, err := l.Exec(ctx, lab.RoleOld, "nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("old: nft list ruleset: %v %s", err, savedAtOld)
	}
	if err := writeTunnelPlan(s, vxlanCase, "new"); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	applied := bootNorm(snap(t, ctx, s))
	servedByNew(t, ctx, s, "after apply")
	cmds := map[string]map[string][]string{lab.RoleOld: dropInCmds(t, s, lab.RoleOld, "nftables.service"), lab.RoleNew: dropInCmds(t, s, lab.RoleNew, "nftables.service")}

	conf := l.Dir + "/nftables.conf"
	writeFile(t, conf, debianNftablesConf)
	// nftablesService runs what `systemctl EVENT nftables` runs on role:
	// the service's own command, then the drop-in's.
	nftablesService := func(role, directive string) string {
		t.Helper()
		if out, err := l.Exec(ctx, role, "nft", "-f", conf); err != nil {
			t.Fatalf("%s: nft -f %s: %v %s", role, conf, err, out)
		}
		if out, err := l.Exec(ctx, role, "nft", "list", "table", "inet", "migrate"); err == nil && !strings.Contains(readFile(t, conf), "table inet migrate") {
			t.Fatalf("%s: migrate's table is still there after `flush ruleset`:\n%s", role, out)
		}
		start := time.Now()
		out, err := runUnit(ctx, s, role, cmds[role][directive])
		if err != nil {
			t.Fatalf("%s: the drop-in's %s failed: %v\n%s", role, directive, err, out)
		}
		t.Logf("%s: %s took %s: %s", role, directive, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
		// The administrator's table is theirs: out of the comparisons
		// with the state after apply.
		if strings.Contains(readFile(t, conf), "table inet filter") {
			if out, err := l.Exec(ctx, role, "nft", "delete", "table", "inet", "filter"); err != nil {
				t.Fatalf("%s: %v %s", role, err, out)
			}
		}
		return out
	}

	// A connection moved to NEW, quiet across the reload, lives on.
	var out string
	quietAcross(t, s, "`systemctl reload nftables` on OLD", func() {
		out = nftablesService(lab.RoleOld, "ExecReload")
		if !strings.Contains(out, "restored (1 step(s)") {
			t.Errorf("old: the drop-in after reload: %q, want the table restored in one step", out)
		}
	})
	settled(t, ctx, s, "nftables.service reload on OLD", applied)
	servedByNew(t, ctx, s, "after nftables.service reload on OLD")
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, "No changes") || !strings.Contains(r.Stdout, "nftables.service reload on OLD at ") || !strings.Contains(r.Stdout, "migrate's drop-in put it back within ") {
		t.Errorf("plan after the reload:\n%s", r.Stdout)
	}
	st := readStatus(t, ctx, s)
	if st.PathBroken != "" || st.Services[0].LiveStage != "new" || !strings.Contains(strings.Join(st.Notes, "\n"), "nftables.service reload on OLD at ") {
		t.Errorf("status after the reload: path %q, services %+v, notes %q", st.PathBroken, st.Services, st.Notes)
	}

	// The saved file: flush ruleset, then the copy of stage old (its
	// table sends nothing to NEW). The drop-in writes the confirmed table
	// over it.
	writeFile(t, conf, "flush ruleset\n"+string(savedAtOld))
	nftablesService(lab.RoleOld, "ExecReload")
	settled(t, ctx, s, "nftables.service reload on OLD of a file with migrate's table of stage old", applied)
	servedByNew(t, ctx, s, "after nftables.service reload on OLD of a file with migrate's table of stage old")
	writeFile(t, conf, debianNftablesConf)

	// NEW's table (UDP answers, ARP) comes back the same way, after a
	// start (or restart) of the service.
	nftablesService(lab.RoleNew, "ExecStartPost")
	settled(t, ctx, s, "nftables.service start on NEW", applied)
	servedByNew(t, ctx, s, "after nftables.service start on NEW")

	// At boot nftables.service starts before the boot unit: the drop-in
	// leaves the restore to it (it decides what the reboot left
	// unconfirmed first).
	// The boot unit then meets the saved copy of stage old, loaded by
	// nftables.service at boot, and writes the confirmed table over it.
	boot := execStart(t, s, lab.RoleOld)
	if err := l.Reboot(ctx, lab.RoleOld); err != nil {
		t.Fatal(err)
	}
	writeFile(t, conf, "flush ruleset\n"+string(savedAtOld))
	out = nftablesService(lab.RoleOld, "ExecStartPost")
	if !strings.Contains(out, "nothing to do before "+state.BootUnitName+" has run in this boot") {
		t.Errorf("old at boot: the drop-in: %q, want it to leave the restore to the boot unit", out)
	}
	if out, err := l.Exec(ctx, lab.RoleOld, "ip", "-d", "link", "show", "mig0"); err == nil {
		t.Errorf("old at boot: the drop-in restored before the boot unit ran:\n%s", out)
	}
	if out, err := runUnit(ctx, s, lab.RoleOld, boot); err != nil {
		t.Fatalf("old: the boot unit: %v\n%s", err, out)
	}
	startDaemons(t, ctx, s, lab.RoleOld)
	settled(t, ctx, s, "reboot of OLD with nftables.service loading a saved copy of stage old", applied)
	servedByNew(t, ctx, s, "after a reboot of OLD with nftables.service loading a saved copy of stage old")
	writeFile(t, conf, debianNftablesConf)
	nftablesService(lab.RoleOld, "ExecReload")
	settled(t, ctx, s, "nftables.service reload on OLD after its reboot", applied)
	servedByNew(t, ctx, s, "after nftables.service reload on OLD after its reboot")

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		unitDirEmpty(t, s, role)
		// A systemd that was not told of the removal (no daemon-reload)
		// runs the removed drop-in's command: nothing happens.
		if out, err := runUnit(ctx, s, role, cmds[role]["ExecReload"]); err != nil {
			t.Logf("%s: the removed drop-in's command after rollback: %v %s", role, err, out)
		}
	}
	settled(t, ctx, s, "rollback --all", bootNorm(before))
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
}

// TestSysctlRestartRestores: a hardened image's /etc/sysctl.d file says
// `net.ipv4.ip_forward = 0`, and in the third week an administrator
// applies an edited sysctl file the systemd way (`systemctl restart
// systemd-sysctl`): OLD's forwarding went off, every moved service
// stopped answering until the next `migrate apply`. migrate's drop-in for
// systemd-sysctl.service puts the sysctls back right after. The lab runs
// the real systemd-sysctl binary with the file, in OLD's namespace, then
// the drop-in's command (the reboot lane runs the real service): ip_forward
// is 1 again, a moved connection quiet across it lives on, new ones are
// served by NEW, plan and status say what happened, and rollback removes
// the drop-in.
func TestSysctlRestartRestores(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := bootLab(t, ctx)
	l := s.Lab
	if err := writeTunnelPlan(s, vxlanCase, "new"); err != nil {
		t.Fatal(err)
	}
	before := snap(t, ctx, s)
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if want := "+ file " + state.BootDropInPath(l.SystemdDir(lab.RoleOld), "systemd-sysctl.service"); !strings.Contains(r.Stdout, want) {
		t.Errorf("plan does not show %q:\n%s", want, r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	applied := bootNorm(snap(t, ctx, s))
	servedByNew(t, ctx, s, "after apply")
	cmd := dropInCmds(t, s, lab.RoleOld, "systemd-sysctl.service")["ExecStartPost"]

	// systemd-sysctl.service's own command, with a hardened file.
	file := l.Dir + "/99-hardening.conf"
	writeFile(t, file, "net.ipv4.ip_forward = 0\n")
	sysctlCmd := []string{"sysctl", "-p", file}
	for _, p := range []string{"/lib/systemd/systemd-sysctl", "/usr/lib/systemd/systemd-sysctl"} {
		if _, err := os.Stat(p); err == nil {
			sysctlCmd = []string{p, file}
			break
		}
	}
	t.Logf("systemd-sysctl.service's command: %v", sysctlCmd)
	forward := func() string {
		out, err := l.Exec(ctx, lab.RoleOld, "sysctl", "-n", "net.ipv4.ip_forward")
		if err != nil {
			t.Fatalf("old: %v %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}

	quietAcross(t, s, "`systemctl restart systemd-sysctl` on OLD", func() {
		if out, err := l.Exec(ctx, lab.RoleOld, sysctlCmd...); err != nil {
			t.Fatalf("old: %v: %v %s", sysctlCmd, err, out)
		}
		if v := forward(); v != "0" {
			t.Fatalf("old: ip_forward is %s after the hardened file, want 0", v)
		}
		start := time.Now()
		out, err := runUnit(ctx, s, lab.RoleOld, cmd)
		t.Logf("old: the drop-in took %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
		if err != nil || !strings.Contains(out, "restored (1 step(s)") {
			t.Errorf("old: the drop-in after systemd-sysctl.service start: %v %q, want one step restored", err, out)
		}
		if v := forward(); v != "1" {
			t.Errorf("old: ip_forward is %s after the drop-in, want 1", v)
		}
	})
	settled(t, ctx, s, "systemd-sysctl.service start on OLD", applied)
	servedByNew(t, ctx, s, "after systemd-sysctl.service start on OLD")
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, "No changes") || !strings.Contains(r.Stdout, "systemd-sysctl.service start on OLD at ") {
		t.Errorf("plan after the sysctl restart:\n%s", r.Stdout)
	}
	st := readStatus(t, ctx, s)
	if st.PathBroken != "" || !strings.Contains(strings.Join(st.Notes, "\n"), "systemd-sysctl.service start on OLD at ") {
		t.Errorf("status after the sysctl restart: path %q, notes %q", st.PathBroken, st.Notes)
	}

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		unitDirEmpty(t, s, role)
	}
	settled(t, ctx, s, "rollback --all", bootNorm(before))
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
}

// quietAcross runs event while a connection moved to NEW is open and
// quiet: greeted by NEW before, two pings 3 s apart after (the first
// after event, which must take less than 3 s). Both must be answered by
// NEW: the connection lived through what event did to the hosts.
func quietAcross(t *testing.T, s *scenario.Scenario, what string, event func()) {
	t.Helper()
	l := s.Lab
	hold, err := l.Command(lab.RoleClient, s.LabtoolBin, "hold", "-every", "3s", "-count", "2", "-timeout", "5s", "-keepalive=false", fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort))
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := hold.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var holdErr strings.Builder
	hold.Stderr = &holdErr
	if err := l.StartCmd(hold); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || !strings.Contains(lines.Text(), "served-by=new") {
		t.Fatalf("the held connection's greeting: %q, want one from NEW (%s)", lines.Text(), holdErr.String())
	}
	event()
	var pings []string
	for lines.Scan() {
		pings = append(pings, lines.Text())
	}
	if err := hold.Wait(); err != nil || len(pings) != 2 || !strings.HasPrefix(pings[0], "new: ping") || !strings.HasPrefix(pings[1], "new: ping") {
		t.Errorf("a connection moved to NEW, quiet across %s: %v %q %s", what, err, pings, holdErr.String())
	}
}
