package kernel

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// udpEcho answers every datagram with "TAG from=<sender IP>" until the
// test ends.
func udpEcho(t *testing.T, network, addr, tag string) {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(from.String())
			reply := []byte(fmt.Sprintf("%s from=%s ", tag, host))
			for len(reply) < n {
				reply = append(reply, '.')
			}
			_, _ = pc.WriteTo(reply, from)
		}
	}()
}

// udpAsk sends one datagram of size bytes from a socket bound to local
// and connected to remote, in ns, and returns the answer's first field
// and the sender address it reported.
func udpAsk(ns netns.NsHandle, local, remote string, size int) (string, error) {
	var answer string
	err := inNS(ns, func() error {
		la, err := net.ResolveUDPAddr("udp", local)
		if err != nil {
			return err
		}
		ra, err := net.ResolveUDPAddr("udp", remote)
		if err != nil {
			return err
		}
		c, err := net.DialUDP("udp", la, ra)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(make([]byte, size)); err != nil {
			return err
		}
		buf := make([]byte, 65536)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		f := strings.Fields(string(buf[:n]))
		if len(f) < 2 {
			return fmt.Errorf("short answer %q", buf[:n])
		}
		answer = f[0] + " " + f[1]
		if n != size && size > 64 {
			return fmt.Errorf("answer of %d bytes to %d", n, size)
		}
		return nil
	})
	return answer, err
}

