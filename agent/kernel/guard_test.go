package kernel

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// reach dials network addr from ns and exchanges one line with a
// peerServer; nil when the answer came back.
func reach(ns netns.NsHandle, network, addr string) error {
	return inNS(ns, func() error {
		c, err := net.DialTimeout(network, addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("hi\n")); err != nil {
			return err
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if !strings.Contains(string(buf[:n]), "hi") {
			return fmt.Errorf("bad answer %q", buf[:n])
		}
		return nil
	})
}

// TestForwardGuard builds OLD (the test's namespace, forwarding switched
// on as apply does) with a neighbour, a third network ("far") and NEW
// behind a veth standing in for the tunnel, and sends real TCP and UDP:
//   - without the guard OLD routes the neighbour's packets to far (an
//     open router: what the guard is for);
//   - with Guard4 and Guard6 the neighbour's packets to far are dropped
//     and counted in chain guard, IPv4 and IPv6, while migrate's own
//     forwarding still works: a service flow into the tunnel and its
//     replies, NEW's outbound flow from the service address and its
//     replies, and a forward (DNAT) to far;
//   - with Guard4 alone IPv6 is routed again and IPv4 is not;
//   - without the guard again, the neighbour reaches far.
func TestForwardGuard(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	nb, far, newNS := newChildNS(t), newChildNS(t), newChildNS(t)
	const svc, mark = "198.51.100.10", 0x20000
	nh := vethTo(t, nb, "nb0", "192.0.2.1/24", "eth0", "192.0.2.2/24")
	fh := vethTo(t, far, "far0", "203.0.113.1/24", "eth0", "203.0.113.20/24")
	run(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "nb0", "nodad")
	run(t, "ip", "-6", "addr", "add", "2001:db8:200::1/64", "dev", "far0", "nodad")
	addrNoDAD(t, nh, "eth0", "2001:db8:1::2/64")
	addrNoDAD(t, fh, "eth0", "2001:db8:200::20/64")
	for _, r := range []struct {
		h       *netlink.Handle
		dst, gw string
	}{
		{nh, "0.0.0.0/0", "192.0.2.1"}, {nh, "::/0", "2001:db8:1::1"},
		{fh, "0.0.0.0/0", "203.0.113.1"}, {fh, "::/0", "2001:db8:200::1"},
	} {
		routeVia(t, r.h, r.dst, r.gw)
	}
	// NEW behind mig0, holding the service address, as in TestCanaryAndDrain.
	wh := vethTo(t, newNS, "mig0", "169.254.77.1/30", "nt0", "169.254.77.2/30")
	routeVia(t, wh, "0.0.0.0/0", "169.254.77.1")
	lo, err := wh.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := netlink.ParseAddr(svc + "/32")
	if err := wh.AddrAdd(lo, a); err != nil {
		t.Fatal(err)
	}
	sysctl(t, h, "net.ipv4.ip_forward", "1")
	sysctl(t, h, "net.ipv6.conf.all.forwarding", "1")
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

	// far serves 9000 (reached by routing through OLD) and 8443 (the
	// forward's destination); NEW serves the moved service; the
	// neighbour listens for NEW's outbound connection.
	for _, addr := range []string{"203.0.113.20", "2001:db8:200::20"} {
		for _, network := range []string{"tcp", "udp"} {
			peerServer(t, far, network, net.JoinHostPort(addr, "9000"), "far")
		}
	}
	peerServer(t, far, "tcp", "203.0.113.20:8443", "far")
	peerServer(t, newNS, "tcp", svc+":8080", "new")
	peerServer(t, nb, "tcp", "192.0.2.2:7000", "nb")

	stray := []struct{ network, addr string }{
		{"tcp", "203.0.113.20:9000"}, {"udp", "203.0.113.20:9000"},
		{"tcp", "[2001:db8:200::20]:9000"}, {"udp", "[2001:db8:200::20]:9000"},
	}
	isV6 := func(addr string) bool { return strings.HasPrefix(addr, "[") }
	// expectStray checks the neighbour's flows to far: routed where
	// open(addr) is true, refused elsewhere.
	expectStray := func(when string, open func(addr string) bool) {
		t.Helper()
		for _, s := range stray {
			err := reach(nb, s.network, s.addr)
			// The first IPv6 packets may wait for neighbour discovery.
			for i := 0; i < 4 && open(s.addr) && err != nil; i++ {
				err = reach(nb, s.network, s.addr)
			}
			if open(s.addr) && err != nil {
				t.Errorf("%s: neighbour -> %s %s through OLD: %v; want routed", when, s.network, s.addr, err)
			}
			if !open(s.addr) && err == nil {
				t.Errorf("%s: neighbour -> %s %s through OLD was routed; want dropped", when, s.network, s.addr)
			}
		}
	}
	ownTraffic := func(when string) {
		t.Helper()
		if err := reach(nb, "tcp", svc+":8080"); err != nil {
			t.Errorf("%s: service flow into the tunnel: %v", when, err)
		}
		err := inNS(newNS, func() error {
			d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(svc)}}
			c, err := d.Dial("tcp", "192.0.2.2:7000")
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = fmt.Fprintf(c, "out\n")
			if err == nil {
				_, err = c.Read(make([]byte, 64))
			}
			return err
		})
		if err != nil {
			t.Errorf("%s: NEW's outbound flow from %s through OLD: %v", when, svc, err)
		}
		if err := reach(nb, "tcp", svc+":8443"); err != nil {
			t.Errorf("%s: forward %s:8443 -> far: %v", when, svc, err)
		}
	}
	// The guard's rules are the last of chain forward (role old with a
	// tunnel); its drops are the rules ending in a drop there.
	dropped := func() uint64 { return dropCounter(t, h, nftables.TableFamilyINet, "migrate", nftForward) }

	expectStray("forwarding on, no table", func(string) bool { return true })

	spec := state.NftSpec{
		Role: "old", TunnelDev: "mig0", Mark: mark,
		Services:    []state.NftService{{Addr: netip.MustParseAddr(svc), Proto: "tcp", Port: 8080, Percent: 100}},
		Accounted:   []state.NftService{{Addr: netip.MustParseAddr(svc), Proto: "tcp", Port: 8080}},
		ForwardMark: fwdMark,
		Forwards:    []state.NftForward{{Addr: netip.MustParseAddr(svc), Proto: "tcp", Port: 8443, To: netip.MustParseAddr("203.0.113.20"), ToPort: 8443}},
	}
	open := state.NftTable{Family: "inet", Name: "migrate", Spec: spec}
	apply(t, h, create(state.Object{Nft: &open}))
	ownTraffic("no guard")

	guarded := open
	guarded.Spec.Guard4, guarded.Spec.Guard6 = true, true
	apply(t, h, update(state.Object{Nft: &open}, state.Object{Nft: &guarded}))
	if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" || f.Nft == nil || f.Nft.Spec.Digest() != guarded.Spec.Digest() {
		t.Fatalf("facts of the guarded table: drift %q", f.NftDrift)
	}
	before := dropped()
	expectStray("guard4+guard6", func(string) bool { return false })
	after := dropped()
	t.Logf("chain guard dropped %d packet(s) of the neighbour's", after-before)
	// At least one packet per flow: a SYN (retried within the second) or a datagram.
	if after-before < uint64(len(stray)) {
		t.Errorf("chain guard counted %d dropped packets, want at least %d", after-before, len(stray))
	}
	ownTraffic("guard4+guard6")
	if n := dropped(); n != after {
		t.Errorf("migrate's own traffic was dropped by the guard: counter %d -> %d", after, n)
	}

	only4 := guarded
	only4.Spec.Guard6 = false
	apply(t, h, update(state.Object{Nft: &guarded}, state.Object{Nft: &only4}))
	expectStray("guard4 only", isV6)
	ownTraffic("guard4 only")

	apply(t, h, update(state.Object{Nft: &only4}, state.Object{Nft: &open}))
	expectStray("guard removed", func(string) bool { return true })
	out := run(t, "nft", "list", "table", "inet", "migrate")
	if strings.Contains(out, "chain guard") || strings.Contains(out, "meta nfproto ipv4 counter") || strings.Contains(out, `iifname "mig0" accept`) {
		t.Errorf("a spec without guard still renders the guard:\n%s", out)
	}
}

