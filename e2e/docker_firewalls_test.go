package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestDockerUfw: Docker and ufw on one host, the common Ubuntu server:
// a service Docker publishes (`-p 8080:80`) on both hosts, Docker's
// iptables-nft rules (dockerRules) and then the real ufw enabled with
// its defaults (deny incoming, deny routed) and SSH allowed; ufw's
// chains are appended to FORWARD after Docker's jumps, as when ufw
// reloads on a running Docker host. Both set FORWARD's policy to drop.
// plan gives ufw's commands (the tunnel's packets, and on OLD the
// forwarding through mig0, which reaches ufw-user-forward after Docker's
// chains let it pass), not Docker's DOCKER-USER ones, which ufw's next
// reload would keep but which would split the advice between two
// firewalls; once they ran, the container on NEW serves the client with
// its address, and rollback leaves both hosts' rules as they were.
func TestDockerUfw(t *testing.T) {
	needUfw(t)
	ctx, s := vxlanScenario(t, 4*time.Minute)
	l := s.Lab
	served := dockerHosts(t, ctx, s, dockerIptables)
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		ufwIn(t, ctx, l, host, "allow", "22/tcp")
		ufwIn(t, ctx, l, host, "--force", "enable")
		dockerFirst(t, host, iptablesSave(t, ctx, l, host), "ufw", "-A FORWARD -j ufw-before-forward", ":FORWARD DROP", ":INPUT DROP")
	}
	// ufw does not stand between clients and Docker's published port:
	// the DNATed flows are forwarded, and Docker's chains accept them
	// before ufw's.
	served("oldc")
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	want := map[string][]string{
		lab.RoleOld: {"ufw allow proto udp from " + l.NewIP.String() + " to " + l.OldIP.String() + " port 4789", "ufw route allow in on mig0", "ufw route allow out on mig0"},
		lab.RoleNew: {"ufw allow proto udp from " + l.OldIP.String() + " to " + l.NewIP.String() + " port 4789"},
	}
	for host, cmds := range want {
		for _, c := range cmds {
			if !strings.Contains(r.Stdout, "WARNING host "+host+": ufw is active (table ip filter)") || !strings.Contains(r.Stdout, "`"+c+"`") {
				t.Errorf("plan does not give %s %q:\n%s", host, c, r.Stdout)
			}
		}
	}
	if strings.Contains(r.Stdout, "DOCKER-USER") {
		t.Errorf("plan gives Docker's DOCKER-USER commands on a host where ufw owns the filter table:\n%s", r.Stdout)
	}
	if !strings.Contains(r.Stdout, "what arrives through mig0 for the services passes only if ufw allows their ports (not Docker's published ports: what Docker DNATs is forwarded to its containers, and ufw's input rules do not see it)") {
		t.Errorf("plan does not say that NEW's ufw input rules do not see Docker's published ports:\n%s", r.Stdout)
	}
	// `ufw allow in on mig0` is not run: the container on NEW serves
	// without it, and status does not call the service BROKEN for its
	// lack (it did: ufw's input policy read as dropping the flows that
	// Docker's DNAT forwards).
	for host, cmds := range want {
		for _, c := range cmds {
			ufwIn(t, ctx, l, host, strings.Fields(strings.TrimPrefix(c, "ufw "))...)
		}
	}
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "host old: ufw is active (table ip filter); its rules allow migrate's traffic") {
		t.Errorf("plan does not note that OLD's ufw allows migrate's traffic once its commands ran:\n%s", r.Stdout)
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
	served("newc")
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "BROKEN") {
		t.Errorf("status after the apply:\n%s", r.Stdout)
	}
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if got := iptablesSave(t, ctx, l, host); got != saved[host] {
			t.Errorf("%s: Docker's and ufw's rules changed by apply:\n--- before\n%s\n--- after\n%s", host, saved[host], got)
		}
	}
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "Docker and ufw hosts after apply and rollback", stripCounters(before), stripCounters(after))
	served("oldc")
}

