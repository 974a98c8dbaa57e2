package state

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

// wantErr checks err against want: "" means no error, else the error text
// must hold want (which names the field and the rule).
func wantErr(t *testing.T, name string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: unexpected error: %v", name, err)
	case want != "" && err == nil:
		t.Errorf("%s: no error, want one containing %q", name, want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("%s: error %q does not contain %q", name, err, want)
	}
}

func TestEnumsValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"role old", RoleOld.Validate(), ""},
		{"role new", RoleNew.Validate(), ""},
		{"role empty", Role("").Validate(), `role "": must be old or new`},
		{"role case", Role("OLD").Validate(), `role "OLD": must be old or new`},
		{"proto tcp", TCP.Validate(), ""},
		{"proto udp", UDP.Validate(), ""},
		{"proto sctp", Proto("sctp").Validate(), `proto "sctp": must be tcp or udp`},
		{"tunnel vxlan", VXLAN.Validate(), ""},
		{"tunnel gre", GRE.Validate(), ""},
		{"tunnel ip6gre", IP6GRE.Validate(), ""},
		{"tunnel wireguard", WireGuard.Validate(), ""},
		{"tunnel direct", Direct.Validate(), ""},
		{"tunnel ipip", TunnelType("ipip").Validate(), `tunnel type "ipip": must be vxlan, gre, ip6gre, wireguard or direct`},
	} {
		wantErr(t, c.name, c.err, c.want)
	}
	if Direct.IsLink() || !VXLAN.IsLink() || TunnelType("x").IsLink() {
		t.Error("IsLink: only the device types are links")
	}
}

func okSpec() NftSpec {
	return NftSpec{
		Role: RoleOld, TunnelDev: "mig0", Mark: 0x20000,
		Services:  []NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: TCP, Port: 25, Percent: 100}, {Addr: netip.MustParseAddr("2001:db8::10"), Proto: UDP, Port: 53, Percent: 10}},
		Accounted: []NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: TCP, Port: 25}, {Addr: netip.MustParseAddr("2001:db8::10"), Proto: UDP, Port: 53}},
		Underlay:  &NftUnderlay{Proto: "udp", Port: 4789, Local: netip.MustParseAddr("198.51.100.10"), Peer: netip.MustParseAddr("203.0.113.20")},
	}
}

func newSpec() NftSpec {
	return NftSpec{
		Role: RoleNew, TunnelDev: "mig0", Mark: 0x20000,
		UDPServices: []NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: UDP, Port: 53}},
		NoARP:       []netip.Addr{netip.MustParseAddr("198.51.100.10")},
		Underlay:    &NftUnderlay{Proto: "gre", Local: netip.MustParseAddr("203.0.113.20"), Peer: netip.MustParseAddr("198.51.100.10")},
	}
}

