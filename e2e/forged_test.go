package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// forgedTypes are the tunnel types of TestForgedPackets: the ones without
// authentication, whose receiving end would take packets from anyone.
var forgedTypes = []tunnelCase{
	{Name: "vxlan", Type: "vxlan"},
	{Name: "gre", Type: "gre"},
}

const (
	forgedCount     = 5
	forgedInnerPort = 7999
)

// TestForgedPackets proves that only the peer may inject into the tunnel.
// With the lab migrated, the client namespace (a third party: neither
// OLD nor NEW) sends forged encapsulated packets to OLD's tunnel endpoint
// (VXLAN: UDP to port 4789 carrying an Ethernet/IPv4 frame for OLD's
// tunnel device; GRE: IP protocol 47), each holding a UDP datagram for
// OLD's inner address. migrate's underlay filter on OLD must drop and count
// every one: its counter in `nft list chain inet migrate input` grows by
// exactly the number sent, the tunnel device receives nothing and a
// listener on the inner address catches nothing. Then the very same
// packets, sent from NEW's namespace with NEW's endpoint as source, do
// reach the listener: the forgeries were well-formed, only their source
// was wrong.
func TestForgedPackets(t *testing.T) {
	needRoot(t)
	for _, tc := range forgedTypes {
		runTunnelCase(t, tc, forgedPackets)
	}
}

var (
	// The underlay filter's rule (the first of OLD's chain prerouting):
	// "... ip saddr != EP_NEW counter packets N bytes B drop".
	counterRE = regexp.MustCompile(`saddr != \S+ counter packets (\d+) bytes \d+ drop`)
	etherRE   = regexp.MustCompile(`link/ether ([0-9a-f:]{17})`)
	ingressRE = regexp.MustCompile(`udp dport \d+ counter packets (\d+) bytes`)
)

func forgedPackets(t *testing.T, tc tunnelCase) {
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	if err := writeTunnelPlan(s, tc, "new"); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	oldEP, newEP := s.Lab.OldIP, s.Lab.NewIP
	if tc.V6Underlay {
		oldEP, newEP = s.Lab.OldIP6, s.Lab.NewIP6
	}
	p := newUnderlayProbe(t, ctx, s, tc.Type, oldEP)

	// 1. Forged: from the client namespace, its own address as source.
	out := p.expectDropped(lab.RoleClient, netip.Addr{})
	t.Logf("client (%s) -> OLD (%s), %s: %s", s.Lab.ClientIP, oldEP, tc.Type, out)
	t.Logf("OLD's prerouting chain (the underlay filter first) after the forgeries:\n%s", p.run(lab.RoleOld, "nft", "list", "chain", "inet", "migrate", "prerouting"))

	// 2. The same packets from the peer's endpoint go through.
	out = p.expectDelivered(lab.RoleNew, newEP)
	t.Logf("NEW (%s) -> OLD (%s), %s: %s", newEP, oldEP, tc.Type, out)
	t.Logf("TUNNEL %s: forged packets from a third party dropped and counted (%d/%d), the peer's delivered (%d/%d)",
		tc.Name, forgedCount, forgedCount, p.caught(), forgedCount)
	t.Logf("catcher on OLD:\n%s", s.LogText(p.catcher))
}

// underlayProbe sends forged tunnel packets at OLD's endpoint and counts,
// on OLD, what the underlay filter drops (its rule's counter), what OLD's
// tunnel device receives of them (an ingress counter in a table of the
// test's own) and what reaches a listener on OLD's inner address.
type underlayProbe struct {
	t       *testing.T
	ctx     context.Context
	s       *scenario.Scenario
	args    []string // labtool forge ..., without -from
	catcher *exec.Cmd
}

