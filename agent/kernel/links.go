package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// addrOf is an address netlink reported: none for an empty or unspecified
// one, IPv4 in its own form (net.IP.String's reading of a 16-byte IPv4).
func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a.Unmap()
}

// netIP is an address as netlink takes it (net.ParseIP's 16-byte form),
// nil for none.
func netIP(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return net.IP(a.AsSlice()).To16()
}

func linkFacts(l netlink.Link) state.Link {
	a := l.Attrs()
	out := state.Link{
		Name: a.Name,
		Type: state.TunnelType(l.Type()),
		MTU:  a.MTU,
		Up:   a.RawFlags&unix.IFF_UP != 0,
	}
	switch v := l.(type) {
	case *netlink.Vxlan:
		out.Local = addrOf(v.SrcAddr)
		out.Remote = addrOf(v.Group)
		out.VNI = uint32(v.VxlanId)
		out.Port = uint16(v.Port)
		if len(a.HardwareAddr) == 6 {
			out.MAC = a.HardwareAddr.String()
		}
	case *netlink.Gretun:
		out.Local = addrOf(v.Local)
		out.Remote = addrOf(v.Remote)
		out.Key = v.IKey
	case *netlink.Gretap:
		out.Local = addrOf(v.Local)
		out.Remote = addrOf(v.Remote)
		out.Key = v.IKey
	}
	// wireguard: port, keys and peer come from wgFacts.
	return out
}

// buildLink turns a state.Link into the netlink object that creates it.
func buildLink(l state.Link) (netlink.Link, error) {
	if l.Name == "" || len(l.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("invalid link name %q", l.Name)
	}
	local, remote := netIP(l.Local), netIP(l.Remote)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = l.Name
	attrs.MTU = l.MTU
	if l.MAC != "" {
		mac, err := net.ParseMAC(l.MAC)
		if err != nil {
			return nil, fmt.Errorf("link %s address %q: %w", l.Name, l.MAC, err)
		}
		attrs.HardwareAddr = mac
	}
	switch l.Type {
	case "vxlan":
		if l.VNI == 0 || l.VNI >= 1<<24 {
			return nil, fmt.Errorf("vxlan VNI %d out of range 1..16777215", l.VNI)
		}
		return &netlink.Vxlan{
			LinkAttrs: attrs,
			VxlanId:   int(l.VNI),
			SrcAddr:   local,
			Group:     remote, // a unicast group is the remote end (ip link ... remote)
			Port:      int(l.Port),
			Learning:  true, // iproute2's default
		}, nil
	case "wireguard":
		// Key, port and peer are set over generic netlink (configureWG).
		if local != nil || remote == nil {
			return nil, fmt.Errorf("wireguard link %s needs a remote and no local address", l.Name)
		}
		return &netlink.Wireguard{LinkAttrs: attrs}, nil
	case "gre", "ip6gre":
		if local == nil || remote == nil {
			// Without Local the library builds ip6gre, whatever Remote is.
			return nil, fmt.Errorf("%s needs both local and remote", l.Type)
		}
		if (local.To4() != nil) != (l.Type == state.GRE) || (remote.To4() != nil) != (l.Type == state.GRE) {
			return nil, fmt.Errorf("%s with local %s and remote %s: address family does not match the type", l.Type, l.Local, l.Remote)
		}
		// gre goes through netlink.LinkAdd; ip6gre through addIP6GRE,
		// which takes Local, Remote, the keys and the MTU from this.
		g := &netlink.Gretun{
			LinkAttrs: attrs,
			Local:     local,
			Remote:    remote,
			PMtuDisc:  1, // iproute2's default: set DF on the outer header (gre)
		}
		if l.Key != 0 {
			// addGretunAttrs sets GRE_KEY in IFlags/OFlags for non-zero keys.
			g.IKey, g.OKey = l.Key, l.Key
		}
		return g, nil
	}
	return nil, fmt.Errorf("unsupported link type %q (want vxlan, gre, ip6gre or wireguard)", l.Type)
}

// ip6greHopLimit is the outer hop limit of ip6gre links, iproute2's default.
const ip6greHopLimit = 64

