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

// ufwIn runs the real ufw in host's namespace with state of its own:
// inside `ip netns exec` (a mount namespace of its own, / a slave of the
// machine's) it mounts a private /run and binds the lab's copies of
// /etc/ufw, /lib/ufw and /etc/default/ufw over the machine's, so ufw
// changes nothing but that namespace's firewall and those copies. The
// copies' sysctl.conf is empty: ufw's sysctls are not the point here.
func ufwIn(t *testing.T, ctx context.Context, l *lab.Lab, host string, args ...string) string {
	t.Helper()
	dir := filepath.Join(l.Dir, "ufw-"+host)
	if _, err := os.Stat(dir + "/etc"); err != nil {
		for _, c := range [][]string{
			{"mkdir", "-p", dir},
			{"cp", "-a", "/etc/ufw", dir + "/etc"},
			{"cp", "-a", "/lib/ufw", dir + "/lib"},
			{"cp", "/etc/default/ufw", dir + "/default"},
		} {
			if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v: %s", c, err, out)
			}
		}
		if err := os.WriteFile(dir+"/etc/sysctl.conf", nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := `set -e
mount -t tmpfs migrate-lab /run
if [ -d "$D/alternatives" ]; then mount --bind "$D/alternatives" /etc/alternatives; fi
mount --bind "$D/etc" /etc/ufw
mount --bind "$D/lib" /lib/ufw
mount --bind "$D/default" /etc/default/ufw
exec ufw "$@"`
	out, err := l.Exec(ctx, host, append([]string{"env", "D=" + dir, "sh", "-c", script, "sh"}, args...)...)
	if err != nil {
		t.Fatalf("%s: ufw %v: %v", host, args, err)
	}
	return string(out)
}

// ufwLegacy makes host's ufw (ufwIn) run on the legacy backend, as on
// Ubuntu 20.04: iptables and its save and restore tools are
// iptables-legacy's in a private copy of /etc/alternatives, bound over
// the real one only in the mount namespace each ufwIn runs in. Call it
// before the first ufwIn for host.
func ufwLegacy(t *testing.T, ctx context.Context, l *lab.Lab, host string) {
	t.Helper()
	privateAlternatives(t, ctx, filepath.Join(l.Dir, "ufw-"+host, "alternatives"))
}

// privateAlternatives makes alt a copy of /etc/alternatives in which
// iptables, ip6tables and their save and restore tools are
// iptables-legacy's: bound over /etc/alternatives in one mount namespace
// (ip netns exec gives each command its own), it makes that command's
// iptables the legacy one without touching the host's.
func privateAlternatives(t *testing.T, ctx context.Context, alt string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(alt), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", "/etc/alternatives", alt).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc/alternatives: %v: %s", err, out)
	}
	for _, tool := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		legacy := "/usr/sbin/" + strings.Replace(tool, "tables", "tables-legacy", 1)
		if _, err := os.Stat(legacy); err != nil {
			t.Fatalf("%s: %v (apt-get install iptables)", legacy, err)
		}
		_ = os.Remove(filepath.Join(alt, tool))
		if err := os.Symlink(legacy, filepath.Join(alt, tool)); err != nil {
			t.Fatal(err)
		}
	}
}

func needUfw(t *testing.T) {
	t.Helper()
	for _, p := range []string{"/usr/sbin/ufw", "/lib/ufw/ufw-init", "/etc/default/ufw"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("ufw is not installed (apt-get install ufw; .ci/run does): %v", err)
		}
	}
}

