package plan

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// Binding is where one host's tunnel binds. The endpoints of the plan are
// the addresses the peer sends to; a host behind a 1:1 NAT does not hold
// its endpoint, and its tunnel binds the address it does hold (Addr).
type Binding struct {
	Host     string
	Endpoint netip.Addr // what the peer sends to (the plan's endpoint)
	Addr     netip.Addr // what the host's tunnel binds: Endpoint unless NATed
	// How Addr was found: "held" (the host holds its endpoint), "bind"
	// (old_bind/new_bind), "route" (the source address towards the peer's
	// endpoint).
	How string
}

// NATed reports a host that does not hold its endpoint.
func (b Binding) NATed() bool { return b.Addr != b.Endpoint }

// Bindings finds both hosts' tunnel bind addresses from the facts (each
// host's addresses, and RouteSrc: the source it uses towards its peer's
// endpoint). It refuses a bind the host does not hold, a host that holds
// neither its endpoint nor a route towards its peer, and a GRE tunnel
// through a NAT migrate found by itself (GRE has no ports: most NATs do
// not pass it).
func Bindings(c *config.Config, facts map[string]state.Facts) (map[string]Binding, error) {
	t := c.Tunnel
	out := map[string]Binding{}
	for _, h := range []struct {
		name, key, upper string
		ep, peerEP, bind netip.Addr
		peerName, epKey  string
	}{
		{Old, "old_bind", "OLD", t.OldEndpoint, t.NewEndpoint, t.OldBind, New, "old_endpoint"},
		{New, "new_bind", "NEW", t.NewEndpoint, t.OldEndpoint, t.NewBind, Old, "new_endpoint"},
	} {
		f := facts[h.name]
		b := Binding{Host: h.name, Endpoint: h.ep}
		switch {
		case h.bind.IsValid():
			if !f.HasAddr(h.bind) {
				return nil, fmt.Errorf("%s: tunnel %s %s is not an address of host %s; it holds %s", where(t.Range), h.key, h.bind, h.name, heldAddrs(f, h.bind.Is4()))
			}
			b.Addr, b.How = h.bind, "bind"
		case f.HasAddr(h.ep):
			b.Addr, b.How = h.ep, "held"
		default:
			src, ok := netip.Addr{}, false
			if s := f.RouteSrc[h.peerEP.String()]; s != "" {
				a, err := netip.ParseAddr(s)
				src, ok = a, err == nil && f.HasAddr(a) && !a.IsLoopback() && a != h.peerEP
			}
			if !ok {
				return nil, fmt.Errorf("%s: tunnel %s %s is not an address of host %s, and %s has no address of its own towards %s's endpoint %s to bind instead (it holds %s). Write the address %s holds in %s, or, if %s is behind a 1:1 NAT, add %s = \"<the address it holds>\" to the tunnel block", where(t.Range), h.epKey, h.ep, h.name, h.name, h.peerName, h.peerEP, heldAddrs(f, h.ep.Is4()), h.name, h.epKey, h.upper, h.key)
			}
			b.Addr, b.How = src, "route"
		}
		out[h.name] = b
	}
	if t.Type == state.GRE || t.Type == state.IP6GRE {
		for _, h := range []string{Old, New} {
			if b := out[h]; b.How == "route" {
				return nil, fmt.Errorf("%s: %s is behind NAT (its tunnel would bind %s; its peer sends to %s), and %s tunnels carry no port: most NATs drop or cannot map them. Use type = \"vxlan\" or \"wireguard\" (UDP, they cross NAT); or, if this NAT does pass GRE (IP protocol 47) 1:1, say so with %s_bind = %q", where(t.Range), strings.ToUpper(h), b.Addr, b.Endpoint, t.Type, h, b.Addr.String())
			}
		}
	}
	return out, nil
}

// NATNotes say, for each host behind NAT, what its tunnel binds and where
// the peer sends.
func NATNotes(c *config.Config, binds map[string]Binding) []string {
	var notes []string
	for _, h := range []string{New, Old} {
		b, ok := binds[h]
		if !ok || !b.NATed() {
			continue
		}
		peer := map[string]string{Old: "NEW", New: "OLD"}[h]
		how := "its source address towards " + peer
		if b.How == "bind" {
			how = h + "_bind"
		}
		n := fmt.Sprintf("%s is behind NAT: its tunnel binds %s (%s, an address it holds), and %s sends to %s.", strings.ToUpper(h), b.Addr, how, peer, b.Endpoint)
		switch c.Tunnel.Type {
		case "vxlan":
			n += fmt.Sprintf(" The NAT must pass UDP port %d to %s.", c.Tunnel.Port, b.Addr)
		case "wireguard":
			n += fmt.Sprintf(" The NAT must pass UDP port %d to %s.", c.Tunnel.ListenPort, b.Addr)
		case "gre", "ip6gre":
			n += " It must pass GRE (IP protocol 47) 1:1; most NATs do not: vxlan and wireguard cross NAT."
		}
		if h == Old {
			n += fmt.Sprintf(" A service address is one OLD holds (%s), not its public address.", b.Addr)
		}
		notes = append(notes, n)
	}
	return notes
}

// heldAddrs lists a host's global addresses of one family, for errors.
func heldAddrs(f state.Facts, v4 bool) string {
	var s []string
	for _, a := range f.Addrs {
		p := a.CIDR
		if !p.IsValid() || p.Addr().Is4() != v4 || p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		s = append(s, p.Addr().String())
	}
	if len(s) == 0 {
		return "no such address"
	}
	return strings.Join(s, ", ")
}
