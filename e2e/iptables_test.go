package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// iptablesRuleSets are the lab hosts' firewalls as iptables keeps them
// (iptables-save's format, restored by iptables-nft), and how their
// chains drop what their rules do not accept:
//   - persistent: Debian's iptables-persistent rules.v4 as an
//     administrator writes it, INPUT and FORWARD at policy DROP;
//   - services: the default /etc/sysconfig/iptables of RHEL's
//     iptables-services (policy ACCEPT, each chain ending in `-j REJECT
//     --reject-with icmp-host-prohibited`), OLD's own ports opened.
//
// Conntrack's established flows are accepted first (`-m conntrack`,
// `-m state`), then SSH and ICMP: a new flow's first packet through the
// tunnel matches none of it.
var iptablesRuleSets = []struct {
	name, how string
	rules     map[string]string
}{
	{"persistent", "has policy drop", map[string]string{
		lab.RoleOld: fmt.Sprintf(`*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m multiport --dports %d,%d -j ACCEPT
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
`, scenario.MigratedPort, scenario.StayPort),
		lab.RoleNew: `*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
`}},
	{"services", "ends in a reject", map[string]string{
		lab.RoleOld: fmt.Sprintf(`*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport %d -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport %d -j ACCEPT
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A FORWARD -j REJECT --reject-with icmp-host-prohibited
COMMIT
`, scenario.MigratedPort, scenario.StayPort),
		lab.RoleNew: `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A FORWARD -j REJECT --reject-with icmp-host-prohibited
COMMIT
`}},
}

// TestIptablesLater: both hosts are firewalled with iptables, as a
// Debian server with iptables-persistent is (rules.v4 restored by
// iptables-nft at boot), or a RHEL server with iptables-services (its
// default rules: policy ACCEPT and a final REJECT, which plan did not
// read before: no warning, and OLD's FORWARD rejected every moved flow
// after an apply that succeeded). plan's advice is iptables commands (not nft's,
// whose "file that loads the table" such a host does not have), which
// the administrator runs without saving them. In week three the saved
// rules are restored (a reboot, `netfilter-persistent reload`,
// configuration management): on OLD the tunnel stops, status names the
// INPUT rule missing; with it back the tunnel pings but OLD's FORWARD
// drops every new client of the moved service (the established-flows
// rule, an xtables conntrack match, does not take a new flow), which
// status used to be unable to read and now calls BROKEN with the two
// iptables commands. The same on NEW for its INPUT chain. rollback --all
// leaves both hosts' rules as before the apply.
func TestIptablesLater(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	for _, set := range iptablesRuleSets {
		t.Run(set.name, func(t *testing.T) { iptablesLater(t, set.how, set.rules) })
	}
}

