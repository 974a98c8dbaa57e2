package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestFirewalldIptables: firewalld on its iptables backend
// (FirewallBackend=iptables) on both hosts, the real firewalld in each
// lab host's namespace: through iptables-nft (RHEL 8 with that setting),
// and on iptables-legacy (CentOS 7, whose firewalld has no other). Its
// chains are iptables' own INPUT and FORWARD, which plan used to judge
// as a plain iptables firewall, with `iptables -I` commands that the
// next `firewall-cmd --reload` removes. plan now gives firewalld's own
// commands, only those the live rules lack; once they ran the service
// moves with the client's address; firewalld's rules are never changed
// by migrate; when mig0 leaves zone trusted on NEW (a reload with the
// permanent configuration lacking it; NEW's public zone does not open
// the service's port), status calls the service BROKEN with the
// command; rollback --all leaves both hosts' rules as they were.
func TestFirewalldIptables(t *testing.T) {
	needFirewalld(t)
	for _, tc := range []struct{ backend, where, save string }{
		{"iptables", "its iptables backend: table ip filter", "iptables-save"},
		{"iptables-legacy", "its iptables backend on iptables-legacy, not in nft's ruleset", "iptables-legacy-save"},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			ctx, s := vxlanScenario(t, 5*time.Minute)
			l := s.Lab
			fw := firewalldHosts(t, ctx, l, tc.backend)
			for _, host := range []string{lab.RoleOld, lab.RoleNew} {
				if host == lab.RoleOld {
					// OLD serves the clients itself until the apply;
					// NEW's service is reached through the tunnel only.
					fw[host]("firewall-cmd --permanent --add-port=8080/tcp && firewall-cmd --reload")
				}
				if out := fw[host](tc.save + " -t filter"); !strings.Contains(out, "-A INPUT -j INPUT_ZONES") || !strings.Contains(out, "--dport 22 -j ACCEPT") {
					t.Fatalf("%s: firewalld's iptables rules (%s):\n%s", host, tc.save, out)
				}
			}
			expectServed(t, ctx, s, scenario.MigratedPort, "old")
			if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
				t.Fatal(err)
			}
			want := firewalldCommands(l)
			r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
			for host, cmds := range want {
				if !strings.Contains(r.Stdout, "WARNING host "+host+": firewalld is active ("+tc.where+"): chain INPUT (hook input) ends in `-j REJECT` for what no zone allows") {
					t.Errorf("plan does not name firewalld's reject on %s:\n%s", host, r.Stdout)
				}
				if !strings.Contains(r.Stdout, "`"+strings.Join(cmds, "` and `")+"`") {
					t.Errorf("plan does not give %s %q:\n%s", host, cmds, r.Stdout)
				}
			}
			// No advice to add rules to firewalld's chains with iptables:
			// its next reload would remove them.
			if regexp.MustCompile("`ip6?tables(-legacy)? -I").MatchString(r.Stdout) {
				t.Errorf("plan gives iptables commands for firewalld's chains:\n%s", r.Stdout)
			}
			for host, cmds := range want {
				fw[host](strings.Join(cmds, " && "))
			}
			r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
			for _, host := range []string{lab.RoleOld, lab.RoleNew} {
				if !strings.Contains(r.Stdout, "host "+host+": firewalld is active ("+tc.where+"); its rules allow migrate's traffic") {
					t.Errorf("plan does not note that %s's firewalld allows migrate's traffic:\n%s", host, r.Stdout)
				}
			}
			if strings.Contains(r.Stdout, "WARNING") {
				t.Errorf("plan still warns once firewalld's commands ran:\n%s", r.Stdout)
			}
			saved := map[string]string{}
			for _, host := range []string{lab.RoleOld, lab.RoleNew} {
				saved[host] = stripSaveNoise(fw[host](tc.save))
			}
			before, err := s.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
			out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
			if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
				t.Errorf("NEW does not see the client's address: %s", out)
			}
			mustDial(t, ctx, s, lab.RoleNew, "served-by=client peer="+l.OldIP.String()+" ", "-bind", l.OldIP.String(), fmt.Sprintf("%s:%d", l.ClientIP, scenario.ClientPort))
			if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "BROKEN") {
				t.Errorf("status after the apply:\n%s", r.Stdout)
			}
			// Weeks later mig0 leaves zone trusted on NEW: the tunnel
			// still pings (the rich rule), the clients get no answer.
			fw[lab.RoleNew]("firewall-cmd --permanent --zone=trusted --remove-interface=mig0 && firewall-cmd --reload")
			brokenUntil(t, ctx, s, "mig0 out of zone trusted on NEW",
				fmt.Sprintf("firewalld (%s) is active on NEW (started or reloaded after the apply?) and rejects the new flows of service web (%s/tcp) in on mig0", tc.where, hp(l.OldIP.String(), scenario.MigratedPort)),
				want[lab.RoleNew][1:], func() { fw[lab.RoleNew](strings.Join(want[lab.RoleNew][1:], " && ")) })
			for _, host := range []string{lab.RoleOld, lab.RoleNew} {
				if got := stripSaveNoise(fw[host](tc.save)); got != saved[host] {
					t.Errorf("%s: firewalld's rules changed by migrate:\n--- before apply\n%s\n--- now\n%s", host, saved[host], got)
				}
			}
			rolledBack(t, ctx, s)
			after, err := s.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			diffSnap(t, "firewalld (iptables backend) hosts after apply and rollback", stripCounters(before), stripCounters(after))
			for _, host := range []string{lab.RoleOld, lab.RoleNew} {
				if got := stripSaveNoise(fw[host](tc.save)); got != saved[host] {
					t.Errorf("%s: firewalld's rules after rollback:\n--- before apply\n%s\n--- after rollback\n%s", host, saved[host], got)
				}
			}
		})
	}
}
