package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

const (
	extraOldIP = "198.51.100.11" // a second address on OLD, not the tunnel endpoint
	udpPort    = 5353
	udpNoSvc   = 5354 // migrated, but nothing listens on NEW: ICMP unreachable
	otherPort  = 7000
)

func hp(a string, port int) string {
	return netip.AddrPortFrom(netip.MustParseAddr(a), uint16(port)).String()
}

// dataPathServices is the plan's service blocks: IPv4 and IPv6, TCP and
// UDP, a range, two addresses on OLD, mixed stages.
func dataPathServices(l *lab.Lab, stage string) string {
	return fmt.Sprintf(`service "web" {
  address  = "%[1]s"
  protocol = "tcp"
  ports    = [8080, "8090-8091"]
  stage    = "%[4]s"
  # 8090-8091: nothing listens on NEW, to see NEW's refusal reach the client
  allow_unready = true
}

service "web6" {
  address  = "%[2]s"
  protocol = "tcp"
  ports    = [8080]
  stage    = "%[4]s"
}

service "dns" {
  address  = "%[1]s"
  protocol = "udp"
  ports    = [5353, 5354]
  stage    = "%[4]s"
  # 5354: nothing listens on NEW, to see its ICMP error reach the client
  allow_unready = true
}

service "dns6" {
  address  = "%[2]s"
  protocol = "udp"
  ports    = [5353]
  stage    = "%[4]s"
}

service "other" {
  address  = "%[3]s"
  protocol = "tcp"
  ports    = [7000]
  stage    = "%[4]s"
}

service "stay" {
  address  = "%[1]s"
  protocol = "tcp"
  ports    = [8081]
  stage    = "old"
}
`, l.OldIP, l.OldIP6, extraOldIP, stage)
}

