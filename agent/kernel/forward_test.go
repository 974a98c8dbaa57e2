package kernel

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables/expr"
	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const fwdMark = 0x40000

// fwdSpec is a bouncer's spec: TCP and UDP, IPv4 and IPv6, one of them to
// another port, on a host without a tunnel.
func fwdSpec(role state.Role) state.NftSpec {
	return state.NftSpec{
		Role:        role,
		ForwardMark: fwdMark,
		Forwards: []state.NftForward{
			{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 8443, To: netip.MustParseAddr("203.0.113.20"), ToPort: 8443},
			{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 5353, To: netip.MustParseAddr("203.0.113.20"), ToPort: 5300},
			{Addr: netip.MustParseAddr("2001:db8:100::10"), Proto: "tcp", Port: 8443, To: netip.MustParseAddr("2001:db8:200::20"), ToPort: 8443},
			{Addr: netip.MustParseAddr("2001:db8:100::10"), Proto: "udp", Port: 5353, To: netip.MustParseAddr("2001:db8:200::20"), ToPort: 5300},
		},
	}
}

// TestForwardRender: forwards add five rules whatever their number, a
// spec without them renders as before, an empty TunnelDev renders no
// tunnel rule, and bad forwards are refused.
func TestForwardRender(t *testing.T) {
	u := &state.NftUnderlay{Proto: "udp", Port: 4789, Local: netip.MustParseAddr("192.0.2.1"), Peer: netip.MustParseAddr("192.0.2.2")}
	withTunnel := func(role state.Role) state.NftSpec {
		s := fwdSpec(role)
		s.TunnelDev, s.Mark = "mig0", 0x20000
		if role == "old" {
			s.Services = []state.NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 8080, Percent: 100}}
		}
		s.Underlay = u
		return s
	}
	many := fwdSpec("old")
	many.Forwards = nil
	for i := 0; i < 3000; i++ {
		many.Forwards = append(many.Forwards, state.NftForward{Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(i%200 + 1)}), Proto: []state.Proto{"tcp", "udp"}[i%2], Port: uint16(1000 + i), To: netip.MustParseAddr("203.0.113.20"), ToPort: 443})
	}
	drain := fwdSpec("new")
	drain.Forwards = nil
	for _, c := range []struct {
		name string
		spec state.NftSpec
		n    int
	}{
		{"forwards only, old", fwdSpec("old"), 5},
		{"forwards only, new", fwdSpec("new"), 5},
		{"3000 forwards", many, 5},
		{"draining forwards (mark, no forwards)", drain, 5},
		{"old with tunnel and forwards", withTunnel("old"), 18 + 5},
		{"new with tunnel and forwards", withTunnel("new"), 2 + 5},
		{"new with a tunnel only", state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000}, 1},
	} {
		if n := RenderRuleCount(c.spec); n != c.n {
			t.Errorf("%s: %d rules, want %d", c.name, n, c.n)
		}
		r, err := render("x", c.spec)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if c.spec.TunnelDev != "" {
			continue
		}
		// No tunnel: no rule may name an interface (iifname "" would
		// match nothing, or worse).
		for _, rt := range r.tables() {
			for _, rule := range rt.rules() {
				for _, e := range rule.Exprs {
					if m, ok := e.(*expr.Meta); ok && (m.Key == expr.MetaKeyIIFNAME || m.Key == expr.MetaKeyOIFNAME) {
						t.Errorf("%s: rule in chain %s matches an interface name", c.name, rule.Chain.Name)
					}
				}
			}
			for _, ch := range rt.chains {
				if c.spec.Forwards != nil || c.spec.ForwardMark != 0 {
					if ch.Name != nftFwdPre && ch.Name != nftFwdPost {
						t.Errorf("%s: chain %s on a host without a tunnel", c.name, ch.Name)
					}
				}
			}
		}
	}
	// Forwards only add: the tunnel's rules come first, unchanged.
	for _, role := range state.Roles {
		with := withTunnel(role)
		without := with
		without.Forwards, without.ForwardMark = nil, 0
		a, err1 := render("x", with)
		b, err2 := render("x", without)
		if err1 != nil || err2 != nil {
			t.Fatalf("%v %v", err1, err2)
		}
		ra, rb := a.inet.rules(), b.inet.rules()
		for i := range rb {
			if ra[i].Chain.Name != rb[i].Chain.Name || len(ra[i].Exprs) != len(rb[i].Exprs) {
				t.Errorf("role %s: rule %d differs with forwards", role, i)
			}
		}
	}

	bad := func(f func(*state.NftSpec)) state.NftSpec {
		s := fwdSpec("old")
		s.Forwards = s.Forwards[:1]
		f(&s)
		return s
	}
	for _, c := range []struct {
		name string
		spec state.NftSpec
		want string
	}{
		{"no forward mark", bad(func(s *state.NftSpec) { s.ForwardMark = 0 }), "forward_mark 0"},
		{"mark overlap", bad(func(s *state.NftSpec) { s.TunnelDev, s.Mark, s.ForwardMark = "mig0", 0x60000, 0x40000 }), "overlaps"},
		{"bad destination", bad(func(s *state.NftSpec) { s.Forwards[0].To = netip.Addr{} }), `nft forward to ""`},
		{"family mismatch", bad(func(s *state.NftSpec) { s.Forwards[0].To = netip.MustParseAddr("2001:db8::1") }), "same address family"},
		{"to_port 0", bad(func(s *state.NftSpec) { s.Forwards[0].ToPort = 0 }), "to_port 0"},
		{"port 0", bad(func(s *state.NftSpec) { s.Forwards[0].Port = 0 }), "port 0"},
		{"sctp", bad(func(s *state.NftSpec) { s.Forwards[0].Proto = "sctp" }), "must be tcp or udp"},
		{"one key, two destinations", bad(func(s *state.NftSpec) {
			f := s.Forwards[0]
			f.ToPort++
			s.Forwards = append(s.Forwards, f)
		}), "goes to"},
		{"forward and service", bad(func(s *state.NftSpec) {
			s.TunnelDev, s.Mark = "mig0", 0x20000
			s.Services = []state.NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 8443, Percent: 100}}
		}), "also a forward"},
		{"services without a tunnel", bad(func(s *state.NftSpec) {
			s.Services = []state.NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 80, Percent: 100}}
		}), "only for role old with a tunnel device"},
		{"old without tunnel or forwards", state.NftSpec{Role: "old"}, `nft tunnel_dev ""`},
	} {
		_, err := render("x", c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	// The same forward twice is one element.
	dup := fwdSpec("old")
	dup.Forwards = append(dup.Forwards, dup.Forwards[0])
	if r, err := render("x", dup); err != nil || len(r.inet.elems[0]) != 2 {
		t.Errorf("duplicate forward: %v", err)
	}
}

// TestForwardBytecode compares the forward maps and chains with what the
// nft CLI compiles from the equivalent text, and checks that facts read
// back the applied table without drift.
func TestForwardBytecode(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	// Role new with a tunnel: its MSS clamp (a counter, which
	// compareWithNft wants to see) and the forwards.
	nspec := fwdSpec("new")
	nspec.TunnelDev, nspec.Mark = "mig0", 0x20000
	apply(t, h, create(state.Object{Nft: &state.NftTable{Family: "inet", Name: "nw", Spec: nspec}}))
	t.Logf("ruleset:\n%s", run(t, "nft", "list", "ruleset"))
	c := `comment "migrate:` + ruleDigest(nspec) + `"`
	const key4, key6 = "meta nfproto ipv4 ip daddr . meta l4proto . th dport", "meta nfproto ipv6 ip6 daddr . meta l4proto . th dport"
	compareWithNft(t, "inet", "nw", fmt.Sprintf(`table inet ref {
  chain forward { type filter hook forward priority mangle; policy accept;
    oifname "mig0" tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu counter %[1]s
  }
  map fwd4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; elements = { 198.51.100.10 . tcp . 8443 : 203.0.113.20 . 8443, 198.51.100.10 . udp . 5353 : 203.0.113.20 . 5300 } }
  map fwd6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; elements = { 2001:db8:100::10 . tcp . 8443 : 2001:db8:200::20 . 8443, 2001:db8:100::10 . udp . 5353 : 2001:db8:200::20 . 5300 } }
  set fwdkeys4 { type ipv4_addr . inet_proto . inet_service; elements = { 198.51.100.10 . tcp . 8443, 198.51.100.10 . udp . 5353 } }
  set fwdkeys6 { type ipv6_addr . inet_proto . inet_service; elements = { 2001:db8:100::10 . tcp . 8443, 2001:db8:100::10 . udp . 5353 } }
  chain fwd_prerouting { type nat hook prerouting priority dstnat; policy accept;
    ct state != new return %[1]s
    meta l4proto tcp tcp flags & (fin|syn|rst|ack) != syn return %[1]s
    %[2]s @fwdkeys4 ct mark set ct mark | 0x40000 dnat ip to ip daddr . meta l4proto . th dport map @fwd4 %[1]s
    %[3]s @fwdkeys6 ct mark set ct mark | 0x40000 dnat ip6 to ip6 daddr . meta l4proto . th dport map @fwd6 %[1]s
  }
  chain fwd_postrouting { type nat hook postrouting priority srcnat; policy accept;
    ct mark & 0x40000 == 0x40000 masquerade %[1]s
  }
}
`, c, key4, key6))
	run(t, "nft", "delete", "table", "inet", "nw")

	spec := fwdSpec("old")
	tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: spec}
	apply(t, h, create(state.Object{Nft: &tbl}))
	f := nftFactsOf(t, h, "migrate")
	if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(state.Object{Nft: &tbl}) {
		t.Fatalf("facts: %v drift %q", f.Nft, f.NftDrift)
	}

	// Tunnel and forwards in one table, one transaction.
	both := oldSpec()
	both.Forwards, both.ForwardMark = spec.Forwards, spec.ForwardMark
	tblBoth := state.NftTable{Family: "inet", Name: "migrate", Spec: both}
	apply(t, h, update(state.Object{Nft: &tbl}, state.Object{Nft: &tblBoth}))
	if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" || f.Nft == nil || f.Nft.Spec.Digest() != both.Digest() {
		t.Fatalf("facts with tunnel and forwards: drift %q", f.NftDrift)
	}
	out := run(t, "nft", "list", "ruleset")
	if n := strings.Count(out, `comment "migrate:`); n != RenderRuleCount(both) || n != 25 {
		t.Errorf("%d tagged rules, RenderRuleCount %d", n, RenderRuleCount(both))
	}
	if strings.Count(out, "table inet migrate") != 1 || !strings.Contains(out, "chain fwd_prerouting") || !strings.Contains(out, "chain prerouting") {
		t.Errorf("ruleset:\n%s", out)
	}

	// Changes by hand to the maps are drift.
	apply(t, h, update(state.Object{Nft: &tblBoth}, state.Object{Nft: &tbl}))
	for _, c := range []struct{ name, cmd, want string }{
		{"destination", "delete element inet migrate fwd4 { 198.51.100.10 . tcp . 8443 }\n" +
			"add element inet migrate fwd4 { 198.51.100.10 . tcp . 8443 : 203.0.113.99 . 8443 }", "fwd4 maps"},
		{"destination port", "delete element inet migrate fwd6 { 2001:db8:100::10 . udp . 5353 }\n" +
			"add element inet migrate fwd6 { 2001:db8:100::10 . udp . 5353 : 2001:db8:200::20 . 53 }", "fwd6 maps"},
		{"extra element", "add element inet migrate fwd4 { 198.51.100.10 . tcp . 22 : 203.0.113.20 . 22 }", "fwd4 has 3 elements"},
		{"masquerade gone", "flush chain inet migrate fwd_postrouting", "fwd_postrouting has 0 rules"},
		{"map replaced by another type", "delete chain inet migrate fwd_prerouting\ndelete map inet migrate fwd6\n" +
			"add map inet migrate fwd6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr; }", "chains"},
	} {
		p := filepath.Join(t.TempDir(), "change.nft")
		if err := os.WriteFile(p, []byte(c.cmd+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		run(t, "nft", "-f", p)
		f := nftFactsOf(t, h, "migrate")
		if !strings.Contains(f.NftDrift, c.want) {
			t.Errorf("%s: drift %q, want it to mention %q", c.name, f.NftDrift, c.want)
		} else {
			t.Logf("%s: drift: %s", c.name, f.NftDrift)
		}
		apply(t, h, update(state.Object{Nft: f.Nft}, state.Object{Nft: &tbl}))
		if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" {
			t.Fatalf("%s: drift after re-apply: %s", c.name, f.NftDrift)
		}
	}
	apply(t, h, del(state.Object{Nft: &tbl}))
	if out := run(t, "nft", "list", "ruleset"); strings.Contains(out, "migrate") {
		t.Fatalf("table left after delete:\n%s", out)
	}
}