// TestUfw moves a service between two hosts where ufw is active with its
// default policies (deny incoming, deny routed; the service's port and
// SSH allowed), run for real in each lab host's namespace. plan names
// the policies that drop migrate's traffic and the ufw commands that
// allow it, only those whose rule ufw's live chains do not hold yet (no
// warning once all are there); once the operator ran them, the service moves with the
// client's address preserved, ufw's rules are never changed by migrate,
// and rollback leaves both hosts as they were.
func TestUfw(t *testing.T) {
	needRoot(t)
	needUfw(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		ufwIn(t, ctx, l, host, "allow", "22/tcp")
		ufwIn(t, ctx, l, host, "allow", "8080/tcp")
		ufwIn(t, ctx, l, host, "--force", "enable")
		if out := ufwIn(t, ctx, l, host, "status", "verbose"); !strings.Contains(out, "Default: deny (incoming), allow (outgoing), disabled (routed)") {
			t.Fatalf("%s: ufw status:\n%s", host, out)
		}
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	want := map[string][]string{
		lab.RoleOld: {"ufw allow proto udp from " + l.NewIP.String() + " to " + l.OldIP.String() + " port 4789", "ufw route allow in on mig0", "ufw route allow out on mig0"},
		lab.RoleNew: {"ufw allow proto udp from " + l.OldIP.String() + " to " + l.NewIP.String() + " port 4789", "ufw allow in on mig0"},
	}
	for host, cmds := range want {
		for _, c := range cmds {
			if !strings.Contains(r.Stdout, "WARNING host "+host+": ufw is active (table ip filter): chain INPUT (hook input) has policy drop") || !strings.Contains(r.Stdout, "`"+c+"`") {
				t.Errorf("plan does not give %s %q:\n%s", host, c, r.Stdout)
			}
		}
	}
	if !strings.Contains(r.Stdout, "chain FORWARD (hook forward) has policy drop: it drops the flows OLD forwards to and from mig0") {
		t.Errorf("plan does not name ufw's FORWARD policy on OLD:\n%s", r.Stdout)
	}
	// The operator runs one of NEW's first: plan sees that rule in
	// ufw's live chains and gives only the other one.
	ufwIn(t, ctx, l, lab.RoleNew, "allow", "in", "on", "mig0")
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "WARNING host new: ufw is active") || !strings.Contains(r.Stdout, "`"+want[lab.RoleNew][0]+"`") {
		t.Errorf("plan does not give NEW's missing %q:\n%s", want[lab.RoleNew][0], r.Stdout)
	}
	if strings.Contains(r.Stdout, "`ufw allow in on mig0`") {
		t.Errorf("plan still gives `ufw allow in on mig0`, which NEW's ufw holds:\n%s", r.Stdout)
	}
	for _, c := range want[lab.RoleOld] {
		if !strings.Contains(r.Stdout, "`"+c+"`") {
			t.Errorf("plan no longer gives OLD %q:\n%s", c, r.Stdout)
		}
	}
	// Then the rest, as given: plan has no ufw warning left, only notes.
	for host, cmds := range want {
		for _, c := range cmds {
			if host == lab.RoleNew && c == "ufw allow in on mig0" {
				continue
			}
			ufwIn(t, ctx, l, host, strings.Fields(strings.TrimPrefix(c, "ufw "))...)
		}
	}
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if !strings.Contains(r.Stdout, "host "+host+": ufw is active (table ip filter); its rules allow migrate's traffic") {
			t.Errorf("plan does not note that %s's ufw allows migrate's traffic:\n%s", host, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, "WARNING") {
		t.Errorf("plan still warns once every command ran:\n%s", r.Stdout)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	saved := map[string]string{}
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		saved[host] = iptablesSave(t, ctx, l, host)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("NEW does not see the client's address: %s", out)
	}
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if got := iptablesSave(t, ctx, l, host); got != saved[host] {
			t.Errorf("%s: ufw's rules changed by apply:\n--- before\n%s\n--- after\n%s", host, saved[host], got)
		}
	}
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "ufw hosts after apply and rollback", stripCounters(before), stripCounters(after))
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if got := iptablesSave(t, ctx, l, host); got != saved[host] {
			t.Errorf("%s: ufw's rules after rollback:\n--- before\n%s\n--- after\n%s", host, saved[host], got)
		}
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
}

// TestUfwLater: the migration runs on hosts without a firewall; in week
// two someone hardens OLD with ufw (SSH and the service's port allowed).
// The tunnel's packets are dropped: the ping fails, and status names
// ufw's missing rule for them. With that rule the tunnel answers pings,
// the table and NEW are fine, and every new client of the moved service
// still gets no answer: ufw's FORWARD drops them (routed traffic at its
// default, deny). status calls the service BROKEN,
// names ufw and gives the two `ufw route allow` commands; with them NEW
// serves again, and rollback --all removes migrate's part and leaves
// ufw's rules as they were.
func TestUfwLater(t *testing.T) {
	needUfw(t)
	for _, legacy := range []bool{false, true} {
		name := map[bool]string{false: "nft", true: "legacy"}[legacy]
		t.Run(name, func(t *testing.T) { ufwLater(t, legacy) })
	}
}

