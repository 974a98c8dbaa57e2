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

// TestDockerForwardDropLater: OLD runs Docker 28 (its iptables-nft rules,
// agent/testdata/docker-28.rules: FORWARD policy drop, DOCKER-USER, the
// newer DOCKER-FORWARD chains; its published port moved off the
// service's so that only the FORWARD drop is at play). plan warns and
// gives the DOCKER-USER commands; once they run, plan says the chain
// accepts migrate's flows instead of warning again. In week three
// configuration management empties DOCKER-USER (`iptables -F
// DOCKER-USER`): the tunnel, migrate's table and NEW are all fine, new
// clients get no answer, and status used to say nothing. It now calls the
// moved service BROKEN and gives the commands; with them the client is
// served by NEW again, and rollback --all leaves OLD as it was (Docker's
// rules and the operator's included).
func TestDockerForwardDropLater(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	t.Log("TUNNEL vxlan: TestDockerForwardDropLater")
	run := func(role string, args ...string) string {
		t.Helper()
		return mustExec(t, ctx, l, role, args...)
	}
	rules, err := os.ReadFile("../agent/testdata/docker-28.rules")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(l.Dir, "docker-28.rules")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(string(rules), "--dport 8080", "--dport 9090")), 0o644); err != nil {
		t.Fatal(err)
	}
	run(lab.RoleOld, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1") // Docker switched it on
	run(lab.RoleOld, "iptables-nft-restore", file)
	defer func() {
		for _, args := range [][]string{{"-F"}, {"-X"}, {"-P", "FORWARD", "ACCEPT"}, {"-t", "nat", "-F"}, {"-t", "nat", "-X"}, {"-t", "raw", "-F"}} {
			if out, err := l.Exec(context.Background(), lab.RoleOld, append([]string{"iptables-nft"}, args...)...); err != nil {
				t.Errorf("old: iptables-nft %v: %v: %s", args, err, out)
			}
		}
	}()
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	allow := []string{"iptables -I DOCKER-USER -i mig0 -j ACCEPT", "iptables -I DOCKER-USER -o mig0 -j ACCEPT"}
	warning := "WARNING host old: table ip filter, chain FORWARD (hook forward) has policy drop"
	note := "host old: table ip filter, chain FORWARD (hook forward) has policy drop; its rules accept what migrate forwards (in and out on mig0)"
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, warning) || !strings.Contains(r.Stdout, "`"+allow[0]+"` and `"+allow[1]+"`") || strings.Contains(r.Stdout, note) {
		t.Errorf("plan with Docker 28's FORWARD drop: want the warning with %q:\n%s", allow, r.Stdout)
	}
	// What plan printed, with iptables-nft (the lab's iptables may be
	// either backend).
	addAllow := func() {
		t.Helper()
		for _, a := range allow {
			run(lab.RoleOld, append([]string{"iptables-nft"}, strings.Fields(a)[1:]...)...)
		}
	}
	addAllow()
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if strings.Contains(r.Stdout, warning) || !strings.Contains(r.Stdout, note) {
		t.Errorf("plan after the DOCKER-USER commands: want %q and no warning:\n%s", note, r.Stdout)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	servedByNew(t, ctx, s, "after apply")
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "BROKEN") {
		t.Errorf("status with DOCKER-USER accepting the tunnel:\n%s", r.Stdout)
	}

	run(lab.RoleOld, "iptables-nft", "-F", "DOCKER-USER") // configuration management
	want := "OLD's table ip filter, chain FORWARD (hook forward) has policy drop and none of its rules accepts the new flows of service web (" + hp(l.OldIP.String(), scenario.MigratedPort) + "/tcp) toward NEW (out on mig0)"
	brokenUntil(t, ctx, s, "DOCKER-USER emptied", want, allow, addAllow)

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "Docker 28 host after apply and rollback", stripCounters(before), stripCounters(after))
}

