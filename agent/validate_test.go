package agent

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// Valid objects as the planner makes them (plan.Desired) and as facts
// report them.
func okLink() state.Link {
	return state.Link{Name: "mig0", Type: "vxlan", Local: netip.MustParseAddr("198.51.100.10"), Remote: netip.MustParseAddr("203.0.113.20"), VNI: 4242, Port: 4789, MTU: 1450, Up: true}
}

func okSysctl() state.Sysctl { return state.Sysctl{Name: "net.ipv4.conf.mig0.rp_filter", Value: "2"} }

func okRule() state.Rule {
	return state.Rule{Family: 4, Priority: 900, Mark: 0x20000, Mask: 0x20000, Table: 4242, Protocol: 77}
}

func okAddr() state.Addr {
	return state.Addr{Dev: "mig0", CIDR: netip.MustParsePrefix("169.254.42.1/30")}
}

func okRoute() state.Route {
	return state.Route{Family: 4, Table: 4242, Type: "unicast", Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "mig0", Gw: netip.MustParseAddr("169.254.42.2"), Protocol: 77}
}

func okNft() state.NftTable {
	return state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{
		Role: "old", TunnelDev: "mig0", Mark: 0x20000,
		Services:  []state.NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 25, Percent: 100}, {Addr: netip.MustParseAddr("2001:db8::10"), Proto: "udp", Port: 53, Percent: 10}},
		Accounted: []state.NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 25}},
		Underlay:  &state.NftUnderlay{Proto: "udp", Port: 4789, Local: netip.MustParseAddr("198.51.100.10"), Peer: netip.MustParseAddr("203.0.113.20")},
	}}
}

// okNftNew is NEW's table: no services, addresses it must not answer ARP
// for.
func okNftNew(t *state.NftTable) {
	t.Spec = state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000, NoARP: []netip.Addr{netip.MustParseAddr("198.51.100.10")}}
}

func create(o state.Object) state.Step {
	return state.Step{Host: "old", Action: state.Create, After: &o}
}

func link(f func(*state.Link)) state.Step {
	v := okLink()
	f(&v)
	return create(state.Object{Link: &v})
}

func sysctl(name, value string) state.Step {
	return create(state.Object{Sysctl: &state.Sysctl{Name: name, Value: value}})
}

func rule(f func(*state.Rule)) state.Step {
	v := okRule()
	f(&v)
	return create(state.Object{Rule: &v})
}

// addr makes an address step; a cidr that does not parse is the zero
// Prefix (what "" decodes to: text that does not parse fails at decode,
// TestParamsStrict).
func addr(dev, cidr string) state.Step {
	p, _ := netip.ParsePrefix(cidr)
	return create(state.Object{Addr: &state.Addr{Dev: dev, CIDR: p}})
}

func route(f func(*state.Route)) state.Step {
	v := okRoute()
	f(&v)
	return create(state.Object{Route: &v})
}

func nft(f func(*state.NftTable)) state.Step {
	v := okNft()
	f(&v)
	return create(state.Object{Nft: &v})
}