// addrNoDAD adds cidr to dev in the namespace of nh, usable at once.
func addrNoDAD(t *testing.T, nh *netlink.Handle, dev, cidr string) {
	t.Helper()
	l, err := nh.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	a.Flags = unix.IFA_F_NODAD
	if err := nh.AddrAdd(l, a); err != nil {
		t.Fatalf("add %s to %s: %v", cidr, dev, err)
	}
}

// peerServer serves network (tcp or udp) on addr in ns: each line (TCP)
// or datagram (UDP) is answered with "TAG peer=IP MSG".
func peerServer(t *testing.T, ns netns.NsHandle, network, addr, tag string) {
	t.Helper()
	in := func(f func() error) error {
		if ns == 0 {
			return f()
		}
		return inNS(ns, f)
	}
	reply := func(peer net.Addr, msg string) []byte {
		host, _, _ := net.SplitHostPort(peer.String())
		return []byte(fmt.Sprintf("%s peer=%s %s\n", tag, host, strings.TrimSpace(msg)))
	}
	if network == "udp" {
		var pc net.PacketConn
		if err := in(func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
			t.Fatalf("listen udp %s: %v", addr, err)
		}
		t.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(reply(from, string(buf[:n])), from)
			}
		}()
		return
	}
	var ln net.Listener
	if err := in(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listen tcp %s: %v", addr, err)
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
					if _, err := c.Write(reply(c.RemoteAddr(), l)); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// fwdConn is a client connection (TCP, or connected UDP: one conntrack
// entry for all its datagrams).
type fwdConn struct {
	net.Conn
	r *bufio.Reader
}

func fwdDial(t *testing.T, ns netns.NsHandle, network, addr string) *fwdConn {
	t.Helper()
	var c net.Conn
	if err := inNS(ns, func() (err error) { c, err = net.DialTimeout(network, addr, 2*time.Second); return err }); err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &fwdConn{Conn: c, r: bufio.NewReader(c)}
}

// say sends msg and returns "TAG peer=IP" of the answer.
func (c *fwdConn) say(msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	var l string
	if _, ok := c.Conn.(*net.UDPConn); ok {
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		if err != nil {
			return "", err
		}
		l = string(buf[:n])
	} else {
		var err error
		if l, err = c.r.ReadString('\n'); err != nil {
			return "", err
		}
	}
	who, got, ok := strings.Cut(strings.TrimSpace(l), " "+msg)
	if !ok || got != "" {
		return "", errors.New("bad answer " + l)
	}
	return who, nil
}

// TestForwardPackets builds client — bouncer (the test's namespace) —
// backend and sends real TCP and UDP, IPv4 and IPv6:
//   - new flows to the forwarded address:port go to the backend (on
//     to_port), which sees the bouncer's address; the backend has no
//     route to the client, so the replies only come back through the
//     masquerade;
//   - a TCP flow established before the table exists stays on the
//     bouncer (conntrack picks it up mid-stream; not a bare SYN);
//   - forwarded flows keep working across a table update, and after the
//     forwards are removed while the nat chains stay (ForwardMark alone);
//   - after the table is deleted they keep working while the namespace
//     still has a nat chain and a conntrack user, and stop without them:
//     the kernel drops its NAT hooks with the last nat chain.
func TestForwardPackets(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	client, backend := newChildNS(t), newChildNS(t)
	ch := vethTo(t, client, "cl0", "192.0.2.1/24", "eth0", "192.0.2.2/24")
	bh := vethTo(t, backend, "be0", "203.0.113.1/24", "eth0", "203.0.113.20/24")
	run(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "cl0", "nodad")
	run(t, "ip", "-6", "addr", "add", "2001:db8:200::1/64", "dev", "be0", "nodad")
	run(t, "ip", "addr", "add", "198.51.100.10/32", "dev", "lo")
	run(t, "ip", "-6", "addr", "add", "2001:db8:100::10/128", "dev", "lo", "nodad")
	addrNoDAD(t, ch, "eth0", "2001:db8:1::2/64")
	addrNoDAD(t, bh, "eth0", "2001:db8:200::20/64")
	routeVia(t, ch, "0.0.0.0/0", "192.0.2.1")
	routeVia(t, ch, "::/0", "2001:db8:1::1")
	// The backend has no route to the client: only the bouncer's
	// subnet is reachable from it.
	sysctl(t, h, "net.ipv4.ip_forward", "1")
	sysctl(t, h, "net.ipv6.conf.all.forwarding", "1")

	const a4, a6 = "198.51.100.10", "2001:db8:100::10"
	for _, a := range []string{a4, a6} {
		peerServer(t, 0, "tcp", net.JoinHostPort(a, "8443"), "bouncer")
		peerServer(t, 0, "udp", net.JoinHostPort(a, "5353"), "bouncer")
	}
	for _, a := range []string{"203.0.113.20", "2001:db8:200::20"} {
		peerServer(t, backend, "tcp", net.JoinHostPort(a, "8443"), "backend")
		peerServer(t, backend, "udp", net.JoinHostPort(a, "5300"), "backend")
	}
	type target struct{ network, addr, backendSees string }
	targets := []target{
		{"tcp", net.JoinHostPort(a4, "8443"), "backend peer=203.0.113.1"},
		{"tcp", net.JoinHostPort(a6, "8443"), "backend peer=2001:db8:200::1"},
		{"udp", net.JoinHostPort(a4, "5353"), "backend peer=203.0.113.1"},
		{"udp", net.JoinHostPort(a6, "5353"), "backend peer=2001:db8:200::1"},
	}
	expect := func(c *fwdConn, what, msg, want string) {
		t.Helper()
		got, err := c.say(msg)
		if err != nil || got != want {
			t.Fatalf("%s: answer %q, %v; want %q", what, got, err, want)
		}
	}
	// New flows: one per target, each answered by want(target).
	newFlows := func(when string, want func(target) string) []*fwdConn {
		t.Helper()
		var cs []*fwdConn
		for _, tg := range targets {
			c := fwdDial(t, client, tg.network, tg.addr)
			expect(c, fmt.Sprintf("%s: new %s flow to %s", when, tg.network, tg.addr), "hello", want(tg))
			cs = append(cs, c)
		}
		return cs
	}
	toBouncer := func(tg target) string {
		if strings.HasPrefix(tg.addr, "[") {
			return "bouncer peer=2001:db8:1::2"
		}
		return "bouncer peer=192.0.2.2"
	}
	toBackend := func(tg target) string { return tg.backendSees }

	// TCP flows established before migrate's table exists.
	early := []*fwdConn{fwdDial(t, client, "tcp", targets[0].addr), fwdDial(t, client, "tcp", targets[1].addr)}
	for i, c := range early {
		expect(c, "early flow before the table", "early", toBouncer(targets[i]))
	}

	tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: fwdSpec("old")}
	apply(t, h, create(state.Object{Nft: &tbl}))
	for i, c := range early {
		expect(c, "early flow after the table", "still-early", toBouncer(targets[i]))
	}
	fwd := newFlows("forwarding", toBackend)

	// A table update (one more forward) keeps the bindings: the new nat
	// chains are hooked before the old ones go, in the same transaction.
	more := tbl
	more.Spec.Forwards = append(append([]state.NftForward(nil), tbl.Spec.Forwards...),
		state.NftForward{Addr: netip.MustParseAddr(a4), Proto: "tcp", Port: 9443, To: netip.MustParseAddr("203.0.113.20"), ToPort: 8443})
	apply(t, h, update(state.Object{Nft: &tbl}, state.Object{Nft: &more}))
	for i, c := range fwd {
		expect(c, "forwarded flow after an update", "update", targets[i].backendSees)
	}
	c := fwdDial(t, client, "tcp", net.JoinHostPort(a4, "9443"))
	expect(c, "added forward to another port", "p9443", "backend peer=203.0.113.1")
	for i, c := range early {
		expect(c, "early flow after an update", "early-update", toBouncer(targets[i]))
	}

	// Forwards removed, chains kept (the mark alone): forwarded flows
	// drain, new flows stay on the bouncer.
	drain := tbl
	drain.Spec.Forwards = nil
	apply(t, h, update(state.Object{Nft: &more}, state.Object{Nft: &drain}))
	if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" || f.Nft == nil || f.Nft.Spec.Digest() != drain.Spec.Digest() {
		t.Fatalf("facts of the draining table: drift %q", f.NftDrift)
	}
	for i, c := range fwd {
		expect(c, "forwarded flow, forwards removed", "draining", targets[i].backendSees)
	}
	newFlows("draining", toBouncer)

	// The table deleted while another nat chain and a conntrack user
	// remain (as on most hosts: Docker, firewalld, iptables nat): the
	// bindings stay.
	apply(t, h, update(state.Object{Nft: &drain}, state.Object{Nft: &tbl}))
	fwd = newFlows("forwarding again", toBackend)
	other := filepath.Join(t.TempDir(), "other.nft")
	if err := os.WriteFile(other, []byte(`table inet other {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
  }
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
  }
  chain track {
    type filter hook prerouting priority filter; policy accept;
    ct state established counter
  }
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "nft", "-f", other)
	apply(t, h, del(state.Object{Nft: &tbl}))
	for i, c := range fwd {
		expect(c, "forwarded flow, table deleted, other nat chains present", "deleted", targets[i].backendSees)
	}
	newFlows("table deleted", toBouncer)

	// Without any nat chain the kernel unregisters its NAT hooks, and
	// without a conntrack user conntrack stops: the flows' packets go
	// untranslated to the bouncer itself. This is why the chains must
	// stay while forwarded flows drain.
	run(t, "nft", "delete", "table", "inet", "other")
	for i, c := range fwd[:2] { // TCP: the bouncer has no such connection
		if got, err := c.say("orphan"); err == nil {
			t.Errorf("%s: forwarded TCP flow still answered (%q) with no nat chain left: the kernel keeps NAT without nat hooks now; revisit the drain design", targets[i].addr, got)
		} else {
			t.Logf("forwarded TCP flow to %s without any nat chain: %v (expected)", targets[i].addr, err)
		}
	}
}

// TestForwardNoTunnelFacts: a forwards-only table on either role reads
// back as applied, and an unchanged apply keeps it (and its bindings).
func TestForwardNoTunnelFacts(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	for _, role := range state.Roles {
		tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: fwdSpec(role)}
		apply(t, h, create(state.Object{Nft: &tbl}))
		f := nftFactsOf(t, h, "migrate")
		if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(state.Object{Nft: &tbl}) {
			t.Fatalf("role %s: facts %v drift %q", role, f.Nft, f.NftDrift)
		}
		out := run(t, "nft", "list", "ruleset")
		for _, no := range []string{"iifname", "oifname", "chain prerouting", "chain postrouting", "chain forward", "maxseg"} {
			if strings.Contains(out, no) {
				t.Errorf("role %s without a tunnel: ruleset has %q:\n%s", role, no, out)
			}
		}
		h1 := run(t, "nft", "-a", "list", "table", "inet", "migrate")
		apply(t, h, create(state.Object{Nft: &tbl}))
		if h2 := run(t, "nft", "-a", "list", "table", "inet", "migrate"); h1 != h2 {
			t.Errorf("role %s: an unchanged apply rewrote the table", role)
		}
		apply(t, h, del(state.Object{Nft: &tbl}))
	}
}