// TestDockerFirewalld: Docker and firewalld (its nftables backend) on one
// host, as on RHEL or Fedora with Docker CE: Docker's iptables-nft rules
// in tables ip filter and ip nat, firewalld's in table inet firewalld.
// firewalld flushes iptables' tables when it starts and at every reload,
// and Docker puts its own chains back when firewalld signals a reload
// (dockerReloaded plays that), but not what was inserted in DOCKER-USER.
// Each table's forward chain must let a moved flow through: on OLD,
// Docker's FORWARD (policy drop) and firewalld's (a reject after its
// zones), so plan gives both sets of commands, DOCKER-USER's as
// firewalld's direct rules, which firewalld itself puts back at each
// reload (`iptables -I DOCKER-USER` would go at the first). On NEW the
// flows to a published port are DNATed to the container, which firewalld
// accepts (`ct status dnat`) and Docker's chains too. Once the commands
// ran, NEW's container serves the client with its address, also after
// another reload of firewalld mid-migration; status is clean; rollback
// leaves both hosts and their rules as they were.
func TestDockerFirewalld(t *testing.T) {
	needFirewalld(t)
	ctx, s := vxlanScenario(t, 4*time.Minute)
	l := s.Lab
	fw, served, reload := firewalldDockerHosts(t, ctx, s, "nftables", dockerIptables)
	// firewalld accepts what Docker DNATs: OLD's container serves.
	served("oldc")
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	want := firewalldCommands(l)
	for host, cmds := range want {
		if !strings.Contains(r.Stdout, "WARNING host "+host+": firewalld is active (table inet firewalld)") || !strings.Contains(r.Stdout, "`"+strings.Join(cmds, "` and `")+"`") {
			t.Errorf("plan does not give %s %q:\n%s", host, cmds, r.Stdout)
		}
	}
	direct := []string{"firewall-cmd --permanent --direct --add-chain ipv4 filter DOCKER-USER",
		"firewall-cmd --permanent --direct --add-rule ipv4 filter DOCKER-USER 0 -i mig0 -j ACCEPT",
		"firewall-cmd --permanent --direct --add-rule ipv4 filter DOCKER-USER 0 -o mig0 -j ACCEPT", "firewall-cmd --reload"}
	if !strings.Contains(r.Stdout, "WARNING host old: table ip filter, chain FORWARD (hook forward) has policy drop") || !strings.Contains(r.Stdout, "allow the tunnel there with firewalld's direct rules") || !strings.Contains(r.Stdout, "`"+strings.Join(direct, "` and `")+"`") {
		t.Errorf("plan does not give firewalld's direct rules for Docker's DOCKER-USER %q:\n%s", direct, r.Stdout)
	}
	if strings.Contains(r.Stdout, "iptables -I DOCKER-USER") {
		t.Errorf("plan gives iptables commands for DOCKER-USER, which firewalld's next reload removes:\n%s", r.Stdout)
	}
	for host, cmds := range want {
		fw[host](strings.Join(cmds[:len(cmds)-1], " && "))
	}
	fw[lab.RoleOld](strings.Join(direct[:len(direct)-1], " && "))
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		reload(host)
	}
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if strings.Contains(r.Stdout, "WARNING host old: table ip filter") || strings.Contains(r.Stdout, "WARNING host old: firewalld") || strings.Contains(r.Stdout, "WARNING host new: firewalld") {
		t.Errorf("plan still warns about Docker's or firewalld's rules once the commands ran:\n%s", r.Stdout)
	}
	movedThroughReload(t, ctx, s, served, reload, "Docker and firewalld", func(host string) string {
		return firewalldTable(t, ctx, l, host) + iptablesSave(t, ctx, l, host)
	})
	served("oldc")
}

