package e2e

import (
	"context"
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
	needRoot(t)
	needUfw(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	t.Log("TUNNEL vxlan: " + t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	served := dockerHosts(t, ctx, s, dockerIptables)
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		ufwIn(t, ctx, l, host, "allow", "22/tcp")
		ufwIn(t, ctx, l, host, "--force", "enable")
		save := iptablesSave(t, ctx, l, host)
		for _, want := range []string{"-A FORWARD -j DOCKER-USER", "-A FORWARD -j ufw-before-forward", ":FORWARD DROP", ":INPUT DROP"} {
			if !strings.Contains(save, want) {
				t.Fatalf("%s: Docker's and ufw's rules lack %q:\n%s", host, want, save)
			}
		}
		if strings.Index(save, "-A FORWARD -j DOCKER-USER") > strings.Index(save, "-A FORWARD -j ufw-before-forward") {
			t.Fatalf("%s: ufw's FORWARD rules before Docker's:\n%s", host, save)
		}
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
