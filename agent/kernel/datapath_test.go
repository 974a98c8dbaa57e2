package kernel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// nsHandle is a netlink handle for ns, closed when the test ends.
func nsHandle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// vethTo joins the test's namespace (dev, cidr) and ns (peer, peerCIDR)
// with a veth pair; both ends and ns's lo are up. It returns a handle for
// ns.
func vethTo(t *testing.T, ns netns.NsHandle, dev, cidr, peer, peerCIDR string) *netlink.Handle {
	t.Helper()
	veth := netlink.NewVeth(netlink.LinkAttrs{Name: dev})
	veth.PeerName = peer
	veth.PeerNamespace = netlink.NsFd(int(ns))
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s: %v", dev, err)
	}
	run(t, "ip", "addr", "add", cidr, "dev", dev)
	run(t, "ip", "link", "set", dev, "up")
	ch := nsHandle(t, ns)
	for _, name := range []string{"lo", peer} {
		l, err := ch.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if name == peer {
			a, err := netlink.ParseAddr(peerCIDR)
			if err != nil {
				t.Fatal(err)
			}
			if err := ch.AddrAdd(l, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	return ch
}

// routeVia adds a route to dst via gw in the namespace of ch.
func routeVia(t *testing.T, ch *netlink.Handle, dst, gw string) {
	t.Helper()
	_, d, err := net.ParseCIDR(dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.RouteAdd(&netlink.Route{Dst: d, Gw: net.ParseIP(gw)}); err != nil {
		t.Fatalf("route %s via %s: %v", dst, gw, err)
	}
}

// tagServer is a TCP server in ns (0: the test's namespace) that answers
// each line with tag + ":" + line, and counts connections.
func tagServer(t *testing.T, ns netns.NsHandle, addr, tag string) *atomic.Int64 {
	t.Helper()
	var ln net.Listener
	listen := func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}
	var err error
	if ns == 0 {
		err = listen()
	} else {
		err = inNS(ns, listen)
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	n := &atomic.Int64{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(tag + ":" + l)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return n
}

// ask sends msg and returns the tag of the server that answered.
func ask(c net.Conn, msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	tag, got, ok := strings.Cut(strings.TrimSpace(l), ":")
	if !ok || got != msg {
		return "", errors.New("bad answer " + l)
	}
	return tag, nil
}

// chainCounter sums the counters of the rules of a chain.
func chainCounter(t *testing.T, h *Host, fam nftables.TableFamily, table, chain string) (packets uint64) {
	t.Helper()
	cc, err := h.NewNft()
	if err != nil {
		t.Fatal(err)
	}
	tb := &nftables.Table{Family: fam, Name: table}
	rules, err := cc.GetRules(tb, &nftables.Chain{Name: chain, Table: tb})
	if err != nil {
		t.Fatalf("rules of %s: %v", chain, err)
	}
	for _, r := range rules {
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Counter); ok {
				packets += c.Packets
			}
		}
	}
	return packets
}

func sysctl(t *testing.T, h *Host, name, value string) {
	t.Helper()
	if err := h.writeSysctl(name, value); err != nil {
		t.Fatal(err)
	}
}

// TestCanaryAndDrain builds OLD (the test's namespace), a client and NEW
// (behind a veth standing in for the tunnel, mig0) and sends real TCP:
//   - at 30 %, roughly 30 % of 200 new flows go to NEW, exactly those the
//     canary chain marked, and the per-service counters count them;
//   - a flow established before the table stays on OLD;
//   - a flow that went to NEW keeps going there (ct mark -> meta mark)
//     after the service moves back to OLD, while new flows stay on OLD;
//   - NEW's own outbound flow through the tunnel gets its replies back.
func TestCanaryAndDrain(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	client, newNS := newChildNS(t), newChildNS(t)
	const svc, mark = "198.51.100.10", 0x20000
	ch := vethTo(t, client, "cl0", "192.0.2.1/24", "eth0", "192.0.2.2/24")
	routeVia(t, ch, "0.0.0.0/0", "192.0.2.1")
	nh := vethTo(t, newNS, "mig0", "169.254.77.1/30", "nt0", "169.254.77.2/30")
	routeVia(t, nh, "0.0.0.0/0", "169.254.77.1")
	lo, err := nh.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := netlink.ParseAddr(svc + "/32")
	if err := nh.AddrAdd(lo, a); err != nil {
		t.Fatal(err)
	}

	// OLD's side of the data path, as the planner builds it.
	sysctl(t, h, "net.ipv4.ip_forward", "1")
	sysctl(t, h, "net.ipv4.conf.mig0.accept_local", "1")
	var local state.Rule
	for _, r := range facts(t, h, state.FactsRequest{}).Rules {
		if r.Family == 4 && r.Priority == 0 && r.Table == state.TableLocal {
			local = r
		}
	}
	for _, s := range []state.Step{
		create(state.Object{Addr: &state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix(svc + "/32")}}),
		create(state.Object{Rule: &state.Rule{Family: 4, Priority: 1000, Table: state.TableLocal}}),
		del(state.Object{Rule: &local}),
		create(state.Object{Rule: &state.Rule{Family: 4, Priority: 900, Mark: mark, Mask: mark, Table: 100}}),
		create(state.Object{Route: &state.Route{Family: 4, Table: 100, Type: "unicast", Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "mig0", Gw: netip.MustParseAddr("169.254.77.2")}}),
	} {
		apply(t, h, s)
	}
	oldN := tagServer(t, 0, svc+":8080", "old")
	newN := tagServer(t, newNS, svc+":8080", "new")
	dial := func() (net.Conn, error) {
		var c net.Conn
		err := inNS(client, func() (err error) {
			c, err = net.DialTimeout("tcp", svc+":8080", 2*time.Second)
			return err
		})
		return c, err
	}
	// A flow established before migrate's table exists.
	early, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	if tag, err := ask(early, "early"); err != nil || tag != "old" {
		t.Fatalf("early flow: %q %v", tag, err)
	}

	key := state.NftService{Addr: netip.MustParseAddr(svc), Proto: "tcp", Port: 8080}
	canary := key
	canary.Percent = 30
	tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{
		Role: "old", TunnelDev: "mig0", Mark: mark,
		Services: []state.NftService{canary}, Accounted: []state.NftService{key},
	}}
	apply(t, h, create(state.Object{Nft: &tbl}))
	if tag, err := ask(early, "still"); err != nil || tag != "old" {
		t.Fatalf("early flow after the table: %q %v", tag, err)
	}

	// Canary: 200 new flows.
	const flows = 200
	toNew := 0
	err = inNS(client, func() error {
		for i := 0; i < flows; i++ {
			c, err := net.DialTimeout("tcp", svc+":8080", 2*time.Second)
			if err != nil {
				return fmt.Errorf("flow %d: %w", i, err)
			}
			tag, err := ask(c, fmt.Sprint("flow", i))
			c.Close()
			if err != nil {
				return fmt.Errorf("flow %d: %w", i, err)
			}
			if tag == "new" {
				toNew++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	marked := chainCounter(t, h, nftables.TableFamilyINet, "migrate", "canary_30")
	t.Logf("canary 30%%: %d of %d flows went to NEW (NEW accepted %d, OLD %d), canary chain marked %d", toNew, flows, newN.Load(), oldN.Load(), marked)
	// Binomial(200, 0.3): mean 60, sd 6.5; the bounds are ~4.5 sd away.
	if toNew < 30 || toNew > 90 {
		t.Errorf("%d of %d flows went to NEW at 30%%", toNew, flows)
	}
	if int(marked) != toNew || newN.Load() != int64(toNew) {
		t.Errorf("canary chain marked %d, NEW accepted %d, clients saw %d", marked, newN.Load(), toNew)
	}
	f := facts(t, h, state.FactsRequest{NftTable: "migrate", Flows: []state.NftService{key}, Mark: mark})
	if f.NftDrift != "" || f.Stats == nil {
		t.Fatalf("facts: drift %q stats %+v", f.NftDrift, f.Stats)
	}
	c := f.Stats.Counters[key.Key()]
	t.Logf("counters %+v, flows %+v", c, f.Stats.Flows)
	// Each flow to NEW: SYN, ACK, data, FIN, ACK at least go through mig0.
	if c.NewFlows != uint64(toNew) || c.Packets < 4*uint64(toNew) || c.Bytes < 40*c.Packets {
		t.Errorf("counter of %s: %+v, want %d new flows", key.Key(), c, toNew)
	}
	if fc := f.Stats.Flows[key.Key()]; fc.Total < flows+1 || fc.ToNew != toNew || fc.Established < 1 {
		// The early flow is established; the others are closing or closed.
		t.Errorf("conntrack counts of %s: %+v", key.Key(), fc)
	}

	// Drain: a flow to NEW stays on NEW when the service moves back.
	full := canary
	full.Percent = 100
	tbl100 := tbl
	tbl100.Spec.Services = []state.NftService{full}
	apply(t, h, update(state.Object{Nft: &tbl}, state.Object{Nft: &tbl100}))
	onNew, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer onNew.Close()
	if tag, err := ask(onNew, "to-new"); err != nil || tag != "new" {
		t.Fatalf("flow at 100%%: %q %v", tag, err)
	}
	if tag, err := ask(early, "early-again"); err != nil || tag != "old" {
		t.Fatalf("early flow at 100%%: %q %v", tag, err)
	}
	back := tbl
	back.Spec.Services = nil // stage old, still accounted: draining
	apply(t, h, update(state.Object{Nft: &tbl100}, state.Object{Nft: &back}))
	for i := 0; i < 3; i++ {
		if tag, err := ask(onNew, fmt.Sprint("draining", i)); err != nil || tag != "new" {
			t.Fatalf("draining flow after the move back: %q %v", tag, err)
		}
	}
	c2, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	if tag, err := ask(c2, "after"); err != nil || tag != "old" {
		t.Fatalf("new flow after the move back: %q %v", tag, err)
	}
	c2.Close()
	f = facts(t, h, state.FactsRequest{NftTable: "migrate", Flows: []state.NftService{key}, Mark: mark})
	if fc := f.Stats.Flows[key.Key()]; fc.ToNew < 1 || fc.Established < 2 {
		t.Errorf("conntrack counts while draining: %+v", fc)
	}

	// NEW's own outbound flow from the service address, through the
	// tunnel: OLD marks it, so the replies go back to NEW.
	tagServer(t, client, "192.0.2.2:7000", "client")
	err = inNS(newNS, func() error {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(svc)}}
		c, err := d.Dial("tcp", "192.0.2.2:7000")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = ask(c, "outbound")
		return err
	})
	if err != nil {
		t.Fatalf("NEW's outbound flow: %v", err)
	}
}

// vxlanFrame is a VXLAN header for vni and an inner Ethernet frame
// carrying an ARP request.
func vxlanFrame(vni uint32) []byte {
	b := make([]byte, 8, 8+14+28)
	b[0] = 0x08
	binary.BigEndian.PutUint32(b[4:], vni<<8)
	b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x99, 0x08, 0x06)
	arp := make([]byte, 28)
	copy(arp, []byte{0, 1, 8, 0, 6, 4, 0, 1, 0x02, 0, 0, 0, 0, 0x99, 169, 254, 9, 9})
	copy(arp[24:], []byte{169, 254, 9, 1})
	return append(b, arp...)
}

// TestUnderlayFilter forges VXLAN packets from a third namespace to the
// host's VXLAN port: without the filter the tunnel device takes them in;
// with it they are dropped and counted, while the peer's still arrive.
func TestUnderlayFilter(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	peer, attacker := newChildNS(t), newChildNS(t)
	vethTo(t, peer, "u0", "192.0.2.1/24", "eth0", "192.0.2.2/24")
	ah := vethTo(t, attacker, "u1", "203.0.113.1/24", "eth0", "203.0.113.2/24")
	routeVia(t, ah, "192.0.2.0/24", "203.0.113.1")
	apply(t, h, create(state.Object{Link: &state.Link{Name: "mig0", Type: "vxlan", Local: netip.MustParseAddr("192.0.2.1"), Remote: netip.MustParseAddr("192.0.2.2"), VNI: 42, Port: 4789, MTU: 1450, Up: true}}))

	rx := func() uint64 {
		l, err := netlink.LinkByName("mig0")
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Statistics.RxPackets
	}
	send := func(ns netns.NsHandle, n int) {
		t.Helper()
		err := inNS(ns, func() error {
			c, err := net.Dial("udp", "192.0.2.1:4789")
			if err != nil {
				return err
			}
			defer c.Close()
			for i := 0; i < n; i++ {
				if _, err := c.Write(vxlanFrame(42)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// expectRx waits for the device's receive counter to reach want.
	expectRx := func(want uint64, what string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for rx() < want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // and not beyond
		if got := rx(); got != want {
			t.Fatalf("%s: mig0 received %d packets, want %d", what, got, want)
		}
	}
	base := rx()
	send(attacker, 3)
	expectRx(base+3, "forged packets without the filter")
	send(peer, 2)
	expectRx(base+5, "peer's packets without the filter")

	// The filter where each table has it: NEW's chain input alone, NEW's
	// chain input shared with udp_in's rules, OLD's chain prerouting.
	underlay := &state.NftUnderlay{Proto: "udp", Port: 4789, Local: netip.MustParseAddr("192.0.2.1"), Peer: netip.MustParseAddr("192.0.2.2")}
	for _, c := range []struct {
		name string
		spec state.NftSpec
	}{
		{"new", state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000, Underlay: underlay}},
		{"new with udp answers", state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000, Underlay: underlay,
			UDPServices: []state.NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 53}}}},
		{"old", state.NftSpec{Role: "old", TunnelDev: "mig0", Mark: 0x20000, Underlay: underlay}},
	} {
		tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: c.spec}
		apply(t, h, create(state.Object{Nft: &tbl}))
		send(attacker, 5)
		send(peer, 2)
		base += 2
		expectRx(base+5, c.name+": with the filter")
		f := facts(t, h, state.FactsRequest{NftTable: "migrate"})
		if f.NftDrift != "" || f.Stats == nil {
			t.Fatalf("%s: facts: drift %q stats %+v", c.name, f.NftDrift, f.Stats)
		}
		if d := f.Stats.UnderlayDropped; d.Packets != 5 || d.Bytes != 5*(20+8+uint64(len(vxlanFrame(42)))) {
			t.Errorf("%s: underlay dropped %+v, want 5 packets", c.name, d)
		}
		t.Logf("%s: underlay dropped %+v", c.name, f.Stats.UnderlayDropped)
		apply(t, h, del(state.Object{Nft: &tbl}))
	}
}

// neighState returns the state of ip's neighbour entry on dev in ch's
// namespace (0: none).
func neighState(t *testing.T, ch *netlink.Handle, dev, ip string) int {
	t.Helper()
	l, err := ch.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := ch.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.IP.Equal(net.ParseIP(ip)) {
			return n.State
		}
	}
	return 0
}