// TestNftSpecValidate: the one rule per fact of a spec, the renderer's
// rules among them (a spec that passes renders).
func TestNftSpecValidate(t *testing.T) {
	old := func(f func(*NftSpec)) NftSpec { s := okSpec(); f(&s); return s }
	nw := func(f func(*NftSpec)) NftSpec { s := newSpec(); f(&s); return s }
	fwd := NftForward{Addr: netip.MustParseAddr("198.51.100.10"), Proto: TCP, Port: 8443, To: netip.MustParseAddr("203.0.113.20"), ToPort: 443}
	for _, c := range []struct {
		name string
		spec NftSpec
		want string
	}{
		{"old ok", okSpec(), ""},
		{"new ok", newSpec(), ""},
		{"forwards only", NftSpec{Role: RoleNew, ForwardMark: 0x40000, Forwards: []NftForward{fwd}}, ""},
		{"draining forwards", NftSpec{Role: RoleOld, ForwardMark: 0x40000}, ""},
		{"role", old(func(s *NftSpec) { s.Role = "both" }), `nft role "both": must be old or new`},
		{"tunnel dev", old(func(s *NftSpec) { s.TunnelDev = "" }), `nft tunnel_dev "": must be 1..15 bytes`},
		{"tunnel dev long", old(func(s *NftSpec) { s.TunnelDev = "a-much-too-long-name" }), `nft tunnel_dev "a-much-too-long-name"`},
		{"mark", old(func(s *NftSpec) { s.Mark = 0 }), "nft mark 0: must be a non-zero 32-bit mark"},
		// Percents: moved services 1..100, the rest 0.
		{"percent 100", old(func(s *NftSpec) { s.Services[1].Percent = 100 }), ""},
		{"percent 1", old(func(s *NftSpec) { s.Services[1].Percent = 1 }), ""},
		{"percent 0", old(func(s *NftSpec) { s.Services[1].Percent = 0 }), "nft services 2001:db8::10 udp 53: percent 0 must be 1..100"},
		{"percent 101", old(func(s *NftSpec) { s.Services[1].Percent = 101 }), "percent 101 must be 1..100"},
		{"accounted percent", old(func(s *NftSpec) { s.Accounted[0].Percent = 100 }), "nft accounted 198.51.100.10 tcp 25: percent 100 must be 0"},
		{"udp services percent", nw(func(s *NftSpec) { s.UDPServices[0].Percent = 5 }), "nft udp_services 198.51.100.10 udp 53: percent 5 must be 0"},
		{"two percents", old(func(s *NftSpec) {
			s.Services = append(s.Services, NftService{Addr: netip.MustParseAddr("2001:db8::10"), Proto: UDP, Port: 53, Percent: 20})
		}), "nft services 2001:db8::10 udp 53: listed at 10 % and at 20 %"},
		{"same percent twice", old(func(s *NftSpec) { s.Services = append(s.Services, s.Services[0]) }), ""},
		{"service addr", old(func(s *NftSpec) { s.Services[0].Addr = netip.Addr{} }), `nft services addr "": must be an IPv4 or IPv6 address`},
		{"service mapped", old(func(s *NftSpec) { s.Services[0].Addr = netip.MustParseAddr("::ffff:198.51.100.10") }), "IPv4-mapped IPv6 addresses are not allowed"},
		{"service proto", old(func(s *NftSpec) { s.Services[0].Proto = "sctp" }), `nft services 198.51.100.10 proto "sctp": must be tcp or udp`},
		{"service port", old(func(s *NftSpec) { s.Services[0].Port = 0 }), "nft services 198.51.100.10 tcp port 0: must be 1..65535"},
		{"services on new", nw(func(s *NftSpec) { s.Services = okSpec().Services }), "nft services/accounted: only for role old with a tunnel device"},
		{"udp services on old", old(func(s *NftSpec) { s.UDPServices = newSpec().UDPServices }), "nft udp_services: only for role new"},
		{"udp services tcp", nw(func(s *NftSpec) { s.UDPServices[0].Proto = TCP }), "nft udp_services 198.51.100.10 tcp 53: must be udp"},
		{"noarp on old", old(func(s *NftSpec) { s.NoARP = []netip.Addr{netip.MustParseAddr("198.51.100.10")} }), "nft no_arp: only for role new"},
		{"noarp v6", nw(func(s *NftSpec) { s.NoARP = []netip.Addr{netip.MustParseAddr("2001:db8::1")} }), "nft no_arp 2001:db8::1: must be an IPv4 address"},
		{"underlay gre port", nw(func(s *NftSpec) { s.Underlay.Port = 47 }), "nft underlay gre port 47: gre has no port"},
		{"underlay udp port", old(func(s *NftSpec) { s.Underlay.Port = 0 }), "nft underlay udp port 0: must be 1..65535"},
		{"underlay proto", old(func(s *NftSpec) { s.Underlay.Proto = "esp" }), `nft underlay proto "esp": must be udp or gre`},
		{"underlay family", old(func(s *NftSpec) { s.Underlay.Peer = netip.MustParseAddr("2001:db8::1") }), "must be of the same address family"},
		{"underlay without tunnel", NftSpec{Role: RoleOld, ForwardMark: 1, Underlay: okSpec().Underlay}, "nft underlay: only with a tunnel device"},
		{"forward", old(func(s *NftSpec) { s.ForwardMark, s.Forwards = 0x40000, []NftForward{fwd} }), ""},
		{"forward mark", old(func(s *NftSpec) { s.Forwards = []NftForward{fwd} }), "nft forward_mark 0: forwards need a non-zero 32-bit mark"},
		{"forward mark overlap", old(func(s *NftSpec) { s.ForwardMark, s.Forwards = 0x60000, []NftForward{fwd} }), "nft forward_mark 0x60000 overlaps the tunnel mark 0x20000"},
		{"forward is a service", old(func(s *NftSpec) {
			f := fwd
			f.Port = 25
			s.ForwardMark, s.Forwards = 0x40000, []NftForward{f}
		}), "nft services 198.51.100.10 tcp 25: also a forward"},
		{"forward two destinations", old(func(s *NftSpec) {
			f := fwd
			f.ToPort++
			s.ForwardMark, s.Forwards = 0x40000, []NftForward{fwd, f}
		}), "nft forward 198.51.100.10 tcp 8443 goes to 203.0.113.20 port 443 and to 203.0.113.20 port 444"},
		{"forward to", old(func(s *NftSpec) {
			f := fwd
			f.To = netip.Addr{}
			s.ForwardMark, s.Forwards = 0x40000, []NftForward{f}
		}), `nft forward to "": must be an IPv4 or IPv6 address`},
		{"forward to family", old(func(s *NftSpec) {
			f := fwd
			f.To = netip.MustParseAddr("2001:db8::1")
			s.ForwardMark, s.Forwards = 0x40000, []NftForward{f}
		}), "both must be of the same address family"},
		{"forward to_port", old(func(s *NftSpec) {
			f := fwd
			f.ToPort = 0
			s.ForwardMark, s.Forwards = 0x40000, []NftForward{f}
		}), "to_port 0 must be 1..65535"},
		{"guard without own flows", NftSpec{Role: RoleNew, TunnelDev: "mig0", Mark: 1, Guard4: true}, "nft guard4/guard6: a guard needs"},
		{"keep dest on new", nw(func(s *NftSpec) { s.KeepDest = true }), "nft keep_dest: only for role old"},
		{"dnat replies on old", old(func(s *NftSpec) { s.DNATReplies = true }), "nft dnat_replies: only for role new"},
		{"peer src", old(func(s *NftSpec) { s.PeerSrc = []netip.Addr{netip.MustParseAddr("198.51.100.10")} }), ""},
		{"peer src on new", nw(func(s *NftSpec) { s.PeerSrc = []netip.Addr{netip.MustParseAddr("198.51.100.10")} }), "nft peer_src: only for role old"},
		{"peer src none", old(func(s *NftSpec) { s.PeerSrc = []netip.Addr{{}} }), `nft peer_src "": must be an IPv4 or IPv6 address`},
	} {
		wantErr(t, c.name, c.spec.Validate(), c.want)
	}
	wantErr(t, "table family", NftTable{Family: "ip", Name: "migrate", Spec: okSpec()}.Validate(), `nft table family "ip": must be inet`)
	wantErr(t, "table name", NftTable{Family: "inet", Name: "../x", Spec: okSpec()}.Validate(), `nft table name "../x": must be a letter`)
	wantErr(t, "table ok", NftTable{Family: "inet", Name: "migrate", Spec: okSpec()}.Validate(), "")
}