// ip6TnlAllowLocalRemote is IP6_TNL_F_ALLOW_LOCAL_REMOTE (0x40 in
// linux/ip6_tunnel.h; vishvananda/netlink v1.3.1 writes the hex flags 0x10,
// 0x20 and 0x40 as decimal 10, 20 and 40). Without it an ip6 tunnel drops
// every packet, both ways, whose remote endpoint is an address of this
// host. On NEW, OLD's IPv6 endpoint is often an IPv6 service address too,
// and migrate makes that address local on NEW's lo: the tunnel went
// silent as soon as the address was there (iproute2: allow-localremote).
const ip6TnlAllowLocalRemote = 0x40

// addIP6GRE creates an ip6gre link with one RTM_NEWLINK in the host's
// namespace. netlink.Gretun with IPv6 Local/Remote does make an ip6gre link,
// but it cannot send IFLA_GRE_FLAGS, and without IP6_TNL_F_IGN_ENCAP_LIMIT
// the kernel puts an 8-byte destination-options header (tunnel encapsulation
// limit, RFC 2473) in every outer packet: 52 bytes of overhead instead of
// the 44 the MTU is computed with, so full-size packets would not fit the
// underlay. iproute2 calls this "encaplimit none"; the attributes are
// otherwise those addGretunAttrs sends for the same Gretun, so facts read
// the link back (as a Gretun) exactly as the library would have made it.
func (h *Host) addIP6GRE(g *netlink.Gretun) error {
	local, remote := g.Local.To16(), g.Remote.To16()
	if local == nil || remote == nil || g.Local.To4() != nil || g.Remote.To4() != nil {
		return fmt.Errorf("ip6gre needs IPv6 local and remote addresses, not %s and %s", g.Local, g.Remote)
	}
	s, err := nl.GetNetlinkSocketAt(h.ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket in the host's namespace: %w", err)
	}
	defer s.Close()
	tv := nl.SocketTimeoutTv
	if err := s.SetSendTimeout(&tv); err != nil {
		return err
	}
	if err := s.SetReceiveTimeout(&tv); err != nil {
		return err
	}

	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(g.Name)))
	if g.MTU > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(g.MTU))))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("ip6gre"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(nl.IFLA_GRE_LOCAL, []byte(local))
	data.AddRtAttr(nl.IFLA_GRE_REMOTE, []byte(remote))
	var flags uint16
	if g.IKey != 0 || g.OKey != 0 {
		flags = nl.GRE_KEY
		data.AddRtAttr(nl.IFLA_GRE_IKEY, htonl(g.IKey))
		data.AddRtAttr(nl.IFLA_GRE_OKEY, htonl(g.OKey))
	}
	data.AddRtAttr(nl.IFLA_GRE_IFLAGS, htons(flags))
	data.AddRtAttr(nl.IFLA_GRE_OFLAGS, htons(flags))
	data.AddRtAttr(nl.IFLA_GRE_TTL, nl.Uint8Attr(ip6greHopLimit))
	data.AddRtAttr(nl.IFLA_GRE_FLAGS, nl.Uint32Attr(uint32(netlink.IP6_TNL_F_IGN_ENCAP_LIMIT)|ip6TnlAllowLocalRemote))
	req.AddData(info)
	_, err = req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

func htonl(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func htons(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func (h *Host) applyLink(step state.Step) error {
	switch step.Action {
	case state.Create:
		return h.createLink(*step.After.Link)
	case state.Delete:
		if err := h.deleteLink(step.Before.Link.Name); err != nil {
			return err
		}
		if step.Before.Link.Type == state.WireGuard {
			return h.removeWGKey(step.Before.Link.Name)
		}
		return nil
	}
	before, after := *step.Before.Link, *step.After.Link
	cur, err := h.nl.LinkByName(after.Name)
	if isLinkNotFound(err) {
		return h.createLink(after)
	}
	if err != nil {
		return err
	}
	have, err := h.linkFactsOf(cur)
	if err != nil {
		return err
	}
	if before.Name == after.Name && have.Type != state.WireGuard && have.ChangesInPlace(after) {
		return h.setLinkState(cur, after)
	}
	if before.Name == after.Name && have.Type == state.WireGuard && after.Type == state.WireGuard {
		// Keys, port or peer: reconfigured in place.
		if err := h.configureWG(after); err != nil {
			return err
		}
		return h.setLinkState(cur, after)
	}
	if before.Name != after.Name {
		if err := h.deleteLink(before.Name); err != nil {
			return err
		}
		return h.createLink(after)
	}
	return h.replaceLink(cur, have, after)
}

// replaceLink makes a device again with settings that cannot change in
// place (a VXLAN's VNI or port, the tunnel type), keeping its addresses,
// routes and per-device sysctls (linkConfig). If the new device cannot be
// made or configured, the old one is made again as it was.
func (h *Host) replaceLink(cur netlink.Link, have, want state.Link) error {
	keep, err := h.readLinkConfig(cur)
	if err != nil {
		return err
	}
	defer h.releaseRoutes(h.holdRoutes(keep.routes))
	if err := h.deleteLink(have.Name); err != nil {
		return err
	}
	err = h.createLink(want)
	if err == nil {
		if err = h.restoreLinkConfig(keep); err == nil {
			return nil
		}
		err = fmt.Errorf("link %s made again, but its configuration (%s) could not be put back: %w", want.Name, keep, err)
	}
	// Put the old device back as it was.
	if derr := h.deleteLink(want.Name); derr != nil {
		return fmt.Errorf("%w; removing the new device failed too: %v", err, derr)
	}
	if cerr := h.createLink(have); cerr != nil {
		return fmt.Errorf("%w; making the old device %s again failed too: %v", err, have, cerr)
	}
	if rerr := h.restoreLinkConfig(keep); rerr != nil {
		return fmt.Errorf("%w; the old device is back, but its configuration (%s) is not: %v", err, keep, rerr)
	}
	return err
}

func (h *Host) createLink(want state.Link) error {
	link, err := buildLink(want)
	if err != nil {
		return err
	}
	cur, err := h.nl.LinkByName(want.Name)
	if err == nil {
		have, err := h.linkFactsOf(cur)
		if err != nil {
			return err
		}
		if want.MAC == "" {
			have.MAC = "" // a record from before migrate fixed the address
		}
		if have == want {
			return nil
		}
		return fmt.Errorf("link %s already exists and differs: have %s, want %s", want.Name, have, want)
	}
	if !isLinkNotFound(err) {
		return err
	}
	add := h.nl.LinkAdd
	if g, ok := link.(*netlink.Gretun); ok && want.Type == state.IP6GRE {
		add = func(netlink.Link) error { return h.addIP6GRE(g) }
	}
	if err := add(link); err != nil {
		return fmt.Errorf("add link: %w", err)
	}
	cur, err = h.nl.LinkByName(want.Name)
	if err != nil {
		return err
	}
	// Before anything sets the device's sysctls: udev's own run of
	// systemd-sysctl for the new interface must not come after them.
	waitUdev(cur.Attrs().Index)
	if want.Type == state.WireGuard {
		if err := h.configureWG(want); err != nil {
			_ = h.nl.LinkDel(cur)
			return err
		}
	}
	return h.setLinkState(cur, want)
}

// setLinkState sets MTU and the up flag in place.
func (h *Host) setLinkState(cur netlink.Link, want state.Link) error {
	if want.MAC != "" && cur.Attrs().HardwareAddr.String() != want.MAC {
		mac, err := net.ParseMAC(want.MAC)
		if err != nil {
			return fmt.Errorf("address %q: %w", want.MAC, err)
		}
		err = h.nl.LinkSetHardwareAddr(cur, mac)
		if errors.Is(err, unix.EBUSY) {
			// Not changeable while up on this driver: a short down/up.
			if err = h.nl.LinkSetDown(cur); err == nil {
				err = h.nl.LinkSetHardwareAddr(cur, mac)
				cur.Attrs().RawFlags &^= unix.IFF_UP
			}
		}
		if err != nil {
			return fmt.Errorf("set address %s: %w", want.MAC, err)
		}
	}
	if want.MTU != 0 && cur.Attrs().MTU != want.MTU {
		if err := h.nl.LinkSetMTU(cur, want.MTU); err != nil {
			return fmt.Errorf("set mtu %d: %w", want.MTU, err)
		}
	}
	up := cur.Attrs().RawFlags&unix.IFF_UP != 0
	switch {
	case want.Up && !up:
		if err := h.nl.LinkSetUp(cur); err != nil {
			return fmt.Errorf("set up: %w", err)
		}
	case !want.Up && up:
		if err := h.nl.LinkSetDown(cur); err != nil {
			return fmt.Errorf("set down: %w", err)
		}
	}
	return nil
}

func (h *Host) deleteLink(name string) error {
	cur, err := h.nl.LinkByName(name)
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := h.nl.LinkDel(cur); err != nil && !isLinkNotFound(err) {
		return fmt.Errorf("delete link: %w", err)
	}
	return nil
}
