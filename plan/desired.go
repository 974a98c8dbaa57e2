package plan

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// Host roles.
const (
	Old = "old"
	New = "new"
)

// Constants of the data path. Rule preferences are fixed so that the order
// is right on every host: marked flows (900) are looked up before the moved
// local rule (1000); on NEW, its own traffic to a migrated address (500) is
// sent to main before the local rule would deliver it, and replies from the
// address (1100) only reach the tunnel table after local delivery had its
// chance.
const (
	// RouteProto tags the rules and routes migrate creates (rtnetlink
	// protocol field), so they are recognisable as migrate's.
	RouteProto       = 77
	PrefFwmark       = 900
	PrefLocalMoved   = 1000
	PrefLocalDefault = 0
	PrefToAddrMain   = 500
	PrefFromAddr     = 1100
	NftTableName     = "migrate"
)

// HostDesired is what one host should look like.
type HostDesired struct {
	// Objects must exist with exactly these values.
	Objects []state.Object
	// Unwanted lists keys that must not exist (the pref-0 local rule once
	// it has moved). The diff deletes them, recording what they were.
	Unwanted []string
}

// Encapsulation overheads in bytes, by tunnel type and outer family.
func encapOverhead(typ string, outer6 bool) int {
	switch {
	case typ == "vxlan" && !outer6:
		return 50
	case typ == "vxlan" && outer6:
		return 70
	case typ == "gre" && !outer6:
		return 24
	}
	return 44 // ip6gre
}

// TunnelMTU is the configured MTU, or the underlay MTU of the device that
// holds the local endpoint less the encapsulation. Falls back to a 1500
// underlay when the device is unknown.
func TunnelMTU(t *config.Tunnel, local netip.Addr, f state.Facts) int {
	if t.MTU != 0 {
		return t.MTU
	}
	under := 1500
	for _, a := range f.Addrs {
		if state.AddrIP(a.CIDR) != local.String() {
			continue
		}
		for _, l := range f.Links {
			if l.Name == a.Dev && l.MTU > 0 {
				under = l.MTU
			}
		}
	}
	return under - encapOverhead(t.Type, local.Is6())
}