// startDataPathServers adds OLD's second address and the servers of the
// data-path plan. NEW listens on wildcards.
func startDataPathServers(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	t.Helper()
	l := s.Lab
	if out, err := l.Exec(ctx, lab.RoleOld, "ip", "addr", "add", extraOldIP+"/24", "dev", "eth0"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, sv := range []struct {
		role, name, listen string
		udp                bool
	}{
		{lab.RoleOld, "old", hp(l.OldIP6.String(), 8080), false},
		{lab.RoleOld, "old", hp(l.OldIP.String(), udpPort), true},
		{lab.RoleOld, "old", hp(l.OldIP.String(), udpNoSvc), true},
		{lab.RoleOld, "old", hp(l.OldIP6.String(), udpPort), true},
		{lab.RoleOld, "old", hp(extraOldIP, otherPort), false},
		{lab.RoleNew, "new", fmt.Sprintf(":%d", otherPort), false},
		{lab.RoleClient, "client", hp(l.ClientIP6.String(), scenario.ClientPort), false},
	} {
		if err := s.Serve(ctx, sv.role, sv.name, sv.listen, sv.udp); err != nil {
			t.Fatal(err)
		}
	}
}

type probe struct {
	name   string
	role   string
	args   []string
	expect []string // substrings of the output; "ERR:" prefix means the command must fail with that text
}

// probeUDPPort hands each UDP probe of this test binary its own source
// port, above every ephemeral range the lab sets (Linux's default ends at
// 60999). A UDP probe on a kernel-chosen port can draw a port that a load
// generator in the same namespace used a few seconds before for the same
// service: conntrack then still holds that flow on the host that served
// it, and the probe rightly goes there (a flow is a flow until it times
// out: "established connections drain on OLD"). That is a real client
// reusing its port, not a new one, so a probe that asks "where do new
// flows go" must not reuse one. Seen once under 6.1 in the VM lane
// (TestUDPListeners/gre: ~400 of the service's flows were OLD's, a 1-2 %
// chance per probe among 28 000 ephemeral ports).
var probeUDPPort atomic.Int32

func nextProbeUDPPort() int {
	const first, last = 61000, 65000
	return first + int(probeUDPPort.Add(1)-1)%(last-first+1)
}

// withProbePort gives a UDP dial its own source port unless it names one.
func withProbePort(args []string) []string {
	if len(args) == 0 || args[0] != "dial" || !slices.Contains(args, "-udp") || slices.Contains(args, "-port") {
		return args
	}
	return append([]string{args[0], "-port", strconv.Itoa(nextProbeUDPPort())}, args[1:]...)
}

func runProbes(t *testing.T, ctx context.Context, s *scenario.Scenario, probes []probe) {
	t.Helper()
	for _, p := range probes {
		out, err := s.Labtool(ctx, 90*time.Second, p.role, withProbePort(p.args)...)
		for _, e := range p.expect {
			if msg, ok := strings.CutPrefix(e, "ERR:"); ok {
				if err == nil || !strings.Contains(out+err.Error(), msg) {
					t.Errorf("%s: want failure %q, got %v: %s", p.name, msg, err, out)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v: %s", p.name, err, out)
				break
			}
			if !strings.Contains(out, e) {
				t.Errorf("%s: output %q lacks %q", p.name, out, e)
			}
		}
		if !t.Failed() {
			t.Logf("%s: ok: %s", p.name, firstLine(out))
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// TestDataPath moves IPv4 and IPv6, TCP and UDP services on two addresses
// through a VXLAN tunnel over an IPv4 and over an IPv6 underlay, and checks
// every flow from outside: who serves it, what address the server sees,
// what address the client talks to, NEW's outbound traffic, ICMP errors,
// bulk transfers and datagrams larger than the tunnel MTU. Then rollback
// restores both hosts byte for byte.
func TestDataPath(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	for _, underlay := range []string{"ipv4", "ipv6"} {
		t.Run("vxlan-over-"+underlay, func(t *testing.T) {
			t.Logf("TUNNEL vxlan over %s underlay: running on this kernel (%s)", underlay, kernelRelease())
			dataPath(t, underlay)
		})
	}
	// OLD and NEW on one segment, no tunnel device: the same checks.
	t.Run("direct", func(t *testing.T) {
		t.Logf("TUNNEL direct (one segment, no device): running on this kernel (%s)", kernelRelease())
		dataPath(t, "direct")
	})
}

func dataPath(t *testing.T, underlay string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := newScenarioOpts(t, ctx, lab.Options{Prefix: "mge", Segment: underlay == "direct"})
	l := s.Lab
	startDataPathServers(t, ctx, s)
	typ, oldEP, newEP := "vxlan", l.OldIP.String(), l.NewIP.String()
	switch underlay {
	case "ipv6":
		oldEP, newEP = l.OldIP6.String(), l.NewIP6.String()
	case "direct":
		typ, newEP = "direct", l.NewSegIP.String()
	}
	tunnel := fmt.Sprintf("  type         = %q\n  old_endpoint = %q\n  new_endpoint = %q", typ, oldEP, newEP)
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The operator's order: build the path with every service still on
	// OLD; start NEW's UDP daemons bound to the migrated addresses (a UDP
	// server on a wildcard would answer from NEW's own address); then move.
	if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, dataPathServices(l, "old"))), 0o644); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	for _, a := range []string{l.OldIP.String(), l.OldIP6.String()} {
		if err := s.Serve(ctx, lab.RoleNew, "new", hp(a, udpPort), true); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, dataPathServices(l, "new"))), 0o644); err != nil {
		t.Fatal(err)
	}
	r := mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	t.Logf("apply:\n%s", r.Stdout)

	c4, c6 := l.ClientIP.String(), l.ClientIP6.String()
	runProbes(t, ctx, s, []probe{
		{"tcp v4 to NEW", lab.RoleClient, []string{"dial", hp(oldEP4(l), 8080)},
			[]string{"served-by=new peer=" + c4 + " ", "remote=" + hp(l.OldIP.String(), 8080)}},
		{"tcp v4 range port", lab.RoleClient, []string{"dial", hp(l.OldIP.String(), 8091)},
			[]string{"ERR:refused"}}, // migrated, nothing listens on NEW: NEW's RST comes back through OLD
		{"tcp v6 to NEW", lab.RoleClient, []string{"dial", hp(l.OldIP6.String(), 8080)},
			[]string{"served-by=new peer=" + c6 + " ", "remote=" + hp(l.OldIP6.String(), 8080)}},
		{"udp v4 to NEW", lab.RoleClient, []string{"dial", "-udp", hp(l.OldIP.String(), udpPort)},
			[]string{"served-by=new peer=" + c4 + " ", "remote=" + hp(l.OldIP.String(), udpPort)}},
		{"udp v6 to NEW", lab.RoleClient, []string{"dial", "-udp", hp(l.OldIP6.String(), udpPort)},
			[]string{"served-by=new peer=" + c6 + " ", "remote=" + hp(l.OldIP6.String(), udpPort)}},
		{"udp v4 port unreachable from NEW reaches the client", lab.RoleClient, []string{"dial", "-udp", hp(l.OldIP.String(), udpNoSvc)},
			[]string{"ERR:connection refused"}},
		{"second OLD address to NEW", lab.RoleClient, []string{"dial", hp(extraOldIP, otherPort)},
			[]string{"served-by=new peer=" + c4 + " "}},
		{"unmigrated port stays on OLD", lab.RoleClient, []string{"dial", hp(l.OldIP.String(), scenario.StayPort)},
			[]string{"served-by=old peer=" + c4 + " "}},
		{"NEW outbound from OLD_IP (v4)", lab.RoleNew, []string{"dial", "-bind", l.OldIP.String(), hp(c4, scenario.ClientPort)},
			[]string{"served-by=client peer=" + l.OldIP.String() + " "}},
		{"NEW outbound from OLD_IP (v6)", lab.RoleNew, []string{"dial", "-bind", l.OldIP6.String(), hp(c6, scenario.ClientPort)},
			[]string{"served-by=client peer=" + l.OldIP6.String() + " "}},
		{"20 MB up through the tunnel", lab.RoleClient, []string{"bulk", "-dir", "up", "-bytes", "20000000", hp(l.OldIP.String(), 8080)},
			[]string{"bulk up 20000000 bytes ok"}},
		{"20 MB down through the tunnel", lab.RoleClient, []string{"bulk", "-dir", "down", "-bytes", "20000000", hp(l.OldIP.String(), 8080)},
			[]string{"bulk down 20000000 bytes ok"}},
		{"20 MB up through the tunnel (v6)", lab.RoleClient, []string{"bulk", "-dir", "up", "-bytes", "20000000", hp(l.OldIP6.String(), 8080)},
			[]string{"bulk up 20000000 bytes ok"}},
		{"20 MB down through the tunnel (v6)", lab.RoleClient, []string{"bulk", "-dir", "down", "-bytes", "20000000", hp(l.OldIP6.String(), 8080)},
			[]string{"bulk down 20000000 bytes ok"}},
		{"UDP datagram larger than the tunnel MTU, both ways", lab.RoleClient, []string{"dial", "-udp", "-size", "3000", hp(l.OldIP.String(), udpPort)},
			[]string{"served-by=new peer=" + c4 + " ", "len=3000", "replylen=3000"}},
	})
	checkTunnelMSS(t, ctx, s, underlay)

	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "No changes") {
		t.Errorf("plan after apply:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback", before, after)
	runProbes(t, ctx, s, []probe{
		{"tcp v6 back on OLD", lab.RoleClient, []string{"dial", hp(l.OldIP6.String(), 8080)}, []string{"served-by=old peer=" + c6 + " "}},
		{"udp v4 back on OLD", lab.RoleClient, []string{"dial", "-udp", hp(l.OldIP.String(), udpPort)}, []string{"served-by=old peer=" + c4 + " "}},
	})
}