// check runs err against want: "" means no error, else a substring of it.
func check(t *testing.T, name string, err error, want string) {
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

func TestValidateStep(t *testing.T) {
	sc := okSysctl()
	sc2 := state.Sysctl{Name: sc.Name, Value: "0"}
	other := state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}
	l := okLink()
	o := func(s state.Sysctl) *state.Object { return &state.Object{Sysctl: &s} }
	longName := "net.ipv4." + strings.Repeat("a", 300)
	noop := func(*state.Link) {}

	cases := []struct {
		name string
		step state.Step
		want string
	}{
		// Actions and the shape of a step.
		{"create", create(state.Object{Sysctl: &sc}), ""},
		{"update", state.Step{Action: state.Update, Before: o(sc), After: o(sc2)}, ""},
		{"delete", state.Step{Action: state.Delete, Before: o(sc)}, ""},
		{"host is ignored", state.Step{Host: "", Action: state.Delete, Before: o(sc)}, ""},
		{"no action", state.Step{After: o(sc)}, `bad step: action "": must be create, update or delete`},
		{"bad action", state.Step{Action: "destroy", After: o(sc)}, `action "destroy": must be create, update or delete`},
		{"create without after", state.Step{Action: state.Create, Before: o(sc)}, "a create step needs an object after and none before"},
		{"create with before", state.Step{Action: state.Create, Before: o(sc), After: o(sc)}, "a create step needs an object after and none before"},
		{"delete without before", state.Step{Action: state.Delete, After: o(sc)}, "a delete step needs an object before"},
		{"delete with after", state.Step{Action: state.Delete, Before: o(sc), After: o(sc)}, "a delete step needs an object before and none after"},
		{"update without before", state.Step{Action: state.Update, After: o(sc)}, "an update step needs an object before and after"},
		{"update changes key", state.Step{Action: state.Update, Before: o(sc), After: o(other)}, "an update must keep the object's key"},
		{"update changes kind", state.Step{Action: state.Update, Before: o(sc), After: &state.Object{Link: &l}}, "an update must keep the object's key"},
		{"update bad before", state.Step{Action: state.Update, Before: o(state.Sysctl{Name: "net.ipv4.x", Value: "a\nb"}), After: o(state.Sysctl{Name: "net.ipv4.x", Value: "1"})}, "bad step: before: sysctl net.ipv4.x value"},
		{"update bad after", state.Step{Action: state.Update, Before: o(sc), After: o(state.Sysctl{Name: sc.Name, Value: "1\n"})}, "bad step: after: sysctl"},
		{"empty object", create(state.Object{}), "empty object: set exactly one of link, sysctl, rule, addr, route, nft"},
		{"two kinds", create(state.Object{Sysctl: &sc, Link: &l}), "object sets link and sysctl: set exactly one"},

		// Links.
		{"link ok", link(noop), ""},
		{"link gre", link(func(l *state.Link) { l.Type, l.VNI, l.Port, l.Key = "gre", 0, 0, 42 }), ""},
		{"link ip6gre", link(func(l *state.Link) {
			l.Type, l.Local, l.Remote, l.VNI = "ip6gre", netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), 0
		}), ""},
		{"link vxlan v6", link(func(l *state.Link) {
			l.Local, l.Remote = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
		}), ""},
		{"link wireguard", link(func(l *state.Link) {
			l.Type, l.VNI, l.Local, l.Port, l.PeerKey = "wireguard", 0, netip.Addr{}, 51820, "TkVXbmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmU="
		}), ""},
		{"link wireguard with local", link(func(l *state.Link) {
			l.Type, l.VNI, l.Port, l.PeerKey = "wireguard", 0, 51820, "TkVXbmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmU="
		}), "a wireguard link has no local address"},
		{"link wireguard bad peer key", link(func(l *state.Link) {
			l.Type, l.VNI, l.Local, l.Port, l.PeerKey = "wireguard", 0, netip.Addr{}, 51820, "c2hvcnQ="
		}), "must be a WireGuard key, base64 of 32 bytes"},
		{"link vxlan with peer key", link(func(l *state.Link) { l.PeerKey = "TkVXbmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmU=" }), "only for wireguard links"},
		{"link mtu 0", link(func(l *state.Link) { l.MTU = 0 }), ""},
		{"link mtu 68", link(func(l *state.Link) { l.MTU = 68 }), ""},
		{"link mtu 65535", link(func(l *state.Link) { l.MTU = 65535 }), ""},
		{"link name 15", link(func(l *state.Link) { l.Name = "abcdefghijklmno" }), ""},
		{"link name empty", link(func(l *state.Link) { l.Name = "" }), `bad step: link name "": must be 1..15 bytes`},
		{"link name 16", link(func(l *state.Link) { l.Name = "abcdefghijklmnop" }), `link name "abcdefghijklmnop": must be 1..15 bytes`},
		{"link name slash", link(func(l *state.Link) { l.Name = "a/b" }), `link name "a/b"`},
		{"link name colon", link(func(l *state.Link) { l.Name = "eth0:1" }), `link name "eth0:1"`},
		{"link name space", link(func(l *state.Link) { l.Name = "a b" }), `link name "a b"`},
		{"link name tab", link(func(l *state.Link) { l.Name = "a\tb" }), `link name "a\tb"`},
		{"link name nul", link(func(l *state.Link) { l.Name = "a\x00" }), `link name "a\x00"`},
		{"link name dot", link(func(l *state.Link) { l.Name = "." }), `link name "."`},
		{"link name dotdot", link(func(l *state.Link) { l.Name = ".." }), `link name ".."`},
		{"link type", link(func(l *state.Link) { l.Type = "veth" }), `link mig0 type "veth": must be vxlan, gre, ip6gre or wireguard`},
		{"link no local", link(func(l *state.Link) { l.Local = netip.Addr{} }), `link mig0 local "": must be an IPv4 or IPv6 address`},
		{"link bad remote", link(func(l *state.Link) { l.Remote = netip.Addr{} }), `link mig0 remote "": must be an IPv4 or IPv6 address`},
		{"link zone", link(func(l *state.Link) {
			l.Local, l.Remote = netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("fe80::2")
		}), `link mig0 local "fe80::1%eth0"`},
		{"link mapped", link(func(l *state.Link) { l.Local = netip.MustParseAddr("::ffff:198.51.100.10") }), "IPv4-mapped IPv6 addresses are not allowed"},
		{"link mixed families", link(func(l *state.Link) { l.Remote = netip.MustParseAddr("2001:db8::2") }), "must be of the same address family"},
		{"link gre v6", link(func(l *state.Link) {
			l.Type, l.Local, l.Remote = "gre", netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
		}), "gre needs IPv4"},
		{"link ip6gre v4", link(func(l *state.Link) { l.Type = "ip6gre" }), "ip6gre needs IPv6"},
		{"link vni 0", link(func(l *state.Link) { l.VNI = 0 }), "vni 0: must be 1..16777215 for vxlan"},
		{"link vni max", link(func(l *state.Link) { l.VNI = 1<<24 - 1 }), ""},
		{"link vni big", link(func(l *state.Link) { l.VNI = 1 << 24 }), "vni 16777216: must be 1..16777215"},
		{"link mtu low", link(func(l *state.Link) { l.MTU = 67 }), "mtu 67: must be 68..65535, or 0"},
		{"link mtu high", link(func(l *state.Link) { l.MTU = 65536 }), "mtu 65536"},
		{"link mtu negative", link(func(l *state.Link) { l.MTU = -1 }), "mtu -1"},

		// Sysctls.
		{"sysctl ok", sysctl("net.ipv4.ip_forward", "1"), ""},
		{"sysctl v6", sysctl("net.ipv6.conf.all.forwarding", "1"), ""},
		{"sysctl dash", sysctl("net.ipv4.conf.br-lan.rp_filter", "2"), ""},
		{"sysctl multi value", sysctl("net.ipv4.tcp_rmem", "4096\t131072\t6291456"), ""},
		{"sysctl empty value", sysctl("net.ipv4.ip_forward", ""), ""},
		{"sysctl 256 bytes", sysctl("net.ipv4.x", strings.Repeat("1", 256)), ""},
		{"sysctl traversal", sysctl("net.ipv4.conf.../../../etc/passwd", "x"), `bad step: sysctl name "net.ipv4.conf.../../../etc/passwd": must be dotted components of letters, digits, _ - * (e.g. net.ipv4.ip_forward)`},
		{"sysctl brief example", sysctl("net/../x", "1"), `bad step: sysctl name "net/../x": must be dotted components of letters, digits, _ - * (e.g. net.ipv4.ip_forward)`},
		{"sysctl slash", sysctl("net.ipv4.conf/all", "1"), "must be dotted components"},
		{"sysctl slash in leaf", sysctl("net.ipv4.conf.all.rp/filter", "1"), "must be dotted components"},
		{"sysctl slash in top", sysctl("net.ipv4.ip/forward", "1"), "must be dotted components"},
		{"sysctl slash in device, short", sysctl("net.ipv4.conf.eth0/100", "1"), "must be dotted components"},
		{"sysctl vlan device", sysctl("net.ipv4.conf.eth0/100.rp_filter", "2"), ""},
		{"sysctl vlan device v6", sysctl("net.ipv6.neigh.br0/4/2.proxy_delay", "1"), ""},
		{"sysctl device dot", sysctl("net.ipv4.conf./.rp_filter", "2"), `device "/": with each "/" read as ".", must be 1..15 bytes`},
		{"sysctl device dotdot", sysctl("net.ipv4.conf.//.rp_filter", "2"), `device "//"`},
		{"sysctl device dotdot deeper", sysctl("net.ipv4.conf.//.//.//.etc.passwd", "2"), `device "//"`},
		{"sysctl device long", sysctl("net.ipv4.conf.abcdefgh/ijklmnop.rp_filter", "2"), `device "abcdefgh/ijklmnop"`},
		{"sysctl device colon", sysctl("net.ipv4.conf.eth0/1:2.rp_filter", "2"), `device "eth0/1:2"`},
		{"sysctl dotdot", sysctl("net.ipv4..ip_forward", "1"), "must be dotted components"},
		{"sysctl leading dot", sysctl(".net.ipv4.ip_forward", "1"), "must be dotted components"},
		{"sysctl trailing dot", sysctl("net.ipv4.ip_forward.", "1"), "must be dotted components"},
		{"sysctl empty", sysctl("", "1"), `sysctl name ""`},
		{"sysctl nul", sysctl("net.ipv4.ip_forward\x00", "1"), "must be dotted components"},
		{"sysctl space", sysctl("net.ipv4.ip forward", "1"), "must be dotted components"},
		{"sysctl kernel", sysctl("kernel.core_pattern", "|/bin/sh"), "only net.ipv4.*, net.ipv6.* and net.netfilter.nf_conntrack_max are allowed"},
		// The conntrack limit, exactly; nothing else under net.netfilter.
		{"sysctl conntrack max", sysctl("net.netfilter.nf_conntrack_max", "1048576"), ""},
		{"sysctl conntrack buckets", sysctl("net.netfilter.nf_conntrack_buckets", "65536"), "only net.ipv4.*, net.ipv6.* and net.netfilter.nf_conntrack_max"},
		{"sysctl conntrack other", sysctl("net.netfilter.nf_conntrack_tcp_loose", "0"), "only net.ipv4.*"},
		{"sysctl conntrack max longer", sysctl("net.netfilter.nf_conntrack_max.x", "1"), "only net.ipv4.*"},
		{"sysctl conntrack max short", sysctl("net.nf_conntrack_max", "1"), "only net.ipv4.*"},
		{"sysctl conntrack max glob", sysctl("net.netfilter.*", "1"), "only net.ipv4.*"},
		{"sysctl net.core", sysctl("net.core.somaxconn", "1"), "only net.ipv4.*, net.ipv6.*"},
		{"sysctl too short", sysctl("net.ipv4", "1"), "only net.ipv4.*, net.ipv6.*"},
		{"sysctl wildcard in step", sysctl("net.ipv6.conf.*.accept_ra", "2"), `"*" components are only allowed in facts requests`},
		{"sysctl long name", sysctl(longName, "1"), "must be at most 255 bytes"},
		{"sysctl newline", sysctl("net.ipv4.ip_forward", "1\n"), `sysctl net.ipv4.ip_forward value "1\n": must be at most 256 bytes of printable ASCII (tabs allowed, no newline)`},
		{"sysctl cr", sysctl("net.ipv4.ip_forward", "1\r"), "printable ASCII"},
		{"sysctl nul value", sysctl("net.ipv4.ip_forward", "1\x00"), "printable ASCII"},
		{"sysctl utf8 value", sysctl("net.ipv4.ip_forward", "é"), "printable ASCII"},
		{"sysctl long value", sysctl("net.ipv4.ip_forward", strings.Repeat("1", 257)), "at most 256 bytes"},

		// Rules.
		{"rule ok", rule(func(*state.Rule) {}), ""},
		{"rule local", rule(func(r *state.Rule) { *r = state.Rule{Family: 6, Priority: 0, Table: 255} }), ""},
		{"rule iif", rule(func(r *state.Rule) {
			r.Mark, r.Mask, r.Dst, r.IifName = 0, 0, netip.MustParsePrefix("198.51.100.10/32"), "lo"
		}), ""},
		{"rule src v6", rule(func(r *state.Rule) { r.Family, r.Src = 6, netip.MustParsePrefix("2001:db8::10/128") }), ""},
		{"rule max", rule(func(r *state.Rule) { r.Priority, r.Table = 1<<32-1, 1<<32-1 }), ""},
		{"rule family", rule(func(r *state.Rule) { r.Family = 5 }), "rule family 5: must be 4 or 6"},
		{"rule family 0", rule(func(r *state.Rule) { r.Family = 0 }), "rule family 0"},
		{"rule negative priority", rule(func(r *state.Rule) { r.Priority = -1 }), "rule priority -1: must be 0..4294967295"},
		{"rule big priority", rule(func(r *state.Rule) { r.Priority = 1 << 32 }), "rule priority 4294967296"},
		{"rule src family", rule(func(r *state.Rule) { r.Src = netip.MustParsePrefix("2001:db8::/32") }), `rule src "2001:db8::/32": must be an IPv4 prefix`},
		{"rule dst mapped", rule(func(r *state.Rule) { r.Dst = netip.MustParsePrefix("::ffff:198.51.100.10/128") }), `rule dst "::ffff:198.51.100.10/128": IPv4-mapped IPv6 prefixes are not allowed`},
		{"rule table 0", rule(func(r *state.Rule) { r.Table = 0 }), "rule table 0: must be 1..4294967295"},
		{"rule table big", rule(func(r *state.Rule) { r.Table = 1 << 32 }), "rule table 4294967296"},
		{"rule iif bad", rule(func(r *state.Rule) { r.IifName = "../x" }), `rule iif "../x"`},
		{"rule mark without mask", rule(func(r *state.Rule) { r.Mask = 0 }), "rule fwmark 0x20000 with mask 0"},
		{"rule mask without mark", rule(func(r *state.Rule) { r.Mark = 0 }), ""},

		// Addresses.
		{"addr ok", addr("mig0", "169.254.42.1/30"), ""},
		{"addr v6", addr("lo", "2001:db8::10/128"), ""},
		{"addr bad dev", addr("", "169.254.42.1/30"), `addr dev ""`},
		{"addr long dev", addr("abcdefghijklmnopq", "169.254.42.1/30"), "addr dev"},
		{"addr none", addr("lo", ""), `addr cidr "": must be an address with a prefix length`},
		{"addr mapped", addr("lo", "::ffff:198.51.100.10/128"), `addr cidr "::ffff:198.51.100.10/128": IPv4-mapped IPv6 prefixes are not allowed`},

		// Routes.
		{"route ok", route(func(*state.Route) {}), ""},
		{"route throw", route(func(r *state.Route) {
			r.Type, r.Dst, r.Dev, r.Gw = "throw", netip.MustParsePrefix("203.0.113.20/32"), "", netip.Addr{}
		}), ""},
		{"route v6", route(func(r *state.Route) {
			r.Family, r.Dst, r.Gw = 6, netip.MustParsePrefix("::/0"), netip.MustParseAddr("fe80::42:2")
		}), ""},
		{"route blackhole", route(func(r *state.Route) { r.Type, r.Dev, r.Gw = "blackhole", "", netip.Addr{} }), ""},
		{"route unreachable", route(func(r *state.Route) { r.Type = "unreachable" }), ""},
		{"route prohibit", route(func(r *state.Route) { r.Type = "prohibit" }), ""},
		{"route family", route(func(r *state.Route) { r.Family = 10 }), "route family 10: must be 4 or 6"},
		{"route type", route(func(r *state.Route) { r.Type = "local" }), `route type "local": must be unicast, throw, blackhole, unreachable or prohibit`},
		{"route type empty", route(func(r *state.Route) { r.Type = "" }), `route type ""`},
		{"route dst family", route(func(r *state.Route) { r.Dst = netip.MustParsePrefix("::/0") }), `route dst "::/0": must be an IPv4 prefix`},
		{"route dst missing", route(func(r *state.Route) { r.Dst = netip.Prefix{} }), `route dst ""`},
		{"route gw mapped", route(func(r *state.Route) { r.Gw = netip.MustParseAddr("::ffff:169.254.42.2") }), `route gw "::ffff:169.254.42.2": IPv4-mapped IPv6 addresses are not allowed`},
		{"route gw family", route(func(r *state.Route) { r.Gw = netip.MustParseAddr("2001:db8::1") }), "route gw 2001:db8::1: must be an IPv4 address"},
		{"route dev bad", route(func(r *state.Route) { r.Dev = "a:b" }), `route dev "a:b"`},
		{"route table 0", route(func(r *state.Route) { r.Table = 0 }), "route table 0: must be 1..4294967295"},
		{"route table negative", route(func(r *state.Route) { r.Table = -5 }), "route table -5"},

		// nft.
		{"nft ok", nft(func(*state.NftTable) {}), ""},
		{"nft new", nft(func(t *state.NftTable) {
			t.Spec = state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 1, Underlay: &state.NftUnderlay{Proto: "gre", Local: netip.MustParseAddr("203.0.113.20"), Peer: netip.MustParseAddr("198.51.100.10")}}
		}), ""},
		{"nft family", nft(func(t *state.NftTable) { t.Family = "ip" }), `nft table family "ip": must be inet`},
		{"nft name empty", nft(func(t *state.NftTable) { t.Name = "" }), `nft table name "": must be a letter followed by up to 31 letters, digits, _ or -`},
		{"nft name traversal", nft(func(t *state.NftTable) { t.Name = "../../etc/x" }), `nft table name "../../etc/x"`},
		{"nft name digit", nft(func(t *state.NftTable) { t.Name = "1x" }), `nft table name "1x"`},
		{"nft name 32", nft(func(t *state.NftTable) { t.Name = "a" + strings.Repeat("b", 31) }), ""},
		{"nft name 33", nft(func(t *state.NftTable) { t.Name = "a" + strings.Repeat("b", 32) }), "nft table name"},
		{"nft role", nft(func(t *state.NftTable) { t.Spec.Role = "both" }), `nft role "both": must be old or new`},
		{"nft tunnel dev", nft(func(t *state.NftTable) { t.Spec.TunnelDev = "" }), `nft tunnel_dev ""`},
		{"nft mark", nft(func(t *state.NftTable) { t.Spec.Mark = 0 }), "nft mark 0"},
		{"nft service addr", nft(func(t *state.NftTable) { t.Spec.Services[0].Addr = netip.Addr{} }), `nft services addr "": must be an IPv4 or IPv6 address`},
		{"nft service zone", nft(func(t *state.NftTable) { t.Spec.Services[0].Addr = netip.MustParseAddr("fe80::1%eth0") }), `nft services addr "fe80::1%eth0": must be an IPv4 or IPv6 address without zone`},
		{"nft service proto", nft(func(t *state.NftTable) { t.Spec.Services[0].Proto = "sctp" }), `nft services 198.51.100.10 proto "sctp": must be tcp or udp`},
		{"nft service port", nft(func(t *state.NftTable) { t.Spec.Services[0].Port = 0 }), "nft services 198.51.100.10 tcp port 0: must be 1..65535"},
		{"nft service percent", nft(func(t *state.NftTable) { t.Spec.Services[0].Percent = 101 }), "percent 101 must be 1..100"},
		{"nft service negative percent", nft(func(t *state.NftTable) { t.Spec.Services[0].Percent = -1 }), "percent -1"},
		// The renderer's rule: a moved service has 1..100 (it used to
		// pass here at 0 and fail in the kernel).
		{"nft service percent 0", nft(func(t *state.NftTable) { t.Spec.Services[0].Percent = 0 }), "percent 0 must be 1..100"},
		{"nft accounted percent", nft(func(t *state.NftTable) { t.Spec.Accounted[0].Percent = 10 }), "nft accounted 198.51.100.10 tcp 25: percent 10 must be 0"},
		{"nft service two percents", nft(func(t *state.NftTable) {
			t.Spec.Services = append(t.Spec.Services, state.NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 25, Percent: 10})
		}), "listed at 100 % and at 10 %"},
		{"nft new with services", nft(func(t *state.NftTable) { t.Spec.Role = "new" }), "nft services/accounted: only for role old"},
		{"nft old with noarp", nft(func(t *state.NftTable) { t.Spec.NoARP = []netip.Addr{netip.MustParseAddr("198.51.100.10")} }), "nft no_arp: only for role new"},
		{"nft underlay gre port", nft(func(t *state.NftTable) { t.Spec.Underlay.Proto = "gre" }), "nft underlay gre port 4789: gre has no port"},
		{"nft accounted", nft(func(t *state.NftTable) { t.Spec.Accounted[0].Proto = "" }), `nft accounted 198.51.100.10 proto ""`},
		{"nft underlay proto", nft(func(t *state.NftTable) { t.Spec.Underlay.Proto = "esp" }), `nft underlay proto "esp": must be udp or gre`},
		{"nft underlay port", nft(func(t *state.NftTable) { t.Spec.Underlay.Port = 0 }), "nft underlay udp port 0"},
		{"nft underlay local", nft(func(t *state.NftTable) { t.Spec.Underlay.Local = netip.Addr{} }), `nft underlay local ""`},
		{"nft underlay peer", nft(func(t *state.NftTable) { t.Spec.Underlay.Peer = netip.MustParseAddr("::ffff:203.0.113.20") }), `nft underlay peer "::ffff:203.0.113.20": IPv4-mapped IPv6 addresses are not allowed`},
		{"nft underlay family", nft(func(t *state.NftTable) { t.Spec.Underlay.Peer = netip.MustParseAddr("2001:db8::1") }), "must be of the same address family"},
		{"nft noarp", nft(okNftNew), ""},
		{"nft noarp v6", nft(func(t *state.NftTable) { okNftNew(t); t.Spec.NoARP = []netip.Addr{netip.MustParseAddr("2001:db8::1")} }), "nft no_arp 2001:db8::1: must be an IPv4 address"},
		{"nft noarp none", nft(func(t *state.NftTable) { okNftNew(t); t.Spec.NoARP = []netip.Addr{{}} }), `nft no_arp "": must be an IPv4 or IPv6 address`},
		{"nft too many services", nft(func(t *state.NftTable) {
			t.Spec.Services = make([]state.NftService, state.MaxListLen+1)
		}), "nft services: 1000001 entries, at most 1000000 allowed"},
		{"nft guard old", nft(func(t *state.NftTable) { t.Spec.Guard4, t.Spec.Guard6 = true, true }), ""},
		{"nft guard new forwards", nft(func(t *state.NftTable) {
			t.Spec = state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 1, ForwardMark: 2, Guard4: true,
				Forwards: []state.NftForward{{Addr: netip.MustParseAddr("203.0.113.20"), Proto: "tcp", Port: 443, To: netip.MustParseAddr("198.51.100.10"), ToPort: 443}}}
		}), ""},
		{"nft guard new no forwards", nft(func(t *state.NftTable) {
			t.Spec = state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 1, Guard6: true}
		}), "nft guard4/guard6: a guard needs migrate's own forwarded flows"},
		{"nft too many noarp", nft(func(t *state.NftTable) { okNftNew(t); t.Spec.NoARP = make([]netip.Addr, state.MaxListLen+1) }), "nft no_arp: 1000001 entries"},
	}
	for _, c := range cases {
		check(t, c.name, validateStep(c.step), c.want)
	}
}

