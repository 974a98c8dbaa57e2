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

// dockerRules is what Docker's daemon (docker.io 20.10 to 26, the
// versions Debian 12 and Ubuntu 24.04 ship, with iptables-nft) installs
// for its default bridge and one container (at %[1]s) run with
// `-p 8080:80`, as `iptables-save` prints it: moby's
// libnetwork/drivers/bridge (setup_ip_tables_linux.go, port_mapping_linux.go,
// libnetwork/iptables) and its integration/network/bridge/iptablesdoc.
// The daemon also sets FORWARD's policy to drop when it switches
// ip_forward on. Loaded with iptables-nft-restore inside the lab hosts'
// namespaces: no Docker daemon runs.
const dockerRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s %[1]s/32 -d %[1]s/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination %[1]s:80
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER -d %[1]s/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
`

// counters are nft's counter values, which traffic changes: snapshots
// compare rules, not packet counts.
var (
	counters      = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	chainCounters = regexp.MustCompile(`\[\d+:\d+\]$`)
)

func stripCounters(snap map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range snap {
		out[k] = counters.ReplaceAllString(v, "counter")
	}
	return out
}

// iptablesSave is role's iptables-nft-save output without its dated
// comment lines: what Docker's own view of its rules shows.
func iptablesSave(t *testing.T, ctx context.Context, l *lab.Lab, role string) string {
	t.Helper()
	out, err := l.Exec(ctx, role, "iptables-nft-save")
	if err != nil {
		t.Fatalf("%s: %v", role, err)
	}
	var keep []string
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "#") {
			keep = append(keep, chainCounters.ReplaceAllString(line, "[0:0]"))
		}
	}
	return strings.Join(keep, "\n")
}

// dockerBackend is how Docker's rules for one container (at addr, with
// `-p 8080:80`) get onto a lab host, and how to read them back.
type dockerBackend struct {
	load func(t *testing.T, ctx context.Context, l *lab.Lab, host, addr string)
	save func(t *testing.T, ctx context.Context, l *lab.Lab, host string) string
	// allow: the commands plan gives for OLD's forward drop (none
	// where the backend leaves forwarding alone).
	allow []string
	// reloaded puts Docker's rules back after firewalld's reload
	// flushed them, as Docker's daemon does on firewalld's signal.
	reloaded func(t *testing.T, ctx context.Context, l *lab.Lab, host, addr string)
}

// containerAddrs are the addresses of the containers (oldc, newc) the
// Docker tests run on each host. They differ: a moved flow that OLD's
// Docker rewrote to its container's address would miss NEW's.
var containerAddrs = map[string]string{lab.RoleOld: "172.17.0.2", lab.RoleNew: "172.17.0.3"}

// dockerIptables is Docker 20.10 to 26 with iptables-nft (dockerRules).
var dockerIptables = dockerBackend{
	load: func(t *testing.T, ctx context.Context, l *lab.Lab, host, addr string) {
		t.Helper()
		rules := filepath.Join(l.Dir, host+"-docker.rules")
		if err := os.WriteFile(rules, []byte(fmt.Sprintf(dockerRules, addr)), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := l.Exec(ctx, host, "iptables-nft-restore", rules); err != nil {
			t.Fatalf("%s: %v: %s", host, err, out)
		}
	},
	save:     iptablesSave,
	allow:    []string{"iptables -I DOCKER-USER -i mig0 -j ACCEPT", "iptables -I DOCKER-USER -o mig0 -j ACCEPT"},
	reloaded: dockerReloaded,
}

// dockerNftables is Docker 29's nftables backend
// (agent/testdata/docker-29-nftables.nft): table ip docker-bridges, its
// DNAT at priority dstnat as Docker's iptables one, no FORWARD drop.
var dockerNftables = dockerBackend{
	load: func(t *testing.T, ctx context.Context, l *lab.Lab, host, addr string) {
		t.Helper()
		b, err := os.ReadFile("../agent/testdata/docker-29-nftables.nft")
		if err != nil {
			t.Fatal(err)
		}
		rules := filepath.Join(l.Dir, host+"-docker.nft")
		if err := os.WriteFile(rules, []byte(strings.ReplaceAll(string(b), "CONTAINER", addr)), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := l.Exec(ctx, host, "nft", "-f", rules); err != nil {
			t.Fatalf("%s: %v: %s", host, err, out)
		}
	},
	save: func(t *testing.T, ctx context.Context, l *lab.Lab, host string) string {
		t.Helper()
		out, err := l.Exec(ctx, host, "nft", "list", "table", "ip", "docker-bridges")
		if err != nil {
			t.Fatalf("%s: %v: %s", host, err, out)
		}
		return counters.ReplaceAllString(string(out), "counter")
	},
}

// TestDocker moves a service that Docker publishes (`-p 8080:80`, a
// container on the docker0 bridge) from a container on OLD to a container
// on NEW and back. Both hosts carry Docker's real iptables-nft rule set:
// DNAT in table ip nat (priority dstnat), FORWARD policy drop. The
// container on NEW sees the client's address; its answers go back
// through the tunnel (the lab router drops packets NEW sends with a
// source it does not own, as a cloud provider does); Docker's rules are
// never changed, and rollback leaves both hosts as they were. A
// connection to OLD's container survives `conntrack -F` on OLD while it
// drains there: with another table's DNAT, OLD's table has no chain
// pickup (the container's socket is not in OLD's namespace).
func TestDocker(t *testing.T) {
	dockerMove(t, dockerIptables)
}

// TestDockerNftables is TestDocker with Docker 29's nftables backend on
// both hosts: its own table, ip docker-bridges, DNATs at the same
// priority as Docker's iptables rules, and its forward chain drops only
// what goes into a bridge unpublished. plan warns about nothing; the
// move, the drain across `conntrack -F` and rollback are as with
// iptables.
func TestDockerNftables(t *testing.T) {
	dockerMove(t, dockerNftables)
}

func dockerMove(t *testing.T, backend dockerBackend) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	t.Log("TUNNEL vxlan: " + t.Name())
	served := dockerHosts(t, ctx, s, backend)
	served("oldc")

	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	// plan names the rule that drops migrate's traffic on OLD, and the
	// commands that allow it.
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	allow := backend.allow
	for _, a := range allow {
		if !strings.Contains(r.Stdout, "WARNING host old: table ip filter, chain FORWARD (hook forward) has policy drop") || !strings.Contains(r.Stdout, "`"+a+"`") {
			t.Errorf("plan does not give %q for Docker's FORWARD drop:\n%s", a, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, "WARNING host new") || (allow == nil && strings.Contains(r.Stdout, "WARNING")) {
		t.Errorf("plan warns where Docker's rules accept what migrate brings:\n%s", r.Stdout)
	}
	// The operator runs them, as an operator would.
	for _, a := range allow {
		if out, err := l.Exec(ctx, lab.RoleOld, strings.Fields(a)...); err != nil {
			t.Fatalf("old: %v: %s", err, out)
		}
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	saved := map[string]string{}
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		saved[host] = backend.save(t, ctx, l, host)
	}
	// A connection to OLD's container, draining there after the apply.
	// Nothing of OLD's own listens on the published port (the lab's
	// server on OLD's address goes, as on a Docker host, where at most
	// docker-proxy listens, on the wildcard address).
	stopListening(t, ctx, l, scenario.MigratedPort)
	draining := startHolder(t, s, fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort))
	if by := draining.servedBy(); by != "oldc" {
		t.Fatalf("before apply the holder is served by %q", by)
	}

	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	served("newc")
	// conntrack -F on OLD: the draining connection's next packet is a
	// mid-stream pickup. Its socket is the container's, which OLD's own
	// namespace cannot see, so with another table's DNAT (keep_dest) OLD
	// has no chain pickup and the pickup stays on OLD, where Docker's
	// DNAT takes it back to the container.
	if out, err := l.Exec(ctx, lab.RoleOld, "conntrack", "-F"); err != nil {
		t.Fatalf("old: conntrack -F: %v %s", err, out)
	}
	time.Sleep(scenario.Slow(2 * time.Second))
	draining.expectAnswering(t, "oldc")
	if out, err := l.Exec(ctx, lab.RoleOld, "nft", "list", "chain", "inet", "migrate", "pickup"); err == nil {
		t.Errorf("OLD has chain pickup with Docker's DNAT (keep_dest):\n%s", out)
	}
	draining.stop(t)
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if got := backend.save(t, ctx, l, host); got != saved[host] {
			t.Errorf("%s: Docker's rules changed by apply:\n--- before\n%s\n--- after\n%s", host, saved[host], got)
		}
	}
	// Back to OLD's container.
	if err := s.WritePlan(scenario.PlanOptions{Stage: "old"}); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	served("oldc")
	// Nothing of OLD's own listens on the port (as with Docker's
	// userland proxy off), yet OLD's container serves it: status does
	// not call it refused on OLD (keep_dest: the listener is in the
	// container's namespace, which migrate does not see).
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "NOT SERVED") || strings.Contains(r.Stdout, "WARNING") {
		t.Errorf("status with OLD's container serving the service at stage old:\n%s", r.Stdout)
	}

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "Docker hosts after apply and rollback", stripCounters(before), stripCounters(after))
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if got := backend.save(t, ctx, l, host); got != saved[host] {
			t.Errorf("%s: Docker's rules after rollback:\n--- before\n%s\n--- after\n%s", host, saved[host], got)
		}
	}
	served("oldc")
}

// TestDockerDirect is TestDocker over a direct tunnel (the lab's Segment
// variant: OLD, NEW and the router on one bridge). NEW's "tunnel device"
// is then its segment interface, which also brings the router's (any
// host's) flows to NEW's own published port. A client dials OLD's
// address; NEW's container serves it, sees the client's address, and its
// answers go back to OLD on the segment (NEW's own uplink drops a source
// NEW does not hold, as a provider would): the connection completes, a few
// requests, a close from either side. The router's flow to NEW's own
// address on the segment is not marked (conntrack mark 0 on NEW, while
// the moved flow's is the tunnel's mark) and is answered directly.
// Rollback restores both hosts and Docker's rules.
func TestDockerDirect(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenarioOpts(t, ctx, lab.Options{Prefix: "mgd", Segment: true})
	l := s.Lab
	old4, seg4 := l.OldIP.String(), l.NewSegIP.String()
	port := scenario.MigratedPort // Docker's rules publish 8080
	run := func(role string, args ...string) string {
		t.Helper()
		out, err := l.Exec(ctx, role, args...)
		if err != nil {
			t.Fatalf("%s: %v: %v: %s", role, args, err, out)
		}
		return string(out)
	}
	containers := map[string]string{lab.RoleOld: "oldc", lab.RoleNew: "newc"}
	addrs := containerAddrs
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		c := containers[host]
		if err := l.Container(ctx, host, c, addrs[host]); err != nil {
			t.Fatal(err)
		}
		rules := filepath.Join(l.Dir, host+"-docker.rules")
		if err := os.WriteFile(rules, []byte(fmt.Sprintf(dockerRules, addrs[host])), 0o644); err != nil {
			t.Fatal(err)
		}
		run(host, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
		run(host, "iptables-nft-restore", rules)
		if err := s.Serve(ctx, c, c, addrs[host]+":80", false); err != nil {
			t.Fatal(err)
		}
	}
	// NEW's provider drops what NEW sends by its own uplink from an
	// address it does not hold: answers that do not go back to OLD are
	// lost.
	spoof := filepath.Join(l.Dir, "spoof.nft")
	if err := os.WriteFile(spoof, []byte(fmt.Sprintf("table ip labspoof {\n\tchain forward {\n\t\ttype filter hook forward priority 0;\n\t\tiifname %q ip saddr != %s counter drop\n\t}\n}\n", l.RouterIf(lab.RoleNew), l.NewIP)), 0o644); err != nil {
		t.Fatal(err)
	}
	run(lab.RoleRouter, "nft", "-f", spoof)

	// served dials addr from role, sends pings, closes; then dials
	// again and has the server close first (BYE). Both must complete
	// normally, served by by, which sees peer.
	served := func(role, addr, by, peer string) {
		t.Helper()
		out, err := s.Labtool(ctx, 20*time.Second, role, "hold", "-count", "3", "-every", "50ms", "-timeout", "3s", addr)
		if err != nil {
			t.Fatalf("%s to %s: %v: %s", role, addr, err, out)
		}
		if !strings.HasPrefix(out, "served-by="+by+" peer="+peer+" ") || strings.Count(out, by+": ping") != 3 {
			t.Errorf("%s to %s: %q, want served-by=%s peer=%s and 3 answered pings", role, addr, out, by, peer)
		}
		mustDial(t, ctx, s, role, "served-by="+by+" peer="+peer+" ", "-bye", addr)
	}
	client := l.ClientIP.String()
	served(lab.RoleClient, hp(old4, port), "oldc", client)
	served(lab.RoleRouter, hp(seg4, port), "newc", "198.51.100.1")

	tunnel := fmt.Sprintf("  type         = \"direct\"\n  old_endpoint = %q\n  new_endpoint = %q", old4, seg4)
	services := fmt.Sprintf("service \"web\" {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"new\"\n}\n", old4, port)
	if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, services)), 0o644); err != nil {
		t.Fatal(err)
	}
	// plan warns about OLD's FORWARD policy drop; the operator accepts
	// migrate's flows on the segment in DOCKER-USER, as plan says.
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	allow := []string{"iptables -I DOCKER-USER -o eth0 -d " + old4 + " -j ACCEPT", "iptables -I DOCKER-USER -i eth0 -s " + old4 + " -j ACCEPT"}
	for _, w := range []string{"WARNING host old: table ip filter, chain FORWARD (hook forward) has policy drop", "`" + allow[0] + "`", "`" + allow[1] + "`"} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("plan lacks %q:\n%s", w, r.Stdout)
		}
	}
	if !strings.Contains(r.Stdout, "answers of flows another table DNATs go back to the tunnel") {
		t.Errorf("plan does not route the answers of Docker's flows on NEW back to OLD:\n%s", r.Stdout)
	}
	for _, cmd := range allow { // exactly what plan printed
		run(lab.RoleOld, strings.Fields(cmd)...)
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
	// What apply wrote reads back as written (sets peerdst4/6, the
	// rule from the address with iif lo): no drift.
	mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	run(lab.RoleNew, "conntrack", "-F")
	served(lab.RoleClient, hp(old4, port), "newc", client)
	served(lab.RoleRouter, hp(seg4, port), "newc", "198.51.100.1")
	// ctMarks are the conntrack marks on NEW of the flows to dst:port.
	ctMarks := func(dst string) []string {
		t.Helper()
		out, _ := l.Exec(ctx, lab.RoleNew, "conntrack", "-L", "-p", "tcp", "--orig-dst", dst, "--dport", fmt.Sprint(port))
		m := regexp.MustCompile(`mark=(\d+)`).FindAllStringSubmatch(string(out), -1)
		var marks []string
		for _, x := range m {
			marks = append(marks, x[1])
		}
		if len(marks) == 0 {
			t.Fatalf("no conntrack entry on NEW for %s:%d: %s", dst, port, out)
		}
		return marks
	}
	for _, m := range ctMarks(old4) {
		if m != "131072" { // 0x20000, the tunnel's default mark
			t.Errorf("a moved flow on NEW has ct mark %s, want 131072 (0x20000)", m)
		}
	}
	for _, m := range ctMarks(seg4) {
		if m != "0" {
			t.Errorf("the router's flow to NEW's own %s:%d has ct mark %s on NEW, want 0: its answers would be sent to OLD", seg4, port, m)
		}
	}
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if got := iptablesSave(t, ctx, l, host); got != saved[host] {
			t.Errorf("%s: Docker's rules changed by apply:\n--- before\n%s\n--- after\n%s", host, saved[host], got)
		}
	}

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "Docker hosts on a segment after apply and rollback", stripCounters(before), stripCounters(after))
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		if got := iptablesSave(t, ctx, l, host); got != saved[host] {
			t.Errorf("%s: Docker's rules after rollback:\n--- before\n%s\n--- after\n%s", host, saved[host], got)
		}
	}
	served(lab.RoleClient, hp(old4, port), "oldc", client)
	served(lab.RoleRouter, hp(seg4, port), "newc", "198.51.100.1")
}

// dockerHosts gives both lab hosts a container serving the migrated port
// (oldc on OLD, newc on NEW, published by backend's rules) and makes the
// router drop what NEW sends from an address it does not hold, as NEW's
// provider would. served checks that the client is served by a container
// that sees its address.
func dockerHosts(t *testing.T, ctx context.Context, s *scenario.Scenario, backend dockerBackend) (served func(by string)) {
	t.Helper()
	l := s.Lab
	containers := map[string]string{lab.RoleOld: "oldc", lab.RoleNew: "newc"}
	addrs := containerAddrs
	for _, host := range []string{lab.RoleOld, lab.RoleNew} {
		c := containers[host]
		if err := l.Container(ctx, host, c, addrs[host]); err != nil {
			t.Fatal(err)
		}
		if out, err := l.Exec(ctx, host, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
			t.Fatalf("%s: %v: %s", host, err, out)
		}
		backend.load(t, ctx, l, host, addrs[host])
		if err := s.Serve(ctx, c, c, addrs[host]+":80", false); err != nil {
			t.Fatal(err)
		}
	}
	// NEW's provider drops what NEW sends from an address it does not
	// hold: answers that bypass the tunnel would be lost.
	spoof := filepath.Join(l.Dir, "spoof.nft")
	if err := os.WriteFile(spoof, []byte(fmt.Sprintf("table ip labspoof {\n\tchain forward {\n\t\ttype filter hook forward priority 0;\n\t\tiifname %q ip saddr != %s counter drop\n\t}\n}\n", l.RouterIf(lab.RoleNew), l.NewIP)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Exec(ctx, lab.RoleRouter, "nft", "-f", spoof); err != nil {
		t.Fatalf("router: %v: %s", err, out)
	}
	return func(by string) {
		t.Helper()
		out := expectServed(t, ctx, s, scenario.MigratedPort, by)
		if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
			t.Errorf("container %s does not see the client's address: %s", by, out)
		}
	}
}
