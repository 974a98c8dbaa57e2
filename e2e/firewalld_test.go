package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// busConf is a D-Bus system bus of the lab's own, on a socket in the
// lab's directory, open to root (firewalld's only caller here).
const busConf = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`

// firewalldIn starts the real firewalld in host's namespace and returns a
// function that runs a shell command line (firewall-cmd ...) against it.
// firewalld runs inside `ip netns exec` (a mount namespace of its own)
// with a private /run, its configuration from a copy of /etc/firewalld
// (--system-config) and a D-Bus system bus of its own: it changes nothing
// but that namespace's firewall and the copy. Close stops it.
func firewalldIn(t *testing.T, ctx context.Context, l *lab.Lab, host string) func(cmdline string) string {
	t.Helper()
	return firewalldBackend(t, ctx, l, host, "nftables")
}

// firewalldBackend is firewalldIn with firewalld.conf's FirewallBackend
// set to backend: "nftables" (firewalld's default), "iptables" (its
// iptables backend, through iptables-nft as on RHEL 8 with
// FirewallBackend=iptables) or "iptables-legacy" (the iptables backend
// on iptables-legacy, as CentOS 7's firewalld runs: iptables and its
// tools are iptables-legacy's in a private copy of /etc/alternatives,
// bound over the real one in firewalld's mount namespace only).
func firewalldBackend(t *testing.T, ctx context.Context, l *lab.Lab, host, backend string) func(cmdline string) string {
	t.Helper()
	dir := filepath.Join(l.Dir, "firewalld-"+host)
	bus := filepath.Join(dir, "bus")
	if out, err := exec.CommandContext(ctx, "mkdir", "-p", dir).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", "/etc/firewalld", dir+"/etc").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := os.WriteFile(dir+"/bus.conf", []byte(fmt.Sprintf(busConf, bus)), 0o644); err != nil {
		t.Fatal(err)
	}
	if backend != "nftables" {
		conf := dir + "/etc/firewalld.conf"
		b, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		b = regexp.MustCompile(`(?m)^FirewallBackend=.*$`).ReplaceAll(b, []byte("FirewallBackend=iptables"))
		if err := os.WriteFile(conf, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if backend == "iptables-legacy" {
		privateAlternatives(t, ctx, filepath.Join(dir, "alternatives"))
	}
	script := `set -e