// TestNftForwardDropReload: OLD's own firewall, loaded by nftables.service
// from a file, has a forward chain with policy drop. plan gives the two
// `nft insert rule` commands and says to put them in the file; the
// administrator runs the commands only. In week three `systemctl reload
// nftables` loads the file again: migrate's drop-in puts migrate's table
// back, but the chain's accept rules are gone, and new clients get no
// answer. status calls the moved service BROKEN and names the chain; with
// the rules in the file and another reload NEW serves again, and rollback
// --all leaves OLD as before the apply. (The lab's hosts have no systemd
// as PID 1: the test runs what the service runs, `nft -f` of the file,
// then the drop-in's ExecReload command.)
func TestNftForwardDropReload(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := bootLab(t, ctx)
	l := s.Lab
	t.Log("TUNNEL vxlan: TestNftForwardDropReload")
	run := func(role string, args ...string) string {
		t.Helper()
		return mustExec(t, ctx, l, role, args...)
	}
	conf := filepath.Join(l.Dir, "nftables.conf")
	const table = "table inet filter {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n%s\t}\n}\n"
	writeFile(t, conf, "flush ruleset\n"+fmt.Sprintf(table, ""))
	run(lab.RoleOld, "nft", "-f", conf)
	if err := writeTunnelPlan(s, vxlanCase, "new"); err != nil {
		t.Fatal(err)
	}
	cmds := []string{`nft insert rule inet filter forward iifname "mig0" accept`, `nft insert rule inet filter forward oifname "mig0" accept`}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	for _, want := range []string{"WARNING host old: table inet filter, chain forward (hook forward) has policy drop", "`" + cmds[0] + "` and `" + cmds[1] + "`", "and to the file that loads the table"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, r.Stdout)
		}
	}
	for _, c := range cmds { // what plan printed, without the file
		run(lab.RoleOld, strings.Fields(c)...)
	}
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if note := "host old: table inet filter, chain forward (hook forward) has policy drop; its rules accept what migrate forwards (in and out on mig0)"; !strings.Contains(r.Stdout, note) || strings.Contains(r.Stdout, "WARNING host old: table inet filter") {
		t.Errorf("plan after the commands: want %q and no warning:\n%s", note, r.Stdout)
	}
	before := snap(t, ctx, s)
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	servedByNew(t, ctx, s, "after apply")
	reload := dropInCmds(t, s, lab.RoleOld, "nftables.service")["ExecReload"]
	nftablesReload := func() {
		t.Helper()
		run(lab.RoleOld, "nft", "-f", conf)
		if out, err := runUnit(ctx, s, lab.RoleOld, reload); err != nil {
			t.Fatalf("old: the drop-in's ExecReload: %v %s", err, out)
		}
	}
	nftablesReload()
	want := "OLD's table inet filter, chain forward (hook forward) has policy drop and none of its rules accepts the new flows of service web (" + hp(l.OldIP.String(), scenario.MigratedPort) + "/tcp) toward NEW (out on mig0)"
	brokenUntil(t, ctx, s, "the accept rules lost with a reload", want, cmds, func() {
		// The rules in the file, as insert left them in the chain.
		writeFile(t, conf, "flush ruleset\n"+fmt.Sprintf(table, "\t\toifname \"mig0\" accept\n\t\tiifname \"mig0\" accept\n"))
		nftablesReload()
	})
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	diffSnap(t, "OLD's own forward drop after apply, reloads and rollback", stripCounters(before), stripCounters(snap(t, ctx, s)))
}