func TestValidateStepInverse(t *testing.T) {
	// Rollback sends inverses: every valid step's inverse must pass.
	for _, o := range []state.Object{
		{Link: ptr(okLink())}, {Sysctl: ptr(okSysctl())}, {Rule: ptr(okRule())},
		{Addr: ptr(okAddr())}, {Route: ptr(okRoute())}, {Nft: ptr(okNft())},
	} {
		s := create(o)
		if err := validateStep(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if err := validateStep(s.Inverse()); err != nil {
			t.Errorf("inverse of %s: %v", s, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestValidateFactsRequest(t *testing.T) {
	ok := state.FactsRequest{
		Tables:   []int{4242},
		Sysctls:  []string{"net.ipv4.ip_forward", "net.ipv4.conf.mig0.rp_filter", "net.ipv6.conf.*.accept_ra"},
		NftTable: "migrate",
		Flows:    []state.NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 25}},
		Mark:     0x20000,
	}
	mod := func(f func(*state.FactsRequest)) state.FactsRequest {
		r := ok
		f(&r)
		return r
	}
	many := func(n int) []string {
		s := make([]string, n)
		for i := range s {
			s[i] = "net.ipv4.ip_forward"
		}
		return s
	}
	cases := []struct {
		name string
		req  state.FactsRequest
		want string
	}{
		{"ok", ok, ""},
		{"empty", state.FactsRequest{}, ""},
		{"wildcard everywhere", mod(func(r *state.FactsRequest) { r.Sysctls = []string{"net.ipv4.*"} }), ""},
		{"zero tables", mod(func(r *state.FactsRequest) { r.Tables, r.Sysctls = make([]int, 64), many(4096) }), "bad facts request: table 0: must be 1..4294967295"},
		{"64 tables", mod(func(r *state.FactsRequest) {
			r.Tables = make([]int, 64)
			for i := range r.Tables {
				r.Tables[i] = i + 1
			}
		}), ""},
		{"65 tables", mod(func(r *state.FactsRequest) { r.Tables = make([]int, 65) }), "bad facts request: 65 tables: at most 64 allowed"},
		{"table 0", mod(func(r *state.FactsRequest) { r.Tables = []int{0} }), "table 0: must be 1..4294967295"},
		{"table negative", mod(func(r *state.FactsRequest) { r.Tables = []int{-1} }), "table -1"},
		{"table big", mod(func(r *state.FactsRequest) { r.Tables = []int{1 << 32} }), "table 4294967296"},
		{"4096 sysctls", mod(func(r *state.FactsRequest) { r.Sysctls = many(4096) }), ""},
		{"4097 sysctls", mod(func(r *state.FactsRequest) { r.Sysctls = many(4097) }), "4097 sysctls: at most 4096 allowed"},
		{"sysctl traversal", mod(func(r *state.FactsRequest) { r.Sysctls = []string{"net.ipv4.conf.../../../etc/shadow"} }), `bad facts request: sysctl name "net.ipv4.conf.../../../etc/shadow": must be dotted components`},
		{"sysctl star glob", mod(func(r *state.FactsRequest) { r.Sysctls = []string{"net.ipv4.conf.eth*.rp_filter"} }), "must be dotted components"},
		{"sysctl other tree", mod(func(r *state.FactsRequest) { r.Sysctls = []string{"kernel.*"} }), "only net.ipv4.*, net.ipv6.*"},
		{"sysctl conntrack max", mod(func(r *state.FactsRequest) { r.Sysctls = []string{"net.netfilter.nf_conntrack_max"} }), ""},
		{"sysctl netfilter glob", mod(func(r *state.FactsRequest) { r.Sysctls = []string{"net.netfilter.*"} }), "only net.ipv4.*, net.ipv6.*"},
		{"sysctl conntrack glob", mod(func(r *state.FactsRequest) { r.Sysctls = []string{"net.*.nf_conntrack_max"} }), "only net.ipv4.*, net.ipv6.*"},
		{"nft name", mod(func(r *state.FactsRequest) { r.NftTable = "../x" }), `nft table name "../x"`},
		{"flow proto", mod(func(r *state.FactsRequest) {
			r.Flows = []state.NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "icmp", Port: 1}}
		}), `flows 198.51.100.10 proto "icmp"`},
		{"flow addr", mod(func(r *state.FactsRequest) {
			r.Flows = []state.NftService{{Addr: netip.Addr{}, Proto: "tcp", Port: 1}}
		}), `flows addr ""`},
		{"too many flows", mod(func(r *state.FactsRequest) { r.Flows = make([]state.NftService, state.MaxListLen+1) }), "flows: 1000001 entries"},
		{"sockets with flows", mod(func(r *state.FactsRequest) {
			r.Flows, r.Sockets = []state.NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 80}}, true
		}), ""},
		{"sockets without flows", mod(func(r *state.FactsRequest) { r.Flows, r.Sockets = nil, true }), "bad facts request: sockets without flows"},
	}
	for _, c := range cases {
		check(t, c.name, validateFactsRequest(c.req), c.want)
	}
}