// udpCsumErrors reads InCsumErrors of Udp and Udp6 in ns.
func udpCsumErrors(t *testing.T, ns netns.NsHandle) int {
	t.Helper()
	total := 0
	err := inNS(ns, func() error {
		for _, f := range []string{"/proc/thread-self/net/snmp", "/proc/thread-self/net/snmp6"} {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			lines := strings.Split(string(b), "\n")
			for i, l := range lines {
				// snmp: "Udp: names" then "Udp: values"; snmp6: "Udp6InCsumErrors N".
				if strings.HasPrefix(l, "Udp6InCsumErrors") {
					n, _ := strconv.Atoi(strings.Fields(l)[1])
					total += n
				}
				if strings.HasPrefix(l, "Udp: ") && i+1 < len(lines) && strings.Contains(l, "InCsumErrors") {
					names, vals := strings.Fields(l), strings.Fields(lines[i+1])
					for j, name := range names {
						if name == "InCsumErrors" && j < len(vals) {
							n, _ := strconv.Atoi(vals[j])
							total += n
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// TestUDPAnswersFromServiceAddress plays NEW: the migrated addresses on
// lo, "from ADDR lookup 4242" into the tunnel (a veth to the client's
// namespace, which plays OLD and the client), and an uplink to a sink.
// A UDP daemon on a wildcard answers a client of the tunnel from NEW's
// own address, out of the uplink: the client never gets it. With the UDP
// answer rules its answers leave from the service address through the
// tunnel, for IPv4 and IPv6, with valid checksums (checked by a receiver
// that verifies them, the sender's offload off or on), while a daemon
// bound to the address is unaffected.
func TestUDPAnswersFromServiceAddress(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	if _, err := exec.LookPath("ethtool"); err != nil {
		t.Fatal("ethtool is needed to turn checksum offloads off (apt-get install ethtool)")
	}
	h := newHost(t)
	client, sink := newChildNS(t), newChildNS(t)
	const (
		svc4, svc6       = "198.51.100.10", "2001:db8:100::10"
		client4, client6 = "192.0.2.10", "2001:db8:1::10"
		table            = 4242
	)
	ch := vethTo(t, client, "mig0", "169.254.77.2/30", "peer0", "169.254.77.1/30")
	sh := vethTo(t, sink, "up0", "203.0.113.20/24", "sink0", "203.0.113.1/24")
	run(t, "ip", "-6", "addr", "add", "2001:db8:77::2/64", "dev", "mig0", "nodad")
	run(t, "ip", "-6", "addr", "add", "2001:db8:200::20/64", "dev", "up0", "nodad")
	addAddr := func(h *netlink.Handle, dev, cidr string, flags int) {
		t.Helper()
		l, err := h.LinkByName(dev)
		if err != nil {
			t.Fatal(err)
		}
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			t.Fatal(err)
		}
		a.Flags = flags
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatalf("addr %s dev %s: %v", cidr, dev, err)
		}
	}
	const nodad = 0x02 // IFA_F_NODAD
	addAddr(ch, "peer0", "2001:db8:77::1/64", nodad)
	addAddr(ch, "lo", client4+"/32", 0)
	addAddr(ch, "lo", client6+"/128", nodad)
	addAddr(sh, "sink0", "2001:db8:200::1/64", nodad)
	routeVia(t, ch, svc4+"/32", "169.254.77.2")
	routeVia(t, ch, svc6+"/128", "2001:db8:77::2")
	run(t, "ip", "addr", "add", svc4+"/32", "dev", "lo")
	run(t, "ip", "-6", "addr", "add", svc6+"/128", "dev", "lo", "nodad", "noprefixroute")
	run(t, "ip", "route", "add", "default", "via", "203.0.113.1")
	run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:200::1")
	run(t, "ip", "rule", "add", "pref", "1100", "from", svc4, "lookup", strconv.Itoa(table))
	run(t, "ip", "-6", "rule", "add", "pref", "1100", "from", svc6, "lookup", strconv.Itoa(table))
	run(t, "ip", "route", "add", "default", "via", "169.254.77.1", "dev", "mig0", "table", strconv.Itoa(table))
	run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:77::1", "dev", "mig0", "table", strconv.Itoa(table))
	// The client's end verifies every checksum: no offload on receive.
	if err := inNS(client, func() error {
		out, err := exec.Command("ethtool", "-K", "peer0", "rx", "off").CombinedOutput()
		if err != nil {
			return fmt.Errorf("ethtool: %v: %s", err, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	udpEcho(t, "udp", ":5005", "wildcard") // dual-stack, no IP_PKTINFO: Go's net.ListenUDP(":port")
	udpEcho(t, "udp4", svc4+":5006", "bound")
	udpEcho(t, "udp6", "["+svc6+"]:5006", "bound")
	type probe struct{ local, remote, want string }
	probes := []probe{
		{client4 + ":0", svc4 + ":5005", "wildcard from=" + client4},
		{"[" + client6 + "]:0", "[" + svc6 + "]:5005", "wildcard from=" + client6},
		{client4 + ":0", svc4 + ":5006", "bound from=" + client4},
		{"[" + client6 + "]:0", "[" + svc6 + "]:5006", "bound from=" + client6},
	}
	// Without migrate's rules: the bound daemon answers, the wildcard
	// one answers from NEW's own address into the sink.
	for _, p := range probes {
		got, err := udpAsk(client, p.local, p.remote, 8)
		if strings.HasPrefix(p.want, "bound") {
			if err != nil {
				// The first datagram of a family waits for neighbour
				// discovery on two links, which a loaded machine can
				// stretch past the 1 s deadline (seen once in a full
				// run): ask once more.
				got, err = udpAsk(client, p.local, p.remote, 8)
			}
			if err != nil || got != p.want {
				t.Fatalf("%s -> %s without migrate's rules: %q %v, want %q", p.local, p.remote, got, err, p.want)
			}
		} else if err == nil {
			t.Fatalf("%s -> %s without migrate's rules: answered %q; the test cannot see the bug", p.local, p.remote, got)
		}
	}

	spec := state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000, UDPServices: []state.NftService{
		{Addr: netip.MustParseAddr(svc4), Proto: "udp", Port: 5005}, {Addr: netip.MustParseAddr(svc4), Proto: "udp", Port: 5006},
		{Addr: netip.MustParseAddr(svc6), Proto: "udp", Port: 5005}, {Addr: netip.MustParseAddr(svc6), Proto: "udp", Port: 5006},
	}}
	apply(t, h, create(state.Object{Nft: &state.NftTable{Family: "inet", Name: "migrate", Spec: spec}}))
	if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" {
		t.Fatalf("drift right after apply: %s", f.NftDrift)
	}
	for _, offload := range []string{"on", "off"} {
		// The sender's checksum: partial (finished by mig0 in software,
		// its offload being off) or complete when the route's device
		// has no offload.
		run(t, "ethtool", "-K", "mig0", "tx", "off")
		run(t, "ethtool", "-K", "up0", "tx", offload)
		for _, p := range probes {
			for _, size := range []int{8, 3000} {
				got, err := udpAsk(client, p.local, p.remote, size)
				if err != nil || got != p.want {
					t.Errorf("uplink tx offload %s, %d bytes: %s -> %s: %q %v, want %q", offload, size, p.local, p.remote, got, err, p.want)
				}
			}
		}
	}
	if n := udpCsumErrors(t, client); n != 0 {
		t.Errorf("the client counted %d UDP checksum errors", n)
	}
	if n := chainCounter(t, h, nftables.TableFamilyINet, "migrate", nftUDPOut); n == 0 {
		t.Errorf("chain %s counted no answer", nftUDPOut)
	}
	// The map holds clients, not configuration: no drift.
	if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" {
		t.Errorf("drift after traffic: %s", f.NftDrift)
	}
	t.Logf("answers rewritten: %d", chainCounter(t, h, nftables.TableFamilyINet, "migrate", nftUDPOut))
}