// dockerReloaded does on host what Docker's daemon does when firewalld
// signals a reload (which flushed iptables' tables): it puts its rules
// back (dockerRules, for its container at addr) without flushing, and
// DOCKER-USER only if it is missing (firewalld's direct rules may have
// made it), with its RETURN at the end.
func dockerReloaded(t *testing.T, ctx context.Context, l *lab.Lab, host, addr string) {
	t.Helper()
	var keep []string
	for _, line := range strings.Split(fmt.Sprintf(dockerRules, addr), "\n") {
		if line != ":DOCKER-USER - [0:0]" && line != "-A DOCKER-USER -j RETURN" {
			keep = append(keep, line)
		}
	}
	rules := filepath.Join(l.Dir, host+"-docker-reload.rules")
	if err := os.WriteFile(rules, []byte(strings.Join(keep, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `iptables-nft -N DOCKER-USER 2>/dev/null; iptables-nft-restore --noflush "$1" && { iptables-nft -C DOCKER-USER -j RETURN 2>/dev/null || iptables-nft -A DOCKER-USER -j RETURN; }`
	mustExec(t, ctx, l, host, "sh", "-c", script, "sh", rules)
}

// TestDockerFirewalldLegacy: Docker and firewalld on iptables-legacy on
// both hosts, as on CentOS 7 with Docker CE (the server most often
// moved away from): firewalld on its iptables backend (the real
// firewalld 1.3, FirewallBackend=iptables, iptables-legacy through a
// private /etc/alternatives in its mount namespace), Docker's rules
// loaded as its daemon adds them on a running firewalld host
// (dockerLegacy: its FORWARD rules inserted ahead of firewalld's, FORWARD's
// policy drop, legacy tables throughout). Docker's chains let a moved
// flow pass on to firewalld's zones, whose reject decides: plan gives
// firewalld's commands only (no iptables(-legacy) ones for DOCKER-USER or
// firewalld's chains, which the next reload removes); once they ran, NEW's
// container serves the client with its address, also after a reload of
// firewalld on OLD mid-migration (firewalld flushes the legacy tables,
// Docker puts its chains back); rollback leaves both hosts' rules as they
// were.
func TestDockerFirewalldLegacy(t *testing.T) {
	needFirewalld(t)
	ctx, s := vxlanScenario(t, 5*time.Minute)
	l := s.Lab
	fw, served, reload := firewalldDockerHosts(t, ctx, s, "iptables-legacy", dockerLegacy)
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		dockerFirst(t, host, dockerLegacy.save(t, ctx, l, host), "firewalld", "-A FORWARD -j FORWARD_ZONES", ":FORWARD DROP", "-A INPUT -j INPUT_ZONES")
	}
	served("oldc")
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	where := "its iptables backend on iptables-legacy, not in nft's ruleset"
	want := firewalldCommands(l)
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	for host, cmds := range want {
		if !strings.Contains(r.Stdout, "WARNING host "+host+": firewalld is active ("+where+")") || !strings.Contains(r.Stdout, "`"+strings.Join(cmds, "` and `")+"`") {
			t.Errorf("plan does not give %s %q:\n%s", host, cmds, r.Stdout)
		}
	}
	if regexp.MustCompile("`ip6?tables(-legacy)? -I").MatchString(r.Stdout) {
		t.Errorf("plan gives iptables commands, which firewalld's next reload removes:\n%s", r.Stdout)
	}
	for host, cmds := range want {
		fw[host](strings.Join(cmds[:len(cmds)-1], " && "))
		reload(host)
	}
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if strings.Contains(r.Stdout, "WARNING") {
		t.Errorf("plan still warns once firewalld's commands ran:\n%s", r.Stdout)
	}
	movedThroughReload(t, ctx, s, served, reload, "Docker and firewalld (iptables-legacy)", func(host string) string {
		return dockerLegacy.save(t, ctx, l, host)
	})
	served("oldc")
}

// firewalldDockerHosts starts the real firewalld (fwBackend) on both
// hosts, first, as at boot (it flushes iptables' tables when it starts),
// then gives them Docker's containers and rules (dockerHosts). reload
// reloads firewalld on a host and puts Docker's rules back as its daemon
// does (d.reloaded).
func firewalldDockerHosts(t *testing.T, ctx context.Context, s *scenario.Scenario, fwBackend string, d dockerBackend) (fw map[string]func(string) string, served, reload func(host string)) {
	t.Helper()
	fw = firewalldHosts(t, ctx, s.Lab, fwBackend)
	served = dockerHosts(t, ctx, s, d)
	reload = func(host string) {
		t.Helper()
		fw[host]("firewall-cmd --reload")
		d.reloaded(t, ctx, s.Lab, host, containerAddrs[host])
	}
	return fw, served, reload
}

// dockerFirst checks a host's iptables-save text: Docker's FORWARD jump
// to DOCKER-USER comes before the other firewall's first FORWARD rule
// (otherFirst), as when that firewall reloads on a running Docker host
// or Docker starts on a running firewalld host, and want are there too.
func dockerFirst(t *testing.T, host, save, other, otherFirst string, want ...string) {
	t.Helper()
	for _, w := range append([]string{"-A FORWARD -j DOCKER-USER", otherFirst}, want...) {
		if !strings.Contains(save, w) {
			t.Fatalf("%s: Docker's and %s's rules lack %q:\n%s", host, other, w, save)
		}
	}
	if strings.Index(save, "-A FORWARD -j DOCKER-USER") > strings.Index(save, otherFirst) {
		t.Fatalf("%s: %s's FORWARD rules before Docker's:\n%s", host, other, save)
	}
}

// movedThroughReload applies the plan, checks that the container on NEW
// serves the client (served) also after a firewall reload on OLD
// (reload: firewalld's, then Docker's rules back) with status clean,
// rolls back and checks that both hosts, and their firewalls' rules
// (rules), are as they were before the apply.
func movedThroughReload(t *testing.T, ctx context.Context, s *scenario.Scenario, served func(by string), reload func(host string), what string, rules func(host string) string) {
	t.Helper()
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	saved := map[string]string{}
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		saved[host] = rules(host)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	served("newc")
	// Weeks later firewalld reloads on OLD: its rules (direct ones
	// included) come back with it, Docker's chains with Docker.
	reload(lab.RoleOld)
	served("newc")
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "BROKEN") {
		t.Errorf("status after the apply and a reload of firewalld:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, what+" hosts after apply and rollback", stripCounters(before), stripCounters(after))
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if got := rules(host); got != saved[host] {
			t.Errorf("%s: %s rules after rollback:\n--- before apply\n%s\n--- after rollback\n%s", host, what, saved[host], got)
		}
	}
}

// dockerLegacy is Docker's rules (dockerRules) on iptables-legacy as its
// daemon adds them on a host where firewalld already runs: its FORWARD
// rules inserted at the top (moby inserts them, so they come before
// firewalld's), its chains created (DOCKER-USER only if missing),
// FORWARD's policy set to drop, nothing of firewalld's flushed. Loading
// it again after a firewalld reload (which flushed the legacy tables) is
// what Docker does on firewalld's reload signal.
var dockerLegacy = dockerBackend{
	load:     loadDockerLegacy,
	reloaded: loadDockerLegacy,
	save: func(t *testing.T, ctx context.Context, l *lab.Lab, host string) string {
		t.Helper()
		return stripSaveNoise(mustExec(t, ctx, l, host, "iptables-legacy-save"))
	},
}

func loadDockerLegacy(t *testing.T, ctx context.Context, l *lab.Lab, host, addr string) {
	t.Helper()
	var keep []string
	pos := 0
	for _, line := range strings.Split(fmt.Sprintf(dockerRules, addr), "\n") {
		switch {
		case line == ":DOCKER-USER - [0:0]" || line == "-A DOCKER-USER -j RETURN":
		case strings.HasPrefix(line, ":") && !strings.HasPrefix(line, ":DOCKER") && line != ":FORWARD DROP [0:0]":
			// firewalld's built-in chains keep their policies.
		case strings.HasPrefix(line, "-A FORWARD "):
			pos++
			keep = append(keep, fmt.Sprintf("-I FORWARD %d %s", pos, strings.TrimPrefix(line, "-A FORWARD ")))
		default:
			keep = append(keep, line)
		}
	}
	rules := filepath.Join(l.Dir, host+"-docker-legacy.rules")
	if err := os.WriteFile(rules, []byte(strings.Join(keep, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `iptables-legacy -N DOCKER-USER 2>/dev/null; iptables-legacy-restore --noflush "$1" && { iptables-legacy -C DOCKER-USER -j RETURN 2>/dev/null || iptables-legacy -A DOCKER-USER -j RETURN; }`
	mustExec(t, ctx, l, host, "sh", "-c", script, "sh", rules)
}