// MovedServices returns the (address, protocol, port) triples whose new
// flows go to NEW, sorted.
func MovedServices(c *config.Config) []state.NftService {
	var out []state.NftService
	for _, s := range c.Services {
		if s.Stage != "new" {
			continue
		}
		for _, r := range s.Ports {
			for p := int(r.From); p <= int(r.To); p++ {
				out = append(out, state.NftService{Addr: s.Address.String(), Proto: s.Protocol, Port: uint16(p)})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Addr != b.Addr {
			return a.Addr < b.Addr
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		return a.Port < b.Port
	})
	return out
}

// Sysctls lists every sysctl the plan may set on a host, so the agent reads
// their current values.
func Sysctls(c *config.Config, host string) []string {
	dev := c.Tunnel.Name
	if host == Old {
		return []string{
			"net.ipv4.ip_forward",
			"net.ipv4.conf." + dev + ".accept_local",
			"net.ipv4.conf." + dev + ".rp_filter",
		}
	}
	return []string{"net.ipv4.conf." + dev + ".rp_filter"}
}

// FactsRequest says what to collect on host for this config.
func FactsRequest(c *config.Config, host string) state.FactsRequest {
	return state.FactsRequest{
		Tables:   []int{c.Tunnel.Table},
		Sysctls:  Sysctls(c, host),
		NftTable: NftTableName,
	}
}

func hostPrefix(a netip.Addr) string {
	if a.Is4() {
		return a.String() + "/32"
	}
	return a.String() + "/128"
}

func fam(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

func defaultDst(family int) string {
	if family == 4 {
		return "0.0.0.0/0"
	}
	return "::/0"
}

// localRules are the local-table rule before and after the move.
func localRule(family, pref int, proto uint8) state.Rule {
	return state.Rule{Family: family, Priority: pref, Table: state.TableLocal, Protocol: proto}
}

// LocalRuleKey is the key of the kernel's default local rule.
func LocalRuleKey(family int) string {
	return state.Object{Rule: &state.Rule{Family: family, Priority: PrefLocalDefault, Table: state.TableLocal}}.Key()
}

// Desired builds each host's desired state from the config. Facts are used
// only for the underlay MTU.
func Desired(c *config.Config, facts map[string]state.Facts) (map[string]HostDesired, error) {
	t := c.Tunnel
	if t.OldInner.Addr().Is6() || t.NewInner.Addr().Is6() {
		return nil, fmt.Errorf("tunnel inner addresses must be IPv4 in this version")
	}
	moved := MovedServices(c)
	for _, s := range c.Services {
		if s.Stage == "canary" {
			return nil, fmt.Errorf("%s: service %q: stage \"canary\" is not implemented yet; use \"old\" or \"new\"", where(s.Range), s.Name)
		}
		if s.Address.Is6() && s.Stage != "old" {
			return nil, fmt.Errorf("%s: service %q: IPv6 services are not implemented yet; only IPv4 services can move", where(s.Range), s.Name)
		}
	}

	link := func(local, remote netip.Addr, f state.Facts) state.Link {
		l := state.Link{
			Name: t.Name, Type: t.Type, Local: local.String(), Remote: remote.String(),
			MTU: TunnelMTU(t, local, f), Up: true,
		}
		if t.Type == "vxlan" {
			l.VNI, l.Port = t.VNI, uint16(t.Port)
		} else {
			l.Key = t.Key
		}
		return l
	}
	// L2 tunnels need a gateway for the neighbour lookup; L3 ones route by device.
	gw := func(peer netip.Prefix) string {
		if t.Type == "vxlan" {
			return peer.Addr().String()
		}
		return ""
	}
	obj := func(o any) state.Object {
		switch v := o.(type) {
		case state.Link:
			return state.Object{Link: &v}
		case state.Sysctl:
			return state.Object{Sysctl: &v}
		case state.Rule:
			return state.Object{Rule: &v}
		case state.Addr:
			return state.Object{Addr: &v}
		case state.Route:
			return state.Object{Route: &v}
		case state.NftTable:
			return state.Object{Nft: &v}
		}
		panic(fmt.Sprintf("not an object: %T", o))
	}

	// OLD
	var old HostDesired
	old.Objects = append(old.Objects,
		obj(link(t.OldEndpoint, t.NewEndpoint, facts[Old])),
		obj(state.Addr{Dev: t.Name, CIDR: t.OldInner.String()}),
		obj(state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}),
		obj(state.Sysctl{Name: "net.ipv4.conf." + t.Name + ".accept_local", Value: "1"}),
		obj(state.Sysctl{Name: "net.ipv4.conf." + t.Name + ".rp_filter", Value: "2"}),
	)
	if len(moved) > 0 {
		old.Objects = append(old.Objects,
			obj(localRule(4, PrefLocalMoved, RouteProto)),
			obj(state.Rule{Family: 4, Priority: PrefFwmark, Mark: t.Mark, Mask: t.Mark, Table: t.Table, Protocol: RouteProto}),
			obj(state.Route{Family: 4, Table: t.Table, Type: "unicast", Dst: "0.0.0.0/0", Dev: t.Name, Gw: gw(t.NewInner), Protocol: RouteProto}),
			// Outer packets of the tunnel inherit the mark of the packet
			// they carry; without this throw they would be routed back
			// into the tunnel.
			obj(state.Route{Family: fam(t.NewEndpoint), Table: t.Table, Type: "throw", Dst: hostPrefix(t.NewEndpoint), Protocol: RouteProto}),
			obj(state.NftTable{Family: "inet", Name: NftTableName, Spec: state.NftSpec{
				Role: Old, TunnelDev: t.Name, Mark: t.Mark, Services: moved,
			}}),
		)
		old.Unwanted = append(old.Unwanted, LocalRuleKey(4))
	}

	// NEW
	var nw HostDesired
	nw.Objects = append(nw.Objects,
		obj(link(t.NewEndpoint, t.OldEndpoint, facts[New])),
		obj(state.Addr{Dev: t.Name, CIDR: t.NewInner.String()}),
		obj(state.Sysctl{Name: "net.ipv4.conf." + t.Name + ".rp_filter", Value: "2"}),
	)
	if len(moved) > 0 {
		nw.Objects = append(nw.Objects,
			obj(localRule(4, PrefLocalMoved, RouteProto)),
			obj(state.Route{Family: 4, Table: t.Table, Type: "unicast", Dst: "0.0.0.0/0", Dev: t.Name, Gw: gw(t.OldInner), Protocol: RouteProto}),
		)
		nw.Unwanted = append(nw.Unwanted, LocalRuleKey(4))
		seen := map[string]bool{}
		for _, m := range moved {
			if seen[m.Addr] {
				continue
			}
			seen[m.Addr] = true
			a := netip.MustParseAddr(m.Addr)
			hp := hostPrefix(a)
			nw.Objects = append(nw.Objects,
				// A real local address: ip_nonlocal_bind would let a
				// service bind it, but connect() from it fails.
				obj(state.Addr{Dev: "lo", CIDR: hp, NoDAD: a.Is6()}),
				// NEW's own traffic to the address (the tunnel
				// underlay when the address is OLD's endpoint) must
				// still leave by the uplink.
				obj(state.Rule{Family: 4, Priority: PrefToAddrMain, Dst: hp, IifName: "lo", Table: state.TableMain, Protocol: RouteProto}),
				obj(state.Rule{Family: 4, Priority: PrefFromAddr, Src: hp, Table: t.Table, Protocol: RouteProto}),
			)
		}
	}
	return map[string]HostDesired{Old: old, New: nw}, nil
}
