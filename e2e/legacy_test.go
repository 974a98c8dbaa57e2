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

// legacySave is role's legacy x_tables rules (iptables-legacy-save and
// ip6tables-legacy-save) without the dated comment lines and counters.
// The lab's Snapshot reads nft's ruleset, which does not show them.
func legacySave(t *testing.T, ctx context.Context, l *lab.Lab, role string) string {
	t.Helper()
	var keep []string
	for _, tool := range []string{"iptables-legacy-save", "ip6tables-legacy-save"} {
		out, err := l.Exec(ctx, role, tool)
		if err != nil {
			t.Fatalf("%s: %s: %v: %s", role, tool, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(line, "#") {
				keep = append(keep, chainCounters.ReplaceAllString(line, "[0:0]"))
			}
		}
	}
	return strings.Join(keep, "\n")
}

// TestLegacy moves a service off a host whose Docker uses the legacy
// x_tables backend (iptables-legacy), whose rules nft does not list:
// Docker's rule set (dockerRules, plus a second published port, 8081,
// that stays on OLD) is loaded with iptables-legacy-restore into OLD's
// namespace, with OLD's container on docker0. Without reading the legacy
// tables, plan says nothing, OLD's FORWARD policy drop silently drops
// every moved flow (apply's probe, OLD's own output, passes), and
// Docker's PREROUTING DNAT would rewrite moved flows to OLD's container.
// plan warns with the iptables-legacy commands (and only notes them once
// they are run); once they are run, the
// client reaches NEW through OLD's address and NEW sees the client's own
// address (keep_dest binds the moved flow before iptable_nat's DNAT),
// NEW's outbound leaves from OLD's address, the port that stays reaches
// OLD's container, and rollback --all restores both hosts (nft's view
// by the snapshot, the legacy rules by iptables-legacy-save).
func TestLegacy(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	run := func(role string, args ...string) string {
		t.Helper()
		return mustExec(t, ctx, l, role, args...)
	}
	const caddr = "172.17.0.2"
	if err := l.Container(ctx, lab.RoleOld, "oldc", caddr); err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(l.Dir, "old-docker-legacy.rules")
	if err := os.WriteFile(rules, []byte(fmt.Sprintf(dockerRules, caddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	run(lab.RoleOld, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	run(lab.RoleOld, "iptables-legacy-restore", rules)
	// `-p 8081:80` too: a published port that stays on OLD.
	run(lab.RoleOld, "iptables-legacy", "-t", "nat", "-A", "DOCKER", "!", "-i", "docker0", "-p", "tcp", "--dport", fmt.Sprint(scenario.StayPort), "-j", "DNAT", "--to-destination", caddr+":80")
	// The test's rules go at the end (the lab's namespaces go too).
	defer func() {
		for _, args := range [][]string{{"-F"}, {"-X"}, {"-P", "FORWARD", "ACCEPT"}, {"-t", "nat", "-F"}, {"-t", "nat", "-X"}} {
			if out, err := l.Exec(context.Background(), lab.RoleOld, append([]string{"iptables-legacy"}, args...)...); err != nil {
				t.Errorf("old: iptables-legacy %v: %v: %s", args, err, out)
			}
		}
	}()
	if out := run(lab.RoleOld, "nft", "list", "ruleset"); strings.Contains(out, "DOCKER") {
		t.Fatalf("Docker's legacy rules show in nft's ruleset:\n%s", out)
	}
	if err := s.Serve(ctx, "oldc", "oldc", caddr+":80", false); err != nil {
		t.Fatal(err)
	}
	served := func(port int, by string) {
		t.Helper()
		out := expectServed(t, ctx, s, port, by)
		if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
			t.Errorf("%s on port %d does not see the client's address: %s", by, port, out)
		}
	}
	served(scenario.MigratedPort, "oldc")
	served(scenario.StayPort, "oldc")

	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	allow := []string{"iptables-legacy -I DOCKER-USER -i mig0 -j ACCEPT", "iptables-legacy -I DOCKER-USER -o mig0 -j ACCEPT"}
	for _, w := range []string{"WARNING host old: legacy iptables (iptables-legacy, not in nft's ruleset): table ip filter, chain FORWARD has policy drop", "`" + allow[0] + "`", "`" + allow[1] + "`"} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("plan lacks %q:\n%s", w, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, "WARNING host new") || strings.Contains(r.Stdout, "ip6tables-legacy") {
		t.Errorf("plan warns about NEW or IPv6, which have no legacy rules:\n%s", r.Stdout)
	}
	for _, a := range allow { // exactly what plan printed
		run(lab.RoleOld, strings.Fields(a)...)
	}
	// plan sees them: a note, no warning.
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if strings.Contains(r.Stdout, "WARNING") || !strings.Contains(r.Stdout, "host old: legacy iptables (iptables-legacy, not in nft's ruleset): table ip filter, chain FORWARD has policy drop; its rules accept what migrate forwards (in and out on mig0)") {
		t.Errorf("plan after the legacy commands:\n%s", r.Stdout)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	saved := map[string]string{}
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		saved[host] = legacySave(t, ctx, l, host)
	}
	if !strings.Contains(saved[lab.RoleOld], "-A DOCKER-USER -i mig0 -j ACCEPT") || strings.Contains(saved[lab.RoleNew], "*") {
		t.Fatalf("legacy rules before apply: old\n%s\nnew\n%s", saved[lab.RoleOld], saved[lab.RoleNew])
	}

	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	// Docker's legacy DNAT is another table's nat at prerouting: OLD's
	// table binds moved flows first.
	run(lab.RoleOld, "nft", "list", "chain", "inet", "migrate", "keep_dest")
	servedByNew(t, ctx, s, "after apply")
	served(scenario.StayPort, "oldc")
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if got := legacySave(t, ctx, l, host); got != saved[host] {
			t.Errorf("%s: legacy rules changed by apply:\n--- before\n%s\n--- after\n%s", host, saved[host], got)
		}
	}

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "legacy Docker host after apply and rollback", stripCounters(before), stripCounters(after))
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if got := legacySave(t, ctx, l, host); got != saved[host] {
			t.Errorf("%s: legacy rules after rollback:\n--- before\n%s\n--- after\n%s", host, saved[host], got)
		}
	}
	served(scenario.MigratedPort, "oldc")
	served(scenario.StayPort, "oldc")
}

// TestLegacyForwardDrop is the trap a legacy FORWARD policy drop alone
// sets (no DNAT of the service: a host whose iptables is iptables-legacy
// with a hardened default policy): apply succeeds, since its probe is
// OLD's own output, which FORWARD does not see, and every moved service is
// dead for clients, silently. plan warns, for IPv4 and IPv6 services, with
// the commands for FORWARD itself (no DOCKER-USER); the test first applies
// without them and sees the client time out, then runs exactly what plan
// printed and sees NEW serve both families with the client's address.
// Rollback --all restores both hosts (nft's view by the snapshot, the
// legacy rules by iptables-legacy-save).
func TestLegacyForwardDrop(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	run := func(role string, args ...string) string {
		t.Helper()
		return mustExec(t, ctx, l, role, args...)
	}
	run(lab.RoleOld, "iptables-legacy", "-P", "FORWARD", "DROP")
	run(lab.RoleOld, "ip6tables-legacy", "-P", "FORWARD", "DROP")
	defer func() {
		for _, tool := range []string{"iptables-legacy", "ip6tables-legacy"} {
			for _, args := range [][]string{{"-F"}, {"-P", "FORWARD", "ACCEPT"}} {
				if out, err := l.Exec(context.Background(), lab.RoleOld, append([]string{tool}, args...)...); err != nil {
					t.Errorf("old: %s %v: %v: %s", tool, args, err, out)
				}
			}
		}
	}()
	old4, old6 := l.OldIP.String(), l.OldIP6.String()
	port := scenario.MigratedPort
	tunnel := fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", old4, l.NewIP.String())
	services := fmt.Sprintf("service \"web\" {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"new\"\n}\n\nservice \"web6\" {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"new\"\n}\n", old4, port, old6, port)
	if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, services)), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	allow := []string{
		"iptables-legacy -I FORWARD -i mig0 -j ACCEPT", "iptables-legacy -I FORWARD -o mig0 -j ACCEPT",
		"ip6tables-legacy -I FORWARD -i mig0 -j ACCEPT", "ip6tables-legacy -I FORWARD -o mig0 -j ACCEPT",
	}
	for _, w := range []string{
		"WARNING host old: legacy iptables (iptables-legacy, not in nft's ruleset): table ip filter, chain FORWARD has policy drop",
		"WARNING host old: legacy iptables (iptables-legacy, not in nft's ruleset): table ip6 filter, chain FORWARD has policy drop",
		"`" + allow[0] + "` and `" + allow[1] + "`", "`" + allow[2] + "` and `" + allow[3] + "`",
	} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("plan lacks %q:\n%s", w, r.Stdout)
		}
	}
	// A FORWARD drop is no DNAT: no keep_dest, OLD keeps chain pickup.
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	if out, err := l.Exec(ctx, lab.RoleOld, "nft", "list", "chain", "inet", "migrate", "keep_dest"); err == nil {
		t.Errorf("OLD has chain keep_dest with a legacy FORWARD drop only:\n%s", out)
	}
	// What the warning is about: apply passed, the clients do not.
	for _, a := range []string{old4, old6} {
		if out, err := s.Dial(ctx, lab.RoleClient, hp(a, port)); err == nil {
			t.Errorf("client to %s with legacy FORWARD policy drop: %q, want no answer", hp(a, port), out)
		}
	}
	for _, a := range allow { // exactly what plan printed
		run(lab.RoleOld, strings.Fields(a)...)
	}
	saved := legacySave(t, ctx, l, lab.RoleOld)
	servedByNew(t, ctx, s, "after the legacy commands")
	mustDial(t, ctx, s, lab.RoleClient, "served-by=new peer="+l.ClientIP6.String()+" ", hp(old6, port))

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "legacy FORWARD drop host after apply and rollback", stripCounters(before), stripCounters(after))
	if got := legacySave(t, ctx, l, lab.RoleOld); got != saved {
		t.Errorf("old: legacy rules after rollback:\n--- before\n%s\n--- after\n%s", saved, got)
	}
	expectServed(t, ctx, s, port, "old")
}

