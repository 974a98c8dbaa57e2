package kernel

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNS runs f on a thread switched into ns. The thread stays locked, so it
// is discarded when f returns and never serves other goroutines.
func inNS(ns netns.NsHandle, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	return <-done
}

// newChildNS creates a network namespace without a name; it lives as long
// as the returned handle is open.
func newChildNS(t *testing.T) netns.NsHandle {
	t.Helper()
	ch := make(chan netns.NsHandle, 1)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := netns.New()
		if err != nil {
			errc <- err
			return
		}
		ch <- ns
	}()
	select {
	case ns := <-ch:
		t.Cleanup(func() { ns.Close() })
		return ns
	case err := <-errc:
		t.Fatalf("new netns: %v", err)
	}
	return 0
}

func echoServer(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(l)); err != nil {
						return
					}
				}
			}()
		}
	}()
}

func roundTrip(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return err
	}
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(l) != msg {
		return errors.New("echo mismatch: " + l)
	}
	return nil
}

// TestMarkPacketPath sends real TCP from a client namespace to OLD (the
// test's namespace) and checks that only new flows to a moved service,
// starting with a bare SYN, get the mark: a flow established before the
// table existed stays local (conntrack picks it up mid-stream as "new").
// The mark is made visible by routing marked packets to an unreachable
// route, so a marked SYN fails with EHOSTUNREACH.
func TestMarkPacketPath(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	client := newChildNS(t)

	// OLD side cl0 192.0.2.1/24 <-> client side eth0 192.0.2.2/24.
	veth := netlink.NewVeth(netlink.LinkAttrs{Name: "cl0"})
	veth.PeerName = "eth0"
	veth.PeerNamespace = netlink.NsFd(int(client))
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "cl0")
	run(t, "ip", "link", "set", "cl0", "up")
	ch, err := netlink.NewHandleAt(client)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := ch.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if name == "eth0" {
			a, _ := netlink.ParseAddr("192.0.2.2/24")
			if err := ch.AddrAdd(l, a); err != nil {
				t.Fatal(err)
			}
			_, def, _ := net.ParseCIDR("0.0.0.0/0")
			if err := ch.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: def, Gw: net.ParseIP("192.0.2.1")}); err != nil {
				t.Fatal(err)
			}
		}
	}

	const svc = "198.51.100.10"
	apply(t, h, create(state.Object{Addr: &state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix(svc + "/32")}}))
	echoServer(t, svc+":8080")
	echoServer(t, svc+":8081")
	dial := func(port string) (net.Conn, error) {
		var c net.Conn
		err := inNS(client, func() error {
			var err error
			c, err = net.DialTimeout("tcp", svc+":"+port, 2*time.Second)
			return err
		})
		return c, err
	}

	// A flow established before migrate's table exists.
	early, err := dial("8080")
	if err != nil {
		t.Fatalf("early dial: %v", err)
	}
	defer early.Close()
	if err := roundTrip(early, "before"); err != nil {
		t.Fatal(err)
	}

	// OLD's policy routing: local rule moved behind the fwmark rule,
	// marked packets to an unreachable route.
	var local state.Rule
	for _, r := range facts(t, h, state.FactsRequest{}).Rules {
		if r.Family == 4 && r.Priority == 0 && r.Table == state.TableLocal {
			local = r
		}
	}
	for _, s := range []state.Step{
		// As on a real OLD; without forwarding the kernel also drops
		// packets routed to "unreachable" without an ICMP error.
		update(state.Object{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: "0"}},
			state.Object{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}}),
		create(state.Object{Rule: &state.Rule{Family: 4, Priority: 1000, Table: state.TableLocal}}),
		del(state.Object{Rule: &local}),
		create(state.Object{Rule: &state.Rule{Family: 4, Priority: 900, Mark: 0x20000, Mask: 0x20000, Table: 100}}),
		create(state.Object{Route: &state.Route{Family: 4, Table: 100, Type: "unreachable", Dst: netip.MustParsePrefix("0.0.0.0/0")}}),
		create(state.Object{Nft: &state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{
			Role: "old", TunnelDev: "mig0", Mark: 0x20000,
			Services: []state.NftService{{Addr: netip.MustParseAddr(svc), Proto: "tcp", Port: 8080, Percent: 100}},
		}}}),
	} {
		apply(t, h, s)
	}

	// The early flow is picked up mid-stream; its packets are not bare
	// SYNs, so it stays on OLD.
	if err := roundTrip(early, "after"); err != nil {
		t.Fatalf("established flow broken by the table: %v", err)
	}
	// A new flow to the moved service is marked, so it hits the
	// unreachable route.
	c, err := dial("8080")
	if err == nil {
		c.Close()
		t.Fatalf("new flow to the moved service was not marked")
	}
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("new flow to the moved service: %v (want EHOSTUNREACH)", err)
	}
	// A new flow to another port is untouched.
	c, err = dial("8081")
	if err != nil {
		t.Fatalf("flow to an unmoved port: %v", err)
	}
	if err := roundTrip(c, "other"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	out := run(t, "nft", "list", "chain", "inet", "migrate", "prerouting")
	t.Logf("%s", out)
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "@svc4") && strings.Contains(l, "counter packets 0 ") {
			t.Errorf("service counter did not count: %s", l)
		}
	}
}
