package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

func (h *Host) addrFacts(names map[int]string) ([]state.Addr, error) {
	addrs, err := retryDump("list addresses", func() ([]netlink.Addr, error) {
		return h.nl.AddrList(nil, netlink.FAMILY_ALL)
	})
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var ll *linkLocals
	out := []state.Addr{}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		if a.IP.To4() == nil && a.IP.IsLinkLocalUnicast() {
			if ll == nil {
				if ll, err = h.linkLocalProtos(); err != nil {
					return nil, err
				}
			}
			if ll.kernelMade(a) {
				continue // comes and goes with its link
			}
		}
		dev := names[a.LinkIndex]
		if dev == "" {
			dev = fmt.Sprintf("if%d", a.LinkIndex)
		}
		p, err := netip.ParsePrefix(a.IPNet.String())
		if err != nil {
			return nil, fmt.Errorf("address %s on %s: %w", a.IPNet, dev, err)
		}
		out = append(out, state.Addr{Dev: dev, CIDR: p, NoDAD: a.Flags&unix.IFA_F_NODAD != 0, NoPrefixRoute: a.Flags&unix.IFA_F_NOPREFIXROUTE != 0})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Dev != out[j].Dev {
			return out[i].Dev < out[j].Dev
		}
		return out[i].CIDR.String() < out[j].CIDR.String() // as when they were strings
	})
	return out, nil
}

// IFA_PROTO (Linux 6.3) and the value the kernel gives the link-local
// addresses it generates (include/uapi/linux/if_addr.h).
const (
	ifaProto        = 11
	ifaprotKernelLL = 3
)

// linkLocals knows which IPv6 link-local addresses the kernel generated.
//
// Facts report IPv6 link-local (fe80::/10) addresses, except those the
// kernel generated itself when the link came up (addrconf: EUI-64,
// stable-privacy or random, per addr_gen_mode), which come and go with
// their links. Address flags cannot tell the two apart: the kernel's and
// `ip -6 addr add fe80::42:1/64 dev X` both get IFA_F_PERMANENT (plus
// IFA_F_NODAD for the latter only when asked). Since Linux 6.3 the kernel
// marks its own with IFA_PROTO = IFAPROT_KERNEL_LL, while addresses added
// from userspace carry no IFA_PROTO (or the one `ip addr add ... proto P`
// gave). On older kernels, recognised by no address at all carrying
// IFA_PROTO (::1 on lo has IFAPROT_KERNEL_LO on newer ones), only
// link-locals with IFA_F_NODAD are reported: the kernel never sets that
// flag on what it generates, and migrate adds its own with nodad.
type linkLocals struct {
	proto    map[string]uint8 // "ifindex ip" -> IFA_PROTO, for those that carry it
	hasProto bool             // the kernel reports IFA_PROTO
}

func (l *linkLocals) kernelMade(a netlink.Addr) bool {
	if !l.hasProto {
		return a.Flags&unix.IFA_F_NODAD == 0
	}
	return l.proto[fmt.Sprintf("%d %s", a.LinkIndex, a.IP)] == ifaprotKernelLL
}

// linkLocalProtos dumps the IPv6 addresses' IFA_PROTO, which
// vishvananda/netlink (v1.3.1) does not decode.
func (h *Host) linkLocalProtos() (*linkLocals, error) {
	return retryDump("list address protocols", func() (*linkLocals, error) {
		l := &linkLocals{proto: map[string]uint8{}}
		req := nl.NewNetlinkRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfAddrmsg(unix.AF_INET6))
		err := h.nlDump(unix.NETLINK_ROUTE, req, func(msg []byte) {
			if len(msg) < unix.SizeofIfAddrmsg {
				return
			}
			ifa := nl.DeserializeIfAddrmsg(msg)
			attrs := attrsOf(msg[unix.SizeofIfAddrmsg:])
			p, ok := attrs[ifaProto]
			if !ok || len(p) != 1 {
				return
			}
			l.hasProto = true
			ip := attrs[unix.IFA_LOCAL]
			if ip == nil {
				ip = attrs[unix.IFA_ADDRESS]
			}
			if len(ip) == net.IPv6len {
				l.proto[fmt.Sprintf("%d %s", ifa.Index, net.IP(ip))] = p[0]
			}
		})
		return l, err
	})
}

func buildAddr(a state.Addr) (*netlink.Addr, error) {
	ip, n, err := net.ParseCIDR(a.CIDR.String())
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", a.CIDR, err)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	na := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: n.Mask}}
	if a.NoPrefixRoute {
		na.Flags |= unix.IFA_F_NOPREFIXROUTE
	}
	if a.NoDAD {
		na.Flags |= unix.IFA_F_NODAD
	}
	return na, nil
}

func (h *Host) applyAddr(step state.Step) error {
	switch step.Action {
	case state.Create:
		return h.addAddr(*step.After.Addr)
	case state.Delete:
		return h.delAddr(*step.Before.Addr)
	}
	if *step.Before.Addr != *step.After.Addr {
		if err := h.delAddr(*step.Before.Addr); err != nil {
			return err
		}
	}
	return h.addAddr(*step.After.Addr)
}

func (h *Host) addAddr(a state.Addr) error {
	na, err := buildAddr(a)
	if err != nil {
		return err
	}
	link, err := h.nl.LinkByName(a.Dev)
	if err != nil {
		return fmt.Errorf("device %s: %w", a.Dev, err)
	}
	if err := h.nl.AddrAdd(link, na); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add address: %w", err)
	}
	return nil
}

func (h *Host) delAddr(a state.Addr) error {
	na, err := buildAddr(a)
	if err != nil {
		return err
	}
	link, err := h.nl.LinkByName(a.Dev)
	if isLinkNotFound(err) {
		return nil // the address went with its device
	}
	if err != nil {
		return fmt.Errorf("device %s: %w", a.Dev, err)
	}
	if err := h.nl.AddrDel(link, na); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete address: %w", err)
	}
	return nil
}
