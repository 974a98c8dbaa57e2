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

// Ports of the UDP listener test: a wildcard daemon written like Go's
// net.ListenUDP(":port"), a daemon bound to the migrated address, and
// dnsmasq (a wildcard socket answering with IP_PKTINFO).
const (
	udpWildPort  = 5005
	udpBoundPort = 5006
	udpDNSPort   = 5353
)

// extraOldIP6 is a second IPv6 address of OLD, the ip6gre endpoint.
const extraOldIP6 = "2001:db8:100::11"

// Answers of each host's dnsmasq to "test.lab": data, never a target.
const (
	dnsOldAnswer = "192.0.2.201"
	dnsNewAnswer = "192.0.2.202"
)

func udpListenerServices(l *lab.Lab, stage string) string {
	extra := ""
	if stage == "canary" {
		extra = "\n  canary_percent = 50"
	}
	var b strings.Builder
	for _, sv := range []struct {
		name string
		port int
	}{{"wild", udpWildPort}, {"bound", udpBoundPort}, {"dns", udpDNSPort}} {
		for _, a := range []struct{ suffix, addr string }{{"", l.OldIP.String()}, {"6", l.OldIP6.String()}} {
			fmt.Fprintf(&b, "service %q {\n  address  = %q\n  protocol = \"udp\"\n  ports    = [%d]\n  stage    = %q%s\n}\n\n",
				sv.name+a.suffix, a.addr, sv.port, stage, extra)
		}
	}
	return b.String()
}

// startDNSMasq runs dnsmasq in role's namespace on udpDNSPort, as it runs
// by default: one wildcard socket per family, answers sent with
// IP_PKTINFO. --except-interface only lifts its default of answering
// local subnets alone. It logs queries (with the client's address) to
// the returned file.
func startDNSMasq(t *testing.T, s *scenario.Scenario, role, answer string) string {
	t.Helper()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatal("dnsmasq is needed (apt-get install dnsmasq-base)")
	}
	log := filepath.Join(s.Lab.Dir, "dnsmasq-"+role+".log")
	if _, err := s.Lab.Start(role, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		fmt.Sprintf("--port=%d", udpDNSPort), "--address=/test.lab/"+answer, "--except-interface=nonexistent0",
		"--pid-file=", "--user=root", "--log-queries", "--log-facility="+log); err != nil {
		t.Fatal(err)
	}
	return log
}

// TestUDPListeners moves UDP services whose daemons on NEW are bound
// three ways (a wildcard without IP_PKTINFO, the migrated address, and
// dnsmasq's wildcard with IP_PKTINFO), IPv4 and IPv6, while a client
// sends a steady stream of requests from fresh connected sockets across
// apply, canary, new, back to old and rollback. A connected socket only
// takes datagrams from the address and port it sent to, so every answer
// counted came from OLD's address. No request may go unanswered; NEW's
// daemons see the client's own address; plan says how each listener is
// bound and how its answers leave; rollback restores both hosts.
func TestUDPListeners(t *testing.T) {
	needRoot(t)
	for _, tc := range tunnelTypes {
		runTunnelCase(t, tc, udpListeners)
	}
}

