package e2e

import (
	"context"
	"fmt"
	"os"
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
	oldEP, newEP, innerOld, innerNew := s.Lab.OldIP, s.Lab.NewIP, "169.254.42.1", "169.254.42.2"
	if tc.V6Underlay {
		oldEP, newEP = s.Lab.OldIP6, s.Lab.NewIP6
	}
	nsRun := func(role string, args ...string) string {
		t.Helper()
		ectx, cancel := context.WithTimeout(ctx, scenario.Slow(20*time.Second))
		defer cancel()
		out, err := s.Lab.Exec(ectx, role, args...)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}

	// What OLD lets through is what reaches its inner address: catch it.
	catcher, err := s.Lab.Start(lab.RoleOld, s.LabtoolBin, "forge", "-catch", fmt.Sprintf("%s:%d", innerOld, forgedInnerPort))
	if err != nil {
		t.Fatal(err)
	}
	caught := func() int {
		b, _ := os.ReadFile(s.Lab.LogPath(catcher))
		return strings.Count(string(b), "caught from=")
	}
	waitFor(t, ctx, "the catcher to listen", func() bool {
		b, _ := os.ReadFile(s.Lab.LogPath(catcher))
		return strings.Contains(string(b), "catching on")
	})

	dropped := func() int {
		t.Helper()
		out := nsRun(lab.RoleOld, "nft", "list", "chain", "inet", "migrate", "prerouting")
		m := counterRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no underlay drop counter in OLD's table:\n%s", out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	// What OLD's tunnel device receives of the forged datagrams: a
	// counter on its ingress hook, in a table of the test's own. (The
	// device's rx_packets also counts the peer's ARP and neighbour
	// traffic, which arrives at any time: one such packet failed a CI run.)
	nsRun(lab.RoleOld, "nft", "add", "table", "netdev", "forgedcheck")
	nsRun(lab.RoleOld, "nft", "add", "chain", "netdev", "forgedcheck", "in", `{ type filter hook ingress device "mig0" priority 0; }`)
	nsRun(lab.RoleOld, "nft", "add", "rule", "netdev", "forgedcheck", "in", "udp", "dport", strconv.Itoa(forgedInnerPort), "counter")
	rx := func() int {
		t.Helper()
		out := nsRun(lab.RoleOld, "nft", "list", "chain", "netdev", "forgedcheck", "in")
		m := ingressRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no ingress counter on OLD's mig0:\n%s", out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	args := []string{s.LabtoolBin, "forge", "-type", tc.Type, "-to", oldEP.String(), "-count", strconv.Itoa(forgedCount),
		"-inner-src", innerNew, "-inner-dst", innerOld, "-inner-port", strconv.Itoa(forgedInnerPort)}
	if tc.Type == "vxlan" {
		// Addressed to OLD's tunnel device, so that a frame let in
		// would be delivered, not dropped as another host's.
		m := etherRE.FindStringSubmatch(nsRun(lab.RoleOld, "ip", "-o", "link", "show", "dev", "mig0"))
		if m == nil {
			t.Fatal("no MAC address on OLD's mig0")
		}
		args = append(args, "-dst-mac", m[1])
	}

	// 1. Forged: from the client namespace, its own address as source.
	drop0, rx0 := dropped(), rx()
	out := nsRun(lab.RoleClient, args...)
	t.Logf("client (%s) -> OLD (%s), %s: %s", s.Lab.ClientIP, oldEP, tc.Type, strings.TrimSpace(out))
	waitFor(t, ctx, "the underlay drop counter", func() bool { return dropped() >= drop0+forgedCount })
	time.Sleep(scenario.Slow(500 * time.Millisecond)) // anything late would show now
	if got := dropped() - drop0; got != forgedCount {
		t.Errorf("underlay filter dropped %d forged packets, want %d", got, forgedCount)
	}
	if got := rx() - rx0; got != 0 {
		t.Errorf("OLD's mig0 received %d forged datagrams, want 0", got)
	}
	if n := caught(); n != 0 {
		t.Errorf("%s:%d caught %d forged datagrams, want 0", innerOld, forgedInnerPort, n)
	}
	t.Logf("OLD's prerouting chain (the underlay filter first) after the forgeries:\n%s", nsRun(lab.RoleOld, "nft", "list", "chain", "inet", "migrate", "prerouting"))

	// 2. The same packets from the peer's endpoint go through.
	drop1, rx1 := dropped(), rx()
	out = nsRun(lab.RoleNew, append(args, "-from", newEP.String())...)
	t.Logf("NEW (%s) -> OLD (%s), %s: %s", newEP, oldEP, tc.Type, strings.TrimSpace(out))
	waitFor(t, ctx, "the peer's datagrams at the inner address", func() bool { return caught() >= forgedCount })
	if got := dropped() - drop1; got != 0 {
		t.Errorf("underlay filter dropped %d of the peer's packets, want 0", got)
	}
	if got := rx() - rx1; got < forgedCount {
		t.Errorf("OLD's mig0 received %d of the peer's datagrams, want %d", got, forgedCount)
	}
	b, _ := os.ReadFile(s.Lab.LogPath(catcher))
	t.Logf("TUNNEL %s: forged packets from a third party dropped and counted (%d/%d), the peer's delivered (%d/%d)",
		tc.Name, forgedCount, forgedCount, caught(), forgedCount)
	t.Logf("catcher on OLD:\n%s", b)
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