func TestValidatePing(t *testing.T) {
	cases := []struct {
		p    proto.PingParams
		want string
	}{
		{proto.PingParams{Addr: "169.254.42.2", Count: 5, TimeoutMS: 5000}, ""},
		{proto.PingParams{Addr: "2001:db8::1", Count: 1, TimeoutMS: 1}, ""},
		{proto.PingParams{Addr: "2001:db8::1", Count: 100, TimeoutMS: 60000}, ""},
		{proto.PingParams{Addr: "", Count: 5, TimeoutMS: 5000}, `bad ping request: addr "": must be an IPv4 or IPv6 address`},
		{proto.PingParams{Addr: "example.com", Count: 5, TimeoutMS: 5000}, `addr "example.com"`},
		{proto.PingParams{Addr: "fe80::1%eth0", Count: 5, TimeoutMS: 5000}, `addr "fe80::1%eth0"`},
		{proto.PingParams{Addr: "192.0.2.1", Count: 0, TimeoutMS: 5000}, "bad ping request: count 0: must be 1..100"},
		{proto.PingParams{Addr: "192.0.2.1", Count: 101, TimeoutMS: 5000}, "count 101"},
		{proto.PingParams{Addr: "192.0.2.1", Count: -1, TimeoutMS: 5000}, "count -1"},
		{proto.PingParams{Addr: "192.0.2.1", Count: 1, TimeoutMS: 0}, "bad ping request: timeout_ms 0: must be 1..60000"},
		{proto.PingParams{Addr: "192.0.2.1", Count: 1, TimeoutMS: 60001}, "timeout_ms 60001"},
	}
	for _, c := range cases {
		check(t, c.p.Addr, validatePing(c.p), c.want)
	}
}

