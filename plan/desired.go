package plan

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// Host roles.
const (
	Old = string(state.RoleOld)
	New = string(state.RoleNew)
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

// Encapsulation overheads in bytes, by tunnel type and outer family: the
// outer IP header (20 or 40), then UDP 8 + VXLAN 8 + inner Ethernet 14, or
// the GRE header, 4 bytes and 4 more with a key. ip6gre is created without
// the 8-byte encapsulation-limit destination option (see agent/kernel), so
// it is 40 + 4 (+ 4). WireGuard: outer IP, UDP 8 and its data header 32
// (type, receiver, counter 16, authentication tag 16): 60 or 80.
func encapOverhead(typ state.TunnelType, outer6 bool, key uint32) int {
	gre := 4
	if key != 0 {
		gre += 4
	}
	switch {
	case typ == state.VXLAN && outer6:
		return 70
	case typ == state.WireGuard && outer6:
		return 80
	case typ == state.WireGuard:
		return 60
	case typ == state.GRE:
		return 20 + gre
	case typ == state.IP6GRE:
		return 40 + gre
	}
	return 50 // vxlan over IPv4
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
		if a.CIDR.Addr() != local {
			continue
		}
		for _, l := range f.Links {
			if l.Name == a.Dev && l.MTU > 0 {
				under = l.MTU
			}
		}
	}
	return under - encapOverhead(t.Type, local.Is6(), t.Key)
}

// Inner IPv6 link-local addresses of the tunnel ends: an L2 tunnel needs a
// gateway address of the route's family.
var (
	OldInner6 = netip.MustParsePrefix("fe80::42:1/64")
	NewInner6 = netip.MustParsePrefix("fe80::42:2/64")
)

// addrLess orders addresses by their text, as when they were strings: the
// order of a spec's lists is part of its digest (state.NftSpec.Digest),
// which the rules of tables already on hosts carry.
func addrLess(a, b netip.Addr) bool { return a.String() < b.String() }

func sortServices(out []state.NftService) {
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Addr != b.Addr {
			return addrLess(a.Addr, b.Addr)
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		return a.Port < b.Port
	})
}

func expand(s *config.Service, percent int) []state.NftService {
	var out []state.NftService
	for _, r := range s.Ports {
		for p := int(r.From); p <= int(r.To); p++ {
			out = append(out, state.NftService{Addr: s.Address, Proto: s.Protocol, Port: uint16(p), Percent: percent})
		}
	}
	return out
}

// MovedServices returns the (address, protocol, port) triples whose new
// flows go to NEW, with the share that goes (100, or the canary percent),
// sorted.
func MovedServices(c *config.Config) []state.NftService {
	var out []state.NftService
	for _, s := range c.Services {
		switch s.Stage {
		case "new":
			out = append(out, expand(s, 100)...)
		case "canary":
			out = append(out, expand(s, s.CanaryPercent)...)
		}
	}
	sortServices(out)
	return out
}

// AllServices returns every (address, protocol, port) of the plan, sorted.
func AllServices(c *config.Config) []state.NftService {
	var out []state.NftService
	for _, s := range c.Services {
		out = append(out, expand(s, 0)...)
	}
	sortServices(out)
	return out
}