// newUnderlayProbe starts the catcher on OLD's inner address and the
// ingress counter on OLD's mig0, for tunnel type typ whose OLD endpoint
// is oldEP.
func newUnderlayProbe(t *testing.T, ctx context.Context, s *scenario.Scenario, typ string, oldEP netip.Addr) *underlayProbe {
	t.Helper()
	innerOld, innerNew := "169.254.42.1", "169.254.42.2"
	p := &underlayProbe{t: t, ctx: ctx, s: s}
	// What OLD lets through is what reaches its inner address: catch it.
	catcher, err := s.Lab.Start(lab.RoleOld, s.LabtoolBin, "forge", "-catch", fmt.Sprintf("%s:%d", innerOld, forgedInnerPort))
	if err != nil {
		t.Fatal(err)
	}
	p.catcher = catcher
	waitFor(t, ctx, "the catcher to listen", func() bool {
		return strings.Contains(s.LogText(catcher), "catching on")
	})
	// What OLD's tunnel device receives of the forged datagrams: a
	// counter on its ingress hook, in a table of the test's own. (The
	// device's rx_packets also counts the peer's ARP and neighbour
	// traffic, which arrives at any time: one such packet failed a CI run.)
	p.run(lab.RoleOld, "nft", "add", "table", "netdev", "forgedcheck")
	p.run(lab.RoleOld, "nft", "add", "chain", "netdev", "forgedcheck", "in", `{ type filter hook ingress device "mig0" priority 0; }`)
	p.run(lab.RoleOld, "nft", "add", "rule", "netdev", "forgedcheck", "in", "udp", "dport", strconv.Itoa(forgedInnerPort), "counter")
	p.args = []string{s.LabtoolBin, "forge", "-type", typ, "-to", oldEP.String(), "-count", strconv.Itoa(forgedCount),
		"-inner-src", innerNew, "-inner-dst", innerOld, "-inner-port", strconv.Itoa(forgedInnerPort)}
	if typ == "vxlan" {
		// Addressed to OLD's tunnel device, so that a frame let in
		// would be delivered, not dropped as another host's.
		m := etherRE.FindStringSubmatch(p.run(lab.RoleOld, "ip", "-o", "link", "show", "dev", "mig0"))
		if m == nil {
			t.Fatal("no MAC address on OLD's mig0")
		}
		p.args = append(p.args, "-dst-mac", m[1])
	}
	return p
}

// run runs args in role's namespace, bounded, and returns the output.
func (p *underlayProbe) run(role string, args ...string) string {
	p.t.Helper()
	ectx, cancel := context.WithTimeout(p.ctx, scenario.Slow(20*time.Second))
	defer cancel()
	out, err := p.s.Lab.Exec(ectx, role, args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return string(out)
}

// caught counts the datagrams that reached OLD's inner address.
func (p *underlayProbe) caught() int {
	return strings.Count(p.s.LogText(p.catcher), "caught from=")
}

// dropped is the underlay filter's drop counter on OLD.
func (p *underlayProbe) dropped() int {
	p.t.Helper()
	out := p.run(lab.RoleOld, "nft", "list", "chain", "inet", "migrate", "prerouting")
	m := counterRE.FindStringSubmatch(out)
	if m == nil {
		p.t.Fatalf("no underlay drop counter in OLD's table:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// rx counts the forged datagrams OLD's mig0 received.
func (p *underlayProbe) rx() int {
	p.t.Helper()
	out := p.run(lab.RoleOld, "nft", "list", "chain", "netdev", "forgedcheck", "in")
	m := ingressRE.FindStringSubmatch(out)
	if m == nil {
		p.t.Fatalf("no ingress counter on OLD's mig0:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// send sends forgedCount packets from role's namespace, from the outer
// source address from (the kernel's choice when invalid).
func (p *underlayProbe) send(role string, from netip.Addr) string {
	p.t.Helper()
	args := p.args
	if from.IsValid() {
		args = append(append([]string(nil), args...), "-from", from.String())
	}
	return strings.TrimSpace(p.run(role, args...))
}

// expectDropped sends from role (see send) and wants every packet dropped
// and counted by OLD's underlay filter, none at OLD's mig0 or inner
// address.
func (p *underlayProbe) expectDropped(role string, from netip.Addr) string {
	p.t.Helper()
	drop0, rx0, caught0 := p.dropped(), p.rx(), p.caught()
	out := p.send(role, from)
	waitFor(p.t, p.ctx, "the underlay drop counter", func() bool { return p.dropped() >= drop0+forgedCount })
	time.Sleep(scenario.Slow(500 * time.Millisecond)) // anything late would show now
	if got := p.dropped() - drop0; got != forgedCount {
		p.t.Errorf("underlay filter dropped %d forged packets, want %d", got, forgedCount)
	}
	if got := p.rx() - rx0; got != 0 {
		p.t.Errorf("OLD's mig0 received %d forged datagrams, want 0", got)
	}
	if n := p.caught() - caught0; n != 0 {
		p.t.Errorf("OLD's inner address caught %d forged datagrams, want 0", n)
	}
	return out
}

// expectDelivered sends from role (see send) and wants every packet
// through OLD's underlay filter, at OLD's mig0 and its inner address.
func (p *underlayProbe) expectDelivered(role string, from netip.Addr) string {
	p.t.Helper()
	drop0, rx0, caught0 := p.dropped(), p.rx(), p.caught()
	out := p.send(role, from)
	waitFor(p.t, p.ctx, "the peer's datagrams at the inner address", func() bool { return p.caught() >= caught0+forgedCount })
	if got := p.dropped() - drop0; got != 0 {
		p.t.Errorf("underlay filter dropped %d of the peer's packets, want 0", got)
	}
	if got := p.rx() - rx0; got < forgedCount {
		p.t.Errorf("OLD's mig0 received %d of the peer's datagrams, want %d", got, forgedCount)
	}
	return out
}

// waitFor polls cond until it holds, failing the test after a while.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(scenario.Slow(10 * time.Second))
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