func oldEP4(l *lab.Lab) string { return l.OldIP.String() }

var mssRE = regexp.MustCompile(` mss=(\d+) `)

// checkTunnelMSS: a client of a service moved to NEW never sends a segment
// the tunnel cannot carry whole. NEW's own SYN-ACK carries the MSS of its
// route into the tunnel (the kernel's advmss: the device's MTU minus the
// IP and TCP headers); migrate's MSS clamp on NEW sees only forwarded
// SYNs (a container's) since layout 2, so this is what holds it for a
// daemon on NEW itself. The client's TCP_MAXSEG (the peer's MSS, minus
// options) plus the headers must fit the tunnel's MTU: 1450 for VXLAN
// over IPv4, 1430 over IPv6, the link's 1500 for direct.
func checkTunnelMSS(t *testing.T, ctx context.Context, s *scenario.Scenario, underlay string) {
	t.Helper()
	mtu := 1450
	switch underlay {
	case "ipv6":
		mtu = 1430
	case "direct":
		mtu = 1500
	}
	l := s.Lab
	for _, c := range []struct {
		addr    string
		headers int
	}{{hp(l.OldIP.String(), 8080), 40}, {hp(l.OldIP6.String(), 8080), 60}} {
		out, err := s.Labtool(ctx, 30*time.Second, lab.RoleClient, "dial", c.addr)
		if err != nil {
			t.Errorf("dial %s: %v: %s", c.addr, err, out)
			continue
		}
		m := mssRE.FindStringSubmatch(out)
		if m == nil {
			t.Errorf("dial %s printed no mss: %s", c.addr, out)
			continue
		}
		mss, _ := strconv.Atoi(m[1])
		if mss+c.headers > mtu || mss < 1000 {
			t.Errorf("%s: the client's MSS toward NEW is %d: with %d bytes of headers that is over the tunnel's MTU %d (or implausibly small)", c.addr, mss, c.headers, mtu)
		} else {
			t.Logf("%s: client's MSS %d + %d <= MTU %d", c.addr, mss, c.headers, mtu)
		}
	}
}