// TestNoARP: NEW (the test's namespace) holds the service address on lo.
// Without migrate's arp table it answers ARP for it on its uplink; with
// it, a neighbour on the uplink cannot resolve the address (its TCP
// connect times out instead of being refused), while NEW's own uplink
// address still resolves.
func TestNoARP(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	nb := newChildNS(t)
	ch := vethTo(t, nb, "up0", "192.0.2.1/24", "eth0", "192.0.2.2/24")
	const svc = "198.51.100.10"
	apply(t, h, create(state.Object{Addr: &state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix(svc + "/32")}}))
	eth0, err := ch.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	_, dst, _ := net.ParseCIDR(svc + "/32")
	if err := ch.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	// connect from the neighbour to ip, port 9 (nobody listens): refused
	// when ARP resolves, a timeout when it does not.
	connect := func(ip string) error {
		return inNS(nb, func() error {
			c, err := net.DialTimeout("tcp", ip+":9", 1500*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	flush := func() {
		ns, _ := ch.NeighList(eth0.Attrs().Index, netlink.FAMILY_V4)
		for _, n := range ns {
			n := n
			_ = ch.NeighDel(&n)
		}
	}
	resolved := func(s int) bool {
		return s&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE) != 0
	}

	if err := connect(svc); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("without the arp table: %v (want connection refused)", err)
	}
	if s := neighState(t, ch, "eth0", svc); !resolved(s) {
		t.Fatalf("without the arp table, neighbour state %#x", s)
	}

	tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000,
		NoARP: []netip.Addr{netip.MustParseAddr(svc)}}}
	apply(t, h, create(state.Object{Nft: &tbl}))
	flush()
	if err := connect(svc); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("with the arp table: %v (want a timeout)", err)
	}
	if s := neighState(t, ch, "eth0", svc); resolved(s) || s&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
		t.Fatalf("with the arp table, neighbour state %#x", s)
	}
	if err := connect("192.0.2.1"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("NEW's own address with the arp table: %v", err)
	}
	if n := chainCounter(t, h, nftables.TableFamilyARP, "migrate", "input"); n == 0 {
		t.Errorf("arp drop counter is 0")
	}
	f := facts(t, h, state.FactsRequest{NftTable: "migrate"})
	if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(state.Object{Nft: &tbl}) {
		t.Fatalf("facts: %v drift %q", f.Nft, f.NftDrift)
	}

	// The arp table is part of what facts verify.
	run(t, "nft", "delete", "table", "arp", "migrate")
	f = facts(t, h, state.FactsRequest{NftTable: "migrate"})
	if !strings.Contains(f.NftDrift, "table arp migrate is missing") {
		t.Fatalf("drift without the arp table: %q", f.NftDrift)
	}
	apply(t, h, update(state.Object{Nft: f.Nft}, state.Object{Nft: &tbl}))
	run(t, "nft", "add", "element", "arp", "migrate", "noarp", "{ 192.0.2.99 }")
	if f := facts(t, h, state.FactsRequest{NftTable: "migrate"}); !strings.Contains(f.NftDrift, "noarp has 2 elements") {
		t.Fatalf("drift with an extra no-ARP address: %q", f.NftDrift)
	}
	// The inet table gone, the arp table left: still migrate's, drifted.
	run(t, "nft", "delete", "table", "inet", "migrate")
	f = facts(t, h, state.FactsRequest{NftTable: "migrate"})
	if f.Nft == nil || !strings.Contains(f.NftDrift, "table inet migrate is missing") {
		t.Fatalf("drift without the inet table: %v %q", f.Nft, f.NftDrift)
	}
	apply(t, h, update(state.Object{Nft: f.Nft}, state.Object{Nft: &tbl}))

	// Without NoARP, the arp table goes, in the same transaction.
	plain := tbl
	plain.Spec.NoARP = nil
	apply(t, h, update(state.Object{Nft: &tbl}, state.Object{Nft: &plain}))
	if out := run(t, "nft", "list", "ruleset"); strings.Contains(out, "table arp") || !strings.Contains(out, "table inet migrate") {
		t.Fatalf("after dropping NoARP:\n%s", out)
	}
	flush()
	if err := connect(svc); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("after dropping NoARP: %v (want connection refused)", err)
	}
	apply(t, h, update(state.Object{Nft: &plain}, state.Object{Nft: &tbl}))
	apply(t, h, del(state.Object{Nft: &tbl}))
	if out := run(t, "nft", "list", "ruleset"); strings.Contains(out, "migrate") {
		t.Fatalf("after delete:\n%s", out)
	}
}