// ActiveAddrs returns the service addresses that get the data path: every
// address a service of the plan uses, whatever its stage. On NEW the
// address is then local before any flow arrives, so daemons can bind it
// (and readiness can see them) before the stage moves; and a service moved
// back to "old" keeps the path, so flows already going to NEW drain there.
// Only the nft sets decide which new flows move.
func ActiveAddrs(c *config.Config) []netip.Addr {
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, s := range c.Services {
		if !seen[s.Address] {
			seen[s.Address] = true
			out = append(out, s.Address)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

func loAddrKey(a netip.Addr) string {
	return state.Object{Addr: &state.Addr{Dev: "lo", CIDR: hostPrefix(a)}}.Key()
}

// SendRedirectsAll is the namespace-wide ICMP redirect switch: a direct
// tunnel turns it off on OLD, and a WireGuard device turns it off itself
// when it goes up (so plan sets it before the link, to record it).
const SendRedirectsAll = "net.ipv4.conf.all.send_redirects"

// EarlyDemux is the switch of TCP and UDP early demux, IPv4 and IPv6
// alike (the IPv6 path reads the same per-namespace setting).
const EarlyDemux = "net.ipv4.ip_early_demux"

// Sysctls lists every sysctl the plan may set on a host, so the agent reads
// their current values.
func Sysctls(c *config.Config, host string) []string {
	if c.Tunnel == nil {
		return []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"}
	}
	if Direct(c) {
		return directSysctls(host)
	}
	dev := SysctlDev(c.Tunnel.Name)
	var out []string
	if host == Old {
		out = []string{
			"net.ipv4.ip_forward",
			EarlyDemux,
			"net.ipv4.conf." + dev + ".accept_local",
			"net.ipv4.conf." + dev + ".rp_filter",
			"net.ipv6.conf.all.forwarding",
			"net.ipv6.conf.*.accept_ra",
		}
	} else {
		// NEW forwards too when it hosts a forward.
		out = []string{"net.ipv4.conf." + dev + ".rp_filter", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"}
	}
	if c.Tunnel.Type == state.WireGuard {
		out = append(out, SendRedirectsAll)
	}
	return out
}

// SysctlDev writes a device name as a sysctl component: a "." in the name
// becomes "/", as sysctl(8) does (eth0.100 -> net.ipv4.conf.eth0/100.x).
func SysctlDev(dev string) string { return strings.ReplaceAll(dev, ".", "/") }

// FactsRequest says what to collect on host for this config.
func FactsRequest(c *config.Config, host string) state.FactsRequest {
	r := state.FactsRequest{
		Sysctls:  Sysctls(c, host),
		NftTable: NftTableName,
		Chains:   true,
		Networkd: true,
	}
	if c.Tunnel != nil {
		r.Tables, r.Mark = []int{c.Tunnel.Table}, c.Tunnel.Mark
	}
	if host == Old {
		// Sockets: the readiness line counts connections idle since
		// before conntrack ran, as status does.
		r.Flows = AllServices(c)
		r.Sockets = len(r.Flows) > 0
		if TracksOnOld(c) {
			r.Conntrack, r.Sysctls = true, append(r.Sysctls, state.ConntrackMax)
		}
	} else {
		r.Listeners = true
	}
	return r
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func fam(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

func defaultDst(family int) netip.Prefix {
	if family == 4 {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
}

// localRules are the local-table rule before and after the move.
func localRule(family, pref int, proto uint8) state.Rule {
	return state.Rule{Family: family, Priority: pref, Table: state.TableLocal, Protocol: proto}
}

// rulePrefs are the preferences of migrate's rules on one host.
type rulePrefs struct{ toAddr, fwmark, local, fromAddr int }

// choosePrefs keeps migrate's rules, and the moved local rule, ahead of
// every rule someone else added: before migrate, the local rule at 0 came
// first, so a foreign rule (say "fwmark 0x1 lookup 100" at 200) never saw
// locally delivered packets, and must not start to. The defaults are 500,
// 900, 1000 and 1100; below a foreign rule at F <= 1100 they are scaled
// into 1..F-1.
func choosePrefs(host string, f state.Facts) (rulePrefs, error) {
	def := rulePrefs{PrefToAddrMain, PrefFwmark, PrefLocalMoved, PrefFromAddr}
	lowest := -1
	for _, r := range f.Rules {
		if r.Protocol == RouteProto || (r.Priority == 0 && r.Table == state.TableLocal) {
			continue
		}
		if lowest < 0 || r.Priority < lowest {
			lowest = r.Priority
		}
	}
	if lowest < 0 || lowest > def.fromAddr {
		return def, nil
	}
	step := lowest / 5
	if step < 1 {
		return rulePrefs{}, fmt.Errorf("host %s: a policy rule at preference %d leaves no room for migrate's rules before it (they must come before every other rule, as the local rule did); move that rule to a preference of 5 or more", host, lowest)
	}
	return rulePrefs{step, 2 * step, 3 * step, 4 * step}, nil
}

// LocalRuleKey is the key of the kernel's default local rule.
func LocalRuleKey(family int) string {
	return state.Object{Rule: &state.Rule{Family: family, Priority: PrefLocalDefault, Table: state.TableLocal}}.Key()
}

// Desired builds each host's desired state from the config. Facts are used
// for the underlay MTU and the interfaces accepting router advertisements;
// ownedNew (NEW's journal entries) keeps draining addresses plumbed.
func Desired(c *config.Config, facts map[string]state.Facts, owned map[string]map[string]*state.Object) (map[string]HostDesired, error) {
	hosts := map[string]*HostDesired{Old: {}, New: {}}
	specs := map[string]*state.NftSpec{Old: {Role: state.RoleOld}, New: {Role: state.RoleNew}}
	if c.Tunnel != nil {
		build := tunnelDesired
		if Direct(c) {
			build = directDesired
		}
		if err := build(c, facts, owned, hosts[Old], hosts[New], specs[Old], specs[New]); err != nil {
			return nil, err
		}
	}
	forwardsDesired(c, hosts, specs)
	keepForwardDrain(facts, owned, hosts, specs)
	guardForwarding(facts, owned, hosts, specs)
	conntrackDesired(c, facts, owned, hosts[Old])
	out := map[string]HostDesired{}
	for name, h := range hosts {
		sp := specs[name]
		if sp.TunnelDev != "" || len(sp.Forwards) > 0 || sp.ForwardMark != 0 {
			h.add(obj(state.NftTable{Family: "inet", Name: NftTableName, Spec: *sp}))
		}
		bootDesired(facts[name], h)
		out[name] = *h
	}
	if err := ValidateDesired(out); err != nil {
		return nil, err
	}
	return out, nil
}

// ValidateDesired checks every desired object with the rules the agent
// applies to a step (state's Validate methods), so that a plan that would
// send an object the agent refuses, or the renderer cannot render, fails
// here, before any host is touched.
func ValidateDesired(want map[string]HostDesired) error {
	for _, name := range []string{Old, New} {
		for _, o := range want[name].Objects {
			if err := o.Validate(); err != nil {
				return fmt.Errorf("host %s: the plan would make an invalid %s: %w", name, o.Key(), err)
			}
		}
	}
	return nil
}

// ForwardMarkFor is the conntrack mark bit of forwarded flows: the bit
// after the tunnel's, or 0x40000 without a tunnel.
func ForwardMarkFor(c *config.Config) uint32 {
	if c.Tunnel != nil && c.Tunnel.Mark != 0 && c.Tunnel.Mark < 1<<31 {
		return c.Tunnel.Mark << 1
	}
	return 0x40000
}

// ForwardEntries are a forward block's entries in its host's nft table,
// one per port.
func ForwardEntries(f *config.Forward) []state.NftForward {
	var out []state.NftForward
	for _, r := range f.Ports {
		for p := int(r.From); p <= int(r.To); p++ {
			to := uint16(p)
			if f.ToPort != 0 {
				to = f.ToPort
			}
			out = append(out, state.NftForward{Addr: f.Address, Proto: f.Protocol, Port: uint16(p), To: f.To, ToPort: to})
		}
	}
	return out
}

// forwardsDesired adds each forward to its host: the DNAT map entry in the
// nft table, and forwarding switched on.
func forwardsDesired(c *config.Config, hosts map[string]*HostDesired, specs map[string]*state.NftSpec) {
	for _, f := range c.Forwards {
		h, sp := hosts[string(f.On)], specs[string(f.On)]
		sp.ForwardMark = ForwardMarkFor(c)
		sp.Forwards = append(sp.Forwards, ForwardEntries(f)...)
		if f.Address.Is4() {
			h.add(obj(state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}))
		} else {
			h.add(obj(state.Sysctl{Name: "net.ipv6.conf.all.forwarding", Value: "1"}))
		}
	}
	for _, sp := range specs {
		sort.Slice(sp.Forwards, func(i, j int) bool {
			a, b := sp.Forwards[i], sp.Forwards[j]
			if a.Addr != b.Addr {
				return addrLess(a.Addr, b.Addr)
			}
			if a.Proto != b.Proto {
				return a.Proto < b.Proto
			}
			return a.Port < b.Port
		})
	}
}

// keepForwardDrain keeps, on a host that had forwards and has none left,
// the nat chains (with empty maps) and forwarding switched on: a NATed
// connection only keeps being translated while its namespace has a nat
// chain, so removing the last forward would cut the connections still
// going through it. Rollback removes them all, as recorded.
func keepForwardDrain(facts map[string]state.Facts, owned map[string]map[string]*state.Object, hosts map[string]*HostDesired, specs map[string]*state.NftSpec) {
	for name, sp := range specs {
		cur := facts[name].Nft
		if len(sp.Forwards) > 0 || cur == nil || cur.Spec.ForwardMark == 0 {
			continue
		}
		sp.ForwardMark = cur.Spec.ForwardMark
		for _, sys := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
			if _, ok := owned[name][state.Object{Sysctl: &state.Sysctl{Name: sys}}.Key()]; ok {
				hosts[name].add(obj(state.Sysctl{Name: sys, Value: "1"}))
			}
		}
	}
}

// guardForwarding sets Guard4/Guard6 in a host's spec when migrate
// switches that family's forwarding on there and the host did not forward
// before migrate: then the host forwards only migrate's flows (see chain
// guard in agent/kernel). "Before migrate" is the value the journal
// recorded when migrate first changed the sysctl (owned), or, when migrate
// has not changed it yet, the live value. A host that already forwarded
// keeps forwarding everything.
func guardForwarding(facts map[string]state.Facts, owned map[string]map[string]*state.Object, hosts map[string]*HostDesired, specs map[string]*state.NftSpec) {
	for name, h := range hosts {
		sp := specs[name]
		if !(sp.Role == state.RoleOld && sp.TunnelDev != "") && sp.ForwardMark == 0 {
			continue // no table, or nothing of migrate's is forwarded here
		}
		for _, g := range []struct {
			sys string
			on  *bool
		}{{"net.ipv4.ip_forward", &sp.Guard4}, {"net.ipv6.conf.all.forwarding", &sp.Guard6}} {
			wanted := false
			for _, o := range h.Objects {
				if o.Sysctl != nil && o.Sysctl.Name == g.sys && o.Sysctl.Value == "1" {
					wanted = true
				}
			}
			*g.on = wanted && ForwardingBefore(facts[name], owned[name], g.sys) == "0"
		}
	}
}

// ForwardingBefore is a forwarding sysctl's value before migrate first
// changed it: the journal's record of the value replaced, else the live
// value ("" when unknown).
func ForwardingBefore(f state.Facts, owned map[string]*state.Object, sys string) string {
	if o, ok := owned[state.Object{Sysctl: &state.Sysctl{Name: sys}}.Key()]; ok {
		if o != nil && o.Sysctl != nil {
			return o.Sysctl.Value
		}
		return ""
	}
	return f.Sysctls[sys]
}

// add appends objects, skipping keys already present: the tunnel and a
// forward may both need ip_forward.
func (h *HostDesired) add(objs ...state.Object) {
	for _, o := range objs {
		dup := false
		for _, e := range h.Objects {
			if e.Key() == o.Key() {
				dup = true
				break
			}
		}
		if !dup {
			h.Objects = append(h.Objects, o)
		}
	}
}

func tunnelDesired(c *config.Config, facts map[string]state.Facts, owned map[string]map[string]*state.Object, old, nw *HostDesired, oldSpec, newSpec *state.NftSpec) error {
	t := c.Tunnel
	prefs := map[string]rulePrefs{}
	for _, h := range []string{Old, New} {
		p, err := choosePrefs(h, facts[h])
		if err != nil {
			return err
		}
		prefs[h] = p
	}
	if t.OldInner.Addr().Is6() || t.NewInner.Addr().Is6() {
		return fmt.Errorf("%s: tunnel inner addresses must be IPv4 (IPv6 inner addresses are link-local and fixed)", where(t.Range))
	}
	moved := MovedServices(c)
	active := ActiveAddrs(c)
	families := map[int]bool{}
	for _, a := range active {
		families[fam(a)] = true
	}
	var accounted []state.NftService
	for _, s := range AllServices(c) {
		for _, a := range active {
			if s.Addr == a {
				accounted = append(accounted, s)
			}
		}
	}

	// A host behind 1:1 NAT binds the address it holds and sends to the
	// peer's endpoint; the peer's packets reach it from the peer's
	// endpoint (the peer's NAT, if any, rewrote their source to it).
	binds, err := Bindings(c, facts)
	if err != nil {
		return err
	}
	oldBind, newBind := binds[Old].Addr, binds[New].Addr

	link := func(local, remote netip.Addr, inner netip.Prefix, f, peer state.Facts) state.Link {
		l := state.Link{
			Name: t.Name, Type: t.Type, Local: local, Remote: remote,
			MTU: TunnelMTU(t, local, f), Up: true,
		}
		switch t.Type {
		case state.VXLAN:
			l.VNI, l.Port = t.VNI, uint16(t.Port)
			l.MAC = innerMAC(inner.Addr())
		case state.WireGuard:
			// A WireGuard device listens on every address: no local end.
			l.Local, l.Port = netip.Addr{}, uint16(t.ListenPort)
			l.PublicKey, l.PeerKey = f.WGPublicKey, peer.WGPublicKey
		default:
			l.Key = t.Key
		}
		return l
	}
	if t.Type == state.WireGuard {
		for _, h := range []string{Old, New} {
			if facts[h].WGPublicKey == "" {
				return fmt.Errorf("%s: no WireGuard public key from host %s (the agent's wg-key call gives it)", where(t.Range), h)
			}
		}
	}
	// L2 tunnels need a gateway for the neighbour lookup; L3 ones route by device.
	gw := func(peer netip.Prefix) netip.Addr {
		if t.Type == state.VXLAN {
			return peer.Addr()
		}
		return netip.Addr{}
	}
	// WireGuard authenticates every packet itself: no underlay filter.
	underlay := func(local, peer netip.Addr) *state.NftUnderlay {
		if t.Type == state.WireGuard {
			return nil
		}
		u := &state.NftUnderlay{Proto: "gre", Local: local, Peer: peer}
		if t.Type == state.VXLAN {
			u.Proto, u.Port = "udp", uint16(t.Port)
		}
		return u
	}
	inner := map[string]map[int]netip.Prefix{
		Old: {4: t.OldInner, 6: OldInner6},
		New: {4: t.NewInner, 6: NewInner6},
	}
	peerOf := map[string]string{Old: New, New: Old}

	add := func(h *HostDesired, objs ...state.Object) { h.add(objs...) }

	// The tunnel, on both hosts, whatever the stages.
	add(old,
		obj(link(oldBind, t.NewEndpoint, t.OldInner, facts[Old], facts[New])),
		obj(state.Addr{Dev: t.Name, CIDR: t.OldInner}),
		obj(state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}),
		// A marked packet whose 4-tuple matches one of OLD's own
		// sockets, above all a TIME_WAIT left by an earlier client on the
		// same port, is claimed by early demux before routing; the
		// forward path then drops it (ip_forward and ip6_forward drop
		// any packet that carries a socket) and the client hangs.
		// Off, every packet is routed, marked ones into the tunnel.
		obj(state.Sysctl{Name: EarlyDemux, Value: "0"}),
		obj(state.Sysctl{Name: "net.ipv4.conf." + SysctlDev(t.Name) + ".accept_local", Value: "1"}),
		obj(state.Sysctl{Name: "net.ipv4.conf." + SysctlDev(t.Name) + ".rp_filter", Value: "2"}),
	)
	add(nw,
		obj(link(newBind, t.OldEndpoint, t.NewInner, facts[New], facts[Old])),
		obj(state.Addr{Dev: t.Name, CIDR: t.NewInner}),
		obj(state.Sysctl{Name: "net.ipv4.conf." + SysctlDev(t.Name) + ".rp_filter", Value: "2"}),
	)
	if t.Type == state.WireGuard {
		// The kernel's wg_open sets net.ipv4.conf.all.send_redirects
		// to 0 in the device's namespace, and nothing sets it back: set
		// it first (SendRedirectsAll sorts before the link), so the
		// journal holds the value to restore, and rollback is exact.
		for _, h := range []*HostDesired{old, nw} {
			add(h, obj(state.Sysctl{Name: SendRedirectsAll, Value: "0"}))
		}
	}

	oldSpec.TunnelDev, oldSpec.Mark, oldSpec.Services, oldSpec.Accounted = t.Name, t.Mark, moved, accounted
	oldSpec.Underlay = underlay(oldBind, t.NewEndpoint)
	newSpec.TunnelDev, newSpec.Mark = t.Name, t.Mark
	// Every UDP service, whatever its stage: answers to clients still
	// draining to NEW must leave from the service address too.
	for _, s := range accounted {
		if s.Proto == state.UDP {
			newSpec.UDPServices = append(newSpec.UDPServices, s)
		}
	}
	newSpec.Underlay = underlay(newBind, t.OldEndpoint)
	// Another table's DNAT in prerouting (Docker's published ports): on
	// OLD it must not rewrite a moved flow, on NEW the answers of the
	// flows it rewrites must go back into the tunnel (agent/kernel
	// renderKeepDest, renderDNATMark).
	oldSpec.KeepDest = ForeignDNAT(facts[Old]) || facts[Old].Legacy.DNAT()
	newSpec.DNATReplies = ForeignDNAT(facts[New]) || facts[New].Legacy.DNAT()

	for _, f := range []int{4, 6} {
		if !families[f] {
			continue
		}
		for _, h := range []struct {
			name string
			d    *HostDesired
		}{{Old, old}, {New, nw}} {
			if f == 6 {
				add(h.d, obj(state.Addr{Dev: t.Name, CIDR: inner[h.name][6], NoDAD: true}))
			}
			add(h.d,
				// The local rule moves so that rules can come before it.
				obj(localRule(f, prefs[h.name].local, RouteProto)),
				obj(state.Route{Family: f, Table: t.Table, Type: "unicast", Dst: defaultDst(f), Dev: t.Name,
					Gw: gw(inner[peerOf[h.name]][f]), Protocol: RouteProto}),
			)
			h.d.Unwanted = append(h.d.Unwanted, LocalRuleKey(f))
		}
		markRouting(t, f, prefs, facts[Old], owned[Old], old, nw, newSpec.DNATReplies, t.Name)
	}
	if len(active) > 0 {
		// Outer packets of the tunnel inherit the mark of the packet
		// they carry; without this throw they would be routed back into
		// the tunnel.
		// The throw needs the fwmark rule of its family to matter;
		// without it the outer packets never reach the table.
		if families[fam(t.NewEndpoint)] {
			add(old, obj(state.Route{Family: fam(t.NewEndpoint), Table: t.Table, Type: "throw", Dst: hostPrefix(t.NewEndpoint), Protocol: RouteProto}))
		}
		if newSpec.DNATReplies && families[fam(t.OldEndpoint)] {
			// The same on NEW, whose marked answers' outer packets
			// carry the mark too.
			add(nw, obj(state.Route{Family: fam(t.OldEndpoint), Table: t.Table, Type: "throw", Dst: hostPrefix(t.OldEndpoint), Protocol: RouteProto}))
		}
	}
	for _, a := range active {
		f, hp := fam(a), hostPrefix(a)
		add(nw,
			// A real local address: ip_nonlocal_bind would let a service
			// bind it, but connect() from it fails.
			obj(state.Addr{Dev: "lo", CIDR: hp, NoDAD: a.Is6(), NoPrefixRoute: a.Is6()}),
			// NEW's own traffic to the address (the tunnel underlay when
			// it is OLD's endpoint) must still leave by the uplink.
			obj(state.Rule{Family: f, Priority: prefs[New].toAddr, Dst: hp, IifName: "lo", Table: state.TableMain, Protocol: RouteProto}),
			// Replies and outbound connections from the address go back
			// through the tunnel.
			obj(state.Rule{Family: f, Priority: prefs[New].fromAddr, Src: hp, Table: t.Table, Protocol: RouteProto}),
		)
		if a.Is4() {
			newSpec.NoARP = append(newSpec.NoARP, a)
		}
	}
	return nil
}

// markRouting is the per-family policy routing both kinds of tunnel share:
// OLD looks marked packets up in the tunnel table, ahead of the local
// rule; NEW does the same for the answers of DNATed flows (chain
// dnat_mark) when another table DNATs there; and for IPv6, OLD forwards,
// raising accept_ra from 1 to 2 on its interfaces (forwarding=1 silently
// stops RA acceptance; 2 keeps it) other than tunnelDev (a tunnel device;
// "" for a direct tunnel). An interface counts once migrate has raised it
// (owned), so the next plan does not lower it again.
func markRouting(t *config.Tunnel, f int, prefs map[string]rulePrefs, oldFacts state.Facts, oldOwned map[string]*state.Object, old, nw *HostDesired, dnatReplies bool, tunnelDev string) {
	old.add(obj(state.Rule{Family: f, Priority: prefs[Old].fwmark, Mark: t.Mark, Mask: t.Mark, Table: t.Table, Protocol: RouteProto}))
	if dnatReplies {
		nw.add(obj(state.Rule{Family: f, Priority: prefs[New].fwmark, Mark: t.Mark, Mask: t.Mark, Table: t.Table, Protocol: RouteProto}))
	}
	if f != 6 {
		return
	}
	old.add(obj(state.Sysctl{Name: "net.ipv6.conf.all.forwarding", Value: "1"}))
	for name, v := range oldFacts.Sysctls {
		_, raised := oldOwned[state.Object{Sysctl: &state.Sysctl{Name: name}}.Key()]
		if dev, ok := acceptRADev(name); ok && (v == "1" || raised) && dev != "all" && dev != "default" && dev != "lo" && (tunnelDev == "" || dev != SysctlDev(tunnelDev)) {
			old.add(obj(state.Sysctl{Name: name, Value: "2"}))
		}
	}
}

// ForeignDNAT says whether another table has a nat chain at prerouting on
// the host (Docker's iptables-nft table ip nat, a Kubernetes proxy): it
// may DNAT flows to the host's own addresses. Legacy x_tables' nat
// PREROUTING rules (Facts.Legacy.DNAT: Docker with iptables-legacy) count
// too, on OLD for keep_dest (the kernel's NAT binds a flow once, at the
// first nat hook that does, whether nft's chain or iptable_nat's table:
// TestLegacy) and on NEW for dnat_mark (TestLegacyNew).
func ForeignDNAT(f state.Facts) bool {
	for _, ch := range f.Chains {
		if ch.Type == "nat" && ch.Hook == "prerouting" {
			return true
		}
	}
	return false
}

// acceptRADev returns the device of a net.ipv6.conf.DEV.accept_ra name.
func acceptRADev(name string) (string, bool) {
	const pre, suf = "net.ipv6.conf.", ".accept_ra"
	if len(name) > len(pre)+len(suf) && name[:len(pre)] == pre && name[len(name)-len(suf):] == suf {
		return name[len(pre) : len(name)-len(suf)], true
	}
	return "", false
}

func obj(o any) state.Object {
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

// ServiceKeys are the (address, protocol, port) triples of one service,
// the keys of its counters and flow counts.
func ServiceKeys(s *config.Service) []state.NftService { return expand(s, 0) }

// innerMAC is the fixed Ethernet address of a vxlan end: 02:6d:67 ("mg",
// locally administered) and the last three bytes of that end's inner
// IPv4 address. A device made again keeps it, so the peer's neighbour
// entry for the inner address stays valid (a new random MAC is
// unreachable from the peer until that entry expires, tens of seconds).
func innerMAC(inner netip.Addr) string {
	b := inner.As4()
	return fmt.Sprintf("02:6d:67:%02x:%02x:%02x", b[1], b[2], b[3])
}