// TestLegacyNew is TestDocker with Docker's rules written by
// iptables-legacy on both hosts: NEW's legacy DNAT hands the flows from
// the tunnel to NEW's container, whose answers get OLD's address only at
// postrouting; NEW's table marks them (dnat_mark, as for an nft nat
// chain) and they go back through the tunnel, while the lab router drops
// what NEW sends from an address it does not hold. The client reaches
// NEW's container through OLD's address and is seen with its own; the
// port that stays reaches OLD's container; rollback restores both hosts.
func TestLegacyNew(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	run := func(role string, args ...string) string {
		t.Helper()
		return mustExec(t, ctx, l, role, args...)
	}
	containers := map[string]string{lab.RoleOld: "oldc", lab.RoleNew: "newc"}
	addrs := containerAddrs
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		c := containers[host]
		if err := l.Container(ctx, host, c, addrs[host]); err != nil {
			t.Fatal(err)
		}
		rules := filepath.Join(l.Dir, host+"-docker-legacy.rules")
		if err := os.WriteFile(rules, []byte(fmt.Sprintf(dockerRules, addrs[host])), 0o644); err != nil {
			t.Fatal(err)
		}
		run(host, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
		run(host, "iptables-legacy-restore", rules)
		if err := s.Serve(ctx, c, c, addrs[host]+":80", false); err != nil {
			t.Fatal(err)
		}
	}
	run(lab.RoleOld, "iptables-legacy", "-t", "nat", "-A", "DOCKER", "!", "-i", "docker0", "-p", "tcp", "--dport", fmt.Sprint(scenario.StayPort), "-j", "DNAT", "--to-destination", addrs[lab.RoleOld]+":80")
	defer func() {
		for _, host := range []string{lab.RoleOld, lab.RoleNew} {
			for _, args := range [][]string{{"-F"}, {"-X"}, {"-P", "FORWARD", "ACCEPT"}, {"-t", "nat", "-F"}, {"-t", "nat", "-X"}} {
				if out, err := l.Exec(context.Background(), host, append([]string{"iptables-legacy"}, args...)...); err != nil {
					t.Errorf("%s: iptables-legacy %v: %v: %s", host, args, err, out)
				}
			}
		}
	}()
	spoof := filepath.Join(l.Dir, "spoof.nft")
	if err := os.WriteFile(spoof, []byte(fmt.Sprintf("table ip labspoof {\n\tchain forward {\n\t\ttype filter hook forward priority 0;\n\t\tiifname %q ip saddr != %s counter drop\n\t}\n}\n", l.RouterIf(lab.RoleNew), l.NewIP)), 0o644); err != nil {
		t.Fatal(err)
	}
	run(lab.RoleRouter, "nft", "-f", spoof)
	served := func(port int, by string) {
		t.Helper()
		out := expectServed(t, ctx, s, port, by)
		if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
			t.Errorf("%s on port %d does not see the client's address: %s", by, port, out)
		}
	}
	served(scenario.MigratedPort, "oldc")

	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "answers of flows another table DNATs go back to the tunnel") {
		t.Errorf("plan does not route the answers of NEW's legacy DNAT back to OLD:\n%s", r.Stdout)
	}
	if strings.Contains(r.Stdout, "WARNING host new") {
		t.Errorf("plan warns about NEW, whose Docker rules accept what migrate brings:\n%s", r.Stdout)
	}
	for _, a := range []string{"iptables-legacy -I DOCKER-USER -i mig0 -j ACCEPT", "iptables-legacy -I DOCKER-USER -o mig0 -j ACCEPT"} {
		if !strings.Contains(r.Stdout, "`"+a+"`") {
			t.Fatalf("plan lacks %q:\n%s", a, r.Stdout)
		}
		run(lab.RoleOld, strings.Fields(a)...)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	saved := map[string]string{}
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		saved[host] = legacySave(t, ctx, l, host)
	}

	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	served(scenario.MigratedPort, "newc")
	served(scenario.StayPort, "oldc")

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "legacy Docker hosts after apply and rollback", stripCounters(before), stripCounters(after))
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if got := legacySave(t, ctx, l, host); got != saved[host] {
			t.Errorf("%s: legacy rules after rollback:\n--- before\n%s\n--- after\n%s", host, saved[host], got)
		}
	}
	served(scenario.MigratedPort, "oldc")
}