// TestFlowCounts counts conntrack entries of real flows over lo: TCP
// flows from before migrate's table (picked up mid-stream, unmarked) and
// after it (marked), UDP flows with and without the ASSURED bit.
func TestFlowCounts(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	const svc, mark = "198.51.100.10", 0x20000
	apply(t, h, create(state.Object{Addr: &state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix(svc + "/32")}}))
	tagServer(t, 0, svc+":8080", "s")
	uc, err := net.ListenPacket("udp", svc+":5353")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = uc.WriteTo(buf[:n], from)
		}
	}()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	open := func(n int) {
		for i := 0; i < n; i++ {
			c, err := net.DialTimeout("tcp", svc+":8080", time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ask(c, "x"); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
	}
	open(2) // before conntrack runs here
	tcp := state.NftService{Addr: netip.MustParseAddr(svc), Proto: "tcp", Port: 8080}
	udp := state.NftService{Addr: netip.MustParseAddr(svc), Proto: "udp", Port: 5353}
	other := state.NftService{Addr: netip.MustParseAddr("2001:db8::10"), Proto: "tcp", Port: 25}
	tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{Role: "old", TunnelDev: "mig0", Mark: mark,
		Services: []state.NftService{{Addr: tcp.Addr, Proto: "tcp", Port: 8080, Percent: 100}, {Addr: tcp.Addr, Proto: "udp", Port: 5353, Percent: 100}}}}
	apply(t, h, create(state.Object{Nft: &tbl}))
	for _, c := range conns {
		if _, err := ask(c, "y"); err != nil { // picked up mid-stream
			t.Fatal(err)
		}
	}
	open(3)
	echo := func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("q")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
	}
	u1, err := net.Dial("udp", svc+":5353")
	if err != nil {
		t.Fatal(err)
	}
	defer u1.Close()
	u2, err := net.Dial("udp", svc+":5353")
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	echo(u1)
	echo(u2)
	// UDP is ASSURED for a flow that still has traffic after 2 seconds.
	time.Sleep(2100 * time.Millisecond)
	echo(u1)

	f := facts(t, h, state.FactsRequest{Flows: []state.NftService{tcp, udp, other}, Mark: mark})
	if f.Stats == nil {
		t.Fatal("no stats")
	}
	t.Logf("flows: %+v", f.Stats.Flows)
	want := map[string]state.FlowCount{
		// OnOld: established and not marked, what OLD serves itself.
		tcp.Key():   {Total: 5, Established: 5, ToNew: 3, OnOld: 2},
		udp.Key():   {Total: 2, Established: 1, ToNew: 2, OnOld: 0},
		other.Key(): {},
	}
	for k, w := range want {
		if got, ok := f.Stats.Flows[k]; !ok || got != w {
			t.Errorf("flows of %s: %+v, want %+v", k, got, w)
		}
	}
	if len(f.Stats.Flows) != len(want) {
		t.Errorf("flows: %v", f.Stats.Flows)
	}
	// The conntrack CLI agrees on the marked entries.
	if _, err := os.Stat("/usr/sbin/conntrack"); err == nil {
		out := run(t, "conntrack", "-L", "-d", svc, "-m", fmt.Sprint(mark))
		if n := strings.Count(out, "dport=8080"); n != 3 {
			t.Errorf("conntrack -L shows %d marked TCP entries:\n%s", n, out)
		}
	}
	// Without a mark nothing counts as going to NEW.
	f = facts(t, h, state.FactsRequest{Flows: []state.NftService{tcp}})
	if got := f.Stats.Flows[tcp.Key()]; got.ToNew != 0 || got.Total != 5 || got.OnOld != 5 {
		t.Errorf("without a mark: %+v", got)
	}
	if f.Stats.Counters != nil {
		t.Errorf("counters without NftTable: %v", f.Stats.Counters)
	}
}