func TestValidateHostFileRequests(t *testing.T) {
	sc := okSysctl()
	step := create(state.Object{Sysctl: &sc})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"apply run", validateApply(proto.ApplyParams{Step: step, Run: "3f2a9c01d4e5b6a7", Seq: 3}), ""},
		{"apply no run", validateApply(proto.ApplyParams{Step: step}), ""},
		{"apply bad step", validateApply(proto.ApplyParams{Step: state.Step{}}), "bad step: action"},
		{"apply run traversal", validateApply(proto.ApplyParams{Step: step, Run: "../x"}), `bad apply request: run "../x": must be 1..64 letters, digits, _ or -`},
		{"apply seq", validateApply(proto.ApplyParams{Step: step, Seq: -1}), "seq -1"},
		{"arm", validateArm(proto.ArmParams{Run: "abc", TimeoutMS: 1000}), ""},
		{"arm traversal", validateArm(proto.ArmParams{Run: "../../etc/cron.d/x", TimeoutMS: 1000}), `bad arm request: run "../../etc/cron.d/x"`},
		{"arm empty run", validateArm(proto.ArmParams{TimeoutMS: 1000}), `bad arm request: run ""`},
		{"arm no deadline", validateArm(proto.ArmParams{Run: "abc"}), "bad arm request: timeout_ms 0"},
		{"confirm", validateConfirm(proto.ConfirmParams{Run: "abc"}), ""},
		{"confirm traversal", validateConfirm(proto.ConfirmParams{Run: "/../../root/.ssh/x"}), `bad confirm request: run "/../../root/.ssh/x"`},
		{"confirm long", validateConfirm(proto.ConfirmParams{Run: strings.Repeat("a", 65)}), "bad confirm request: run"},
		{"force-unlock", validateForceUnlock(proto.ForceUnlockParams{ID: "abc"}), ""},
		{"force-unlock empty", validateForceUnlock(proto.ForceUnlockParams{}), `bad force-unlock request: id ""`},
		{"lock", validateLock(proto.LockInfo{ID: "abc", Holder: "alice@laptop", Operation: "apply", Started: now}), ""},
		{"lock utf8 holder", validateLock(proto.LockInfo{ID: "abc", Holder: "zoë@laptop", Operation: "rollback"}), ""},
		{"lock id", validateLock(proto.LockInfo{ID: "a b", Holder: "alice@laptop", Operation: "apply"}), `bad lock request: id "a b"`},
		{"lock holder newline", validateLock(proto.LockInfo{ID: "abc", Holder: "alice\n", Operation: "apply"}), "bad lock request: holder"},
		{"lock holder empty", validateLock(proto.LockInfo{ID: "abc", Operation: "apply"}), "bad lock request: holder"},
		{"lock holder bad utf8", validateLock(proto.LockInfo{ID: "abc", Holder: "\xff", Operation: "apply"}), "bad lock request: holder"},
		{"lock operation", validateLock(proto.LockInfo{ID: "abc", Holder: "a", Operation: "apply now"}), `bad lock request: operation "apply now"`},
	}
	for _, c := range cases {
		check(t, c.name, c.err, c.want)
	}
}