// dropCounter sums the counters of the rules of a chain that end in a
// drop.
func dropCounter(t *testing.T, h *Host, fam nftables.TableFamily, table, chain string) (packets uint64) {
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
		if v, ok := r.Exprs[len(r.Exprs)-1].(*expr.Verdict); !ok || v.Kind != expr.VerdictDrop {
			continue
		}
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Counter); ok {
				packets += c.Packets
			}
		}
	}
	return packets
}

// TestGuardRender: the guard adds chain guard with one accept per kind of
// migrate's flows and one drop per guarded family; a guard with nothing of
// migrate's to forward is refused; no guard renders as before.
func TestGuardRender(t *testing.T) {
	tunnel := state.NftSpec{Role: "old", TunnelDev: "mig0", Mark: 0x20000}
	fwds := fwdSpec("new")
	for _, c := range []struct {
		name  string
		spec  state.NftSpec
		g4    bool
		g6    bool
		rules int // rules added by the guard
		err   string
	}{
		{"old tunnel v4", tunnel, true, false, 3, ""},
		{"old tunnel v4+v6", tunnel, true, true, 4, ""},
		{"new forwards v6", fwds, false, true, 2, ""},
		{"old forwards only", fwdSpec("old"), true, false, 2, ""},
		{"new tunnel, no forwards", state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000}, true, false, 0, "a guard needs migrate's own forwarded flows"},
	} {
		t.Run(c.name, func(t *testing.T) {
			plain := RenderRuleCount(c.spec)
			g := c.spec
			g.Guard4, g.Guard6 = c.g4, c.g6
			r, err := render("migrate", g)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("render: %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n := RenderRuleCount(g); n != plain+c.rules {
				t.Errorf("%d rules with the guard, %d without; want %d more", n, plain, c.rules)
			}
			var names []string
			for _, ch := range r.inet.chains {
				names = append(names, ch.Name)
			}
			// Role old with a tunnel: the guard's rules end chain
			// forward (no chain of its own); else chain guard comes last.
			wantChain := nftGuard
			if g.Role == state.RoleOld && g.TunnelDev != "" {
				wantChain = nftForward
				for _, n := range names {
					if n == nftGuard {
						t.Errorf("chains %v: a chain guard besides chain forward", names)
					}
				}
			} else if names[len(names)-1] != nftGuard {
				t.Errorf("chains %v: want %s last", names, nftGuard)
			}
			rules := r.inet.model()
			for i, m := range rules[len(rules)-c.rules:] {
				if m.chain.Name != wantChain {
					t.Errorf("guard rule %d (%s) in chain %s, want %s", i, m.text, m.chain.Name, wantChain)
				}
			}
			if last := rules[len(rules)-1]; !strings.HasSuffix(last.text, "counter drop") {
				t.Errorf("last rule %q: want the guard's drop", last.text)
			}
		})
	}
}