// TestNewInputDropLater: NEW gets a firewall after the apply, as a server
// going to production does: first a hand-written nft table (input policy
// drop; established flows, loopback, ICMP, SSH and the tunnel's VXLAN
// port from a named set of trusted hosts accepted), then, instead, ufw (SSH and the tunnel's port allowed).
// Either way the tunnel pings and every new client of the moved service
// gets no answer: NEW drops what arrives through mig0 for the service.
// status calls it BROKEN, names the chain (ufw) and gives the command;
// with it NEW serves again. rollback --all removes migrate's part.
func TestNewInputDropLater(t *testing.T) {
	needUfw(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := movedScenario(t, ctx)
	l := s.Lab
	flows := "the new flows of service web (" + hp(l.OldIP.String(), scenario.MigratedPort) + "/tcp) in on mig0"

	fw := filepath.Join(l.Dir, "new-fw.nft")
	writeFile(t, fw, fmt.Sprintf(`table inet fw {
	set trusted {
		type ipv4_addr
		flags interval
		elements = { 192.0.2.128/25, %s }
	}

	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif lo accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport 22 accept
		ip saddr @trusted udp dport 4789 accept
	}
}
`, l.OldIP))
	mustExec(t, ctx, l, lab.RoleNew, "nft", "-f", fw)
	// plan gives the one command NEW's chain lacks (the tunnel's port
	// it has, for the hosts of a named set, OLD among them), then notes
	// that its rules accept migrate's traffic.
	insert := `nft insert rule inet fw input iifname "mig0" accept`
	r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if w := "WARNING host new: table inet fw, chain input (hook input) has policy drop: it drops the tunnel's packets from the peer and what arrives through mig0 for the services unless its own rules accept them. Accept them (before migrate apply): `" + insert + "`, and put"; !strings.Contains(r.Stdout, w) {
		t.Errorf("plan with NEW's input chain: want %q:\n%s", w, r.Stdout)
	}
	brokenUntil(t, ctx, s, "NEW's own nft input policy drop", "NEW's table inet fw, chain input (hook input) has policy drop and none of its rules accepts "+flows, []string{insert}, func() {
		mustExec(t, ctx, l, lab.RoleNew, strings.Fields(insert)...)
	})
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if note := "host new: table inet fw, chain input (hook input) has policy drop; its rules accept the tunnel's packets from the peer and what arrives through mig0 for the services"; !strings.Contains(r.Stdout, note) || strings.Contains(r.Stdout, "WARNING host new: table inet fw") {
		t.Errorf("plan with NEW's input chain accepting mig0: want %q:\n%s", note, r.Stdout)
	}
	mustExec(t, ctx, l, lab.RoleNew, "nft", "delete", "table", "inet", "fw")

	ufwIn(t, ctx, l, lab.RoleNew, "allow", "22/tcp")
	ufwIn(t, ctx, l, lab.RoleNew, "allow", "proto", "udp", "from", l.OldIP.String(), "to", l.NewIP.String(), "port", "4789")
	ufwIn(t, ctx, l, lab.RoleNew, "--force", "enable")
	brokenUntil(t, ctx, s, "ufw on NEW", "ufw is active on NEW (enabled, reset or reloaded after the apply?) and drops "+flows, []string{"ufw allow in on mig0"}, func() {
		ufwIn(t, ctx, l, lab.RoleNew, "allow", "in", "on", "mig0")
	})
	rolledBack(t, ctx, s)
}

// TestServerRulesetLater: NEW gets the nftables wiki's "simple ruleset
// for a server" after the apply (agent/testdata/server-ruleset.nft, its
// `flush ruleset` left out: that one is TestNftablesReloadRestores's):
// verdict maps for conntrack states and for the address family, which
// jumps to a chain per family, then the open ports. First the tunnel
// stops: status names the chain and the rule for the tunnel's packets.
// With that rule in, the tunnel pings and every new client of the moved
// service still gets no answer: status, which read such a chain as
// unknown before (a verdict map), calls the service BROKEN with the rule
// for mig0; with it NEW serves again.
func TestServerRulesetLater(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := movedScenario(t, ctx)
	l := s.Lab
	ruleset, err := os.ReadFile("../agent/testdata/server-ruleset.nft")
	if err != nil {
		t.Fatal(err)
	}
	fw := filepath.Join(l.Dir, "server-ruleset.nft")
	writeFile(t, fw, strings.Replace(string(ruleset), "flush ruleset\n", "", 1))
	mustExec(t, ctx, l, lab.RoleNew, "nft", "-f", fw)

	tunnel := fmt.Sprintf("nft insert rule inet firewall inbound ip saddr %s ip daddr %s udp dport 4789 accept", l.OldIP, l.NewIP)
	r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if want := "NEW's table inet firewall, chain inbound (hook input) has policy drop and lacks `" + tunnel + "`"; !strings.Contains(r.Stdout, "cannot ping") || !strings.Contains(r.Stdout, want) {
		t.Errorf("status with the server ruleset on NEW: want the failed ping and %q:\n%s", want, r.Stdout)
	}
	mustExec(t, ctx, l, lab.RoleNew, strings.Fields(tunnel)...)
	insert := `nft insert rule inet firewall inbound iifname "mig0" accept`
	flows := "the new flows of service web (" + hp(l.OldIP.String(), scenario.MigratedPort) + "/tcp) in on mig0"
	brokenUntil(t, ctx, s, "the server ruleset on NEW", "NEW's table inet firewall, chain inbound (hook input) has policy drop and none of its rules accepts "+flows, []string{insert}, func() {
		mustExec(t, ctx, l, lab.RoleNew, strings.Fields(insert)...)
	})
	rolledBack(t, ctx, s)
}