func TestParamsStrict(t *testing.T) {
	req := func(method, params string) proto.Request {
		return proto.Request{ID: 1, Method: method, Params: json.RawMessage(params)}
	}
	cases := []struct {
		name string
		req  proto.Request
		want string
	}{
		{"ping ok", req("ping", `{"addr":"192.0.2.1","count":1,"timeout_ms":10}`), ""},
		{"unknown field", req("ping", `{"addr":"192.0.2.1","count":1,"timeout_ms":10,"flood":true}`), `bad ping request: json: unknown field "flood"`},
		{"nested unknown field", req("apply", `{"step":{"action":"create","after":{"sysctl":{"name":"net.ipv4.ip_forward","value":"1","path":"/etc"}}}}`), `unknown field "path"`},
		{"missing", req("ping", ``), `bad ping request: params missing`},
		{"wrong type", req("ping", `{"addr":"192.0.2.1","count":"1","timeout_ms":10}`), `bad ping request: json: cannot unmarshal`},
		{"overflow", req("ping", `{"addr":"192.0.2.1","count":1e99,"timeout_ms":10}`), `bad ping request`},
		{"validated", req("ping", `{"addr":"192.0.2.1","count":0,"timeout_ms":10}`), "bad ping request: count 0"},
		{"array", req("ping", `[1]`), `bad ping request`},
		// Addresses are netip values: one that does not parse fails at
		// decode, an empty one in the object's own check.
		{"bad address", req("apply", `{"step":{"action":"create","after":{"nft":{"family":"inet","name":"migrate","spec":{"role":"old","tunnel_dev":"mig0","mark":1,"services":[{"addr":"192.0.2.300","proto":"tcp","port":25,"percent":100}]}}}}}`),
			`bad apply request: nft spec: ParseAddr("192.0.2.300"): IPv4 field has value >255`},
		{"empty address", req("apply", `{"step":{"action":"create","after":{"nft":{"family":"inet","name":"migrate","spec":{"role":"old","tunnel_dev":"mig0","mark":1,"services":[{"addr":"","proto":"tcp","port":25,"percent":100}]}}}}}`),
			`bad step: nft services addr "": must be an IPv4 or IPv6 address`},
		{"address without prefix length", req("apply", `{"step":{"action":"create","after":{"addr":{"dev":"lo","cidr":"198.51.100.10"}}}}`),
			`bad apply request: netip.ParsePrefix("198.51.100.10"): no '/'`},
		{"address with zone", req("apply", `{"step":{"action":"create","after":{"addr":{"dev":"lo","cidr":"fe80::1%lo/64"}}}}`),
			`bad apply request: netip.ParsePrefix("fe80::1%lo/64"): IPv6 zones cannot be present in a prefix`},
		{"prefix length", req("apply", `{"step":{"action":"create","after":{"rule":{"family":4,"priority":1,"dst":"198.51.100.10/33","table":4242}}}}`),
			`bad apply request: netip.ParsePrefix("198.51.100.10/33"): prefix length out of range`},
		{"gateway", req("apply", `{"step":{"action":"create","after":{"route":{"family":4,"table":4242,"type":"unicast","dst":"0.0.0.0/0","gw":"gw"}}}}`),
			`bad apply request: ParseAddr("gw"): unable to parse IP`},
		{"huge unknown field", req("ping", `{"`+strings.Repeat("x", 100000)+`":1}`), "cut short"},
	}
	for _, c := range cases {
		var err error
		switch c.req.Method {
		case "ping":
			_, err = params(c.req, validatePing)
		case "apply":
			_, err = params(c.req, validateApply)
		}
		check(t, c.name, err, c.want)
		if err != nil && len(err.Error()) > 1024 {
			t.Errorf("%s: error of %d bytes", c.name, len(err.Error()))
		}
	}
	for _, p := range []string{``, `null`, `{}`} {
		check(t, "hello "+p, noParams(req("hello", p)), "")
	}
	for _, p := range []string{`{"x":1}`, `1`, `"x"`, `[]`} {
		check(t, "hello "+p, noParams(req("hello", p)), `bad hello request: it takes no params`)
	}
}