func TestObjectValidate(t *testing.T) {
	link := Link{Name: "mig0", Type: VXLAN, Local: netip.MustParseAddr("198.51.100.10"), Remote: netip.MustParseAddr("203.0.113.20"), VNI: 4242, Port: 4789, MTU: 1450, Up: true}
	wg := Link{Name: "mig0", Type: WireGuard, Remote: netip.MustParseAddr("203.0.113.20"), Port: 51820, PeerKey: "TkVXbmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmU=", MTU: 1420}
	l := func(f func(*Link)) *Link { v := link; f(&v); return &v }
	rule := Rule{Family: 4, Priority: 900, Mark: 0x20000, Mask: 0x20000, Table: 4242, Protocol: 77}
	r := func(f func(*Rule)) *Rule { v := rule; f(&v); return &v }
	route := Route{Family: 4, Table: 4242, Type: "unicast", Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "mig0", Gw: netip.MustParseAddr("169.254.42.2"), Protocol: 77}
	rt := func(f func(*Route)) *Route { v := route; f(&v); return &v }
	for _, c := range []struct {
		name string
		obj  Object
		want string
	}{
		{"empty", Object{}, "empty object: set exactly one of"},
		{"two", Object{Link: &link, Rule: &rule}, "object sets link and rule: set exactly one"},

		{"link", Object{Link: &link}, ""},
		{"link wireguard", Object{Link: &wg}, ""},
		{"link gre", Object{Link: l(func(l *Link) { l.Type, l.VNI, l.Port, l.Key = GRE, 0, 0, 7 })}, ""},
		{"link name", Object{Link: l(func(l *Link) { l.Name = "a/b" })}, `link name "a/b": must be 1..15 bytes`},
		{"link type direct", Object{Link: l(func(l *Link) { l.Type = Direct })}, `link mig0 type "direct": must be vxlan, gre, ip6gre or wireguard`},
		{"link local", Object{Link: l(func(l *Link) { l.Local = netip.Addr{} })}, `link mig0 local "": must be an IPv4 or IPv6 address`},
		{"link families", Object{Link: l(func(l *Link) { l.Remote = netip.MustParseAddr("2001:db8::2") })}, "must be of the same address family"},
		{"link gre v6", Object{Link: l(func(l *Link) {
			l.Type, l.Local, l.Remote = GRE, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
		})}, "gre needs IPv4"},
		{"link vni", Object{Link: l(func(l *Link) { l.VNI = 1 << 24 })}, "link mig0 vni 16777216: must be 1..16777215"},
		{"link mtu", Object{Link: l(func(l *Link) { l.MTU = 67 })}, "link mig0 mtu 67: must be 68..65535, or 0"},
		{"link mac", Object{Link: l(func(l *Link) { l.MAC = "01:00:00:00:00:01" })}, "link mig0 address \"01:00:00:00:00:01\": only a vxlan link has one, a locally administered unicast MAC"},
		{"link wg local", Object{Link: func() *Link { v := wg; v.Local = netip.MustParseAddr("198.51.100.10"); return &v }()}, "a wireguard link has no local address"},
		{"link wg key", Object{Link: func() *Link { v := wg; v.PeerKey = "short"; return &v }()}, "link mig0 peer_key \"short\": must be a WireGuard key"},

		{"sysctl", Object{Sysctl: &Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}}, ""},
		{"sysctl conntrack", Object{Sysctl: &Sysctl{Name: ConntrackMax, Value: "262144"}}, ""},
		{"sysctl traversal", Object{Sysctl: &Sysctl{Name: "net.ipv4.conf.../../x", Value: "1"}}, "sysctl name \"net.ipv4.conf.../../x\": must be dotted components"},
		{"sysctl kernel", Object{Sysctl: &Sysctl{Name: "kernel.core_pattern", Value: "x"}}, "only net.ipv4.*, net.ipv6.* and net.netfilter.nf_conntrack_max"},
		{"sysctl wildcard", Object{Sysctl: &Sysctl{Name: "net.ipv6.conf.*.accept_ra", Value: "2"}}, `"*" components are only allowed in facts requests`},
		{"sysctl value", Object{Sysctl: &Sysctl{Name: "net.ipv4.ip_forward", Value: "1\n"}}, "sysctl net.ipv4.ip_forward value \"1\\n\": must be at most 256 bytes of printable ASCII"},

		{"rule", Object{Rule: &rule}, ""},
		{"rule dst", Object{Rule: r(func(r *Rule) { r.Dst = netip.MustParsePrefix("198.51.100.10/32") })}, ""},
		{"rule family", Object{Rule: r(func(r *Rule) { r.Family = 5 })}, "rule family 5: must be 4 or 6"},
		{"rule priority", Object{Rule: r(func(r *Rule) { r.Priority = -1 })}, "rule priority -1: must be 0..4294967295"},
		{"rule src family", Object{Rule: r(func(r *Rule) { r.Src = netip.MustParsePrefix("2001:db8::/32") })}, `rule src "2001:db8::/32": must be an IPv4 prefix`},
		{"rule dst mapped", Object{Rule: r(func(r *Rule) { r.Dst = netip.MustParsePrefix("::ffff:198.51.100.10/128") })}, `rule dst "::ffff:198.51.100.10/128": IPv4-mapped IPv6 prefixes are not allowed`},
		{"rule table", Object{Rule: r(func(r *Rule) { r.Table = 0 })}, "rule table 0: must be 1..4294967295"},
		{"rule iif", Object{Rule: r(func(r *Rule) { r.IifName = "../x" })}, `rule iif "../x"`},
		{"rule mark", Object{Rule: r(func(r *Rule) { r.Mask = 0 })}, "rule fwmark 0x20000 with mask 0: a mark needs a non-zero mask"},

		{"addr", Object{Addr: &Addr{Dev: "lo", CIDR: netip.MustParsePrefix("198.51.100.10/32")}}, ""},
		{"addr dev", Object{Addr: &Addr{Dev: "", CIDR: netip.MustParsePrefix("198.51.100.10/32")}}, `addr dev "": must be 1..15 bytes`},
		{"addr cidr", Object{Addr: &Addr{Dev: "lo"}}, `addr cidr "": must be an address with a prefix length`},
		{"addr mapped", Object{Addr: &Addr{Dev: "lo", CIDR: netip.MustParsePrefix("::ffff:198.51.100.10/128")}}, `addr cidr "::ffff:198.51.100.10/128": IPv4-mapped IPv6 prefixes are not allowed`},

		{"route", Object{Route: &route}, ""},
		{"route throw", Object{Route: rt(func(r *Route) {
			r.Type, r.Dst, r.Dev, r.Gw = "throw", netip.MustParsePrefix("203.0.113.20/32"), "", netip.Addr{}
		})}, ""},
		{"route type", Object{Route: rt(func(r *Route) { r.Type = "local" })}, `route type "local": must be unicast, throw, blackhole, unreachable or prohibit`},
		{"route dst", Object{Route: rt(func(r *Route) { r.Dst = netip.MustParsePrefix("::/0") })}, `route dst "::/0": must be an IPv4 prefix`},
		{"route gw", Object{Route: rt(func(r *Route) { r.Gw = netip.MustParseAddr("2001:db8::1") })}, "route gw 2001:db8::1: must be an IPv4 address, like the route"},
		{"route table", Object{Route: rt(func(r *Route) { r.Table = -5 })}, "route table -5: must be 1..4294967295"},

		{"file", Object{File: &File{Path: "/etc/systemd/system/x.service", Content: "[Unit]\n"}}, ""},
		{"file link", Object{File: &File{Path: "/etc/x", Link: "/etc/y"}}, ""},
		{"file relative", Object{File: &File{Path: "etc/x"}}, `file path "etc/x": must be an absolute, clean path`},
		{"file both", Object{File: &File{Path: "/etc/x", Content: "a", Link: "/y"}}, "set content or link, not both"},
		{"file big", Object{File: &File{Path: "/etc/x", Content: strings.Repeat("a", MaxFileSize+1)}}, "content is 65537 bytes, more than 65536"},

		{"nft", Object{Nft: &NftTable{Family: "inet", Name: "migrate", Spec: okSpec()}}, ""},
	} {
		wantErr(t, c.name, c.obj.Validate(), c.want)
	}
}