func iptablesLater(t *testing.T, how string, rules map[string]string) {
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s, restore, cmd := savedRulesLab(t, ctx, rules, false)
	l := s.Lab
	oldIn := fmt.Sprintf("iptables -I INPUT -s %s -d %s -p udp --dport 4789 -j ACCEPT", l.NewIP, l.OldIP)
	forward := []string{"iptables -I FORWARD -i mig0 -j ACCEPT", "iptables -I FORWARD -o mig0 -j ACCEPT"}
	newIn := []string{fmt.Sprintf("iptables -I INPUT -s %s -d %s -p udp --dport 4789 -j ACCEPT", l.OldIP, l.NewIP), "iptables -I INPUT -i mig0 -j ACCEPT"}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	for _, want := range []string{
		"WARNING host old: table ip filter, chain FORWARD (hook forward) " + how + " (iptables): it drops the traffic migrate forwards unless its own rules accept it. Add rules there (before migrate apply): `" + strings.Join(forward, "` and `") + "`, and save the rules with your other iptables rules",
		"WARNING host old: table ip filter, chain INPUT (hook input) " + how + ": it drops the tunnel's packets from the peer unless its own rules accept them. Accept them (before migrate apply): `" + oldIn + "`, and save the rules",
		"WARNING host new: table ip filter, chain INPUT (hook input) " + how + ": it drops the tunnel's packets from the peer and what arrives through mig0 for the services unless its own rules accept them. Accept them (before migrate apply): `" + strings.Join(newIn, "` and `") + "`, and save the rules",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("plan with iptables on both hosts lacks\n%s\nin:\n%s", want, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, "nft insert") {
		t.Errorf("plan gives nft commands for iptables' chains:\n%s", r.Stdout)
	}
	// An apply that goes ahead anyway fails at its tunnel check, says
	// which firewall, and leaves both hosts as they were (once: the
	// check's pings take their time).
	if how == "ends in a reject" {
		untouched := snap(t, ctx, s)
		r = mustMigrate(t, ctx, s, 1, "apply", "-f", s.PlanFile, "--auto-approve")
		if want := "as plan found the hosts: OLD's table ip filter, chain INPUT (hook input) " + how + " and lacks `" + oldIn + "`; NEW's table ip filter, chain INPUT (hook input) " + how + " and lacks `" + newIn[0] + "`"; !strings.Contains(r.Stderr, "tunnel check failed") || !strings.Contains(r.Stderr, want) {
			t.Errorf("apply without the rules: want the failed tunnel check with %q:\n%s", want, r.Stderr)
		}
		diffSnap(t, "hosts after an apply that failed at its tunnel check", stripCounters(untouched), stripCounters(snap(t, ctx, s)))
	}
	restoredLater(t, ctx, s, savedRules{how: how, restore: restore, cmd: cmd, oldIn: oldIn, forward: forward, newIn: newIn, notes: []string{
		"host old: table ip filter, chain FORWARD (hook forward) " + how + "; its rules accept what migrate forwards (in and out on mig0)",
		"host old: table ip filter, chain INPUT (hook input) " + how + "; its rules accept the tunnel's packets from the peer",
		"host new: table ip filter, chain INPUT (hook input) " + how + "; its rules accept the tunnel's packets from the peer and what arrives through mig0 for the services",
	}})
}

// savedRulesLab is a lab whose hosts are firewalled with rules (per
// role, iptables-save's format), loaded by iptables-nft-restore or, for
// legacy, iptables-legacy-restore, and a plan for the core service over
// VXLAN at stage new. restore loads a host's rules again; cmd runs one of
// migrate's iptables commands there, as printed (iptables-legacy's), or
// with iptables-nft (the lab's iptables may be either backend).
func savedRulesLab(t *testing.T, ctx context.Context, rules map[string]string, legacy bool) (s *scenario.Scenario, restore func(role string), cmd func(role, c string)) {
	t.Helper()
	s = newScenario(t, ctx)
	l := s.Lab
	t.Log("TUNNEL vxlan: " + t.Name())
	tools := map[string]string{"iptables": "iptables-nft", "ip6tables": "ip6tables-nft", "restore": "iptables-nft-restore"}
	if legacy {
		tools = map[string]string{"iptables-legacy": "iptables-legacy", "ip6tables-legacy": "ip6tables-legacy", "restore": "iptables-legacy-restore"}
	}
	cmd = func(role, c string) {
		t.Helper()
		f := strings.Fields(c)
		tool := tools[f[0]]
		if tool == "" || f[0] == "restore" {
			t.Fatalf("%s: not one of the commands for this backend: %q", role, c)
		}
		mustExec(t, ctx, l, role, append([]string{tool}, f[1:]...)...)
	}
	restore = func(role string) {
		t.Helper()
		file := filepath.Join(l.Dir, role+"-rules.v4")
		if err := os.WriteFile(file, []byte(rules[role]), 0o644); err != nil {
			t.Fatal(err)
		}
		mustExec(t, ctx, l, role, tools["restore"], file)
	}
	restore(lab.RoleOld)
	restore(lab.RoleNew)
	if err := writeTunnelPlan(s, vxlanCase, "new"); err != nil {
		t.Fatal(err)
	}
	return s, restore, cmd
}

// savedRules is what restoredLater needs of hosts firewalled with saved
// iptables rules: how their chains drop ("has policy drop"), the name
// status gives them before "table" (the legacy backend's), restore
// (load a host's saved rules again) and cmd (run one of migrate's
// commands on a host), and the commands plan gave: OLD's INPUT rule for
// the tunnel, its two FORWARD rules, NEW's INPUT rules for the tunnel
// and for mig0.
type savedRules struct {
	how, name      string
	restore        func(role string)
	cmd            func(role, c string)
	oldIn          string
	forward, newIn []string
	notes          []string // plan's notes once the commands ran
}

// restoredLater runs plan's commands on the hosts by command only (not
// saved; plan then notes instead of warning), applies the plan, then
// plays week three: OLD's saved rules are
// restored (status names the INPUT rule the failed tunnel ping needs,
// then, with it, calls the moved service BROKEN for FORWARD until its
// rules are back), then NEW's (the same for its INPUT); rollback --all
// leaves both hosts as before the apply.
func restoredLater(t *testing.T, ctx context.Context, s *scenario.Scenario, r savedRules) {
	t.Helper()
	l := s.Lab
	// What plan printed, run as printed (and not saved): plan notes
	// that the chains accept migrate's traffic, and warns no more.
	for _, c := range append(r.forward, r.oldIn) {
		r.cmd(lab.RoleOld, c)
	}
	for _, c := range r.newIn {
		r.cmd(lab.RoleNew, c)
	}
	p := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	for _, note := range r.notes {
		if !strings.Contains(p.Stdout, note) {
			t.Errorf("plan after the commands lacks %q:\n%s", note, p.Stdout)
		}
	}
	if strings.Contains(p.Stdout, "WARNING host old: "+r.name+"table ip filter") || strings.Contains(p.Stdout, "WARNING host new: "+r.name+"table ip filter") {
		t.Errorf("plan after the commands still warns:\n%s", p.Stdout)
	}
	before := snap(t, ctx, s)
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	servedByNew(t, ctx, s, "after apply")
	if st := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(st.Stdout, "BROKEN") {
		t.Errorf("status with the rules in:\n%s", st.Stdout)
	}

	r.restore(lab.RoleOld)
	st := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if want := "OLD's " + r.name + "table ip filter, chain INPUT (hook input) " + r.how + " and lacks `" + r.oldIn + "`"; !strings.Contains(st.Stdout, "cannot ping") || !strings.Contains(st.Stdout, want) {
		t.Errorf("status with OLD's saved rules restored: want the failed ping and %q:\n%s", want, st.Stdout)
	}
	r.cmd(lab.RoleOld, r.oldIn)
	want := "OLD's " + r.name + "table ip filter, chain FORWARD (hook forward) " + r.how + " and none of its rules accepts the new flows of service web (" + hp(l.OldIP.String(), scenario.MigratedPort) + "/tcp) toward NEW (out on mig0)"
	brokenUntil(t, ctx, s, "OLD's saved rules restored", want, r.forward, func() {
		for _, c := range r.forward {
			r.cmd(lab.RoleOld, c)
		}
	})

	r.restore(lab.RoleNew)
	st = mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if want := "NEW's " + r.name + "table ip filter, chain INPUT (hook input) " + r.how + " and lacks `" + r.newIn[0] + "`"; !strings.Contains(st.Stdout, "cannot ping") || !strings.Contains(st.Stdout, want) {
		t.Errorf("status with NEW's saved rules restored: want the failed ping and %q:\n%s", want, st.Stdout)
	}
	r.cmd(lab.RoleNew, r.newIn[0])
	want = "NEW's " + r.name + "table ip filter, chain INPUT (hook input) " + r.how + " and none of its rules accepts the new flows of service web (" + hp(l.OldIP.String(), scenario.MigratedPort) + "/tcp) in on mig0"
	brokenUntil(t, ctx, s, "NEW's saved rules restored", want, r.newIn[1:], func() { r.cmd(lab.RoleNew, r.newIn[1]) })

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
	diffSnap(t, "hosts after apply, restores and rollback", stripCounters(before), stripCounters(snap(t, ctx, s)))
}

// TestLegacyLater is TestIptablesLater/persistent on the legacy backend
// (iptables-legacy, as on Ubuntu 20.04 or CentOS 7, whose rules nft does
// not list): plan's warnings and status read the legacy filter table
// whole, INPUT included, and give iptables-legacy commands. Before, a
// legacy INPUT drop was not read at all (apply's tunnel check failed
// without saying why), and status checked no legacy chain after the
// apply.
func TestLegacyLater(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s, restore, cmd := savedRulesLab(t, ctx, iptablesRuleSets[0].rules, true) // persistent: policy DROP
	l := s.Lab
	const legacy = "legacy iptables (iptables-legacy, not in nft's ruleset): "
	oldIn := fmt.Sprintf("iptables-legacy -I INPUT -s %s -d %s -p udp --dport 4789 -j ACCEPT", l.NewIP, l.OldIP)
	forward := []string{"iptables-legacy -I FORWARD -i mig0 -j ACCEPT", "iptables-legacy -I FORWARD -o mig0 -j ACCEPT"}
	newIn := []string{fmt.Sprintf("iptables-legacy -I INPUT -s %s -d %s -p udp --dport 4789 -j ACCEPT", l.OldIP, l.NewIP), "iptables-legacy -I INPUT -i mig0 -j ACCEPT"}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	for _, want := range []string{
		"WARNING host old: " + legacy + "table ip filter, chain FORWARD has policy drop: it drops the traffic migrate forwards unless it accepts it. Accept migrate's flows in a rule at the top of FORWARD (before migrate apply): `" + strings.Join(forward, "` and `") + "`",
		"WARNING host old: " + legacy + "table ip filter, chain INPUT (hook input) has policy drop: it drops the tunnel's packets from the peer unless its own rules accept them. Accept them (before migrate apply): `" + oldIn + "`, and save the rules",
		"WARNING host new: " + legacy + "table ip filter, chain INPUT (hook input) has policy drop: it drops the tunnel's packets from the peer and what arrives through mig0 for the services unless its own rules accept them. Accept them (before migrate apply): `" + strings.Join(newIn, "` and `") + "`, and save the rules",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("plan with legacy iptables on both hosts lacks\n%s\nin:\n%s", want, r.Stdout)
		}
	}
	restoredLater(t, ctx, s, savedRules{how: "has policy drop", name: legacy, restore: restore, cmd: cmd, oldIn: oldIn, forward: forward, newIn: newIn, notes: []string{
		"host old: " + legacy + "table ip filter, chain FORWARD has policy drop; its rules accept what migrate forwards (in and out on mig0)",
		"host old: " + legacy + "table ip filter, chain INPUT (hook input) has policy drop; its rules accept the tunnel's packets from the peer",
		"host new: " + legacy + "table ip filter, chain INPUT (hook input) has policy drop; its rules accept the tunnel's packets from the peer and what arrives through mig0 for the services",
	}})
}

