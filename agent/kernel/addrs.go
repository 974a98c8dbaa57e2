package kernel

import (
	"errors"
	"fmt"
	"net"
	"sort"

	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func (h *Host) addrFacts(names map[int]string) ([]state.Addr, error) {
	addrs, err := retryDump("list addresses", func() ([]netlink.Addr, error) {
		return h.nl.AddrList(nil, netlink.FAMILY_ALL)
	})
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	out := []state.Addr{}
	for _, a := range addrs {
		if a.IPNet == nil || a.IP.IsLinkLocalUnicast() && a.IP.To4() == nil {
			continue // IPv6 link-local (fe80::/10) addresses come and go with links
		}
		dev := names[a.LinkIndex]
		if dev == "" {
			dev = fmt.Sprintf("if%d", a.LinkIndex)
		}
		out = append(out, state.Addr{Dev: dev, CIDR: a.IPNet.String(), NoDAD: a.Flags&unix.IFA_F_NODAD != 0})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Dev != out[j].Dev {
			return out[i].Dev < out[j].Dev
		}
		return out[i].CIDR < out[j].CIDR
	})
	return out, nil
}

func buildAddr(a state.Addr) (*netlink.Addr, error) {
	ip, n, err := net.ParseCIDR(a.CIDR)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", a.CIDR, err)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	na := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: n.Mask}}
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