// TestSysctlGlob expands "*" components over existing entries, including
// a device whose name has a dot (sysctl(8)'s "/" spelling).
func TestSysctlGlob(t *testing.T) {
	if !inNetns(t) {
		return
	}
	h := newHost(t)
	addDummy(t, "up0")
	run(t, "ip", "link", "add", "up0.5", "type", "veth", "peer", "name", "p5")
	sysctl(t, h, "net.ipv6.conf.up0.accept_ra", "2")
	sysctl(t, h, "net.ipv4.conf.up0/5.rp_filter", "2")
	f := facts(t, h, state.FactsRequest{Sysctls: []string{
		"net.ipv6.conf.*.accept_ra", "net.ipv4.conf.*.rp_filter", "net.ipv4.ip_forward",
		"net.ipv4.conf.*.nope", "net.nope.*.x", "net.ipv4.route.*",
	}})
	for _, dev := range []string{"all", "default", "lo", "up0", "up0p", "up0/5", "p5"} {
		for _, n := range []string{"net.ipv6.conf." + dev + ".accept_ra", "net.ipv4.conf." + dev + ".rp_filter"} {
			if _, ok := f.Sysctls[n]; !ok {
				t.Errorf("%s not reported", n)
			}
		}
	}
	if f.Sysctls["net.ipv6.conf.up0.accept_ra"] != "2" || f.Sysctls["net.ipv4.conf.up0/5.rp_filter"] != "2" || f.Sysctls["net.ipv4.ip_forward"] != "0" {
		t.Errorf("values: %v", f.Sysctls)
	}
	for k := range f.Sysctls {
		if strings.Contains(k, "*") || strings.Contains(k, "nope") {
			t.Errorf("reported %s", k)
		}
	}
	// net.ipv4.route.flush is write-only: left out, not an error.
	if _, ok := f.Sysctls["net.ipv4.route.flush"]; ok {
		t.Errorf("write-only sysctl reported")
	}
	if _, ok := f.Sysctls["net.ipv4.route.mtu_expires"]; !ok {
		t.Errorf("net.ipv4.route.* not expanded: %v", f.Sysctls)
	}
	// Names read back as they were reported.
	if v, ok, err := h.readSysctl("net.ipv4.conf.up0/5.rp_filter"); err != nil || !ok || v != "2" {
		t.Errorf("read up0/5: %q %v %v", v, ok, err)
	}
	for _, bad := range []string{"net..ipv4", "net.ipv4.conf.//.rp_filter", "net.ipv4.conf./.rp_filter", ".net", "net.ipv4."} {
		if _, _, err := h.readSysctl(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := h.Apply(create(state.Object{Sysctl: &state.Sysctl{Name: "net.ipv4.conf.*.rp_filter", Value: "1"}})); err == nil {
		t.Errorf("writing a pattern succeeded")
	}
}

// TestLinkLocalAddrs: link-local addresses added by hand are reported,
// with or without DAD; those the kernel generates are not.
func TestLinkLocalAddrs(t *testing.T) {
	if !inNetns(t) {
		return
	}
	h := newHost(t)
	addDummy(t, "up0")
	apply(t, h, create(state.Object{Link: &state.Link{Name: "mig0", Type: "vxlan", Local: netip.MustParseAddr("127.0.0.1"), Remote: netip.MustParseAddr("127.0.0.2"), VNI: 5, Port: 4789, MTU: 1450, Up: true}}))
	mine := state.Addr{Dev: "mig0", CIDR: netip.MustParsePrefix("fe80::42:1/64"), NoDAD: true}
	apply(t, h, create(state.Object{Addr: &mine}))
	run(t, "ip", "-6", "addr", "add", "fe80::42:2/64", "dev", "up0")
	var kernel []string
	for _, dev := range []string{"up0", "up0p", "mig0"} {
		for _, l := range strings.Split(run(t, "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "link"), "\n") {
			if f := strings.Fields(l); len(f) > 3 && !strings.Contains(f[3], "::42:") {
				kernel = append(kernel, dev+" "+f[3])
			}
		}
	}
	if len(kernel) < 3 {
		t.Fatalf("kernel generated no link-local addresses: %v", kernel)
	}
	f := facts(t, h, state.FactsRequest{})
	var got []string
	for _, a := range f.Addrs {
		if strings.HasPrefix(a.CIDR.String(), "fe80:") {
			got = append(got, fmt.Sprintf("%s %s %v", a.Dev, a.CIDR, a.NoDAD))
		}
	}
	if w := "mig0 fe80::42:1/64 true|up0 fe80::42:2/64 false"; strings.Join(got, "|") != w {
		t.Errorf("link-local addresses: %v, want %s (kernel's: %v)", got, w, kernel)
	}
	if o := find(f, state.Object{Addr: &mine}); o == nil || *o.Addr != mine {
		t.Errorf("facts lack %v", mine)
	}
	apply(t, h, del(state.Object{Addr: &mine}))
	if o := find(facts(t, h, state.FactsRequest{}), state.Object{Addr: &mine}); o != nil {
		t.Errorf("after delete: %v", o)
	}
}