// TestIp6tablesServices: an IPv6 service moved over an IPv4 tunnel to a
// NEW firewalled with ip6tables (INPUT at policy DROP: established
// flows, ICMPv6, SSH). NEW's ip6 INPUT never sees the tunnel's packets,
// so plan used to skip it, yet it drops what arrives through mig0 for
// the IPv6 service: plan now warns with the one ip6tables command, an
// apply without it fails at its probe and says so (both hosts left as
// they were), with it NEW serves the IPv6 client with the client's own
// address; when NEW's saved rules are restored in week three, status
// calls the service BROKEN with the same command.
func TestIp6tablesServices(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	t.Log("TUNNEL vxlan: " + t.Name())
	file := filepath.Join(l.Dir, "new-rules.v6")
	writeFile(t, file, `*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p ipv6-icmp -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
`)
	restore := func() { mustExec(t, ctx, l, lab.RoleNew, "ip6tables-nft-restore", file) }
	restore()
	port := scenario.MigratedPort
	tunnel := fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", l.OldIP, l.NewIP)
	services := webService(s, "new") + fmt.Sprintf("\nservice \"web6\" {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"new\"\n}\n", l.OldIP6, port)
	writeFile(t, s.PlanFile, s.HCL(tunnel, services))
	allow := "ip6tables -I INPUT -i mig0 -j ACCEPT"
	warning := "table ip6 filter, chain INPUT (hook input) has policy drop: it drops what arrives through mig0 for the services unless its own rules accept them. Accept them (before migrate apply): `" + allow + "`, and save the rules"
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "WARNING host new: "+warning) {
		t.Errorf("plan lacks\n%s\nin:\n%s", warning, r.Stdout)
	}
	before := snap(t, ctx, s)
	r = mustMigrate(t, ctx, s, 1, "apply", "-f", s.PlanFile, "--auto-approve")
	if want := "probe: service \"web6\": a connection from OLD through the tunnel to " + hp(l.OldIP6.String(), port) + " on NEW failed: "; !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, "as plan warned: "+warning) {
		t.Errorf("apply without the rule: want %q and the warning:\n%s", want, r.Stderr)
	}
	diffSnap(t, "hosts after an apply that failed at its probe", stripCounters(before), stripCounters(snap(t, ctx, s)))
	run := func() {
		mustExec(t, ctx, l, lab.RoleNew, append([]string{"ip6tables-nft"}, strings.Fields(allow)[1:]...)...)
	}
	run()
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	servedByNew(t, ctx, s, "after apply (IPv4)")
	mustDial(t, ctx, s, lab.RoleClient, "served-by=new peer="+l.ClientIP6.String()+" ", hp(l.OldIP6.String(), port))
	restore() // week three: NEW's saved rules, without the command's
	if out, err := s.Dial(ctx, lab.RoleClient, hp(l.OldIP6.String(), port)); err == nil {
		t.Errorf("IPv6 client with NEW's saved ip6 rules restored: %q, want no answer", out)
	}
	r = mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if want := "NEW's table ip6 filter, chain INPUT (hook input) has policy drop and none of its rules accepts the new flows of service web6 (" + hp(l.OldIP6.String(), port) + "/tcp) in on mig0"; !strings.Contains(r.Stdout, want) || !strings.Contains(r.Stdout, "`"+allow+"`") || strings.Contains(r.Stdout, "cannot ping") {
		t.Errorf("status lacks %q with %q (and the tunnel pings):\n%s", want, allow, r.Stdout)
	}
	run()
	mustDial(t, ctx, s, lab.RoleClient, "served-by=new peer="+l.ClientIP6.String()+" ", hp(l.OldIP6.String(), port))
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	restore()
	diffSnap(t, "hosts after apply and rollback", stripCounters(before), stripCounters(snap(t, ctx, s)))
}
