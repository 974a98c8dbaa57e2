package agent

import (
	"net/netip"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// The agent's marks of ownership are plan's.
func TestOwnershipConstantsMatchPlan(t *testing.T) {
	if ownProto != plan.RouteProto {
		t.Errorf("agent ownProto %d, plan.RouteProto %d", ownProto, plan.RouteProto)
	}
	if ownNftTable != plan.NftTableName {
		t.Errorf("agent ownNftTable %q, plan.NftTableName %q", ownNftTable, plan.NftTableName)
	}
	if !ownTable(config.DefaultTable) {
		t.Errorf("config's default table %d is outside the agent's range", config.DefaultTable)
	}
	for _, tb := range []int{0, 253, 254, 255, maxOwnTable + 1} {
		if ownTable(tb) {
			t.Errorf("table %d counts as migrate's", tb)
		}
	}
	if plan.EarlyDemux != "net.ipv4.ip_early_demux" || !ownSysctls[plan.EarlyDemux] {
		t.Errorf("plan.EarlyDemux %q is not on the allow-list", plan.EarlyDemux)
	}
}

const ownerPlanHosts = `
host "old" {
  ssh         = "root@198.51.100.10:22"
  known_hosts = "/dev/null"
}
host "new" {
  ssh         = "root@203.0.113.20"
  known_hosts = "/dev/null"
}
`

const ownerPlanServices = `
service "web" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [80, "9000-9001"]
  stage    = "new"
}
service "dns6" {
  address  = "2001:db8:100::10"
  protocol = "udp"
  ports    = [53]
  stage    = "canary"
  canary_percent = 10
}
`

// ownerFacts are a host's facts before migrate: an uplink that accepts
// router advertisements, so OLD's plan raises accept_ra.
func ownerFacts(cidr, cidr6 string) state.Facts {
	return state.Facts{
		Links: []state.Link{{Name: "eth0", Type: "veth", MTU: 1500, Up: true}, {Name: "eth0.100", Type: "vlan", MTU: 1500, Up: true}},
		Addrs: []state.Addr{{Dev: "eth0", CIDR: netip.MustParsePrefix(cidr)}, {Dev: "eth0", CIDR: netip.MustParsePrefix(cidr6)}},
		Rules: []state.Rule{
			{Family: 4, Priority: 0, Table: 255, Protocol: 2},
			{Family: 4, Priority: 32766, Table: 254, Protocol: 2},
			{Family: 6, Priority: 0, Table: 255, Protocol: 2},
			{Family: 6, Priority: 32766, Table: 254, Protocol: 2},
		},
		Sysctls: map[string]string{
			"net.ipv4.ip_forward": "0", "net.ipv4.ip_early_demux": "1", "net.ipv6.conf.all.forwarding": "0",
			"net.ipv6.conf.eth0.accept_ra": "1", "net.ipv6.conf.eth0/100.accept_ra": "1", "net.ipv6.conf.lo.accept_ra": "1",
		},
		WGPublicKey: "",
	}
}

// TestPlanStepsAreOwned: every step plan.Make makes, and its inverse (what
// rollback and the revert timer apply), passes the ownership check, for
// each tunnel type, both families, forwards and a non-default table and
// tunnel name. Otherwise the agent would refuse migrate's own plans.
func TestPlanStepsAreOwned(t *testing.T) {
	tunnels := map[string]string{
		"vxlan": `tunnel {
  type = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}`,
		"gre table 100 name tun.7": `tunnel {
  type = "gre"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
  key = 7
  table = 100
  name = "tun.7"
}`,
		"ip6gre": `tunnel {
  type = "ip6gre"
  old_endpoint = "2001:db8:100::11"
  new_endpoint = "2001:db8:200::20"
}`,
		"wireguard": `tunnel {
  type = "wireguard"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}`,
	}
	forwards := `
forward "smtp" {
  on       = "old"
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [25]
  to       = "192.0.2.25"
}
forward "smtp6" {
  on       = "new"
  address  = "2001:db8:200::20"
  protocol = "tcp"
  ports    = [25]
  to       = "2001:db8:300::25"
}
`
	for name, tun := range tunnels {
		for _, withFwd := range []bool{false, true} {
			src := ownerPlanHosts + tun + ownerPlanServices
			if withFwd {
				src += forwards
			}
			c, err := config.Parse([]byte(src), "owner.hcl")
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			facts := map[string]state.Facts{
				plan.Old: ownerFacts("198.51.100.10/24", "2001:db8:100::10/64"),
				plan.New: ownerFacts("203.0.113.20/24", "2001:db8:200::20/64"),
			}
			// ip6gre cannot serve an IPv6 service on its own endpoint:
			// OLD's tunnel uses a second address.
			of := facts[plan.Old]
			of.Addrs = append(of.Addrs, state.Addr{Dev: "eth0", CIDR: netip.MustParsePrefix("2001:db8:100::11/64")})
			facts[plan.Old] = of
			if c.Tunnel.Type == "wireguard" {
				f := facts[plan.Old]
				f.WGPublicKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
				facts[plan.Old] = f
				f = facts[plan.New]
				f.WGPublicKey = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA="
				facts[plan.New] = f
			}
			p, err := plan.Make(c, facts, state.NewJournal(), time.Unix(0, 0))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			n := 0
			for _, h := range p.Hosts {
				for _, s := range h.Steps {
					n++
					for _, st := range []state.Step{s, s.Inverse()} {
						if err := validateStep(st); err != nil {
							t.Errorf("%s: host %s: %s: %v", name, h.Host, st, err)
						}
						if err := checkOwnedStep(st); err != nil {
							t.Errorf("%s: host %s: plan's own step %s is refused: %v", name, h.Host, st, err)
						}
					}
				}
			}
			if n < 10 {
				t.Fatalf("%s: only %d steps", name, n)
			}
		}
	}
}

func TestCheckOwnedStep(t *testing.T) {
	o := func(v any) *state.Object {
		switch x := v.(type) {
		case state.Link:
			return &state.Object{Link: &x}
		case state.Sysctl:
			return &state.Object{Sysctl: &x}
		case state.Rule:
			return &state.Object{Rule: &x}
		case state.Addr:
			return &state.Object{Addr: &x}
		case state.Route:
			return &state.Object{Route: &x}
		case state.NftTable:
			return &state.Object{Nft: &x}
		}
		panic(v)
	}
	cr := func(v any) state.Step { return state.Step{Action: state.Create, After: o(v)} }
	dl := func(v any) state.Step { return state.Step{Action: state.Delete, Before: o(v)} }
	up := func(a, b any) state.Step { return state.Step{Action: state.Update, Before: o(a), After: o(b)} }
	sys := func(n, v string) state.Sysctl { return state.Sysctl{Name: n, Value: v} }
	kernelLocal := state.Rule{Family: 4, Priority: 0, Table: 255, Protocol: 2}
	moved := state.Rule{Family: 4, Priority: 1000, Table: 255, Protocol: 77}
	foreignNft := okNft()
	foreignNft.Name = "filter"
	wrongProto := okRoute()
	wrongProto.Protocol = 3
	veth := okLink()
	veth.Type = "veth"
	for _, c := range []struct {
		name string
		step state.Step
		want string
	}{
		// migrate's own objects pass.
		{"nft migrate", dl(okNft()), ""},
		{"link", dl(okLink()), ""},
		{"rule", dl(okRule()), ""},
		{"route", dl(okRoute()), ""},
		{"route table 1", cr(state.Route{Family: 4, Table: 1, Type: "throw", Dst: netip.MustParsePrefix("192.0.2.1/32"), Protocol: 77}), ""},
		{"route table 2^31-1", cr(state.Route{Family: 4, Table: maxOwnTable, Type: "throw", Dst: netip.MustParsePrefix("192.0.2.1/32"), Protocol: 77}), ""},
		{"local rule move", dl(kernelLocal), ""},
		{"local rule restore", cr(kernelLocal), ""},
		{"moved local rule", cr(moved), ""},
		{"to ADDR iif lo lookup main", cr(state.Rule{Family: 4, Priority: 500, Dst: netip.MustParsePrefix("198.51.100.10/32"), IifName: "lo", Table: 254, Protocol: 77}), ""},
		{"ip_forward", up(sys("net.ipv4.ip_forward", "0"), sys("net.ipv4.ip_forward", "1")), ""},
		{"early demux", up(sys("net.ipv4.ip_early_demux", "1"), sys("net.ipv4.ip_early_demux", "0")), ""},
		{"v6 forwarding", up(sys("net.ipv6.conf.all.forwarding", "0"), sys("net.ipv6.conf.all.forwarding", "1")), ""},
		{"conntrack max", up(sys("net.netfilter.nf_conntrack_max", "65536"), sys("net.netfilter.nf_conntrack_max", "262144")), ""},
		{"tunnel rp_filter", cr(sys("net.ipv4.conf.mig0.rp_filter", "2")), ""},
		{"tunnel accept_local", cr(sys("net.ipv4.conf.mig0.accept_local", "1")), ""},
		{"vlan rp_filter name", cr(sys("net.ipv4.conf.tun/7.rp_filter", "2")), ""},
		{"direct: send_redirects all", up(sys("net.ipv4.conf.all.send_redirects", "1"), sys("net.ipv4.conf.all.send_redirects", "0")), ""},
		{"direct: send_redirects of the segment", up(sys("net.ipv4.conf.eth0.send_redirects", "1"), sys("net.ipv4.conf.eth0.send_redirects", "0")), ""},
		{"direct: arp_announce of the segment", up(sys("net.ipv4.conf.eth1.arp_announce", "0"), sys("net.ipv4.conf.eth1.arp_announce", "2")), ""},
		{"arp_announce 3", up(sys("net.ipv4.conf.eth1.arp_announce", "0"), sys("net.ipv4.conf.eth1.arp_announce", "3")), "must be one of 012"},
		{"arp_announce lo", up(sys("net.ipv4.conf.lo.arp_announce", "0"), sys("net.ipv4.conf.lo.arp_announce", "2")), "is not one migrate sets"},
		{"accept_ra raise", up(sys("net.ipv6.conf.eth0.accept_ra", "1"), sys("net.ipv6.conf.eth0.accept_ra", "2")), ""},
		{"accept_ra restore", up(sys("net.ipv6.conf.eth0.accept_ra", "2"), sys("net.ipv6.conf.eth0.accept_ra", "1")), ""},
		{"addr on lo", cr(state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix("198.51.100.10/32")}), ""},
		{"addr6 on lo", cr(state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix("2001:db8::10/128"), NoDAD: true, NoPrefixRoute: true}), ""},
		{"addr on tunnel", dl(okAddr()), ""},

		// Foreign objects are refused.
		{"nft inet filter", dl(foreignNft), `nft table "inet" "filter" is not migrate's`},
		{"veth as link", dl(veth), `link type "veth"`},
		{"disable_ipv6", cr(sys("net.ipv6.conf.all.disable_ipv6", "1")), "is not one migrate sets"},
		{"disable_ipv6 dev", up(sys("net.ipv6.conf.eth0.disable_ipv6", "0"), sys("net.ipv6.conf.eth0.disable_ipv6", "1")), "is not one migrate sets"},
		{"rp_filter all", cr(sys("net.ipv4.conf.all.rp_filter", "0")), "is not one migrate sets"},
		{"rp_filter lo", cr(sys("net.ipv4.conf.lo.rp_filter", "0")), "is not one migrate sets"},
		{"accept_ra all", up(sys("net.ipv6.conf.all.accept_ra", "1"), sys("net.ipv6.conf.all.accept_ra", "2")), "is not one migrate sets"},
		{"accept_ra 0", up(sys("net.ipv6.conf.eth0.accept_ra", "1"), sys("net.ipv6.conf.eth0.accept_ra", "0")), "migrate only sets accept_ra to 2"},
		{"ip_forward text", cr(sys("net.ipv4.ip_forward", "yes")), "must be an integer"},
		{"tcp sysctl", cr(sys("net.ipv4.tcp_syncookies", "0")), "is not one migrate sets"},
		{"conntrack buckets", cr(sys("net.netfilter.nf_conntrack_buckets", "1")), "is not one migrate sets"},
		{"ipv6 conf all disable", cr(sys("net.ipv6.conf.default.forwarding", "1")), "is not one migrate sets"},
		{"rule any proto", dl(state.Rule{Family: 4, Priority: 200, Mark: 1, Mask: 1, Table: 100}), "rule protocol 0"},
		{"rule main kernel", dl(state.Rule{Family: 4, Priority: 32766, Table: 254, Protocol: 2}), "rule protocol 2"},
		{"rule default kernel", dl(state.Rule{Family: 6, Priority: 32767, Table: 253, Protocol: 2}), "rule protocol 2"},
		{"rule proto 77 main", cr(state.Rule{Family: 4, Priority: 1, Table: 254, Protocol: 77}), "main only for"},
		{"rule proto 77 main from", cr(state.Rule{Family: 4, Priority: 1, Src: netip.MustParsePrefix("0.0.0.0/0"), Table: 254, Protocol: 77}), "main only for"},
		{"rule proto 77 main wide dst", cr(state.Rule{Family: 4, Priority: 500, Dst: netip.MustParsePrefix("0.0.0.0/0"), IifName: "lo", Table: 254, Protocol: 77}), "main only for"},
		{"rule proto 77 default", cr(state.Rule{Family: 4, Priority: 1, Table: 253, Protocol: 77}), "lookup default"},
		{"rule proto 77 local pref 0", cr(state.Rule{Family: 4, Priority: 0, Table: 255, Protocol: 77}), "local only for the moved local rule"},
		{"rule proto 77 local from", cr(state.Rule{Family: 4, Priority: 5, Src: netip.MustParsePrefix("10.0.0.0/8"), Table: 255, Protocol: 77}), "local only for the moved local rule"},
		{"kernel local with selector", dl(state.Rule{Family: 4, Priority: 0, Src: netip.MustParsePrefix("10.0.0.0/8"), Table: 255, Protocol: 2}), "rule protocol 2"},
		// The default local rule put back by hand (`ip rule add pref 0
		// lookup local`: protocol 0) is still the default local rule:
		// apply moves it again, rollback puts the recorded one back.
		{"local rule proto 0", dl(state.Rule{Family: 4, Priority: 0, Table: 255}), ""},
		{"update hand-made local to kernel's", up(state.Rule{Family: 4, Priority: 0, Table: 255}, kernelLocal), ""},
		{"route wrong proto", dl(wrongProto), "route protocol 3"},
		{"route main", dl(state.Route{Family: 4, Table: 254, Type: "unicast", Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "eth0", Protocol: 77}), "route table main"},
		{"route local", dl(state.Route{Family: 4, Table: 255, Type: "unicast", Dst: netip.MustParsePrefix("127.0.0.1/32"), Dev: "lo", Protocol: 77}), "route table local"},
		{"route default", cr(state.Route{Family: 6, Table: 253, Type: "throw", Dst: netip.MustParsePrefix("::/0"), Protocol: 77}), "route table default"},
		{"route table too big", cr(state.Route{Family: 4, Table: maxOwnTable + 1, Type: "throw", Dst: netip.MustParsePrefix("192.0.2.1/32"), Protocol: 77}), "route table 2147483648"},
		{"update into a foreign route", up(okRoute(), wrongProto), "route protocol 3"},
		{"addr loopback", dl(state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix("127.0.0.1/8")}), "address 127.0.0.1/8 on lo"},
		{"addr ::1", dl(state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix("::1/128")}), "address ::1/128 on lo"},
		{"addr lo prefix", dl(state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix("198.51.100.0/24")}), "on lo"},
	} {
		check(t, c.name, checkOwnedStep(c.step), c.want)
	}
}