// request encodes one request frame.
func request(t *testing.T, id uint64, method string, params any) []byte {
	t.Helper()
	req := proto.Request{ID: id, Method: method}
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			t.Fatal(err)
		}
		req.Params = b
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return frame(string(b))
}

// serve runs Serve on the frames and returns the responses and its error.
func serve(t *testing.T, k Kernel, hf *HostFiles, frames ...[]byte) ([]proto.Response, error) {
	t.Helper()
	in := bytes.Join(frames, nil)
	var out bytes.Buffer
	err := Serve(bytes.NewReader(in), &out, k, hf)
	var resps []proto.Response
	for {
		var r proto.Response
		if rerr := proto.ReadFrame(&out, &r); errors.Is(rerr, io.EOF) {
			break
		} else if rerr != nil {
			t.Fatalf("response %d: %v", len(resps), rerr)
		}
		resps = append(resps, r)
	}
	return resps, err
}

func TestServeRejectsSysctlTraversal(t *testing.T) {
	k := &fakeKernel{t: t}
	evil := state.Step{Host: "old", Action: state.Create, After: &state.Object{
		Sysctl: &state.Sysctl{Name: "net.ipv4.conf.../../../etc/passwd", Value: "root::0:0::/root:/bin/sh"},
	}}
	resps, err := serve(t, k, &HostFiles{Dir: stateDir(t)},
		request(t, 7, proto.MethodApply, proto.ApplyParams{Step: evil}),
	)
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if len(resps) != 1 || resps[0].ID != 7 || resps[0].Error == nil {
		t.Fatalf("responses %+v, want one error for request 7", resps)
	}
	const want = `bad step: sysctl name "net.ipv4.conf.../../../etc/passwd": must be dotted components of letters, digits, _ - * (e.g. net.ipv4.ip_forward)`
	if resps[0].Error.Message != want {
		t.Errorf("error %q, want %q", resps[0].Error.Message, want)
	}
	if len(k.calls) != 0 {
		t.Errorf("the kernel was called: %v", k.calls)
	}
}