func udpListeners(t *testing.T, tc tunnelCase) {
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenarioFor(t, ctx, tc)
	l := s.Lab
	old4, old6 := l.OldIP.String(), l.OldIP6.String()
	for _, a := range []string{old4, old6} {
		for _, port := range []int{udpWildPort, udpBoundPort} {
			if err := s.Serve(ctx, lab.RoleOld, "old", hp(a, port), true); err != nil {
				t.Fatal(err)
			}
		}
	}
	startDNSMasq(t, s, lab.RoleOld, dnsOldAnswer)
	oldEPa, newEPa := tc.endpoints(l)
	oldEP, newEP := oldEPa.String(), newEPa.String()
	if tc.V6Underlay {
		// ip6gre cannot answer an IPv6 service on its own endpoint
		// (config refuses it): OLD's tunnel uses a second address.
		oldEP, newEP = extraOldIP6, l.NewIP6.String()
		if out, err := l.Exec(ctx, lab.RoleOld, "ip", "-6", "addr", "add", extraOldIP6+"/64", "dev", "eth0", "nodad"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tunnel := fmt.Sprintf("  type         = %q\n  old_endpoint = %q\n  new_endpoint = %q", tc.Type, oldEP, newEP)
	write := func(stage string) {
		t.Helper()
		if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, udpListenerServices(l, stage))), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The path first, then NEW's daemons: the bound one needs the
	// address, local on NEW from now on.
	write("old")
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	if err := s.Serve(ctx, lab.RoleNew, "new", fmt.Sprintf(":%d", udpWildPort), true); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{old4, old6} {
		if err := s.Serve(ctx, lab.RoleNew, "new", hp(a, udpBoundPort), true); err != nil {
			t.Fatal(err)
		}
	}
	newLog := startDNSMasq(t, s, lab.RoleNew, dnsNewAnswer)

	// plan says how each listener is bound and how its answers leave.
	write("new")
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	for _, want := range []string{
		fmt.Sprintf("NEW listens on [::]:%d (labtool), a wildcard: migrate sends its answers from %s back through OLD", udpWildPort, old4),
		fmt.Sprintf("NEW listens on [::]:%d (labtool), a wildcard: migrate sends its answers from %s back through OLD", udpWildPort, old6),
		fmt.Sprintf("NEW listens on %s:%d (labtool), the service address: its answers leave from it, back through OLD", old4, udpBoundPort),
		fmt.Sprintf("NEW listens on [%s]:%d (labtool), the service address: its answers leave from it, back through OLD", old6, udpBoundPort),
		fmt.Sprintf(":%d (dnsmasq), a wildcard: migrate sends its answers from %s back through OLD", udpDNSPort, old4),
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("plan does not say %q:\n%s", want, r.Stdout)
		}
	}

	targets := []string{hp(old4, udpWildPort), hp(old6, udpWildPort), hp(old4, udpBoundPort), hp(old6, udpBoundPort)}
	dns := []string{hp(old4, udpDNSPort), hp(old6, udpDNSPort)}
	gen := startTraffic(t, s, "old", "-by-target",
		"-udp", strings.Join(targets, ","), "-dns", strings.Join(dns, ","),
		"-dns-servers", dnsOldAnswer+"=old,"+dnsNewAnswer+"=new",
		"-udp-workers", "3", "-udp-interval", "20ms", "-timeout", scenario.Slow(3*time.Second).String(), "-max", "4m")
	phase := gen.phase
	hold := scenario.Slow(2 * time.Second)
	time.Sleep(hold)
	for _, st := range []struct{ phase, stage string }{{"canary", "canary"}, {"new", "new"}, {"back-to-old", "old"}} {
		phase(st.phase + "-switch")
		write(st.stage)
		mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
		phase(st.phase)
		time.Sleep(hold)
		if st.stage != "new" {
			continue
		}
		// NEW's daemons see the client's own address.
		c4, c6 := l.ClientIP.String(), l.ClientIP6.String()
		runProbes(t, ctx, s, []probe{
			{"wildcard v4", lab.RoleClient, []string{"dial", "-udp", hp(old4, udpWildPort)}, []string{"served-by=new peer=" + c4 + " ", "remote=" + hp(old4, udpWildPort)}},
			{"wildcard v6", lab.RoleClient, []string{"dial", "-udp", hp(old6, udpWildPort)}, []string{"served-by=new peer=" + c6 + " ", "remote=" + hp(old6, udpWildPort)}},
			{"bound v4", lab.RoleClient, []string{"dial", "-udp", hp(old4, udpBoundPort)}, []string{"served-by=new peer=" + c4 + " "}},
			{"bound v6", lab.RoleClient, []string{"dial", "-udp", hp(old6, udpBoundPort)}, []string{"served-by=new peer=" + c6 + " "}},
			{"wildcard v4, a datagram larger than the tunnel MTU both ways", lab.RoleClient, []string{"dial", "-udp", "-size", "3000", hp(old4, udpWildPort)}, []string{"served-by=new peer=" + c4 + " ", "replylen=3000"}},
		})
		logText, _ := os.ReadFile(newLog)
		for _, c := range []string{c4, c6} {
			if !strings.Contains(string(logText), "query[A] test.lab from "+c) {
				t.Errorf("NEW's dnsmasq logged no query from the client's address %s:\n%s", c, logText)
			}
		}
	}
	// UDP flows that went to NEW stay with it while conntrack remembers
	// them (30 s after the last datagram, 120 s for a port that came
	// back). rollback --all removes migrate's table first: from then on
	// their datagrams are OLD's, and OLD's daemons answer them.
	phase("rollback-switch")
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	phase("rollback")
	time.Sleep(hold)
	_, lines := gen.finish(ctx)
	all := append(append([]string{}, targets...), dns...)
	for _, p := range []struct {
		name string
		want []string // servers that must have answered each target
	}{
		{"old", []string{"old"}},
		{"canary", []string{"new"}},
		{"new", []string{"new"}},
		{"back-to-old", []string{"old"}},
		{"rollback", []string{"old"}},
	} {
		line := lines[p.name]
		if !regexp.MustCompile(`udp attempted (\d+) answered (\d+) failed 0 hung 0 `).MatchString(line) {
			t.Errorf("phase %s: a request went unanswered: %q", p.name, line)
			continue
		}
		for _, target := range all {
			for _, srv := range p.want {
				if !strings.Contains(line, target+"="+srv+":") {
					t.Errorf("phase %s: %s was never answered by %s: %q", p.name, target, srv, line)
				}
			}
		}
		if p.name == "rollback" && strings.Contains(line, "=new:") {
			t.Errorf("phase rollback: NEW still answered after rollback --all: %q", line)
		}
	}
	for _, name := range []string{"canary-switch", "new-switch", "back-to-old-switch", "rollback-switch"} {
		if line := lines[name]; !strings.Contains(line, " failed 0 hung 0 ") || strings.Contains(line, "udp attempted 0 ") {
			t.Errorf("phase %s: %q", name, line)
		}
	}
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", before, after)
}