// ufwLater is TestUfwLater with ufw on nft's backend, or on the legacy
// one (Ubuntu 20.04's): there plan and status read ufw's chains from the
// legacy tables (iptables-legacy-save), as they read nft's.
func ufwLater(t *testing.T, legacy bool) {
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := movedScenario(t, ctx)
	l := s.Lab
	save, lacks := "iptables-nft-save", "ufw is active on OLD and lacks `"
	if legacy {
		ufwLegacy(t, ctx, l, lab.RoleOld)
		save, lacks = "iptables-legacy-save", "ufw is active on OLD (legacy backend) and lacks `"
	}
	// First SSH and the service only: the tunnel's packets from NEW
	// are dropped too; the ping fails and status names ufw's missing
	// rule with it.
	ufwIn(t, ctx, l, lab.RoleOld, "allow", "22/tcp")
	ufwIn(t, ctx, l, lab.RoleOld, "allow", "8080/tcp")
	ufwIn(t, ctx, l, lab.RoleOld, "--force", "enable")
	if legacy {
		// ufw's rules went to the legacy tables, not nft's.
		if out := mustExec(t, ctx, l, lab.RoleOld, "iptables-legacy-save", "-t", "filter"); !strings.Contains(out, ":ufw-user-input") {
			t.Fatalf("ufw on the legacy backend wrote no legacy chain:\n%s", out)
		}
	}
	tunnelRule := "ufw allow proto udp from " + l.NewIP.String() + " to " + l.OldIP.String() + " port 4789"
	r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if want := lacks + tunnelRule + "`"; !strings.Contains(r.Stdout, want) || !strings.Contains(r.Stdout, "cannot ping") || !strings.Contains(r.Stdout, "BROKEN") {
		t.Errorf("status with ufw on OLD dropping the tunnel: want %q after the failed ping:\n%s", want, r.Stdout)
	}
	ufwIn(t, ctx, l, lab.RoleOld, strings.Fields(strings.TrimPrefix(tunnelRule, "ufw "))...)
	allow := []string{"ufw route allow in on mig0", "ufw route allow out on mig0"}
	want := "ufw is active on OLD (enabled, reset or reloaded after the apply?) and drops the new flows of service web (" + hp(l.OldIP.String(), scenario.MigratedPort) + "/tcp) toward NEW (out on mig0)"
	brokenUntil(t, ctx, s, "ufw's routed policy at deny on OLD", want, allow, func() {
		for _, a := range allow {
			ufwIn(t, ctx, l, lab.RoleOld, strings.Fields(strings.TrimPrefix(a, "ufw "))...)
		}
	})
	if legacy {
		// plan reads them there too: a note, not the warning with
		// every command.
		r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
		if note := "host old: ufw is active on the legacy backend (iptables-legacy, not in nft's ruleset); its rules allow migrate's traffic"; !strings.Contains(r.Stdout, note) || strings.Contains(r.Stdout, "WARNING host old: ufw") {
			t.Errorf("plan with ufw's rules in on the legacy backend: want %q:\n%s", note, r.Stdout)
		}
	}
	saved := mustExec(t, ctx, l, lab.RoleOld, save, "-t", "filter")
	rolledBack(t, ctx, s)
	if got := mustExec(t, ctx, l, lab.RoleOld, save, "-t", "filter"); stripSaveNoise(got) != stripSaveNoise(saved) {
		t.Errorf("old: ufw's rules after rollback:\n--- before\n%s\n--- after\n%s", saved, got)
	}
}

// stripSaveNoise is an iptables-save text without its comments and
// counters.
func stripSaveNoise(text string) string {
	var keep []string
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "#") {
			keep = append(keep, chainCounters.ReplaceAllString(line, "[0:0]"))
		}
	}
	return strings.Join(keep, "\n")
}