mount -t tmpfs migrate-lab /run
if [ -d "$D/alternatives" ]; then mount --bind "$D/alternatives" /etc/alternatives; fi
dbus-daemon --config-file="$D/bus.conf" --nofork --nopidfile &
for i in $(seq 1 50); do [ -S "$D/bus" ] && break; sleep 0.1; done
exec firewalld --nofork --nopid --system-config "$D/etc" --log-target file --log-file "$D/firewalld.log"`
	if _, err := l.Start(host, "env", "D="+dir, "DBUS_SYSTEM_BUS_ADDRESS=unix:path="+bus, "sh", "-c", script); err != nil {
		t.Fatal(err)
	}
	run := func(cmdline string) string {
		t.Helper()
		out, err := l.Exec(ctx, host, "env", "D="+dir, "DBUS_SYSTEM_BUS_ADDRESS=unix:path="+bus, "sh", "-c", `if [ -d "$D/alternatives" ]; then mount --bind "$D/alternatives" /etc/alternatives; fi; `+cmdline)
		if err != nil {
			log, _ := os.ReadFile(dir + "/firewalld.log")
			t.Fatalf("%s: %s: %v\nfirewalld log:\n%s", host, cmdline, err, log)
		}
		return string(out)
	}
	deadline := time.Now().Add(scenario.Slow(60 * time.Second))
	for {
		out, err := l.Exec(ctx, host, "env", "DBUS_SYSTEM_BUS_ADDRESS=unix:path="+bus, "firewall-cmd", "--state")
		if err == nil && strings.TrimSpace(string(out)) == "running" {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(dir + "/firewalld.log")
			t.Fatalf("%s: firewalld did not start: %v %s\nlog:\n%s", host, err, out, log)
		}
		time.Sleep(300 * time.Millisecond)
	}
	return run
}

// firewalldHosts starts the real firewalld on OLD and NEW with backend
// (firewalldBackend) and returns each host's firewall-cmd runner.
func firewalldHosts(t *testing.T, ctx context.Context, l *lab.Lab, backend string) map[string]func(cmdline string) string {
	t.Helper()
	fw := map[string]func(string) string{}
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		fw[host] = firewalldBackend(t, ctx, l, host, backend)
	}
	return fw
}

func needFirewalld(t *testing.T) {
	t.Helper()
	for _, p := range []string{"firewalld", "firewall-cmd", "dbus-daemon"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s is not installed (apt-get install firewalld; .ci/run does): %v", p, err)
		}
	}
}

// TestFirewalld moves a service between two hosts where firewalld runs
// (for real, in each lab host's namespace) with its default zone public:
// only SSH, and the service's port, allowed. plan names the rules that
// reject migrate's traffic and the firewall-cmd commands that allow it,
// only those whose effect firewalld's live rules do not show yet; once
// the operator ran them, the service moves with the client's
// address preserved, firewalld's table is never changed by migrate, and
// rollback leaves both hosts as they were.
func TestFirewalld(t *testing.T) {
	needRoot(t)
	needFirewalld(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	fw := map[string]func(string) string{}
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		fw[host] = firewalldIn(t, ctx, l, host)
		fw[host]("firewall-cmd --permanent --add-port=8080/tcp && firewall-cmd --reload")
		if out := fw[host]("firewall-cmd --list-all"); !strings.Contains(out, "services: dhcpv6-client ssh") || !strings.Contains(out, "ports: 8080/tcp") {
			t.Fatalf("%s: firewalld's default zone:\n%s", host, out)
		}
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	want := firewalldCommands(l)
	for host, cmds := range want {
		if !strings.Contains(r.Stdout, "WARNING host "+host+": firewalld is active (table inet firewalld): chain filter_INPUT (hook input) ends in `reject with icmpx admin-prohibited`") {
			t.Errorf("plan does not name firewalld's reject on %s:\n%s", host, r.Stdout)
		}
		for _, c := range cmds {
			if !strings.Contains(r.Stdout, "`"+c+"`") {
				t.Errorf("plan does not give %s %q:\n%s", host, c, r.Stdout)
			}
		}
	}
	// The operator puts mig0 in zone trusted on NEW first: plan sees it
	// in firewalld's live rules and gives NEW only the rich rule.
	fw[lab.RoleNew](want[lab.RoleNew][1] + " && firewall-cmd --reload")
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "WARNING host new: firewalld is active") || !strings.Contains(r.Stdout, "`"+want[lab.RoleNew][0]+"` and `firewall-cmd --reload`") {
		t.Errorf("plan does not give NEW only the rich rule:\n%s", r.Stdout)
	}
	if strings.Count(r.Stdout, "--add-interface=mig0") != 1 {
		t.Errorf("plan gives --add-interface=mig0 for NEW, which has it (or not for OLD):\n%s", r.Stdout)
	}
	// Then the rest, as given: plan has no firewalld warning left.
	for host, cmds := range want {
		fw[host](strings.Join(cmds, " && "))
	}
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if !strings.Contains(r.Stdout, "host "+host+": firewalld is active (table inet firewalld); its rules allow migrate's traffic") {
			t.Errorf("plan does not note that %s's firewalld allows migrate's traffic:\n%s", host, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, "firewall-cmd") {
		t.Errorf("plan still gives firewall-cmd commands once all ran:\n%s", r.Stdout)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string]string{}
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		tables[host] = firewalldTable(t, ctx, l, host)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("NEW does not see the client's address: %s", out)
	}
	// NEW's own connection from the service address leaves through OLD.
	mustDial(t, ctx, s, lab.RoleNew, "served-by=client peer="+l.OldIP.String()+" ", "-bind", l.OldIP.String(), fmt.Sprintf("%s:%d", l.ClientIP, scenario.ClientPort))
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if got := firewalldTable(t, ctx, l, host); got != tables[host] {
			t.Errorf("%s: firewalld's table changed by apply:\n--- before\n%s\n--- after\n%s", host, tables[host], got)
		}
	}
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "firewalld hosts after apply and rollback", stripCounters(before), stripCounters(after))
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
}

// firewalldCommands are the firewall-cmd commands plan gives each lab
// host for a VXLAN tunnel (firewalld 0.9 or later), --reload last.
func firewalldCommands(l *lab.Lab) map[string][]string {
	rich := func(from, to string) string {
		return fmt.Sprintf(`firewall-cmd --permanent --add-rich-rule='rule family="ipv4" source address="%s" destination address="%s" port port="4789" protocol="udp" accept'`, from, to)
	}
	return map[string][]string{
		lab.RoleOld: {rich(l.NewIP.String(), l.OldIP.String()), "firewall-cmd --permanent --zone=trusted --add-interface=mig0",
			"firewall-cmd --permanent --new-policy=migrate-tunnel", "firewall-cmd --permanent --policy=migrate-tunnel --add-ingress-zone=ANY",
			"firewall-cmd --permanent --policy=migrate-tunnel --add-egress-zone=trusted", "firewall-cmd --permanent --policy=migrate-tunnel --set-target=ACCEPT",
			"firewall-cmd --reload"},
		lab.RoleNew: {rich(l.OldIP.String(), l.NewIP.String()), "firewall-cmd --permanent --zone=trusted --add-interface=mig0", "firewall-cmd --reload"},
	}
}

// firewalldTable is firewalld's nft table on role, counters aside.
func firewalldTable(t *testing.T, ctx context.Context, l *lab.Lab, role string) string {
	t.Helper()
	out, err := l.Exec(ctx, role, "nft", "list", "table", "inet", "firewalld")
	if err != nil {
		t.Fatalf("%s: %v", role, err)
	}
	return counters.ReplaceAllString(string(out), "counter")
}

// TestFirewalldLater: firewalld started after the apply, on OLD (its
// default zone public with the service's port and the tunnel's rich rule
// allowed: firewalld forwards nothing between zones unless a policy
// allows it) and on NEW (the rich rule only, mig0 in no zone). Each time
// the tunnel pings and every new client of the moved service gets no
// answer; status calls the service BROKEN and gives plan's commands;
// with them NEW serves again, and rollback --all removes migrate's part
// and leaves firewalld's table as it was.
func TestFirewalldLater(t *testing.T) {
	needFirewalld(t)
	for _, tc := range []struct {
		role, allow, want string
		cmds              []string
	}{
		{lab.RoleOld, "--add-port=8080/tcp", "firewalld is active on OLD (started or reloaded after the apply?) and rejects the new flows of service web (%s/tcp) toward NEW (out on mig0)",
			[]string{"firewall-cmd --permanent --zone=trusted --add-interface=mig0",
				"firewall-cmd --permanent --new-policy=migrate-tunnel", "firewall-cmd --permanent --policy=migrate-tunnel --add-ingress-zone=ANY",
				"firewall-cmd --permanent --policy=migrate-tunnel --add-egress-zone=trusted", "firewall-cmd --permanent --policy=migrate-tunnel --set-target=ACCEPT",
				"firewall-cmd --reload"}},
		{lab.RoleNew, "", "firewalld is active on NEW (started or reloaded after the apply?) and rejects the new flows of service web (%s/tcp) in on mig0",
			[]string{"firewall-cmd --permanent --zone=trusted --add-interface=mig0", "firewall-cmd --reload"}},
	} {
		t.Run(tc.role, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
			defer cancel()
			s := movedScenario(t, ctx)
			l := s.Lab
			from, to := l.NewIP, l.OldIP
			if tc.role == lab.RoleNew {
				from, to = l.OldIP, l.NewIP
			}
			fw := firewalldIn(t, ctx, l, tc.role)
			rich := fmt.Sprintf(`firewall-cmd --permanent --add-rich-rule='rule family="ipv4" source address="%s" destination address="%s" port port="4789" protocol="udp" accept'`, from, to)
			if tc.allow != "" {
				rich += " && firewall-cmd --permanent " + tc.allow
			}
			fw(rich + " && firewall-cmd --reload")
			brokenUntil(t, ctx, s, "firewalld started on "+tc.role+" after the apply", fmt.Sprintf(tc.want, hp(l.OldIP.String(), scenario.MigratedPort)), tc.cmds, func() {
				fw(strings.Join(tc.cmds, " && "))
			})
			table := func() string {
				t.Helper()
				return counters.ReplaceAllString(mustExec(t, ctx, l, tc.role, "nft", "list", "table", "inet", "firewalld"), "counter")
			}
			saved := table()
			rolledBack(t, ctx, s)
			if got := table(); got != saved {
				t.Errorf("%s: firewalld's table after rollback:\n--- before\n%s\n--- after\n%s", tc.role, saved, got)
			}
		})
	}
}

// TestFirewalldIPv6: firewalld's IPv6 reverse-path filter (IPv6_rpfilter,
// on by default) drops what arrives through the tunnel for IPv6 services
// even with all of plan's firewall-cmd commands run: NEW's answer to an
// IPv6 client arriving on mig0 would leave elsewhere. plan warns, naming
// the rule; apply fails at its probe of the IPv6 service, names the
// warning and undoes itself. With IPv6_rpfilter=no (and a reload) the
// rule is gone, plan says nothing of it, and the IPv6 client is served
// by NEW with its own address. On each backend: nftables (its
// filter_PREROUTING), iptables through iptables-nft and iptables-legacy
// (`-m rpfilter --invert -j DROP` in ip6 mangle's PREROUTING).
func TestFirewalldIPv6(t *testing.T) {
	needFirewalld(t)
	for _, tc := range []struct{ backend, where string }{
		{"nftables", "firewalld is active (table inet firewalld, chain filter_PREROUTING); its IPv6 rpfilter drops"},
		{"iptables", "firewalld is active (its iptables backend: table ip filter); its IPv6 rpfilter (table ip6 mangle, chain PREROUTING: `-m rpfilter --invert -j DROP`) drops"},
		{"iptables-legacy", "firewalld is active (its iptables backend on iptables-legacy, not in nft's ruleset); its IPv6 rpfilter (table ip6 mangle, chain PREROUTING, iptables-legacy: `-m rpfilter --invert -j DROP`) drops"},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			firewalldIPv6(t, tc.backend, tc.where)
		})
	}
}

func firewalldIPv6(t *testing.T, backend, where string) {
	ctx, s := vxlanScenario(t, 4*time.Minute)
	l := s.Lab
	fw := firewalldHosts(t, ctx, l, backend)
	fw[lab.RoleOld]("firewall-cmd --permanent --add-port=8080/tcp && firewall-cmd --reload")
	port := scenario.MigratedPort
	tunnel := fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", l.OldIP, l.NewIP)
	services := webService(s, "new") + fmt.Sprintf("\nservice \"web6\" {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"new\"\n}\n", l.OldIP6, port)
	writeFile(t, s.PlanFile, s.HCL(tunnel, services))
	for host, cmds := range firewalldCommands(l) {
		fw[host](strings.Join(cmds, " && "))
	}
	warning := func(host string) string {
		return "WARNING host " + host + ": " + where + " packets arriving from \"mig0\" whose source is routed elsewhere. Set IPv6_rpfilter=no in /etc/firewalld/firewalld.conf"
	}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if !strings.Contains(r.Stdout, warning(host)) {
			t.Errorf("plan lacks %q:\n%s", warning(host), r.Stdout)
		}
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r = mustMigrate(t, ctx, s, 1, "apply", "-f", s.PlanFile, "--auto-approve")
	if want := "probe: service \"web6\": a connection from OLD through the tunnel to " + hp(l.OldIP6.String(), port) + " on NEW failed: "; !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, "its IPv6 rpfilter") {
		t.Errorf("apply with firewalld's IPv6 rpfilter: want %q and the warning:\n%s", want, r.Stderr)
	}
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "hosts after an apply that failed at its probe", stripCounters(before), stripCounters(after))
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		conf := filepath.Join(l.Dir, "firewalld-"+host, "etc", "firewalld.conf")
		b, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(conf, []byte(strings.Replace(string(b), "IPv6_rpfilter=yes", "IPv6_rpfilter=no", 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		fw[host]("firewall-cmd --reload")
	}
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if strings.Contains(r.Stdout, "rpfilter") || strings.Contains(r.Stdout, "WARNING") {
		t.Errorf("plan with IPv6_rpfilter=no:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	servedByNew(t, ctx, s, "after apply (IPv4)")
	mustDial(t, ctx, s, lab.RoleClient, "served-by=new peer="+l.ClientIP6.String()+" ", hp(l.OldIP6.String(), port))
	rolledBack(t, ctx, s)
}
