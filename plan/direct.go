package plan

import (
	"fmt"
	"net/netip"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// A direct tunnel (type = "direct") is for two hosts on one segment: no
// device and no encapsulation. OLD routes the marked flows to NEW's
// address on the segment, and NEW routes what leaves from a migrated
// address back to OLD's, both by policy routing in the tunnel's table.
// The nft table, the rules and the stages are the tunnel's; what differs
// is listed in docs/design.md ("Direct").

// Direct reports a config whose tunnel is of type direct.
func Direct(c *config.Config) bool { return c.Tunnel != nil && c.Tunnel.Type == state.Direct }

// DirectSysctls are the sysctls plan reads on host for a direct tunnel:
// the segment's interface is only known from the facts, so the
// per-interface ones are read for every interface.
func directSysctls(host string) []string {
	if host == Old {
		return []string{
			"net.ipv4.ip_forward",
			EarlyDemux,
			"net.ipv4.conf.*.accept_local",
			"net.ipv4.conf.*.rp_filter",
			"net.ipv4.conf.*.send_redirects",
			"net.ipv6.conf.all.forwarding",
			"net.ipv6.conf.*.accept_ra",
		}
	}
	return []string{"net.ipv4.conf.*.rp_filter", "net.ipv4.conf.*.arp_announce", "net.ipv4.conf.*.accept_local", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"}
}

// SegmentDev is the interface of a host that holds addr (its endpoint on
// the shared segment), with the address's prefix there; "" when the host
// does not hold it.
func SegmentDev(f state.Facts, addr netip.Addr) (string, netip.Prefix) {
	for _, a := range f.Addrs {
		p := a.CIDR
		if p.IsValid() && p.Addr() == addr && a.Dev != "lo" {
			return a.Dev, p
		}
	}
	return "", netip.Prefix{}
}

// SegmentDevs are the segment's interface on each host of a direct
// tunnel (from the facts; "" where the host does not hold its endpoint).
func SegmentDevs(c *config.Config, facts map[string]state.Facts) map[string]string {
	if !Direct(c) {
		return nil
	}
	o, _ := SegmentDev(facts[Old], c.Tunnel.OldEndpoint)
	n, _ := SegmentDev(facts[New], c.Tunnel.NewEndpoint)
	return map[string]string{Old: o, New: n}
}

// CheckDirect refuses a direct tunnel whose hosts are not on one link:
// each must hold its endpoint on an interface, reach the peer's endpoint
// by that interface without a gateway, and have a neighbour entry the
// peer answered after a probe (facts' PeerLink, from the agent).
func CheckDirect(c *config.Config, facts map[string]state.Facts) error {
	if !Direct(c) {
		return nil
	}
	t := c.Tunnel
	for _, h := range []struct {
		name, upper, peerUpper, key string
		ep, peerEP                  netip.Addr
	}{
		{Old, "OLD", "NEW", "old_endpoint", t.OldEndpoint, t.NewEndpoint},
		{New, "NEW", "OLD", "new_endpoint", t.NewEndpoint, t.OldEndpoint},
	} {
		f := facts[h.name]
		dev, _ := SegmentDev(f, h.ep)
		if dev == "" {
			return fmt.Errorf("%s: direct tunnel: %s %s is not an address %s holds on an interface (it holds %s); a direct tunnel's endpoints are the two hosts' own addresses on their shared segment", where(t.Range), h.key, h.ep, h.upper, heldAddrs(f, h.ep.Is4()))
		}
		pl := f.PeerLink
		const notOne = `OLD and NEW are not on one link, and a direct tunnel needs them on one segment (one LAN or VLAN, no router between them); use type = "vxlan" or "wireguard" instead`
		switch {
		case pl == nil:
			return fmt.Errorf("%s: direct tunnel: could not ask %s how it reaches %s's endpoint %s (route lookup failed): plan cannot tell that the two hosts share a link", where(t.Range), h.upper, h.peerUpper, h.peerEP)
		case pl.Gw != "":
			return fmt.Errorf("%s: direct tunnel: %s reaches %s's endpoint %s through the gateway %s (dev %s): %s", where(t.Range), h.upper, h.peerUpper, h.peerEP, pl.Gw, pl.Dev, notOne)
		case pl.Dev != dev:
			return fmt.Errorf("%s: direct tunnel: %s reaches %s's endpoint %s by %s, but its own endpoint %s is on %s: the endpoints must be the two hosts' addresses on the segment they share", where(t.Range), h.upper, h.peerUpper, h.peerEP, pl.Dev, h.ep, dev)
		case !pl.Answered():
			return fmt.Errorf("%s: direct tunnel: %s's route to %s's endpoint %s has no gateway (dev %s), but nothing answered for it there after a probe (neighbour entry: %s): %s", where(t.Range), h.upper, h.peerUpper, h.peerEP, pl.Dev, pl.Neigh, notOne)
		}
	}
	return nil
}

// DirectNotes explain what a direct tunnel needs of the segment.
func DirectNotes(c *config.Config, facts map[string]state.Facts) []string {
	if !Direct(c) {
		return nil
	}
	devs := SegmentDevs(c, facts)
	return []string{fmt.Sprintf("direct tunnel: OLD (%s on %s) sends moved flows to NEW (%s on %s) unencapsulated, with the clients' addresses, and NEW sends from the migrated addresses: "+
		"on a cloud network that checks that a VM sends and receives only its own addresses, both hosts need that check off (AWS: source/destination check; Google Cloud: IP forwarding; Azure: IP forwarding on the NIC), or the segment drops these packets.",
		c.Tunnel.OldEndpoint, devs[Old], c.Tunnel.NewEndpoint, devs[New])}
}

// directGateway is the address host routes family fam to on its segment
// interface dev, towards the peer: the peer's endpoint when it is of that
// family (and, for IPv6, not an address NEW makes local: an IPv6
// gateway may not be a local address); else the peer's global address on
// its segment interface within one of this host's prefixes there; else,
// for IPv6, the peer's link-local address there. IPv4 allows a gateway
// that is local (NEW holds the migrated addresses on lo); NEW's ARP for
// it then needs arp_announce=2 (see directDesired).
func directGateway(fam int, peerEP netip.Addr, peer state.Facts, own state.Facts, ownEP netip.Addr, active map[netip.Addr]bool) (netip.Addr, error) {
	if (peerEP.Is4() == (fam == 4)) && !(fam == 6 && active[peerEP]) {
		return peerEP, nil
	}
	peerDev, _ := SegmentDev(peer, peerEP)
	ownDev, _ := SegmentDev(own, ownEP)
	var ownPfx []netip.Prefix
	for _, a := range own.Addrs {
		if p := a.CIDR; p.IsValid() && a.Dev == ownDev && !p.Addr().IsLinkLocalUnicast() {
			ownPfx = append(ownPfx, p.Masked())
		}
	}
	for _, a := range peer.Addrs {
		p := a.CIDR
		if !p.IsValid() || a.Dev != peerDev || p.Addr().Is4() != (fam == 4) || p.Addr().IsLinkLocalUnicast() || (fam == 6 && active[p.Addr()]) {
			continue
		}
		for _, op := range ownPfx {
			if op.Contains(p.Addr()) {
				return p.Addr(), nil
			}
		}
	}
	if fam == 6 && peer.PeerLink != nil && peer.PeerLink.LinkLocal != "" {
		if a, err := netip.ParseAddr(peer.PeerLink.LinkLocal); err == nil {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no IPv%d address of the peer on its segment interface %s to route IPv%d to; give both hosts an IPv%d address on the segment", fam, peerDev, fam, fam)
}

// directDesired is tunnelDesired for a direct tunnel.
func directDesired(c *config.Config, facts map[string]state.Facts, owned map[string]map[string]*state.Object, old, nw *HostDesired, oldSpec, newSpec *state.NftSpec) error {
	t := c.Tunnel
	prefs := map[string]rulePrefs{}
	for _, h := range []string{Old, New} {
		p, err := choosePrefs(h, facts[h])
		if err != nil {
			return err
		}
		prefs[h] = p
	}
	devs := SegmentDevs(c, facts)
	for _, h := range []struct{ name, key string }{{Old, "old_endpoint"}, {New, "new_endpoint"}} {
		if devs[h.name] == "" {
			return fmt.Errorf("%s: direct tunnel: host %s does not hold its %s on an interface", where(t.Range), h.name, h.key)
		}
	}
	oldDev, newDev := devs[Old], devs[New]
	moved := MovedServices(c)
	active := ActiveAddrs(c)
	isActive := map[netip.Addr]bool{}
	families := map[int]bool{}
	for _, a := range active {
		families[fam(a)] = true
		isActive[a] = true
	}
	var accounted []state.NftService
	for _, s := range AllServices(c) {
		for _, a := range active {
			if s.Addr == a {
				accounted = append(accounted, s)
			}
		}
	}
	add := func(h *HostDesired, objs ...state.Object) { h.add(objs...) }

	add(old,
		obj(state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}),
		// Trap 6 (early demux and TIME_WAIT), as with a tunnel.
		obj(state.Sysctl{Name: EarlyDemux, Value: "0"}),
		// NEW's packets arrive on the segment from the migrated
		// addresses, which are OLD's own: accept_local lets them in,
		// and a loose rp_filter (the kernel uses max(all, dev)) lets
		// NEW's replies to clients through whatever the reverse route.
		obj(state.Sysctl{Name: "net.ipv4.conf." + SysctlDev(oldDev) + ".accept_local", Value: "1"}),
		obj(state.Sysctl{Name: "net.ipv4.conf." + SysctlDev(oldDev) + ".rp_filter", Value: "2"}),
		// OLD forwards a moved flow's packets out of the interface they
		// came in on (when clients, or their router, are on the
		// segment). It would then send ICMP redirects telling the
		// sender to go to NEW directly, which would bypass OLD (and
		// its drain). The kernel sends them when all or the interface
		// says so (OR): both off.
		obj(state.Sysctl{Name: "net.ipv4.conf.all.send_redirects", Value: "0"}),
		obj(state.Sysctl{Name: "net.ipv4.conf." + SysctlDev(oldDev) + ".send_redirects", Value: "0"}),
	)
	add(nw,
		// Clients' packets arrive from OLD on the segment, whose
		// reverse route may leave by another interface.
		obj(state.Sysctl{Name: "net.ipv4.conf." + SysctlDev(newDev) + ".rp_filter", Value: "2"}),
		// NEW's packets from a migrated address go to OLD on the
		// segment. With the default arp_announce (0) NEW's ARP request
		// for OLD carries that address as its sender: every host on the
		// segment (the router too) would take NEW's MAC for OLD's
		// address. 2: the sender is NEW's own address on the segment.
		obj(state.Sysctl{Name: "net.ipv4.conf." + SysctlDev(newDev) + ".arp_announce", Value: "2"}),
	)

	oldSpec.TunnelDev, oldSpec.Mark, oldSpec.Services, oldSpec.Accounted = oldDev, t.Mark, moved, accounted
	for _, a := range active {
		oldSpec.PeerSrc = append(oldSpec.PeerSrc, a)
	}
	newSpec.TunnelDev, newSpec.Mark = newDev, t.Mark
	// Another table's DNAT at prerouting (Docker's published ports) on
	// OLD must not rewrite a moved flow, as with a tunnel. On NEW the
	// answers of the flows such a DNAT rewrites go back to OLD, as with a
	// tunnel; but the segment also brings other hosts' flows to NEW's
	// own published ports, so chain dnat_mark marks only those to a
	// migrated address (PeerDst): NEW answers neither ARP nor NDP for
	// them, so only OLD sends to them through NEW's segment interface.
	oldSpec.KeepDest = ForeignDNAT(facts[Old]) || facts[Old].Legacy.DNAT()
	newSpec.DNATReplies = ForeignDNAT(facts[New]) || facts[New].Legacy.DNAT()
	if newSpec.DNATReplies {
		for _, a := range active {
			newSpec.PeerDst = append(newSpec.PeerDst, a)
		}
		// OLD's own connections to a moved service (apply's probe)
		// come from its address on the segment, often a migrated
		// address, local on NEW. Delivered locally that passes the
		// source check (the reverse route is the rule "to ADDR iif lo
		// lookup main"), but a flow DNATed to a container is forwarded,
		// and the kernel checks its source as seen from the
		// container's interface: the local table, a martian. NEW then
		// accepts its own addresses as sources on the segment, as OLD
		// does (the segment is trusted). See also fromIif below.
		add(nw, obj(state.Sysctl{Name: "net.ipv4.conf." + SysctlDev(newDev) + ".accept_local", Value: "1"}))
	}
	for _, s := range accounted {
		if s.Proto == state.UDP {
			newSpec.UDPServices = append(newSpec.UDPServices, s)
		}
	}

	for _, f := range []int{4, 6} {
		if !families[f] {
			continue
		}
		toNew, err := directGateway(f, t.NewEndpoint, facts[New], facts[Old], t.OldEndpoint, isActive)
		if err != nil {
			return fmt.Errorf("%s: direct tunnel: OLD to NEW: %w", where(t.Range), err)
		}
		toOld, err := directGateway(f, t.OldEndpoint, facts[Old], facts[New], t.NewEndpoint, isActive)
		if err != nil {
			return fmt.Errorf("%s: direct tunnel: NEW to OLD: %w", where(t.Range), err)
		}
		for _, h := range []struct {
			name string
			d    *HostDesired
			dev  string
			gw   netip.Addr
		}{{Old, old, oldDev, toNew}, {New, nw, newDev, toOld}} {
			add(h.d,
				obj(localRule(f, prefs[h.name].local, RouteProto)),
				obj(state.Route{Family: f, Table: t.Table, Type: "unicast", Dst: defaultDst(f), Dev: h.dev, Gw: h.gw, Protocol: RouteProto}),
			)
			h.d.Unwanted = append(h.d.Unwanted, LocalRuleKey(f))
		}
		// With DNATReplies, NEW's answers of DNATed flows from OLD go
		// back to OLD on the segment. No throw route for OLD's endpoint:
		// there are no outer packets to carry the mark, and the table's
		// route to OLD is the segment's.
		markRouting(t, f, prefs, facts[Old], owned[Old], old, nw, newSpec.DNATReplies, "")
	}
	// With a foreign DNAT on NEW, "from ADDR lookup TABLE" takes only
	// NEW's own packets (iif lo: output). OLD's own connections to a
	// moved service (apply's probe) arrive on the segment from its
	// address there, often a migrated address: a flow DNATed to a
	// container is forwarded, and without iif lo the rule would route it
	// straight back to OLD instead of to the container.
	fromIif := ""
	if newSpec.DNATReplies {
		fromIif = "lo"
	}
	for _, a := range active {
		f, hp := fam(a), hostPrefix(a)
		add(nw,
			obj(state.Addr{Dev: "lo", CIDR: hp, NoDAD: a.Is6(), NoPrefixRoute: a.Is6()}),
			obj(state.Rule{Family: f, Priority: prefs[New].toAddr, Dst: hp, IifName: "lo", Table: state.TableMain, Protocol: RouteProto}),
			obj(state.Rule{Family: f, Priority: prefs[New].fromAddr, Src: hp, IifName: fromIif, Table: t.Table, Protocol: RouteProto}),
		)
		// NEW must never answer ARP for the address: the router would
		// send clients to NEW and bypass OLD. IPv6 needs nothing: the
		// kernel answers a neighbour solicitation only for an address
		// of the interface it arrives on (the address is on lo), and
		// solicits from the interface's own link-local address.
		if a.Is4() {
			newSpec.NoARP = append(newSpec.NoARP, a)
		}
	}
	return nil
}

// directVerify is how apply checks a direct tunnel: each host pings the
// other's endpoint on the segment.
func directVerify(c *config.Config) *Verify {
	return &Verify{OldPings: c.Tunnel.NewEndpoint.String(), NewPings: c.Tunnel.OldEndpoint.String()}
}