func TestStepValidate(t *testing.T) {
	a := &Object{Sysctl: &Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}}
	b := &Object{Sysctl: &Sysctl{Name: "net.ipv4.ip_forward", Value: "0"}}
	c := &Object{Sysctl: &Sysctl{Name: "net.ipv6.conf.all.forwarding", Value: "1"}}
	bad := &Object{Sysctl: &Sysctl{Name: "net.ipv4.ip_forward", Value: "1\n"}}
	for _, x := range []struct {
		name string
		step Step
		want string
	}{
		{"create", Step{Action: Create, After: a}, ""},
		{"update", Step{Action: Update, Before: b, After: a}, ""},
		{"delete", Step{Action: Delete, Before: a}, ""},
		{"action", Step{Action: "destroy", After: a}, `action "destroy": must be create, update or delete`},
		{"create with before", Step{Action: Create, Before: a, After: a}, "a create step needs an object after and none before"},
		{"update key", Step{Action: Update, Before: a, After: c}, "an update must keep the object's key"},
		{"update bad after", Step{Action: Update, Before: a, After: bad}, "after: sysctl net.ipv4.ip_forward value"},
	} {
		wantErr(t, x.name, x.step.Validate(), x.want)
	}
}

func TestFactsRequestValidate(t *testing.T) {
	ok := FactsRequest{Tables: []int{4242}, Sysctls: []string{"net.ipv6.conf.*.accept_ra"}, NftTable: "migrate",
		Flows: []NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: TCP, Port: 25}}, Sockets: true}
	m := func(f func(*FactsRequest)) FactsRequest { r := ok; f(&r); return r }
	for _, c := range []struct {
		name string
		req  FactsRequest
		want string
	}{
		{"ok", ok, ""},
		{"table", m(func(r *FactsRequest) { r.Tables = []int{0} }), "table 0: must be 1..4294967295"},
		{"sysctl", m(func(r *FactsRequest) { r.Sysctls = []string{"kernel.x"} }), "only net.ipv4.*"},
		{"nft table", m(func(r *FactsRequest) { r.NftTable = "1x" }), `nft table name "1x"`},
		{"sockets", m(func(r *FactsRequest) { r.Flows = nil }), "sockets without flows"},
		{"flow percent", m(func(r *FactsRequest) {
			r.Flows = []NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: TCP, Port: 25, Percent: 100}}
		}), "flows 198.51.100.10 tcp 25: percent 100 must be 0"},
		{"flow proto", m(func(r *FactsRequest) {
			r.Flows = []NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "icmp", Port: 25}}
		}), `flows 198.51.100.10 proto "icmp": must be tcp or udp`},
	} {
		wantErr(t, c.name, c.req.Validate(), c.want)
	}
}