func TestServeValidatesEveryMethod(t *testing.T) {
	k := &fakeKernel{t: t}
	dir := t.TempDir()
	hf := &HostFiles{Dir: dir + "/state"}
	sc := okSysctl()
	good := create(state.Object{Sysctl: &sc})
	resps, err := serve(t, k, hf,
		request(t, 1, proto.MethodHello, nil),
		request(t, 2, proto.MethodFacts, state.FactsRequest{Tables: []int{4242}, Sysctls: []string{"net.ipv6.conf.*.accept_ra"}, NftTable: "migrate"}),
		request(t, 3, proto.MethodApply, proto.ApplyParams{Step: good}),
		request(t, 4, proto.MethodPing, proto.PingParams{Addr: "169.254.42.2", Count: 5, TimeoutMS: 5000}),
		// Refused:
		request(t, 5, proto.MethodFacts, state.FactsRequest{Sysctls: []string{"net/../../etc/shadow"}}),
		request(t, 6, proto.MethodPing, proto.PingParams{Addr: "169.254.42.2", Count: 1 << 30, TimeoutMS: 5000}),
		request(t, 7, proto.MethodApply, map[string]any{"step": good, "force": true}),
		request(t, 8, proto.MethodApply, nil),
		request(t, 9, proto.MethodHello, map[string]int{"x": 1}),
		request(t, 10, proto.MethodConfirm, proto.ConfirmParams{Run: "../../../escaped"}),
		request(t, 11, proto.MethodArm, proto.ArmParams{Run: "../../x", TimeoutMS: 1000}),
		request(t, 12, proto.MethodApply, proto.ApplyParams{Step: good, Run: "a/b"}),
		request(t, 13, "reboot", nil),
	)
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if len(resps) != 13 {
		t.Fatalf("%d responses, want 13", len(resps))
	}
	for i, r := range resps {
		if r.ID != uint64(i+1) {
			t.Errorf("response %d has ID %d", i, r.ID)
		}
		if ok := i < 4; ok != (r.Error == nil) {
			t.Errorf("request %d: error %v", i+1, r.Error)
		}
	}
	wantErr := map[uint64]string{
		5:  `bad facts request: sysctl name "net/../../etc/shadow"`,
		6:  "bad ping request: count 1073741824: must be 1..100",
		7:  `bad apply request: json: unknown field "force"`,
		8:  "bad apply request: params missing",
		9:  "bad hello request: it takes no params",
		10: `bad confirm request: run "../../../escaped"`,
		11: `bad arm request: run "../../x"`,
		12: `bad apply request: run "a/b"`,
		13: `unknown method "reboot"`,
	}
	for _, r := range resps {
		if w, ok := wantErr[r.ID]; ok && (r.Error == nil || !strings.HasPrefix(r.Error.Message, w)) {
			t.Errorf("request %d: error %v, want %q...", r.ID, r.Error, w)
		}
	}
	if got := strings.Join(k.calls, " "); got != "apply ping" || k.reads != 2 {
		t.Errorf("kernel calls %q and %d reads, want only the valid ones (and one read of the live state for the apply)", got, k.reads)
	}
	if _, err := os.Stat(dir + "/escaped"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("confirm with a path in the run ID created a file outside the state directory (%v)", err)
	}
}

func TestServeBadFrames(t *testing.T) {
	k := &fakeKernel{t: t}
	hf := &HostFiles{Dir: stateDir(t)}
	hello := request(t, 3, proto.MethodHello, nil)

	// A complete frame that is not JSON, or not a request, is answered
	// with ID 0 and the session goes on.
	resps, err := serve(t, k, hf, frame(`{"id":1,"method":`), frame(``), frame(`[1,2]`), frame(`{"id":"x"}`), hello)
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if len(resps) != 5 {
		t.Fatalf("%d responses, want 5: %+v", len(resps), resps)
	}
	for i, want := range []string{"bad request: not valid JSON", "bad request: not valid JSON", "bad request: json: cannot unmarshal", "bad request: json: cannot unmarshal"} {
		if r := resps[i]; r.ID != 0 || r.Error == nil || !strings.HasPrefix(r.Error.Message, want) {
			t.Errorf("frame %d: got %+v, want ID 0 and an error %q...", i, r, want)
		}
	}
	if r := resps[4]; r.ID != 3 || r.Error != nil {
		t.Errorf("hello after bad frames: %+v", r)
	}

	// A broken length ends the session, with an error response first.
	big := make([]byte, 4)
	binary.BigEndian.PutUint32(big, proto.MaxFrame+1)
	for name, in := range map[string][]byte{
		"too long":     append(big, hello...),
		"short body":   hello[:len(hello)-1],
		"short header": {0, 0},
	} {
		resps, err := serve(t, k, hf, hello, in)
		if err == nil {
			t.Errorf("%s: Serve returned nil", name)
		}
		if len(resps) != 2 || resps[0].ID != 3 || resps[1].ID != 0 || resps[1].Error == nil || !strings.HasPrefix(resps[1].Error.Message, "bad frame: ") {
			t.Errorf("%s: responses %+v, want hello then a bad frame error", name, resps)
		}
	}
	if len(k.calls) != 0 {
		t.Errorf("kernel calls: %v", k.calls)
	}
}