// FwRule: the agent's decoded rules, and what old facts without them
// read as; the rules are not part of Digest.
func TestFwRuleValidate(t *testing.T) {
	ok := FwRule{Family: "ip", Table: "filter", Chain: "ufw-user-input", L4Proto: "udp", Saddr: netip.MustParseAddr("198.51.100.2"), Daddr: netip.MustParseAddr("198.51.100.1"), Dport: 4789, Verdict: "accept"}
	m := func(f func(*FwRule)) FwRule { r := ok; f(&r); return r }
	for _, c := range []struct {
		name string
		r    FwRule
		want string
	}{
		{"ok", ok, ""},
		{"inet ipv6", FwRule{Family: "inet", Table: "firewalld", Chain: "filter_IN_public_allow", NfProto: "ipv6", Saddr: netip.MustParseAddr("2001:db8::2"), Verdict: "jump x"}, ""},
		{"iifname", FwRule{Family: "ip6", Table: "filter", Chain: "ufw6-user-forward", IifName: "mig0", Verdict: "accept"}, ""},
		{"number proto", m(func(r *FwRule) { r.L4Proto, r.Dport = "99", 0 }), ""},
		{"family", m(func(r *FwRule) { r.Family = "arp" }), `firewall rule family "arp"`},
		{"chain", m(func(r *FwRule) { r.Chain = "a b" }), `firewall rule chain "a b"`},
		{"nfproto outside inet", m(func(r *FwRule) { r.NfProto = "ipv4" }), "only in an inet table"},
		{"ifname", m(func(r *FwRule) { r.OifName = "a/b" }), `firewall rule oifname "a/b"`},
		{"proto name", m(func(r *FwRule) { r.L4Proto = "udpx" }), `firewall rule l4proto "udpx"`},
		{"proto number with a name", m(func(r *FwRule) { r.L4Proto = "17" }), `firewall rule l4proto "17"`},
		{"address family", m(func(r *FwRule) { r.Daddr = netip.MustParseAddr("2001:db8::1") }), "firewall rule daddr 2001:db8::1: not an address of the rule's family"},
		{"inet address without nfproto", FwRule{Family: "inet", Table: "t", Chain: "c", Saddr: netip.MustParseAddr("192.0.2.1")}, "not an address of the rule's family"},
		{"prefix", m(func(r *FwRule) { r.Saddr, r.SaddrNet = netip.Addr{}, netip.MustParsePrefix("10.0.0.0/8") }), ""},
		{"prefix of mapped addresses", FwRule{Family: "ip6", Table: "filter", Chain: "c", DaddrNet: netip.MustParsePrefix("::ffff:0.0.0.0/96")}, ""},
		{"prefix and address", m(func(r *FwRule) { r.SaddrNet = netip.MustParsePrefix("10.0.0.0/8") }), "saddr_net 10.0.0.0/8: must be a masked prefix shorter than an address, without an address too"},
		{"prefix not masked", m(func(r *FwRule) { r.Daddr, r.DaddrNet = netip.Addr{}, netip.MustParsePrefix("10.0.0.1/8") }), "daddr_net 10.0.0.1/8: must be a masked prefix"},
		{"prefix of full length", m(func(r *FwRule) { r.Daddr, r.DaddrNet = netip.Addr{}, netip.MustParsePrefix("10.0.0.1/32") }), "daddr_net 10.0.0.1/32: must be a masked prefix shorter than an address"},
		{"prefix family", m(func(r *FwRule) { r.Daddr, r.DaddrNet = netip.Addr{}, netip.MustParsePrefix("2001:db8::/32") }), "daddr_net 2001:db8::/32: not a prefix of the rule's family"},
		{"address set", m(func(r *FwRule) {
			r.Saddr, r.Saddrs = netip.Addr{}, [][2]netip.Addr{{netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.255.255.255")}}
		}), ""},
		{"address set and address", m(func(r *FwRule) {
			r.Saddrs = [][2]netip.Addr{{netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.0.0.1")}}
		}), "firewall rule saddrs: at most 64 spans, without an address or prefix too"},
		{"address set reversed", m(func(r *FwRule) {
			r.Daddr, r.Daddrs = netip.Addr{}, [][2]netip.Addr{{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1")}}
		}), "firewall rule daddrs 10.0.0.2-10.0.0.1: not a span of addresses"},
		{"address set family", m(func(r *FwRule) {
			r.Daddr, r.Daddrs = netip.Addr{}, [][2]netip.Addr{{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")}}
		}), "not a span of addresses of the rule's family"},
		{"port without proto", m(func(r *FwRule) { r.L4Proto = "" }), "dport 4789: needs an l4proto"},
		{"verdict", m(func(r *FwRule) { r.Verdict = "queue" }), `firewall rule verdict "queue"`},
		{"jump without chain", m(func(r *FwRule) { r.Verdict = "jump" }), `firewall rule verdict jump ""`},
		{"accept with chain", m(func(r *FwRule) { r.Verdict = "accept x" }), "takes no chain"},
	} {
		wantErr(t, c.name, c.r.Validate(), c.want)
	}
	var f Facts
	if err := json.Unmarshal([]byte(`{"hostname":"h","chains":[{"family":"ip","table":"filter","chain":"ufw-user-input","hook":"","priority":0,"policy":""}]}`), &f); err != nil || f.FwRules != nil {
		t.Errorf("old facts: %v, rules %v", err, f.FwRules)
	}
	d := f.Digest()
	f.FwRules = []FwRule{ok}
	if f.Digest() != d {
		t.Error("the rules change the facts' digest")
	}
	b, _ := json.Marshal(FwRule{Family: "ip", Table: "filter", Chain: "c"})
	if string(b) != `{"family":"ip","table":"filter","chain":"c"}` {
		t.Errorf("an empty rule is %s", b)
	}
}

func TestNetworkdValidate(t *testing.T) {
	good := []Networkd{
		{},
		{Running: true, PID: 42, ForeignRules: true, ForeignRoutes: true},
		{Running: true, PID: 42, Files: []string{"/etc/systemd/networkd.conf"}, Problems: []string{"x:1: bad"}},
	}
	for _, n := range good {
		if err := n.Validate(); err != nil {
			t.Errorf("%+v: %v", n, err)
		}
	}
	bad := []Networkd{
		{PID: 3},
		{ForeignRules: true},
		{Running: true},
		{Running: true, PID: -1},
		{Running: true, PID: 4, Files: []string{"etc/x"}},
		{Running: true, PID: 4, Files: []string{"/etc/../x"}},
		{Running: true, PID: 4, Problems: []string{"a\x00b"}},
		{Running: true, PID: 4, Problems: make([]string, MaxNetworkdProblems+1)},
	}
	for _, n := range bad {
		if err := n.Validate(); err == nil {
			t.Errorf("%+v passed", n)
		}
	}
}
